package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"dialsync/internal/cache"
	"dialsync/internal/config"
	"dialsync/internal/preflight"
)

func loadConfig(path string) (*config.Config, error) {
	// A misspelt DIALSYNC_* variable would otherwise be ignored silently,
	// like an unknown key in the file (which is an error too).
	if err := config.CheckEnv(os.Environ()); err != nil {
		return nil, usageError{Err: err}
	}
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return nil, usageError{Err: err}
	}
	return cfg, nil
}

// logKind says what a command's log is for.
type logKind int

const (
	// daemonLog: run's log, every INFO line is part of the story.
	daemonLog logKind = iota
	// oneShotLog: a command that prints its own result (reconcile,
	// checkpoint, deadletters, explain, watch, check): its INFO lines
	// (connections made, lease taken) are demoted to DEBUG, so by default
	// only warnings and errors reach stderr next to the result;
	// log.level = "debug" (DIALSYNC_LOG_LEVEL=debug) shows them again.
	oneShotLog
)

// newLogger makes the process logger: text on a terminal, JSON otherwise
// (or as [log] format says). Row values and secrets are never logged.
// Durations are written as Go duration strings ("82ms", "1m30s") in both
// formats (the JSON handler would write nanosecond integers): the README's
// "Logs" paragraph documents it. Call it once per process: it also routes
// the libraries' own loggers (go-redis, the standard log package) through
// it.
func newLogger(cfg *config.Config, w io.Writer, kind logKind) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationStrings}
	format := cfg.Log.Format
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	if kind == oneShotLog {
		h = demoteInfo{h}
	}
	l := slog.New(h).With("pipeline", cfg.Pipeline.Name)
	// go-redis logs through its own process-wide logger (plain text on
	// stderr by default); so does anything using the standard log package
	// (slog.SetDefault redirects it).
	cache.SetLibraryLogger(l)
	slog.SetDefault(l)
	return l
}

// durationStrings writes time.Duration values as Go duration strings.
func durationStrings(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	if d, ok := a.Value.Any().(time.Duration); ok && a.Value.Kind() == slog.KindAny {
		return slog.String(a.Key, d.String())
	}
	return a
}

// demoteInfo logs INFO records at DEBUG (see oneShotLog).
type demoteInfo struct{ inner slog.Handler }

func (h demoteInfo) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return h.inner.Enabled(ctx, l)
}

func (h demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return h.inner.Handle(ctx, r)
}

func (h demoteInfo) WithAttrs(as []slog.Attr) slog.Handler { return demoteInfo{h.inner.WithAttrs(as)} }
func (h demoteInfo) WithGroup(name string) slog.Handler    { return demoteInfo{h.inner.WithGroup(name)} }

// warnHTTPListen says at start when the http server is reachable from the
// network (preflight.CheckHTTPListen): a warning, an error-level line with
// http.pprof on (the profiler must not be exposed).
func warnHTTPListen(cfg *config.Config, log *slog.Logger) {
	r := preflight.CheckHTTPListen(cfg.HTTP.Listen, cfg.HTTP.Pprof)
	switch r.Status {
	case preflight.Warn:
		log.Warn("http.listen: "+r.Detail, "fix", r.Fix)
	case preflight.Fail:
		log.Error("http.listen: "+r.Detail, "fix", r.Fix)
	}
}

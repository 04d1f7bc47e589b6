package main

import (
	"io"
	"log/slog"
	"os"

	"dialsync/internal/cache"
	"dialsync/internal/config"
)

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return nil, usageError{Err: err}
	}
	return cfg, nil
}

// newLogger makes the process logger: text on a terminal, JSON otherwise
// (or as [log] format says). Row values and secrets are never logged.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
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
	l := slog.New(h).With("pipeline", cfg.Pipeline.Name)
	cache.SetLibraryLogger(l) // else go-redis prints its own plain-text lines to stderr
	return l
}

package canal

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/go-mysql-org/go-mysql/replication"
)

// oneLineHandler keeps go-mysql's log records to one line of text per
// value: go-mysql logs its errors with their pingcap/errors stack traces
// (for example "canal start sync binlog err" in canal/canal.go), which bury
// the message an operator needs under dozens of file:line frames. Every
// string or error attribute is cut at its first newline. And it never passes
// on SQL text: go-mysql logs the statements it cannot parse with a "query"
// attribute (canal/sync.go), and a statement may hold row values.
type oneLineHandler struct {
	inner slog.Handler
	// stopped, when set, turns every record into DEBUG: once the stream's
	// context ends we close go-mysql's connections ourselves, and what it
	// then logs ("use of closed network connection", "canal start sync
	// binlog err", "retry sync is disabled") is the normal end of a stream.
	stopped func() bool
}

// go-mysql's INFO records (about a dozen per stream start: "received fake
// rotate event", "syncer is closing", ...) narrate its internals; they are
// DEBUG here. Its warnings and errors keep their level.
func level(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (h oneLineHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if h.stopped != nil && h.stopped() {
		l = slog.LevelDebug
	}
	return h.inner.Enabled(ctx, level(l))
}

func (h oneLineHandler) Handle(ctx context.Context, r slog.Record) error {
	lvl := level(r.Level)
	if h.stopped != nil && h.stopped() {
		lvl = slog.LevelDebug
	}
	var attrs []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		a = oneLineAttr(a)
		if lvl == slog.LevelWarn && strings.Contains(a.Value.String(), net.ErrClosed.Error()) {
			// go-mysql warns when it cannot set a deadline on, or close, a
			// connection that is already closed; we close the binlog
			// connection ourselves when the stream stops (canal's Dialer
			// from internal/myconn), so that is the normal end, not news.
			lvl = slog.LevelDebug
		}
		attrs = append(attrs, a)
		return true
	})
	if lvl != level(r.Level) && !h.inner.Enabled(ctx, lvl) {
		return nil
	}
	out := slog.NewRecord(r.Time, lvl, firstLine(r.Message), r.PC)
	out.AddAttrs(attrs...)
	return h.inner.Handle(ctx, out)
}

func (h oneLineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i := range as {
		as[i] = oneLineAttr(as[i])
	}
	return oneLineHandler{h.inner.WithAttrs(as), h.stopped}
}

func (h oneLineHandler) WithGroup(name string) slog.Handler {
	return oneLineHandler{h.inner.WithGroup(name), h.stopped}
}

func oneLineAttr(a slog.Attr) slog.Attr {
	if a.Key == "query" {
		return slog.String(a.Key, "(not logged: SQL text may hold row values)")
	}
	v := a.Value.Resolve()
	if c, ok := v.Any().(replication.BinlogSyncerConfig); ok {
		// go-mysql logs its whole syncer config at start (replication/
		// binlogsyncer.go, "create BinlogSyncer"); it holds funcs, which
		// JSON cannot encode, and a TLS config. The settings that matter:
		return slog.Group(a.Key, "server_id", c.ServerID, "flavor", c.Flavor, "host", c.Host, "port", c.Port,
			"heartbeat", c.HeartbeatPeriod.String(), "read_timeout", c.ReadTimeout.String(), "tls", c.TLSConfig != nil)
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, firstLine(v.String()))
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, firstLine(err.Error()))
		}
		if s, ok := v.Any().(fmt.Stringer); ok {
			return slog.String(a.Key, firstLine(s.String()))
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i := range g {
			out[i] = oneLineAttr(g[i])
		}
		return slog.Group(a.Key, out...)
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// goMySQLLogger is the logger handed to go-mysql; once ctx ends (the
// stream stops) its records are DEBUG (see oneLineHandler.stopped).
func goMySQLLogger(ctx context.Context, l *slog.Logger) *slog.Logger {
	return slog.New(oneLineHandler{inner: l.Handler(), stopped: func() bool { return ctx.Err() != nil }}).With("component", "go-mysql")
}

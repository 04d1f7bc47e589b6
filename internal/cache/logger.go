package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SetLibraryLogger sends go-redis's own log lines (pool dial failures,
// reconnect notes), which by default go to stderr as plain text through
// the standard log package, to logger: at Debug level for a failed dial,
// which only repeats the error the cache returns to its caller (retried
// and logged there, with the stage), at Warn level otherwise. go-redis
// holds one logger per process (redis.SetLogger), so call this once, from
// main, before Open.
func SetLibraryLogger(logger *slog.Logger) {
	redis.SetLogger(libraryLogger{logger.With("component", "go-redis")})
}

type libraryLogger struct{ l *slog.Logger }

func (g libraryLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "connection pool: failed to dial") {
		level = slog.LevelDebug
	}
	g.l.Log(ctx, level, msg)
}

package cache

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// SetLibraryLogger sends go-redis's own log lines (pool dial failures,
// reconnect notes), which by default go to stderr through the standard log
// package, to logger at Warn level. go-redis holds one logger per process
// (redis.SetLogger), so call this once, from main, before Open.
func SetLibraryLogger(logger *slog.Logger) {
	redis.SetLogger(libraryLogger{logger.With("component", "go-redis")})
}

type libraryLogger struct{ l *slog.Logger }

func (g libraryLogger) Printf(ctx context.Context, format string, v ...any) {
	g.l.WarnContext(ctx, fmt.Sprintf(format, v...))
}

package cache

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestLibraryLoggerWritesToSlog(t *testing.T) {
	var buf bytes.Buffer
	l := libraryLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "go-redis")}
	// A failed dial only repeats the error the cache returns (and the
	// caller logs): debug level. Anything else go-redis says: a warning.
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts", 5)
	l.Printf(context.Background(), "redis: sentinel: new master=%q", "m")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines, got %q", buf.String())
	}
	for i, want := range [][]string{
		{"level=DEBUG", "component=go-redis", `msg="connection pool: failed to dial after 5 attempts"`},
		{"level=WARN", "component=go-redis", `msg="sentinel: new master=\"m\""`},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("log line %q does not contain %q", lines[i], w)
			}
		}
	}
}

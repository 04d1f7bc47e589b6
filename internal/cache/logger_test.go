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
	l := libraryLogger{slog.New(slog.NewTextHandler(&buf, nil)).With("component", "go-redis")}
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts", 5)
	out := buf.String()
	for _, want := range []string{"level=WARN", "component=go-redis", "failed to dial after 5 attempts"} {
		if !strings.Contains(out, want) {
			t.Errorf("log line %q does not contain %q", out, want)
		}
	}
}

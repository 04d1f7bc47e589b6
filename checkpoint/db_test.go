package checkpoint

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/dev/testenv"
)

// newDB is a fresh database for the test (testenv.PostgresPool).
func newDB(t testing.TB) (*pgxpool.Pool, string) { return testenv.PostgresPool(t) }

// testLogger sends a component's logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package checkpoint

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/testenv"
)

// newDB creates a fresh database named after the test on the machine's
// PostgreSQL (testenv.PostgresDB, dropped in cleanup) and returns a pool on
// it and its connection string.
func newDB(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	connString := testenv.PostgresDB(t)
	pool, err := pgxpool.New(context.Background(), connString)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool, connString
}

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

package pgstore

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/dev/testenv"
)

// newDB is a fresh database for the test (testenv.PostgresPool).
func newDB(t testing.TB) (*pgxpool.Pool, string) { return testenv.PostgresPool(t) }

package testenv

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresAdminDSN reaches the machine's PostgreSQL as a superuser; the
// environment variable DIALSYNC_TEST_POSTGRES overrides it.
var PostgresAdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func postgresAdminDSN() string {
	if v := os.Getenv("DIALSYNC_TEST_POSTGRES"); v != "" {
		return v
	}
	return PostgresAdminDSN
}

// PostgresDB creates a fresh database named Name(tb) on the machine's
// PostgreSQL and returns its DSN (a postgres:// URL for pgx). The database
// is dropped WITH (FORCE) when the test ends, so open connections do not
// block the cleanup.
func PostgresDB(tb testing.TB) string {
	tb.Helper()
	name := Name(tb)
	admin := postgresAdminDSN()
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		tb.Fatalf("testenv: parse postgres admin DSN: %v", err)
	}
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	ident := pgx.Identifier{name}.Sanitize()
	if err := exec("CREATE DATABASE " + ident); err != nil {
		tb.Fatalf("testenv: create postgres database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := exec("DROP DATABASE IF EXISTS " + ident + " WITH (FORCE)"); err != nil {
			tb.Errorf("testenv: drop postgres database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil || u.Scheme == "" {
		tb.Fatalf("testenv: postgres admin DSN must be a postgres:// URL to derive the test DSN")
	}
	u.Path = "/" + name
	return u.String()
}

// PostgresPool is PostgresDB plus a pool on it, closed at cleanup.
func PostgresPool(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	dsn := PostgresDB(tb)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("testenv: pool on %s: %v", Name(tb), err)
	}
	tb.Cleanup(pool.Close)
	return pool, dsn
}

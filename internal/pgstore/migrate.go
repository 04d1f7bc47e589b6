// Package pgstore owns dialsync's PostgreSQL schema (embedded, numbered
// migrations) and the state the apply loop writes there: the call queue,
// the notice outbox and dead letters. The checkpoint and the leader lease
// live in the top-level checkpoint package, on tables created here.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrSchemaTooNew is returned (wrapped, with both versions in the message)
// when the database was migrated by a newer dialsync than this binary.
// Running an old binary against a newer schema could write rows the newer
// release no longer understands, so we refuse instead.
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this binary")

// defaultUnlockTimeout bounds the advisory unlock at the end of Migrate.
const defaultUnlockTimeout = 5 * time.Second

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations is the ordered list parsed from migrations/NNNN_name.sql. The
// numbers must run 1, 2, 3, ... without gaps; loadMigrations enforces it so a
// misnamed file fails every test instead of silently being skipped.
var migrations = mustLoadMigrations()

func mustLoadMigrations() []migration {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		panic(err) // a broken embedded file set is a build defect, caught by any test
	}
	return ms
}

func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var ms []migration
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", base)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: bad version number %q", base, num)
		}
		body, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", base, err)
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d (versions must be contiguous from 1)", m.name, i+1)
		}
	}
	return ms, nil
}

// LatestVersion is the newest schema version this binary knows.
func LatestVersion() int { return len(migrations) }

// migrateLockKey is the advisory lock key serialising migrations of one
// schema across processes. FNV of a namespaced string keeps it apart from
// the checkpoint package's lease keys.
func migrateLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dialsync.migrate\x00" + schema))
	return int64(h.Sum64())
}

// Migrate creates schema (if needed) and applies every pending migration in
// order, each in its own transaction together with its schema_migrations
// row. A session-level advisory lock, held on one pooled connection for the
// whole run, makes concurrent Migrate calls (two instances starting at once)
// safe: the second waits, then finds nothing left to do. If the database is
// at a version newer than this binary knows, Migrate fails with
// ErrSchemaTooNew and changes nothing.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: acquire connection: %w", schema, err)
	}
	defer conn.Release()

	key := migrateLockKey(schema)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return fmt.Errorf("migrate %s: advisory lock: %w", schema, err)
	}
	defer func() {
		// Unlock with a fresh context: ctx may be cancelled, and a lock left
		// on a pooled connection would block every later migration. If the
		// unlock fails the connection is unusable; destroy it, which ends the
		// session and with it the lock.
		ctxU, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultUnlockTimeout)
		defer cancel()
		if _, err := conn.Exec(ctxU, "SELECT pg_advisory_unlock($1)", key); err != nil {
			_ = conn.Conn().Close(ctxU)
		}
	}()

	sch := pgx.Identifier{schema}.Sanitize()
	tbl := pgx.Identifier{schema, "schema_migrations"}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+sch); err != nil {
		return fmt.Errorf("migrate %s: create schema: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+tbl+` (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate %s: create schema_migrations: %w", schema, err)
	}

	var current int
	if err := conn.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM "+tbl).Scan(&current); err != nil {
		return fmt.Errorf("migrate %s: read version: %w", schema, err)
	}
	if err := checkNotTooNew(schema, current); err != nil {
		return err
	}

	for _, m := range migrations[current:] {
		if err := applyMigration(ctx, conn.Conn(), schema, tbl, m); err != nil {
			return err
		}
	}
	return nil
}

func checkNotTooNew(schema string, current int) error {
	if current > LatestVersion() {
		return fmt.Errorf("%w: schema %s is at version %d, this binary knows up to %d: upgrade dialsync",
			ErrSchemaTooNew, schema, current, LatestVersion())
	}
	return nil
}

func applyMigration(ctx context.Context, conn *pgx.Conn, schema, tbl string, m migration) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The migration files use unqualified names; SET LOCAL scopes the
		// search_path to this transaction so the pooled connection is not
		// left pointing at our schema.
		if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("set search_path: %w", err)
		}
		// Exec without arguments uses the simple protocol, which accepts a
		// file of several statements.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("record version: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate %s: apply %s: %w", schema, m.name, err)
	}
	return nil
}

// Version returns the schema's migration version: 0 when the schema or its
// schema_migrations table does not exist yet.
func Version(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL",
		pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&exists); err != nil {
		return 0, fmt.Errorf("schema version %s: %w", schema, err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := pool.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM "+
		pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version %s: %w", schema, err)
	}
	return v, nil
}

// CheckVersion fails unless schema is exactly at LatestVersion: for
// commands that must not migrate (read-only tools) but need the tables.
// A newer schema gives ErrSchemaTooNew.
func CheckVersion(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	v, err := Version(ctx, pool, schema)
	if err != nil {
		return err
	}
	if err := checkNotTooNew(schema, v); err != nil {
		return err
	}
	if v < LatestVersion() {
		return fmt.Errorf("schema %s is at version %d, this binary needs %d: run dialsync (it migrates at start)",
			schema, v, LatestVersion())
	}
	return nil
}

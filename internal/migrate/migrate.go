// Package migrate applies the embedded, numbered SQL migrations of every
// package that owns dialsync tables in PostgreSQL, in one order and with one
// history: the schema_migrations table of the configured schema.
//
// Each owner ships its own files, NNNN_description.sql, and hands them over
// as a Source. The numbers are one sequence across owners (an owner's files
// may skip the numbers of another's), so the history is one list and a
// database's version is one number whatever package a step belongs to. A
// version may have parts in several owners (version 1 created the tables of
// all of them at once): its parts share the name, run in the order the
// sources are given, in one transaction, and are recorded as one row.
//
// The list of owners is dialsync/internal/dbschema's; this package knows
// none of them.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrSchemaTooNew is returned (wrapped, with both versions in the message)
// when the database was migrated by a newer dialsync than this binary.
// Running an old binary against a newer schema could write rows the newer
// release no longer understands, so we refuse instead. (The text predates
// this package and is kept: operators search logs for it.)
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this binary")

// ErrNoSchema is Check's error (wrapped) when the schema was never
// migrated: a read-only command has nothing to read yet.
var ErrNoSchema = errors.New("never migrated")

// defaultUnlockTimeout bounds the advisory unlock at the end of Migrate.
const defaultUnlockTimeout = 5 * time.Second

// Source is one owner's migrations.
type Source struct {
	// Owner names the package whose tables the files create (for errors).
	Owner string
	// FS holds the files, NNNN_description.sql, at its root.
	FS fs.FS
}

// Plan is the ordered list of every source's migrations. Build it with New.
type Plan struct {
	steps []step
}

// step is one version: one row of schema_migrations, one transaction.
type step struct {
	version int
	name    string // the file name without .sql, e.g. 0001_init
	parts   []part // in source order
}

type part struct {
	owner string
	sql   string
}

// New reads the sources and orders their migrations. Every file must be
// named NNNN_description.sql; one source may not use a number twice; parts
// of one version in several sources must have the same name; and the
// versions of all sources together must run 1, 2, 3, ... without gaps, so a
// misnamed or missing file fails every test instead of silently being
// skipped.
func New(sources ...Source) (*Plan, error) {
	byVersion := make(map[int]*step)
	owners := make(map[string]bool)
	for _, src := range sources {
		if src.Owner == "" || owners[src.Owner] {
			return nil, fmt.Errorf("migration source %q: owners must be named and distinct", src.Owner)
		}
		owners[src.Owner] = true
		files, err := load(src)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			st := byVersion[f.version]
			if st == nil {
				st = &step{version: f.version, name: f.name}
				byVersion[f.version] = st
			} else if st.name != f.name {
				return nil, fmt.Errorf("migration %s (%s): version %d is already %s (%s): two owners took the same number",
					f.name, src.Owner, f.version, st.name, st.parts[0].owner)
			}
			st.parts = append(st.parts, part{owner: src.Owner, sql: f.sql})
		}
	}
	p := &Plan{steps: make([]step, 0, len(byVersion))}
	for _, st := range byVersion {
		p.steps = append(p.steps, *st)
	}
	sort.Slice(p.steps, func(i, j int) bool { return p.steps[i].version < p.steps[j].version })
	for i, st := range p.steps {
		if st.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d (versions must be contiguous from 1 across all owners)", st.name, i+1)
		}
	}
	return p, nil
}

// MustNew is New for the embedded sources of a binary: a broken file set is
// a build defect, caught by any test.
func MustNew(sources ...Source) *Plan {
	p, err := New(sources...)
	if err != nil {
		panic(err)
	}
	return p
}

type file struct {
	version int
	name    string
	sql     string
}

// load reads one source's files, ordered by version.
func load(src Source) ([]file, error) {
	names, err := fs.Glob(src.FS, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list %s migrations: %w", src.Owner, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no migrations (NNNN_description.sql) in its source", src.Owner)
	}
	seen := make(map[int]string)
	var out []file
	for _, n := range names {
		num, _, ok := strings.Cut(n, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s (%s): name must be NNNN_description.sql", n, src.Owner)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s (%s): bad version number %q", n, src.Owner, num)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migration %s (%s): version %d is also %s", n, src.Owner, v, other)
		}
		seen[v] = n
		body, err := fs.ReadFile(src.FS, n)
		if err != nil {
			return nil, fmt.Errorf("read migration %s (%s): %w", n, src.Owner, err)
		}
		out = append(out, file{version: v, name: strings.TrimSuffix(n, ".sql"), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// Latest is the newest schema version the plan knows.
func (p *Plan) Latest() int { return len(p.steps) }

// lockKey is the advisory lock key serialising migrations of one schema
// across processes. FNV of a namespaced string keeps it apart from the
// checkpoint package's lease keys. The string is the one dialsync has
// always used, so a binary from before the owners were split and one from
// after still exclude each other.
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dialsync.migrate\x00" + schema))
	return int64(h.Sum64())
}

// Migrate creates schema (if needed) and applies every pending version in
// order, each in its own transaction together with its schema_migrations
// row. A session-level advisory lock, held on one pooled connection for the
// whole run, makes concurrent Migrate calls (two instances starting at once)
// safe: the second waits, then finds nothing left to do. If the database is
// at a version newer than the plan knows, Migrate fails with
// ErrSchemaTooNew and changes nothing.
func (p *Plan) Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	// Nothing to do needs no privilege: a role without CREATE can run on a
	// schema an administrator migrated (docs/troubleshooting.md).
	if v, err := Version(ctx, pool, schema); err == nil && v >= p.Latest() {
		return p.checkNotTooNew(schema, v)
	}
	if err := p.migrate(ctx, pool, schema); err != nil {
		return explainDenied(ctx, pool, schema, err)
	}
	return nil
}

func (p *Plan) migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: acquire connection: %w", schema, err)
	}
	defer conn.Release()

	key := lockKey(schema)
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
	// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
	// the schema exists: skip it for a schema an administrator created
	// (CREATE SCHEMA ... AUTHORIZATION, see deploy/postgres/grants.sql).
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		return fmt.Errorf("migrate %s: look up the schema: %w", schema, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+sch); err != nil {
			return fmt.Errorf("migrate %s: create schema: %w", schema, err)
		}
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
	if err := p.checkNotTooNew(schema, current); err != nil {
		return err
	}

	for _, st := range p.steps[current:] {
		if err := apply(ctx, conn.Conn(), schema, tbl, st); err != nil {
			return err
		}
	}
	return nil
}

func (p *Plan) checkNotTooNew(schema string, current int) error {
	if current > p.Latest() {
		return fmt.Errorf("%w: schema %s is at version %d, this binary knows up to %d: upgrade dialsync",
			ErrSchemaTooNew, schema, current, p.Latest())
	}
	return nil
}

func apply(ctx context.Context, conn *pgx.Conn, schema, tbl string, st step) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The migration files use unqualified names; SET LOCAL scopes the
		// search_path to this transaction so the pooled connection is not
		// left pointing at our schema.
		if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("set search_path: %w", err)
		}
		for _, pt := range st.parts {
			// Exec without arguments uses the simple protocol, which
			// accepts a file of several statements.
			if _, err := tx.Exec(ctx, pt.sql); err != nil {
				if len(st.parts) > 1 {
					return fmt.Errorf("%s part: %w", pt.owner, err)
				}
				return err
			}
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" (version, name) VALUES ($1, $2)", st.version, st.name); err != nil {
			return fmt.Errorf("record version: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate %s: apply %s: %w", schema, st.name, err)
	}
	return nil
}

// explainDenied adds the fix to a migration PostgreSQL refused for lack of
// a privilege (SQLSTATE 42501): who lacks what, and the two ways out.
func explainDenied(ctx context.Context, pool *pgxpool.Pool, schema string, err error) error {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "42501" { // insufficient_privilege
		return err
	}
	user, db := "the postgres.dsn user", "the database"
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var u, d string
	if pool.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&u, &d) == nil {
		user, db = pgx.Identifier{u}.Sanitize(), pgx.Identifier{d}.Sanitize()
	}
	sch := pgx.Identifier{schema}.Sanitize()
	return fmt.Errorf("%w: the postgres.dsn user may not create dialsync's tables: GRANT CREATE ON DATABASE %s TO %s; (dialsync then creates schema %s), "+
		"or have an administrator run CREATE SCHEMA %s AUTHORIZATION %s; (see deploy/postgres/grants.sql), or let an administrator run `dialsync run` once to migrate",
		err, db, user, schema, sch, user)
}

// Version returns the schema's migration version: 0 when the schema or its
// schema_migrations table does not exist yet. It only reads.
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

// Check fails unless schema is exactly at Latest: for commands that must
// not migrate (read-only tools) but need the tables. A newer schema gives
// ErrSchemaTooNew.
func (p *Plan) Check(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	v, err := Version(ctx, pool, schema)
	if err != nil {
		return err
	}
	if err := p.checkNotTooNew(schema, v); err != nil {
		return err
	}
	if v == 0 {
		return fmt.Errorf("no dialsync schema %s yet in this database (%w): run `dialsync run` once (it creates it); this command only reads", schema, ErrNoSchema)
	}
	if v < p.Latest() {
		return fmt.Errorf("schema %s is at version %d, this binary needs %d: run `dialsync run` once (it migrates at start); this command only reads",
			schema, v, p.Latest())
	}
	return nil
}

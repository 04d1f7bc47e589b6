// Package dbschema is dialsync's PostgreSQL schema as a whole: the list of
// the packages that own tables, in the order their migrations run, and the
// schema version of the binary. Each owner keeps its migrations and every
// statement on its tables; this package only names them for the one runner
// (dialsync/internal/migrate).
//
// Owners and their tables:
//   - dialsync/checkpoint: checkpoints, checkpoint_history, claim_owners,
//     user_pointers, leases, lease_heartbeats
//   - dialsync/internal/pgstore (the queue store): call_queue, outbox,
//     dead_letters, queue_marks
//
// plus schema_migrations, the runner's history.
package dbschema

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/checkpoint"
	"dialsync/internal/migrate"
	"dialsync/internal/pgstore"
)

// sources are the owners' migrations in the order the runner applies the
// parts of a shared version (version 1 created the checkpoint's tables
// first, then the queue store's).
func sources() []migrate.Source {
	return []migrate.Source{
		{Owner: "checkpoint", FS: checkpoint.Migrations()},
		{Owner: "pgstore", FS: pgstore.Migrations()},
	}
}

var plan = migrate.MustNew(sources()...)

// ErrSchemaTooNew is returned (wrapped) when the database was migrated by a
// newer dialsync than this binary (migrate.ErrSchemaTooNew).
var ErrSchemaTooNew = migrate.ErrSchemaTooNew

// ErrNoSchema is returned (wrapped) by CheckVersion when the schema was
// never migrated (migrate.ErrNoSchema).
var ErrNoSchema = migrate.ErrNoSchema

// LatestVersion is the newest schema version this binary knows.
func LatestVersion() int { return plan.Latest() }

// Migrate creates schema (if needed) and applies every pending migration of
// every owner (migrate.Plan.Migrate). Only commands that write may call it.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return plan.Migrate(ctx, pool, schema)
}

// Version returns the schema's migration version without changing
// anything: 0 when the schema or its history does not exist yet.
func Version(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	return migrate.Version(ctx, pool, schema)
}

// CheckVersion fails unless schema is exactly at LatestVersion: for
// commands that must not migrate (read-only tools) but need the tables.
// A newer schema gives ErrSchemaTooNew.
func CheckVersion(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return plan.Check(ctx, pool, schema)
}

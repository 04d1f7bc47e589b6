package checkpoint

import (
	"embed"
	"io/fs"
)

// The package's tables, created by its own migrations (migrations/*.sql):
// checkpoints, checkpoint_history, claim_owners and user_pointers (Store),
// leases and lease_heartbeats (Lease). No other package writes them; a
// cross-table action goes through this package's API (Store.PruneHistory)
// or through a hook it runs in its own transaction (Store.SetOnMove).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns this package's schema migrations, NNNN_description.sql
// at the root, for the one migration runner (dialsync/internal/migrate;
// dialsync/internal/dbschema lists every owner). The numbers are one
// sequence across owners, so this package's files skip those of others.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // a constant, valid path into the embedded files
	}
	return sub
}

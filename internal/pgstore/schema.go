// Package pgstore is the queue store: the state the apply loop writes to
// PostgreSQL beside the checkpoint, that is the call queue, the notice
// outbox, dead letters and the queue mark. It owns those tables (call_queue,
// outbox, dead_letters, queue_marks): their migrations (Migrations) and
// every statement on them. The checkpoint and the leader lease, and their
// tables, belong to the top-level checkpoint package; where an action spans
// both (moving the checkpoint drops the queue mark, housekeeping prunes the
// checkpoint history with the dead letters) each side runs its own
// statements in one shared transaction (Queue.DropMark, Queue.Prune).
package pgstore

import (
	"embed"
	"io/fs"
)

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

package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Counts is how much of the queue store's state is waiting, for dialsync
// status.
type Counts struct {
	// Queued is the call_queue size (the table is shared by every
	// pipeline of the schema).
	Queued int64
	// Outbox is this pipeline's notices stored but not yet acknowledged
	// by JetStream.
	Outbox int64
	// DeadLetters is this pipeline's dead letters not yet retried, the
	// oldest recorded at OldestDeadLetter (zero when none).
	DeadLetters      int64
	OldestDeadLetter time.Time
}

// ReadCounts reads Counts in schema without a Queue (read-only tools,
// which must not migrate): a schema without the tables fails with the
// server's undefined_table error (42P01), wrapped.
func ReadCounts(ctx context.Context, pool *pgxpool.Pool, schema, pipeline string) (Counts, error) {
	var c Counts
	var oldest *time.Time
	err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM `+pgx.Identifier{schema, "call_queue"}.Sanitize()+`),
			(SELECT count(*) FROM `+pgx.Identifier{schema, "outbox"}.Sanitize()+` WHERE pipeline = $1),
			(SELECT count(*) FROM `+pgx.Identifier{schema, "dead_letters"}.Sanitize()+` WHERE pipeline = $1 AND retried_at IS NULL),
			(SELECT min(at) FROM `+pgx.Identifier{schema, "dead_letters"}.Sanitize()+` WHERE pipeline = $1 AND retried_at IS NULL)`,
		pipeline).Scan(&c.Queued, &c.Outbox, &c.DeadLetters, &oldest)
	if err != nil {
		return Counts{}, fmt.Errorf("read queue store counts: %w", err)
	}
	if oldest != nil {
		c.OldestDeadLetter = oldest.UTC()
	}
	return c, nil
}

package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/queue"
)

// StoredRow is a call_queue row as stored, with the times the queue store
// keeps beside the rule's values.
type StoredRow struct {
	queue.Row
	EnteredAt, UpdatedAt time.Time // UTC
}

// ReadQueueRow returns user's call_queue row in schema; found is false when
// the user is not queued. It only reads and needs no Queue (read-only tools
// such as explain, which must not migrate): a schema without call_queue
// fails with the server's undefined_table error (42P01), wrapped.
func ReadQueueRow(ctx context.Context, pool *pgxpool.Pool, schema string, user uint64) (r StoredRow, found bool, err error) {
	if user > math.MaxInt64 {
		return StoredRow{}, false, nil // call_queue.user_id is bigint: no such row can exist
	}
	var oc, pr int32
	var oldest, entered, updated pgtype.Timestamptz
	err = pool.QueryRow(ctx, `SELECT open_claims, pending_requirements, oldest_pending_at, entered_at, updated_at
		FROM `+pgx.Identifier{schema, "call_queue"}.Sanitize()+` WHERE user_id = $1`, int64(user)).
		Scan(&oc, &pr, &oldest, &entered, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return StoredRow{}, false, nil
	}
	if err != nil {
		return StoredRow{}, false, fmt.Errorf("read call_queue: %w", err)
	}
	r.UserID, r.OpenClaims, r.PendingRequirements = user, int64(oc), int64(pr)
	r.OldestPendingAt = fromTimestamptz(oldest)
	r.EnteredAt, r.UpdatedAt = entered.Time.UTC(), updated.Time.UTC()
	return r, true, nil
}

package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LeaseState is what PostgreSQL knows of a pipeline's leadership, read
// without taking anything (dialsync status).
type LeaseState struct {
	// Held: an instance holds the advisory lock now.
	Held bool
	// Holder, Epoch, AcquiredAt: the leases row (empty when no lease was
	// ever taken).
	Holder     string
	Epoch      int64
	AcquiredAt time.Time
	// HeartbeatAge is how long ago the holder of Epoch last renewed its
	// heartbeat, measured by PostgreSQL (now() - renewed_at, so no two
	// clocks are compared); negative when there is no leases row.
	HeartbeatAge time.Duration
}

// ReadLease reads pipeline's lease state in schema. A standby judges the
// leader by the same heartbeat (Lease.acquire): stale once older than the
// lease TTL.
func ReadLease(ctx context.Context, pool *pgxpool.Pool, schema, pipeline string) (LeaseState, error) {
	hi, lo := lockArgs(leaseKey(schema, pipeline))
	leases := pgx.Identifier{schema, "leases"}.Sanitize()
	beats := pgx.Identifier{schema, "lease_heartbeats"}.Sanitize()
	var st LeaseState
	var age float64
	err := pool.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_locks WHERE `+lockFilter+`),
			x.holder, x.epoch, x.acquired_at,
			EXTRACT(EPOCH FROM now() - GREATEST(x.renewed_at, COALESCE(
				(SELECT b.renewed_at FROM `+beats+` b WHERE b.pipeline = x.pipeline AND b.epoch = x.epoch), x.renewed_at)))::float8
		FROM `+leases+` x WHERE x.pipeline = $3`, hi, lo, pipeline).
		Scan(&st.Held, &st.Holder, &st.Epoch, &st.AcquiredAt, &age)
	if errors.Is(err, pgx.ErrNoRows) {
		// Never led; the lock may still be held by a leader of an older
		// release that writes no row first (it would be listed then).
		_, _, held, herr := Holder(ctx, pool, schema, pipeline)
		return LeaseState{Held: held, HeartbeatAge: -1}, herr
	}
	if err != nil {
		return LeaseState{}, fmt.Errorf("read lease %q: %w", pipeline, err)
	}
	st.AcquiredAt = st.AcquiredAt.UTC()
	st.HeartbeatAge = time.Duration(age * float64(time.Second))
	return st, nil
}

// Age is how long ago the stored checkpoint was written, by PostgreSQL's
// clock (found is false when there is none).
func (s *Store) Age(ctx context.Context) (age time.Duration, found bool, err error) {
	var secs float64
	err = s.pool.QueryRow(ctx, `SELECT EXTRACT(EPOCH FROM now() - updated_at)::float8 FROM `+s.checkpoints+` WHERE pipeline = $1`, s.pipeline).Scan(&secs)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("checkpoint age %q: %w", s.pipeline, err)
	}
	return time.Duration(secs * float64(time.Second)), true, nil
}

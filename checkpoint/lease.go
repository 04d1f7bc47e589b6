package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Lease timings. Var, not const, so tests can shorten them.
var (
	// leasePollInterval is how often a waiting instance retries the lock.
	leasePollInterval = 250 * time.Millisecond
	// leaseCheckInterval is how often a holder checks that its lock
	// connection is alive and the epoch is still its own.
	leaseCheckInterval = time.Second
	// leaseCheckTimeout bounds one check; a server that cannot answer a
	// trivial query in this time is treated as lost (fencing keeps a false
	// alarm harmless: the instance re-acquires with a new epoch).
	leaseCheckTimeout = 3 * time.Second
)

// Lease is leadership of one pipeline: a session-level advisory lock held on
// a dedicated connection (PostgreSQL releases it when that session ends, so
// a crashed or partitioned leader loses it without any timeout of ours)
// plus the epoch that fences checkpoint saves (see the package comment).
//
// The dedicated connection must be a real session: behind a pgbouncer in
// transaction pooling mode advisory session locks do not work; point the
// DSN at PostgreSQL or a session-mode pool.
type Lease struct {
	conn     *pgx.Conn
	key      int64
	epoch    int64
	pipeline string
	leases   string
	logger   *slog.Logger

	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex // guards released
	released bool
}

// leaseKey is the advisory lock key of (schema, pipeline). Computed here
// rather than with hashtext() so Holder can find it in pg_locks.
func leaseKey(schema, pipeline string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dialsync.lease\x00" + schema + "\x00" + pipeline))
	return int64(h.Sum64())
}

// AcquireLease blocks until this process holds the lease of pipeline, then
// increments the pipeline's epoch in leases (recording holder, a name for
// this instance such as "host:pid") and returns the lease. It polls every
// 250 ms and returns ctx's error when ctx ends first. Migrations must have
// run.
func AcquireLease(ctx context.Context, connString, schema, pipeline, holder string, logger *slog.Logger) (*Lease, error) {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "lease", "pipeline", pipeline)
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("acquire lease %q: connect: %w", pipeline, err)
	}
	l := &Lease{
		conn:     conn,
		key:      leaseKey(schema, pipeline),
		pipeline: pipeline,
		leases:   pgx.Identifier{schema, "leases"}.Sanitize(),
		logger:   logger,
		lost:     make(chan struct{}),
		stop:     make(chan struct{}),
	}
	if err := l.acquire(ctx, holder); err != nil {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx) // ends the session, dropping the lock if we got it
		return nil, fmt.Errorf("acquire lease %q: %w", pipeline, err)
	}
	logger.Info("lease acquired", "epoch", l.epoch, "holder", holder)
	l.wg.Add(1)
	go l.monitor()
	return l, nil
}

func (l *Lease) acquire(ctx context.Context, holder string) error {
	t := time.NewTicker(leasePollInterval)
	defer t.Stop()
	for waiting := false; ; waiting = true {
		var got bool
		if err := l.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", l.key).Scan(&got); err != nil {
			return fmt.Errorf("try lock: %w", err)
		}
		if got {
			break
		}
		if !waiting {
			// Said once, not at every poll: a standby waits here for hours.
			var who string
			var epoch int64
			err := l.conn.QueryRow(ctx, `SELECT holder, epoch FROM `+l.leases+` WHERE pipeline = $1`, l.pipeline).Scan(&who, &epoch)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("read holder: %w", err)
			}
			l.logger.Info("lease held by another instance; standing by", "holder", who, "epoch", epoch)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	err := l.conn.QueryRow(ctx, `INSERT INTO `+l.leases+` AS l (pipeline, epoch, holder, acquired_at)
		VALUES ($1, 1, $2, now())
		ON CONFLICT (pipeline) DO UPDATE SET epoch = l.epoch + 1, holder = excluded.holder, acquired_at = excluded.acquired_at
		RETURNING epoch`, l.pipeline, holder).Scan(&l.epoch)
	if err != nil {
		return fmt.Errorf("increment epoch: %w", err)
	}
	return nil
}

// monitor checks the lock connection and the epoch every second; the first
// failure marks the lease lost. It is the only user of conn until Release
// stops it.
func (l *Lease) monitor() {
	defer l.wg.Done()
	t := time.NewTicker(leaseCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaseCheckTimeout)
		var epoch int64
		err := l.conn.QueryRow(ctx, `SELECT epoch FROM `+l.leases+` WHERE pipeline = $1`, l.pipeline).Scan(&epoch)
		cancel()
		switch {
		case err != nil:
			l.logger.Warn("lease lost: lock connection failed", "epoch", l.epoch, "err", err)
		case epoch != l.epoch:
			l.logger.Warn("lease lost: epoch moved on", "epoch", l.epoch, "stored_epoch", epoch)
		default:
			continue
		}
		l.markLost()
		// Close the session so the lock is surely released: after a
		// failure we can no longer vouch for it.
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		_ = l.conn.Close(ctx)
		cancel()
		return
	}
}

func (l *Lease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// Epoch is the leadership term this lease holds; pass it to Store.SetEpoch.
func (l *Lease) Epoch() int64 { return l.epoch }

// Lost is closed when the lease is no longer held: the lock connection died,
// a check failed, the epoch in leases moved on, or Release was called. The
// holder must stop its pipeline; its checkpoint saves are fenced anyway.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the lease up: stops the checks, unlocks and closes the
// dedicated connection, and closes Lost. Safe to call more than once and
// after the lease was lost.
func (l *Lease) Release(ctx context.Context) error {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	defer l.markLost()
	if l.conn.IsClosed() {
		return nil
	}
	_, err := l.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", l.key)
	// Closing the session releases the lock even if the unlock failed.
	closeErr := l.conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("release lease %q: unlock: %w", l.pipeline, err)
	}
	if closeErr != nil {
		return fmt.Errorf("release lease %q: close: %w", l.pipeline, closeErr)
	}
	l.logger.Info("lease released", "epoch", l.epoch)
	return nil
}

// Holder tells whether an instance holds pipeline's lease right now (its
// advisory lock is granted in pg_locks of this database) and who last
// recorded themselves in leases, with their epoch (holder is "" and epoch 0
// when no lease was ever taken). Recovery commands refuse while held.
func Holder(ctx context.Context, pool *pgxpool.Pool, schema, pipeline string) (holder string, epoch int64, held bool, err error) {
	key := uint64(leaseKey(schema, pipeline))
	// pg_locks shows a bigint advisory key split in two: the high half in
	// classid, the low half in objid, with objsubid = 1
	// (https://www.postgresql.org/docs/current/view-pg-locks.html).
	var h *string
	var e *int64
	err = pool.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_locks
				WHERE locktype = 'advisory' AND granted AND objsubid = 1
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND classid::bigint = $1 AND objid::bigint = $2),
			(SELECT holder FROM `+pgx.Identifier{schema, "leases"}.Sanitize()+` WHERE pipeline = $3),
			(SELECT epoch FROM `+pgx.Identifier{schema, "leases"}.Sanitize()+` WHERE pipeline = $3)`,
		int64(key>>32), int64(key&0xffffffff), pipeline).Scan(&held, &h, &e)
	if err != nil {
		return "", 0, false, fmt.Errorf("lease holder %q: %w", pipeline, err)
	}
	if h != nil {
		holder = *h
	}
	if e != nil {
		epoch = *e
	}
	return holder, epoch, held, nil
}

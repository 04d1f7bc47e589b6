package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Lease defaults (docs/design.md, "HA: lease, epoch and fencing": the standby takes over within seconds).
const (
	// DefaultLeaseCheck is how often a leader renews its heartbeat
	// (config ha.lease_check).
	DefaultLeaseCheck = time.Second
	// DefaultLeaseTTL is how old a leader's heartbeat may get before a
	// standby deposes it, and how long a leader that cannot renew keeps
	// writing. Three renewals' worth: one slow query or a short GC pause does
	// not cost a takeover, and a paused leader is replaced in about 3 s.
	DefaultLeaseTTL = 3 * time.Second
	// defaultLeasePoll is how often a standby retries the lock: a leader
	// that dies (its session ends) is replaced within this much.
	defaultLeasePoll = 250 * time.Millisecond
)

// LeaseOptions tunes a lease. Zero fields take the defaults.
type LeaseOptions struct {
	// CheckInterval is how often the leader renews its heartbeat
	// (DefaultLeaseCheck).
	CheckInterval time.Duration
	// TTL is the heartbeat age after which a standby terminates the
	// holder's session and takes over; the leader gives up on its own when
	// it could not renew for this long (DefaultLeaseTTL). Must exceed
	// CheckInterval; twice or more is sensible.
	TTL time.Duration
	// PollInterval is how often a standby retries (250 ms, or CheckInterval
	// when that is shorter).
	PollInterval time.Duration
}

func (o LeaseOptions) withDefaults() (LeaseOptions, error) {
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultLeaseCheck
	}
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.PollInterval <= 0 {
		o.PollInterval = min(defaultLeasePoll, o.CheckInterval)
	}
	if o.TTL <= o.CheckInterval {
		return o, fmt.Errorf("lease TTL %s must be longer than the check interval %s", o.TTL, o.CheckInterval)
	}
	return o, nil
}

// Lease is leadership of one pipeline: a session-level advisory lock held on
// a dedicated connection, plus a heartbeat in leases, plus the epoch that
// fences checkpoint saves (see the package comment).
//
// How an instance stops being leader:
//   - It dies or its network drops: PostgreSQL ends the session and releases
//     the lock; a standby polling every 250 ms takes it.
//   - It is paused (SIGSTOP, a frozen VM, a long stall): its TCP connection
//     and so its lock stay up, and PostgreSQL never notices. So the leader
//     renews leases.renewed_at every CheckInterval on its lock connection,
//     and a standby that finds the heartbeat older than TTL (measured on the
//     PostgreSQL clock, so instance clocks do not matter) terminates the
//     session holding the advisory lock (found in pg_locks) with
//     pg_terminate_backend, then takes the lock and increments the epoch.
//     Terminating needs the same role as the holder (or pg_signal_backend):
//     both instances use the same configuration, so that holds.
//   - It cannot renew within TTL (PostgreSQL slow or unreachable): it gives
//     up on its own (Lost), since a standby may take over at that moment.
//     Its deadline counts from when it SENT its last successful renewal,
//     which is no later than the renewed_at the standby reads, so it stops
//     before a standby can depose it (barring clocks running at different
//     rates). It also checks this deadline first thing at each tick, so a
//     leader woken from a pause past TTL steps down without a round trip.
//
// Whatever the timing, safety does not depend on it: the deposed leader's
// checkpoint saves are fenced by the epoch (ErrFenced, which is fatal to the
// apply loop), so it can never move the checkpoint once another instance
// incremented the epoch. What it may still do before noticing is redo the
// effects that come before a checkpoint: delete Redis keys (idempotent),
// publish notices (their ids derive from (transaction, user), so JetStream's
// duplicate window drops a republished one), and write queue rows computed
// from the lookup server. The new leader replays from the checkpoint the old
// one last stored, so every transaction after it is recomputed again. The
// one residual risk is a queue write computed BEFORE the pause and committed
// AFTER the new leader wrote the same user: it stays stale until that user
// changes again or the periodic reconcile repairs it (fencing the queue
// transaction by the epoch too would close that window).
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
	beats    string // lease_heartbeats
	opt      LeaseOptions
	logger   *slog.Logger

	lost     chan struct{}
	lostOnce sync.Once
	lostErr  atomic.Pointer[error]
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

// lockFilter selects the granted advisory lock of key $1 (high half) / $2
// (low half) in this database. pg_locks shows a bigint advisory key split
// in two: the high half in classid, the low half in objid, with objsubid = 1
// (https://www.postgresql.org/docs/current/view-pg-locks.html).
const lockFilter = `locktype = 'advisory' AND granted AND objsubid = 1
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND classid::bigint = $1 AND objid::bigint = $2`

func lockArgs(key int64) (hi, lo int64) {
	k := uint64(key)
	return int64(k >> 32), int64(k & 0xffffffff)
}

// AcquireLease is AcquireLeaseWith with the default options.
func AcquireLease(ctx context.Context, connString, schema, pipeline, holder string, logger *slog.Logger) (*Lease, error) {
	return AcquireLeaseWith(ctx, connString, schema, pipeline, holder, LeaseOptions{}, logger)
}

// AcquireLeaseWith blocks until this process holds the lease of pipeline,
// then returns it. holder names this instance (such as "host/pid-N") in
// leases and the logs. While another instance holds the lease it polls,
// and deposes that instance when its heartbeat is older than opt.TTL (see
// Lease). It returns ctx's error when ctx ends first. Migrations must have
// run.
func AcquireLeaseWith(ctx context.Context, connString, schema, pipeline, holder string, opt LeaseOptions, logger *slog.Logger) (*Lease, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("acquire lease %q: %w", pipeline, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	// The caller's logger names the pipeline already (a record with a key
	// twice is rejected by some log stores).
	logger = logger.With("component", "lease")
	conn, err := connectPG(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("acquire lease %q: connect: %w", pipeline, err)
	}
	l := &Lease{
		conn:     conn,
		key:      leaseKey(schema, pipeline),
		pipeline: pipeline,
		leases:   pgx.Identifier{schema, "leases"}.Sanitize(),
		beats:    pgx.Identifier{schema, "lease_heartbeats"}.Sanitize(),
		opt:      opt,
		logger:   logger,
		lost:     make(chan struct{}),
		stop:     make(chan struct{}),
	}
	renewed, err := l.acquire(ctx, connString, holder)
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx) // ends the session, dropping the lock if we got it
		return nil, fmt.Errorf("acquire lease %q: %w", pipeline, err)
	}
	logger.Info("lease acquired: this instance is the leader", "epoch", l.epoch, "holder", holder, "ttl", opt.TTL.String())
	l.wg.Add(1)
	go l.monitor(renewed)
	return l, nil
}

// acquire polls until it takes the lock; it returns when the heartbeat was
// written (the start of the leader's first TTL).
func (l *Lease) acquire(ctx context.Context, connString, holder string) (time.Time, error) {
	hi, lo := lockArgs(l.key)
	standingBy, deposing := false, false
	for {
		sent := time.Now()
		var got bool
		var err error
		if deposing {
			got, err = l.takeDeposing(ctx, connString, holder)
		} else {
			got, err = l.take(ctx, holder)
		}
		if err != nil {
			return time.Time{}, err
		}
		if got {
			return sent, nil
		}
		// Someone holds the lock: is its heartbeat fresh? Ages are computed
		// by PostgreSQL (now() - renewed_at) so no two clocks are compared.
		var who *string
		var epoch *int64
		var age *float64
		var pid *int32
		err = l.conn.QueryRow(ctx, `SELECT
				(SELECT holder FROM `+l.leases+` WHERE pipeline = $3),
				(SELECT epoch FROM `+l.leases+` WHERE pipeline = $3),
				(SELECT EXTRACT(EPOCH FROM now() - GREATEST(x.renewed_at, COALESCE(
					(SELECT b.renewed_at FROM `+l.beats+` b WHERE b.pipeline = x.pipeline AND b.epoch = x.epoch), x.renewed_at)))::float8
					FROM `+l.leases+` x WHERE x.pipeline = $3),
				(SELECT pid FROM pg_locks WHERE `+lockFilter+` LIMIT 1)`,
			hi, lo, l.pipeline).Scan(&who, &epoch, &age, &pid)
		if err != nil {
			return time.Time{}, fmt.Errorf("read holder: %w", err)
		}
		if !standingBy {
			// Said once, not at every poll: a standby waits here for hours.
			standingBy = true
			l.logger.Info("lease held by another instance; standing by", "holder", deref(who), "epoch", deref(epoch))
		}
		wait := l.opt.PollInterval
		// No leases row means the lock holder is not a dialsync leader (a
		// leader writes its row in the statement that takes the lock):
		// leave it alone. No pid means the lock was just released.
		if age != nil && pid != nil && time.Duration(*age*float64(time.Second)) > l.opt.TTL {
			l.logger.Warn("leader heartbeat is stale: terminating its session to take over",
				"holder", deref(who), "epoch", deref(epoch), "heartbeat_age", time.Duration(*age*float64(time.Second)).Round(time.Millisecond).String(),
				"ttl", l.opt.TTL.String(), "backend_pid", *pid)
			if _, err := l.conn.Exec(ctx, "SELECT pg_terminate_backend($1)", *pid); err != nil {
				return time.Time{}, fmt.Errorf("terminate stale holder (backend %d): %w", *pid, err)
			}
			// The backend exits (and frees the lock) asynchronously; retry
			// soon rather than after a full poll.
			wait = min(wait, 20*time.Millisecond)
			deposing = true
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// take tries the lock and, when it got it, increments the epoch and writes
// the first heartbeat in the same statement, so a lock holder without a
// fresh leases row exists only for the instant of that statement (a standby
// never mistakes a new leader for a stale one). The lock is session-level:
// it outlives the statement.
func (l *Lease) take(ctx context.Context, holder string) (bool, error) {
	// pg_try_advisory_lock is volatile, so the CTE is evaluated exactly once
	// and never inlined (https://www.postgresql.org/docs/current/queries-with.html).
	err := l.conn.QueryRow(ctx, `WITH lock AS (SELECT pg_try_advisory_lock($3) AS got)
		INSERT INTO `+l.leases+` AS l (pipeline, epoch, holder, acquired_at, renewed_at)
		SELECT $1, 1, $2, now(), now() FROM lock WHERE got
		ON CONFLICT (pipeline) DO UPDATE SET epoch = l.epoch + 1, holder = excluded.holder,
			acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at
		RETURNING epoch`, l.pipeline, holder, l.key).Scan(&l.epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("take lock and increment epoch: %w", err)
	}
	return true, nil
}

// takeDeposing is take after terminating a stale leader's lock session. The
// deposed leader may have been paused inside a transaction that holds the
// leases row FOR SHARE (a checkpoint save, see Save), on another connection
// of its pool: take's epoch increment would then wait for it for as long as
// the pause lasts. So while take runs, a second connection terminates the
// sessions blocking it (pg_blocking_pids,
// https://www.postgresql.org/docs/current/functions-info.html). Only the
// deposed leader's writes lock that row, and they are fenced anyway.
func (l *Lease) takeDeposing(ctx context.Context, connString, holder string) (bool, error) {
	pid := l.conn.PgConn().PID()
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.terminateBlockers(wctx, connString, pid)
	}()
	got, err := l.take(ctx, holder)
	stop()
	wg.Wait()
	return got, err
}

func (l *Lease) terminateBlockers(ctx context.Context, connString string, pid uint32) {
	// Usually nothing blocks and take is done before this first tick.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn == nil {
			c, err := connectPG(ctx, connString)
			if err != nil {
				if ctx.Err() == nil {
					l.logger.Warn("cannot open a connection to clear the deposed leader's locks", "err", err)
				}
				continue
			}
			conn = c
		}
		rows, err := conn.Query(ctx, `SELECT b FROM unnest(pg_blocking_pids($1)) AS b WHERE pg_terminate_backend(b)`, int32(pid))
		if err != nil {
			if ctx.Err() == nil {
				l.logger.Warn("cannot clear the deposed leader's locks", "err", err)
			}
			continue
		}
		killed, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err == nil && len(killed) > 0 {
			l.logger.Warn("terminated sessions of the deposed leader that held the leases row", "backend_pids", killed)
		}
	}
}

// monitor renews the heartbeat every CheckInterval; the lease is lost at the
// first failed renewal, when the epoch moved on, or when no renewal
// succeeded for TTL. It is the only user of conn until Release stops it.
func (l *Lease) monitor(renewed time.Time) {
	defer l.wg.Done()
	t := time.NewTicker(l.opt.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		// time.Since uses the monotonic clock, which keeps counting while
		// the process is stopped: a leader woken after a long pause steps
		// down here, before anything else.
		deadline := renewed.Add(l.opt.TTL)
		var lostErr error
		if since := time.Since(renewed); since >= l.opt.TTL {
			lostErr = fmt.Errorf("lease %q epoch %d: heartbeat not renewed for %s (TTL %s): a standby may have taken over",
				l.pipeline, l.epoch, since.Round(time.Millisecond), l.opt.TTL)
		} else {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			sent := time.Now()
			// The heartbeat lives in its own table: the leases row is held FOR
			// SHARE by every fenced write, and an UPDATE of it would wait
			// for them (a long reconcile chunk would starve the heartbeat).
			// A plain read of the epoch is not blocked.
			tag, err := l.conn.Exec(ctx, `WITH cur AS (SELECT epoch FROM `+l.leases+` WHERE pipeline = $1)
				INSERT INTO `+l.beats+` (pipeline, epoch, renewed_at) SELECT $1, $2, now() FROM cur WHERE cur.epoch = $2
				ON CONFLICT (pipeline) DO UPDATE SET epoch = excluded.epoch, renewed_at = excluded.renewed_at`, l.pipeline, l.epoch)
			cancel()
			switch {
			case err != nil:
				lostErr = fmt.Errorf("lease %q epoch %d: renew heartbeat on the lock connection: %w", l.pipeline, l.epoch, err)
			case tag.RowsAffected() == 0:
				lostErr = fmt.Errorf("lease %q epoch %d: epoch moved on (another instance took over)", l.pipeline, l.epoch)
			default:
				renewed = sent
				continue
			}
		}
		l.logger.Warn("lease lost: this instance is no longer the leader", "epoch", l.epoch, "err", lostErr)
		l.markLost(lostErr)
		// Close the session so the lock is surely released: after a
		// failure we can no longer vouch for it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = l.conn.Close(ctx)
		cancel()
		return
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (l *Lease) markLost(err error) {
	l.lostOnce.Do(func() {
		l.lostErr.Store(&err)
		close(l.lost)
	})
}

// ErrReleased is Lease.Err after Release.
var ErrReleased = errors.New("checkpoint: lease released")

// Err tells why the lease was lost (nil while it is held; ErrReleased after
// Release), for the message of an instance that steps down.
func (l *Lease) Err() error {
	if p := l.lostErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Epoch is the leadership term this lease holds; pass it to Store.SetEpoch.
func (l *Lease) Epoch() int64 { return l.epoch }

// Lost is closed when the lease is no longer held: the lock connection died,
// a renewal failed, no renewal succeeded within the TTL, the epoch in leases
// moved on, or Release was called (Err tells which). The
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
	defer l.markLost(ErrReleased)
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
	hi, lo := lockArgs(leaseKey(schema, pipeline))
	var h *string
	var e *int64
	err = pool.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_locks WHERE `+lockFilter+`),
			(SELECT holder FROM `+pgx.Identifier{schema, "leases"}.Sanitize()+` WHERE pipeline = $3),
			(SELECT epoch FROM `+pgx.Identifier{schema, "leases"}.Sanitize()+` WHERE pipeline = $3)`,
		hi, lo, pipeline).Scan(&held, &h, &e)
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

// connectPG is pgx.Connect with a 10 s connect_timeout when connString sets
// none: a server that accepts TCP and never answers must not hold the
// lease's connect for as long as ctx lasts (docs/design.md, "Deadlines and
// signals").
func connectPG(ctx context.Context, connString string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = 10 * time.Second
	}
	return pgx.ConnectConfig(ctx, cc)
}

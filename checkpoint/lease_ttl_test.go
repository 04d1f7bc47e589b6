package checkpoint

import (
	"context"
	"dialsync/change"
	"errors"
	"strings"
	"testing"
	"time"
)

// Short timings so the tests run in about a second each.
var fastLease = LeaseOptions{CheckInterval: 100 * time.Millisecond, TTL: 600 * time.Millisecond, PollInterval: 50 * time.Millisecond}

// pause simulates a paused leader (SIGSTOP): its monitor stops renewing,
// but its session, and so its advisory lock, stays up.
func pause(l *Lease) {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// A paused leader keeps its lock; a standby deposes it once the heartbeat is
// older than the TTL, takes over with a newer epoch, and the paused leader's
// saves are fenced and fatal.
func TestLeaseStaleHolderIsDeposed(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l1 := holdLease(t, connString, "one")
	s1 := NewStore(pool, "dialsync", "main")
	s1.SetEpoch(l1.Epoch())
	p1 := change.Position{GTIDSet: "0-1-10"}
	if err := s1.Save(ctx, p1, nil, nil); err != nil {
		t.Fatal(err)
	}
	pause(l1)
	paused := time.Now()

	l2 := holdLease(t, connString, "two")
	took := time.Since(paused)
	t.Logf("takeover %s after the leader paused (TTL %s)", took, fastLease.TTL)
	if took < fastLease.TTL-fastLease.CheckInterval {
		t.Fatalf("standby took over after %s, before the heartbeat could be %s old", took, fastLease.TTL)
	}
	if took > fastLease.TTL+time.Second {
		t.Fatalf("standby took %s to depose a stale leader (TTL %s)", took, fastLease.TTL)
	}
	if l2.Epoch() != l1.Epoch()+1 {
		t.Fatalf("epoch after takeover = %d; want %d", l2.Epoch(), l1.Epoch()+1)
	}
	if holder, epoch, held, _ := Holder(ctx, pool, "dialsync", "main"); !held || holder != "two" || epoch != l2.Epoch() {
		t.Fatalf("Holder = %q, %d, %v; want two, %d, held", holder, epoch, held, l2.Epoch())
	}
	// The old leader's lock session was terminated.
	if _, err := l1.conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("the deposed leader's lock connection still works")
	}
	// It wakes up and tries to move the checkpoint: fenced, and fatal to the
	// apply loop (internal/apply.IsFatal looks for Fatal() bool).
	err := s1.Save(ctx, change.Position{GTIDSet: "0-1-99"}, nil, nil)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("deposed leader save: %v; want ErrFenced", err)
	}
	var f interface{ Fatal() bool }
	if !errors.As(err, &f) || !f.Fatal() {
		t.Fatalf("ErrFenced (%v) does not report Fatal() == true", err)
	}
	if cp, _, _ := s1.Load(ctx); cp.Pos != p1 {
		t.Fatalf("checkpoint = %v; want %v unchanged", cp.Pos, p1)
	}
}

// A healthy leader renews its heartbeat, so a standby waits instead of
// deposing it, however long it waits.
func TestLeaseHealthyLeaderIsNotDeposed(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l1 := holdLease(t, connString, "one")
	wait, cancel := context.WithTimeout(ctx, 4*fastLease.TTL)
	defer cancel()
	if _, err := AcquireLeaseWith(wait, connString, "dialsync", "main", "two", fastLease, testLogger(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("standby AcquireLease: %v; want it to wait until its deadline", err)
	}
	select {
	case <-l1.Lost():
		t.Fatalf("healthy leader lost its lease: %v", l1.Err())
	default:
	}
	if _, epoch, held, _ := Holder(ctx, pool, "dialsync", "main"); !held || epoch != l1.Epoch() {
		t.Fatalf("Holder: held=%v epoch=%d; want held at %d", held, epoch, l1.Epoch())
	}
	var age float64
	if err := pool.QueryRow(ctx, `SELECT EXTRACT(EPOCH FROM now() - GREATEST(x.renewed_at, COALESCE((SELECT b.renewed_at FROM dialsync.lease_heartbeats b WHERE b.pipeline = x.pipeline AND b.epoch = x.epoch), x.renewed_at))) FROM dialsync.leases x WHERE x.pipeline = 'main'`).Scan(&age); err != nil {
		t.Fatal(err)
	}
	if time.Duration(age*float64(time.Second)) > fastLease.TTL/2 {
		t.Fatalf("heartbeat is %.3fs old; the leader should renew every %s", age, fastLease.CheckInterval)
	}
}

// A leader that cannot renew within the TTL (PostgreSQL stalled; here its
// heartbeat row is locked by another transaction) gives up on its own,
// because a standby may take over at that point.
func TestLeaseLeaderGivesUpWhenRenewalStalls(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l := holdLease(t, connString, "one")
	// The first renewal creates the heartbeat row.
	for deadline := time.Now().Add(5 * time.Second); ; {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM dialsync.lease_heartbeats WHERE pipeline = 'main'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat row")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM dialsync.lease_heartbeats WHERE pipeline = 'main' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	select {
	case <-l.Lost():
	case <-time.After(3 * fastLease.TTL):
		t.Fatal("leader kept the lease although it could not renew within the TTL")
	}
	if d := time.Since(stalled); d > fastLease.TTL+fastLease.CheckInterval {
		t.Fatalf("leader gave up %s after the stall; want within TTL %s", d, fastLease.TTL)
	}
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "renew") {
		t.Fatalf("Err() = %v; want a renewal failure", err)
	}
	_ = tx.Rollback(ctx)
	// It closed its session; the backend, blocked on the row lock until
	// now, notices the closed socket and ends, freeing the lock. (Had it
	// stayed stuck, a standby would terminate it: the heartbeat is stale.)
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, _, held, err := Holder(ctx, pool, "dialsync", "main")
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lock still held 3s after the leader gave up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLeaseOptions(t *testing.T) {
	t.Parallel()
	o, err := LeaseOptions{}.withDefaults()
	if err != nil || o.CheckInterval != DefaultLeaseCheck || o.TTL != DefaultLeaseTTL || o.PollInterval != defaultLeasePoll {
		t.Fatalf("defaults = %+v, %v", o, err)
	}
	if o, _ := (LeaseOptions{CheckInterval: 100 * time.Millisecond}).withDefaults(); o.PollInterval != 100*time.Millisecond {
		t.Fatalf("poll interval = %s; want the shorter check interval", o.PollInterval)
	}
	if _, err := (LeaseOptions{CheckInterval: 2 * time.Second, TTL: 2 * time.Second}).withDefaults(); err == nil {
		t.Fatal("a TTL not longer than the check interval was accepted")
	}
	if _, err := AcquireLeaseWith(context.Background(), "postgres://unused", "s", "p", "h", LeaseOptions{CheckInterval: time.Second, TTL: time.Second}, nil); err == nil || !strings.Contains(err.Error(), "TTL") {
		t.Fatalf("AcquireLeaseWith with a bad TTL: %v", err)
	}
}

func TestLeaseErrAfterRelease(t *testing.T) {
	t.Parallel()
	_, connString := migrated(t)
	l, err := AcquireLeaseWith(context.Background(), connString, "dialsync", "main", "one", fastLease, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if l.Err() != nil {
		t.Fatalf("Err() of a held lease = %v", l.Err())
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(l.Err(), ErrReleased) {
		t.Fatalf("Err() after Release = %v; want ErrReleased", l.Err())
	}
}

// Fence lets another transaction (a queue write) commit only while the
// store's epoch is current.
func TestStoreFence(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	s := NewStore(pool, "dialsync", "main")
	fence := func() error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		return s.Fence(ctx, tx)
	}
	if err := fence(); err != nil {
		t.Fatalf("epoch 0 with no lease ever taken: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.leases (pipeline, epoch, holder, acquired_at) VALUES ('main', 3, 'x', now())`); err != nil {
		t.Fatal(err)
	}
	if err := fence(); !errors.Is(err, ErrFenced) {
		t.Fatalf("epoch 0 under a lease: %v; want ErrFenced", err)
	}
	s.SetEpoch(2)
	if err := fence(); !errors.Is(err, ErrFenced) {
		t.Fatalf("old epoch: %v; want ErrFenced", err)
	}
	s.SetEpoch(3)
	if err := fence(); err != nil {
		t.Fatalf("current epoch: %v", err)
	}
}

// A leader paused in the middle of a checkpoint save holds the leases row
// FOR SHARE on a pool connection; the standby's epoch increment would wait
// for it as long as the pause lasts. The standby terminates that session
// too, and takes over in about the TTL.
func TestLeaseDeposesLeaderPausedMidSave(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l1 := holdLease(t, connString, "one")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT epoch FROM dialsync.leases WHERE pipeline = 'main' FOR SHARE`); err != nil {
		t.Fatal(err)
	}
	pause(l1)
	paused := time.Now()
	actx, cancel := context.WithTimeout(ctx, 5*fastLease.TTL)
	defer cancel()
	l2, err := AcquireLeaseWith(actx, connString, "dialsync", "main", "two", fastLease, testLogger(t))
	if err != nil {
		t.Fatalf("standby blocked by the paused leader's open save: %v", err)
	}
	t.Cleanup(func() { l2.Release(context.Background()) })
	t.Logf("takeover %s after the pause", time.Since(paused))
	if l2.Epoch() != l1.Epoch()+1 {
		t.Fatalf("epoch = %d; want %d", l2.Epoch(), l1.Epoch()+1)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("the paused leader's transaction committed after the takeover")
	}
}

// A long fenced write (it holds the leases row FOR SHARE, as every queue and
// checkpoint transaction does) must not starve the heartbeat: the leader
// keeps its lease through it.
func TestLeaseHeartbeatNotBlockedByFencedWrites(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l := holdLease(t, connString, "one")
	s := NewStore(pool, "dialsync", "main")
	s.SetEpoch(l.Epoch())
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := s.Fence(ctx, tx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
		t.Fatalf("lease lost while a fenced transaction was open: %v", l.Err())
	case <-time.After(3 * fastLease.TTL):
	}
}

// holdLease takes the "main" pipeline's lease as holder with fastLease,
// released at the end of the test.
func holdLease(t *testing.T, connString, holder string) *Lease {
	t.Helper()
	l, err := AcquireLeaseWith(context.Background(), connString, "dialsync", "main", holder, fastLease, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release(context.Background()) })
	return l
}

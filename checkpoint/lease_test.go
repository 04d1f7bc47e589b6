package checkpoint

import (
	"context"
	"dialsync/change"
	"errors"
	"testing"
	"time"
)

func TestLeaseFencing(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()

	l1, err := AcquireLease(ctx, connString, "dialsync", "main", "one", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l1.Release(context.Background()) })
	if l1.Epoch() != 1 {
		t.Fatalf("first epoch = %d; want 1", l1.Epoch())
	}
	holder, epoch, held, err := Holder(ctx, pool, "dialsync", "main")
	if err != nil || !held || holder != "one" || epoch != 1 {
		t.Fatalf("Holder = %q, %d, %v, %v; want one, 1, held", holder, epoch, held, err)
	}
	if _, _, held, _ := Holder(ctx, pool, "dialsync", "other"); held {
		t.Fatal("Holder reports a lease for a pipeline nobody holds")
	}

	s1 := NewStore(pool, "dialsync", "main")
	s1.SetEpoch(l1.Epoch())
	p1 := change.Position{File: "bin.000001", Pos: 100, GTIDSet: "0-1-1"}
	if err := s1.Save(ctx, p1, nil, nil); err != nil {
		t.Fatalf("leader save: %v", err)
	}
	// A store without the epoch (0) is fenced once a lease exists.
	if err := NewStore(pool, "dialsync", "main").Save(ctx, p1, nil, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("save with epoch 0 under a lease: %v; want ErrFenced", err)
	}

	// The second instance blocks while the first holds the lease.
	type result struct {
		l   *Lease
		err error
	}
	got := make(chan result, 1)
	ctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	go func() {
		l, err := AcquireLease(ctx2, connString, "dialsync", "main", "two", testLogger(t))
		got <- result{l, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("second AcquireLease returned while the first holds it: %v", r.err)
	case <-time.After(800 * time.Millisecond):
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l1.Lost():
	default:
		t.Error("Lost not closed after Release")
	}
	var l2 *Lease
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		l2 = r.l
	case <-time.After(5 * time.Second):
		t.Fatal("second AcquireLease did not acquire after release")
	}
	t.Cleanup(func() { l2.Release(context.Background()) })
	if l2.Epoch() != 2 {
		t.Fatalf("second epoch = %d; want 2", l2.Epoch())
	}
	if holder, epoch, held, _ := Holder(ctx, pool, "dialsync", "main"); !held || holder != "two" || epoch != 2 {
		t.Fatalf("Holder = %q, %d, %v; want two, 2, held", holder, epoch, held)
	}

	// The deposed leader (think: paused, woke up) cannot write.
	if err := s1.Save(ctx, change.Position{File: "bin.000009", Pos: 999}, map[uint64]uint64{1: 2}, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("deposed leader save: %v; want ErrFenced", err)
	}
	if cp, _, _ := s1.Load(ctx); cp.Pos != p1 || cp.Epoch != 1 {
		t.Fatalf("checkpoint after fenced save = %+v; want %v unchanged", cp, p1)
	}
	s2 := NewStore(pool, "dialsync", "main")
	s2.SetEpoch(l2.Epoch())
	p2 := change.Position{File: "bin.000002", Pos: 200}
	if err := s2.Save(ctx, p2, nil, nil); err != nil {
		t.Fatalf("new leader save: %v", err)
	}
	if cp, _, _ := s2.Load(ctx); cp.Pos != p2 || cp.Epoch != 2 {
		t.Fatalf("checkpoint = %+v; want %v at epoch 2", cp, p2)
	}

	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if _, epoch, held, _ := Holder(ctx, pool, "dialsync", "main"); held || epoch != 2 {
		t.Fatalf("Holder after release: held=%v epoch=%d; want not held, last epoch 2", held, epoch)
	}
}

func TestLeaseAcquireRespectsContext(t *testing.T) {
	t.Parallel()
	_, connString := migrated(t)
	l1, err := AcquireLease(context.Background(), connString, "dialsync", "main", "one", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l1.Release(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = AcquireLease(ctx, connString, "dialsync", "main", "two", testLogger(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireLease with a deadline: %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("AcquireLease took %v to honour its deadline", d)
	}
}

func TestLeaseLostWhenConnectionKilled(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l, err := AcquireLease(ctx, connString, "dialsync", "main", "one", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release(context.Background()) })
	pid := l.conn.PgConn().PID()
	select {
	case <-l.Lost():
		t.Fatal("Lost closed while the lease is healthy")
	case <-time.After(1500 * time.Millisecond): // at least one healthy check
	}
	var ok bool
	if err := pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v, %v", ok, err)
	}
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after the lock connection was killed")
	}
	if _, _, held, _ := Holder(ctx, pool, "dialsync", "main"); held {
		t.Error("lease still held after its session was killed")
	}
	// A new instance takes over with a newer epoch.
	l2, err := AcquireLease(ctx, connString, "dialsync", "main", "two", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Release(context.Background()) })
	if l2.Epoch() != l.Epoch()+1 {
		t.Fatalf("epoch after takeover = %d; want %d", l2.Epoch(), l.Epoch()+1)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release of a lost lease: %v", err)
	}
}

// Epoch moved on under a live lock (an operator or a bug bumped leases):
// the holder must step down.
func TestLeaseLostWhenEpochMoves(t *testing.T) {
	t.Parallel()
	pool, connString := migrated(t)
	ctx := context.Background()
	l, err := AcquireLease(ctx, connString, "dialsync", "main", "one", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release(context.Background()) })
	if _, err := pool.Exec(ctx, `UPDATE dialsync.leases SET epoch = epoch + 1 WHERE pipeline = 'main'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after the epoch moved on")
	}
}

// A save racing a takeover: while the new leader's epoch increment is
// uncommitted, the old leader's Save waits on the leases row (FOR SHARE)
// and, once the takeover commits, is fenced rather than writing on the
// stale epoch it would otherwise have read.
func TestSaveRacingTakeoverIsFenced(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.leases VALUES ('main', 1, 'one', now())`); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool, "dialsync", "main")
	s.SetEpoch(1)
	p1 := change.Position{File: "bin.000001", Pos: 100}
	if err := s.Save(ctx, p1, nil, nil); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE dialsync.leases SET epoch = epoch + 1, holder = 'two' WHERE pipeline = 'main'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Save(ctx, change.Position{File: "bin.000001", Pos: 200}, nil, nil) }()
	select {
	case err := <-done:
		t.Fatalf("Save did not wait for the in-flight takeover: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("Save after takeover committed: %v; want ErrFenced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Save still blocked after the takeover committed")
	}
	if cp, _, _ := s.Load(ctx); cp.Pos != p1 {
		t.Fatalf("checkpoint = %v; want %v unchanged", cp.Pos, p1)
	}
}

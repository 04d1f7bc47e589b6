package apply

import (
	"context"
	"sync"
	"testing"
	"time"

	"dialsync/internal/queue"
	"dialsync/notice"
)

// blockingQueue is a PostgreSQL queue whose write blocks until its context
// ends, as a write waiting on a table lock does.
type blockingQueue struct {
	*fakes
	once    sync.Once
	entered chan struct{}
}

func (b *blockingQueue) Apply(ctx context.Context, _ []uint64, _ []queue.Row, _ *queue.Mark, _ func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	b.once.Do(func() { close(b.entered) })
	<-ctx.Done()
	return nil, ctx.Err()
}

// stopWithin cancels the loop's context and wants Run to return nil within
// limit.
func stopWithin(t *testing.T, cancel context.CancelFunc, done <-chan error, limit time.Duration) {
	t.Helper()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a stop: %v, want nil (a clean stop)", err)
		}
		t.Logf("Run returned %s after the stop", time.Since(start).Round(time.Millisecond))
	case <-time.After(limit):
		t.Fatalf("Run still running %s after the stop", limit)
	}
}

// A write that never returns (a lock held by another session) is abandoned
// StopGrace after the stop, and its checkpoint is not stored.
func TestStopAbandonsBlockedWrite(t *testing.T) {
	f := newFakes()
	f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2}
	bq := &blockingQueue{fakes: f, entered: make(chan struct{})}
	l := newTestLoop(t, f, make(chan BatchStats, 10))
	l.deps.Queue = bq
	l.cfg.StopGrace = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	if err := l.Submit(ctx, txn("0-1-5", 500, userUpdate(7, "status"))); err != nil {
		t.Fatal(err)
	}
	<-bq.entered
	stopWithin(t, cancel, done, 3*time.Second)
	if len(f.saved) != 0 {
		t.Fatalf("checkpoint saved %v for a batch that was never written", f.saved)
	}
}

// A checkpoint write that fails every time (a transient error that never
// clears) stops being retried StopGrace after the stop.
func TestStopEndsCheckpointRetries(t *testing.T) {
	f := newFakes()
	f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2}
	f.failNext["checkpoint"] = 1 << 30
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	l.cfg.StopGrace = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	if err := l.Submit(ctx, txn("0-1-5", 500, userUpdate(7, "status"))); err != nil {
		t.Fatal(err)
	}
	<-applied
	stopWithin(t, cancel, done, 3*time.Second)
	if len(f.saved) != 0 {
		t.Fatalf("checkpoint saved %v, want none (every save failed)", f.saved)
	}
}

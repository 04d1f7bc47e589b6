package pipeline

import (
	"strings"
	"testing"
	"time"
)

// Lag never reads 0 while the binlog holds more to apply: with nothing
// applied since the start it is at least the time since the start.
func TestLagGrowsWhileNothingIsApplied(t *testing.T) {
	o := &Monitor{started: time.Now().Add(-time.Minute)}
	o.behindBytes.Store(-1)
	if lag := o.lag(); lag != 0 {
		t.Fatalf("not measured yet, nothing pending: lag %s, want 0", lag)
	}
	o.behindBytes.Store(4096)
	if lag := o.lag(); lag < time.Minute {
		t.Fatalf("behind with nothing applied since a start a minute ago: lag %s, want >= 1m", lag)
	}
	o.newest.Store(time.Now().Add(-10 * time.Second).UnixNano())
	if lag := o.lag(); lag < 10*time.Second || lag > time.Minute {
		t.Fatalf("behind, newest applied commit 10 s old: lag %s, want ~10s", lag)
	}
	o.behindBytes.Store(0)
	if lag := o.lag(); lag != 0 {
		t.Fatalf("caught up: lag %s, want 0", lag)
	}
}

// A retry streak older than retryStuckAfter turns /readyz's apply check
// red with the operation and the error; a batch that gets through ends it.
func TestReadyzShowsAStuckRetry(t *testing.T) {
	o := &Monitor{}
	o.onRetryStreakForTest(time.Now().Add(-retryStuckAfter-time.Second), "write queue (postgres): lock timeout")
	why, stuck := o.retrying()
	if !stuck || !strings.Contains(why, "write queue (postgres): lock timeout") {
		t.Fatalf("retrying = %q, %v; want a stuck streak naming the operation", why, stuck)
	}
	o.mu.Lock()
	o.retrySince = time.Now()
	o.mu.Unlock()
	if _, stuck := o.retrying(); stuck {
		t.Fatal("a fresh streak is reported stuck")
	}
}

func (o *Monitor) onRetryStreakForTest(since time.Time, last string) {
	o.mu.Lock()
	o.retrySince, o.retryLast = since, last
	o.mu.Unlock()
}

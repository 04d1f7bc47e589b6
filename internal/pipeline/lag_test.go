package pipeline

import (
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

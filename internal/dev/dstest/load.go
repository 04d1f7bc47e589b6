package dstest

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"testing"
	"time"

	"dialsync/internal/dev/demo"
)

// TimedOp is one committed workload transaction and when its step began
// and returned.
type TimedOp struct {
	demo.Op
	Start, End time.Time
}

// Load is demo workloads running on several writers at once, in the
// background, until Stop.
type Load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu  sync.Mutex
	ops []TimedOp
}

// StartLoad starts writers demo workloads on db, writer i seeded seed+i,
// each stepping one transaction after another with pause between steps (0:
// none). A failed step fails the test and ends that writer. The test's
// cleanup stops the load if the test did not.
func StartLoad(tb testing.TB, db *sql.DB, writers int, seed int64, pause time.Duration) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cancel: cancel}
	for i := range writers {
		l.wg.Go(func() {
			w := demo.NewWorkload(db, seed+int64(i))
			for ctx.Err() == nil {
				start := time.Now()
				op, err := w.Step(ctx)
				if err != nil {
					if ctx.Err() == nil {
						tb.Errorf("workload: %v", err)
					}
					return
				}
				l.mu.Lock()
				l.ops = append(l.ops, TimedOp{op, start, time.Now()})
				l.mu.Unlock()
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		})
	}
	tb.Cleanup(l.stop)
	return l
}

func (l *Load) stop() { l.once.Do(func() { l.cancel(); l.wg.Wait() }) }

// Stop stops every writer, waits for them, and returns every committed
// transaction in commit order per writer (writers interleaved as they
// committed). Calling it again returns the same.
func (l *Load) Stop() []TimedOp {
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

// Ops drops the timings.
func Ops(ts []TimedOp) []demo.Op {
	out := make([]demo.Op, len(ts))
	for i, t := range ts {
		out[i] = t.Op
	}
	return out
}

package apply

import (
	"context"
	"time"

	"dialsync/handlers"
)

// Stage 2, the PostgreSQL stage, on its own goroutine.

// writeQueue is stage 2: dead letters, then the queue rows in PostgreSQL.
func (l *Loop) writeQueue(work, stop context.Context, w *batchWork) error {
	st, batch, users, rows := &w.st, w.batch, w.recompute, w.rows
	// Dead letters are durable before anything moves past them.
	for _, d := range st.DeadLetters {
		if err := l.retry(stop, StagePostgres, "record dead letter", func() error { return l.deps.DeadLetters.AddDeadLetter(work, d) }); err != nil {
			return err
		}
	}

	t0 := time.Now()
	if len(users) > 0 {
		// Each queue change is announced under the last transaction of the
		// batch that touched its user.
		build := l.notices.QueueBuilder(func(user uint64) handlers.Origin {
			return handlers.TxnOrigin(batch[w.last[user]])
		}, &st.QueueChanges)
		mark := markOf(batch[len(batch)-1])
		if err := l.retry(stop, StagePostgres, "write queue", func() (err error) {
			w.queueMsgs, err = l.deps.Queue.Apply(work, users, rows, mark, build)
			return err
		}); err != nil {
			return err
		}
	}
	st.Stages[StagePostgres] = time.Since(t0)
	return nil
}

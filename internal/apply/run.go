package apply

import (
	"context"
	"fmt"
	"sync"
	"time"

	"dialsync/change"
	"dialsync/notice"
)

// Submit, Do and the batch loop: what reaches the stages, in what order.

// Submit queues a transaction for the loop. It blocks while the transactions
// queued ahead of the loop hold more than 2*MaxBatchBytes (back-pressure onto
// the binlog reader, so memory stays bounded), or the queue is full.
func (l *Loop) Submit(ctx context.Context, t *change.Txn) error {
	for {
		l.mu.Lock()
		if l.pending == 0 || l.pending+t.Bytes <= 2*l.cfg.MaxBatchBytes {
			l.pending += t.Bytes
			l.mu.Unlock()
			break
		}
		l.mu.Unlock()
		select {
		case <-l.space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case l.in <- item{txn: t}:
		l.queued.Add(1)
		return nil
	case <-ctx.Done():
		l.release(t.Bytes)
		return ctx.Err()
	}
}

func (l *Loop) release(n int) {
	l.mu.Lock()
	l.pending -= n
	l.mu.Unlock()
	select {
	case l.space <- struct{}{}:
	default:
	}
}

// Pending is the number of transactions submitted and not yet applied.
func (l *Loop) Pending() int64 { return l.queued.Load() }

// Do runs fn on the goroutine running Run, between batches, once every
// transaction submitted before it is applied and checkpointed (the stages
// and the saver idle); it returns fn's error. Reconcile chunks
// use it so their writes are ordered with streamed changes.
func (l *Loop) Do(ctx context.Context, fn func(context.Context) error) error {
	it := item{job: fn, res: make(chan error, 1)}
	select {
	case l.in <- it:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-it.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run applies batches until ctx is cancelled (returns nil once the batch in
// hand is durable) or a fatal error happens. Transient failures of any server
// are retried inside, with backoff and jitter; nothing is skipped.
//
// A stop (ctx ending) lets the batches in hand finish for up to
// Config.StopGrace; past it they are abandoned (see afterGrace). An error
// that is only the consequence of the stop (a retry or a call cut short)
// is logged, not returned: nothing past the stored checkpoint was lost.
func (l *Loop) Run(ctx context.Context) error {
	err := l.run(ctx)
	if err != nil && ctx.Err() != nil && !l.fatal(err) {
		l.log.Warn("stopped with a batch unfinished; it is replayed from the checkpoint at the next start", "err", err)
		return nil
	}
	return err
}

func (l *Loop) run(ctx context.Context) error {
	if err := l.flushOutbox(ctx); err != nil {
		return err
	}
	// The batches in hand are finished even when ctx is cancelled meanwhile
	// (a clean stop stores its checkpoint), for up to StopGrace; a second
	// signal, which kills the process, cuts them short too. Released last,
	// after the saver stored what was finished in time.
	work, abandon := l.afterGrace(ctx)
	defer abandon()
	sctx, stopSaver := context.WithCancel(ctx)
	saverDone := make(chan struct{})
	go func() { defer close(saverDone); l.saver(sctx, work) }()
	// On the way out, the saver stores the newest durable position (a clean
	// stop keeps its checkpoint) before Run returns.
	defer func() { stopSaver(); <-saverDone }()

	// The stages run as a pipeline: while batch N is written to
	// PostgreSQL, batch N+1 is prepared; while N goes to Redis and NATS,
	// N+1 is written. Each stage is one goroutine taking batches in order,
	// so every store still sees every write in binlog order (invariant 4),
	// and each batch still goes through the four steps in order
	// (invariants 1 and 3). A stage that fails drops every later batch, so
	// nothing after a failed batch reaches the checkpoint.
	toQueue, toFinish := make(chan *batchWork, 1), make(chan *batchWork, 1)
	stageErr := make(chan error, 2)
	var pending sync.WaitGroup // batches handed to the stages and not done
	done := func(w *batchWork) {
		l.release(w.bytes)
		l.queued.Add(-int64(len(w.batch)))
		pending.Done()
	}
	stage := func(in <-chan *batchWork, out chan<- *batchWork, fn func(*batchWork) error) {
		failed := false
		for w := range in {
			if !failed {
				if err := fn(w); err != nil {
					failed = true
					stageErr <- err
				}
			}
			if failed || out == nil {
				done(w)
				continue
			}
			out <- w
		}
		if out != nil {
			close(out)
		}
	}
	finished := make(chan struct{})
	go stage(toQueue, toFinish, func(w *batchWork) error { return l.writeQueue(work, ctx, w) })
	go func() {
		defer close(finished)
		stage(toFinish, nil, func(w *batchWork) error { return l.finish(work, ctx, w) })
	}()
	defer func() { close(toQueue); <-finished }()
	// drain waits until every batch handed on is done.
	drain := func() error {
		idle := make(chan struct{})
		go func() { pending.Wait(); close(idle) }()
		select {
		case <-idle:
			return nil
		case err := <-stageErr:
			return err
		}
	}

	batch := make([]*change.Txn, 0, l.cfg.MaxBatchTxns)
	for {
		batch = batch[:0:0]
		var job *item
		select {
		case <-ctx.Done():
			return nil
		case err := <-l.saveErr:
			return err
		case err := <-stageErr:
			return err
		case it := <-l.in:
			if it.job != nil {
				job = &it
			} else {
				batch = append(batch, it.txn)
			}
		}
		if job == nil {
			job = l.fill(ctx, &batch)
		}
		if len(batch) > 0 {
			w, err := l.prepare(work, ctx, batch)
			if err != nil {
				return err
			}
			pending.Add(1)
			select {
			case toQueue <- w:
			case err := <-stageErr:
				done(w)
				return err
			}
		}
		if job != nil {
			// Jobs (reconcile chunks, the bootstrap's first save) run with
			// the stages idle and see every earlier checkpoint written.
			if err := drain(); err != nil {
				job.res <- err
				return err
			}
			if err := l.waitSaved(ctx); err != nil {
				job.res <- err
				return err
			}
			job.res <- job.job(ctx)
		}
	}
}

// afterGrace returns the context of the batches in hand: it ends
// StopGrace after ctx ends (or when abandon is called), so a write blocked
// on a lock or a server that refuses every call cannot hold a stop
// (docs/design.md, "Deadlines and signals"). What it cuts short was not
// checkpointed, so the next start replays it.
func (l *Loop) afterGrace(ctx context.Context) (work context.Context, abandon func()) {
	work, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	grace := l.cfg.StopGrace
	stop := context.AfterFunc(ctx, func() {
		time.AfterFunc(grace, func() {
			if work.Err() == nil {
				l.log.Warn("stopping: the batch in hand did not finish within the stop grace period; abandoning it (it is replayed from the checkpoint at the next start)", "grace", grace.String())
				cancel(fmt.Errorf("stop grace period of %s passed", grace))
			}
		})
	})
	return work, func() { stop(); cancel(nil) }
}

// fill adds queued transactions to batch without blocking (or waiting up to
// BatchWindow); it stops at a job, which it returns to run after the batch.
func (l *Loop) fill(ctx context.Context, batch *[]*change.Txn) *item {
	bytes := (*batch)[0].Bytes
	var deadline <-chan time.Time
	if l.cfg.BatchWindow > 0 {
		tm := time.NewTimer(l.cfg.BatchWindow)
		defer tm.Stop()
		deadline = tm.C
	}
	for len(*batch) < l.cfg.MaxBatchTxns && bytes < l.cfg.MaxBatchBytes {
		select {
		case it := <-l.in:
			if it.job != nil {
				return &it
			}
			*batch = append(*batch, it.txn)
			bytes += it.txn.Bytes
			continue
		default:
		}
		if deadline == nil {
			return nil
		}
		select {
		case it := <-l.in:
			if it.job != nil {
				return &it
			}
			*batch = append(*batch, it.txn)
			bytes += it.txn.Bytes
		case <-deadline:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// flushOutbox publishes queue notices a previous run stored but may not have
// published (it crashed between steps 1 and 3), before anything else.
func (l *Loop) flushOutbox(ctx context.Context) error {
	var msgs []notice.Message
	if err := l.retry(ctx, StagePostgres, "read outbox", func() (err error) {
		msgs, err = l.deps.Queue.Outbox(ctx)
		return err
	}); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	l.log.Info("publishing queue notices left in the outbox by a previous run", "count", len(msgs))
	if err := l.retry(ctx, StageNATS, "publish outbox", func() error { return l.deps.Publisher.Publish(ctx, msgs) }); err != nil {
		return err
	}
	return l.retry(ctx, StagePostgres, "clear outbox", func() error { return l.deps.Queue.ClearOutbox(ctx) })
}

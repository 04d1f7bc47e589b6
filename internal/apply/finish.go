package apply

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"dialsync/notice"
)

// Stage 3, the Redis and NATS stage, on its own goroutine: a batch's keys
// go, then its notices, then its checkpoint is handed to the saver.

// finish is stage 3: Redis, then NATS, then the checkpoint goes to the
// saver.
func (l *Loop) finish(work, stop context.Context, w *batchWork) error {
	st := &w.st
	if err := l.deleteKeys(work, stop, w); err != nil {
		return err
	}
	if err := l.publish(work, stop, w); err != nil {
		return err
	}

	// 4. Checkpoint: written by the saver while later batches proceed.
	var published []string
	for _, m := range w.queueMsgs {
		published = append(published, m.ID)
	}
	if !w.save.pos.IsZero() || len(published) > 0 {
		w.save.outbox = published
		l.queueSave(w.save)
		st.Checkpoint = w.save.pos
	}
	if l.cfg.OnApplied != nil {
		l.cfg.OnApplied(*st)
	}
	return nil
}

// deleteKeys is step 2, Redis: delete every touched user's keys, and the
// queue keys when queue membership or a queued row changed.
func (l *Loop) deleteKeys(work, stop context.Context, w *batchWork) error {
	st := &w.st
	t0 := time.Now()
	keys := make([]string, 0, len(w.users)*2+2)
	for _, u := range w.users {
		keys = l.cfg.Keys.AppendUser(keys, u)
	}
	if len(w.queueMsgs) > 0 {
		keys = append(keys, l.cfg.Keys.Queue()...)
	}
	st.Keys = len(keys)
	if len(keys) > 0 {
		if err := l.retry(stop, StageRedis, "delete cache keys", func() error { return l.deps.Cache.Del(work, keys) }); err != nil {
			return err
		}
	}
	st.Stages[StageRedis] = time.Since(t0)
	return nil
}

// publish is step 3, NATS: the queue notices, one user.changed per (source
// transaction, user), and the dead letters' notices. A large transaction's
// pieces accumulate until its last piece, so each user gets exactly one
// notice per transaction.
func (l *Loop) publish(work, stop context.Context, w *batchWork) error {
	st, batch := &w.st, w.batch
	t0 := time.Now()
	msgs := w.queueMsgs
	// Transaction by transaction: a large transaction's pieces gather in
	// l.partial and go out at its last piece, before the next transaction's
	// touches (a batch may hold the end of one large transaction and the
	// start of the next). The touches come in resolution order (the maps'
	// first, the lookup server's after), so they are taken by transaction.
	order := slices.Clone(w.order)
	slices.SortStableFunc(order, func(a, b touch) int { return cmp.Compare(a.txn, b.txn) })
	i := 0
	for ti, t := range batch {
		for ; i < len(order) && order[i].txn == ti; i++ {
			tc := order[i]
			if t.Partial || t.Piece > 0 {
				if a := l.partial[tc.user]; a != nil {
					a.Merge(tc.agg)
				} else {
					l.partial[tc.user] = tc.agg
				}
				continue
			}
			msgs = append(msgs, l.notices.UserChanged(t, tc.user, tc.agg))
		}
		if !t.Partial && t.Piece > 0 {
			for u, a := range l.partial {
				msgs = append(msgs, l.notices.UserChanged(t, u, a))
			}
			clear(l.partial)
		}
	}
	for _, d := range st.DeadLetters {
		t := batch[0]
		for _, bt := range batch {
			if bt.ID() == d.Txn {
				t = bt
			}
		}
		m, err := l.notices.DeadLetter(t.CommitTime, notice.DeadLetter{
			Table: d.Table, Operation: d.Op.String(), Seq: d.Seq, Error: d.Err,
			Source: notice.SourcePosition{File: d.End.File, Pos: d.End.Pos, GTID: d.GTID, Txn: d.Txn},
		})
		if err != nil {
			return fmt.Errorf("encode dead letter notice: %w", err)
		}
		msgs = append(msgs, m)
	}
	msgs = dedupeMsgs(msgs)
	st.Notices = len(msgs)
	if len(msgs) > 0 {
		if err := l.retry(stop, StageNATS, "publish notices", func() error { return l.deps.Publisher.Publish(work, msgs) }); err != nil {
			return err
		}
	}
	st.Stages[StageNATS] = time.Since(t0)
	return nil
}

// dedupeMsgs drops repeated ids within one batch (the outbox can hold a
// queue notice that the same batch makes again after a crash).
func dedupeMsgs(msgs []notice.Message) []notice.Message {
	if len(msgs) < 2 {
		return msgs
	}
	seen := make(map[string]struct{}, len(msgs))
	out := msgs[:0]
	for _, m := range msgs {
		if _, ok := seen[m.ID]; ok {
			continue
		}
		seen[m.ID] = struct{}{}
		out = append(out, m)
	}
	return out
}

package apply

import (
	"context"
	"slices"
	"time"

	"dialsync/change"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// Stage 1, the lookup stage, on the goroutine running Run: resolution, the
// commit barrier and the queue rule, evaluated on the lookup server.

// batchWork is one batch on its way through the stages. work, the context
// of server calls, is not cancelled by a stop signal; stop ends retries of
// a batch whose servers stay down once the process is asked to stop.
type batchWork struct {
	batch     []*change.Txn
	bytes     int
	st        BatchStats
	order     []touch
	last      map[uint64]int // user -> index of the last transaction of the batch touching it
	users     []uint64       // every touched user: their cache keys go
	recompute []uint64       // the users whose queue rows are recomputed (users, less a replay's covered ones)
	rows      []queue.Row
	queueMsgs []notice.Message
	save      saveReq
}

// prepare is stage 1: handlers, the claim and pointer maps, the commit
// barrier and every lookup, including the queue rule.
func (l *Loop) prepare(work, stop context.Context, batch []*change.Txn) (*batchWork, error) {
	st := BatchStats{Txns: len(batch), Rows: make(map[RowKey]int, 4)}
	r, err := l.resolveFromMaps(batch, &st)
	if err != nil {
		return nil, err
	}

	t0 := time.Now()
	if err := l.commitBarrier(work, stop, batch); err != nil {
		return nil, err
	}
	if err := l.resolveFromLookup(work, stop, batch, &st, r); err != nil {
		return nil, err
	}
	users := dedupe(r.users)
	st.Users = len(users)
	last := lastTouch(r.order, len(users))
	recompute := l.recomputed(batch, last, users)

	// The queue rule, evaluated now for the users whose rows may change.
	var rows []queue.Row
	if len(recompute) > 0 {
		if err := l.retry(stop, StageLookup, "evaluate queue rule", func() (err error) {
			rows, err = l.deps.Lookup.QueueRows(work, recompute)
			return err
		}); err != nil {
			return nil, err
		}
	}
	st.Stages[StageLookup] = time.Since(t0)

	w := &batchWork{batch: batch, st: st, order: r.order, last: last, users: users, recompute: recompute, rows: rows}
	w.save = l.checkpointOf(batch)
	for _, t := range batch {
		w.bytes += t.Bytes
	}
	return w, nil
}

// commitBarrier waits until every lookup can see the batch's transactions.
// One row per transaction is enough: its rows commit atomically. With
// commits in binlog order, the last transaction's row is enough.
func (l *Loop) commitBarrier(work, stop context.Context, batch []*change.Txn) error {
	barrier := map[string][]uint64{}
	for i := len(batch) - 1; i >= 0; i-- {
		t := batch[i]
		found := false
		for j := range t.Changes {
			if id, ok := rowID(&t.Changes[j]); ok {
				barrier[t.Changes[j].Table] = append(barrier[t.Changes[j].Table], id)
				found = true
				break
			}
		}
		if found && l.cfg.OrderedCommits {
			break
		}
	}
	if len(barrier) == 0 {
		return nil
	}
	return l.retry(stop, StageLookup, "lookup: commit barrier", func() error { return l.deps.Lookup.CommitBarrier(work, barrier) })
}

// recomputed is the users whose queue rows are recomputed. Users touched
// only by transactions whose queue writes are already durable (a replay
// after a crash; see SetMark) keep their rows. Their cache keys still go:
// the crash may have come between the queue write and the deletion.
func (l *Loop) recomputed(batch []*change.Txn, last map[uint64]int, users []uint64) []uint64 {
	k := l.covered(batch)
	if k == 0 {
		return users
	}
	return slices.DeleteFunc(slices.Clone(users), func(u uint64) bool { return last[u] < k })
}

// lastTouch maps each user to the last transaction of the batch that
// touched it. The touches come in resolution order (the maps' first, the
// lookup server's after), not in transaction order: hence the max.
func lastTouch(order []touch, users int) map[uint64]int {
	last := make(map[uint64]int, users)
	for _, tc := range order {
		if t, ok := last[tc.user]; !ok || tc.txn > t {
			last[tc.user] = tc.txn
		}
	}
	return last
}

// checkpointOf is the checkpoint batch allows: the end of its last whole
// transaction (zero when it ends inside a large transaction). The map
// entries learned up to it travel with it (the maps go on changing as later
// batches are prepared).
func (l *Loop) checkpointOf(batch []*change.Txn) saveReq {
	var s saveReq
	for i := len(batch) - 1; i >= 0; i-- {
		if !batch[i].Partial {
			s.pos = batch[i].End
			break
		}
	}
	s.owners, s.pointers = map[uint64]uint64{}, map[uint64]uint64{}
	if !s.pos.IsZero() {
		s.owners, s.wholeOwners = l.owners.take()
		s.pointers, s.wholePointers = l.pointers.take()
	}
	return s
}

// rowID is the row's id (column 0 of every tracked table's spec).
func rowID(c *change.Change) (uint64, bool) {
	row := c.After
	if row == nil {
		row = c.Before
	}
	if len(row) == 0 {
		return 0, false
	}
	switch v := row[0].(type) {
	case int64:
		return uint64(v), v >= 0
	case uint64:
		return v, true
	}
	return 0, false
}

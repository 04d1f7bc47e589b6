package apply

import (
	"dialsync/change"
	"dialsync/internal/queue"
)

// The queue mark: which transactions' queue writes are already durable,
// so a replay after a crash does not write (and announce) them again.

// SetMark tells the loop which transactions' queue writes are already
// durable (the mark stored with them; see queue.Mark). Until the stream
// passes the mark, the queue rows of users touched only by such
// transactions are neither recomputed nor written: their effects are in
// the queue, and a recomputation now would read newer source rows and
// announce them a second time under an old transaction. Their cache keys
// are deleted and their user.changed notices published again as usual
// (both idempotent). includes says whether a transaction lies at or
// before a position (canal.Includes: GTID-set containment needs the
// binlog library, which this package does not import). Call before Run.
func (l *Loop) SetMark(m queue.Mark, includes func(change.Position, *change.Txn) bool) {
	l.replay, l.includes = &m, includes
}

// covered counts the leading transactions of batch whose queue writes are
// already durable (SetMark). At the first one that is not, replay is over.
func (l *Loop) covered(batch []*change.Txn) int {
	m := l.replay
	if m == nil {
		return 0
	}
	upTo := change.Position{File: m.File, Pos: m.Pos, GTIDSet: m.GTIDSet}
	for i, t := range batch {
		var done bool
		if t.Partial {
			// A piece's End is where its transaction starts; the transaction
			// is whole in the queue only if the mark lies beyond that.
			done = (m.PartialTxn != "" && m.PartialTxn == t.ID() && t.Piece <= m.Piece) ||
				(t.GTID != "" && l.includes(upTo, t)) ||
				(t.GTID == "" && l.includes(upTo, t) && (t.End.File != m.File || t.End.Pos != m.Pos))
		} else {
			done = l.includes(upTo, t)
		}
		if !done {
			l.replay = nil
			l.log.Info("replay passed the queue mark; queue rows are recomputed from here",
				"mark", upTo.String(), "txn", t.ID())
			return i
		}
	}
	return len(batch)
}

// markOf is the queue mark naming t as the last transaction written.
func markOf(t *change.Txn) *queue.Mark {
	m := &queue.Mark{File: t.End.File, Pos: t.End.Pos, GTIDSet: t.End.GTIDSet}
	if t.Partial {
		m.PartialTxn, m.Piece = t.ID(), t.Piece
	}
	return m
}

package canal

import (
	"sync/atomic"

	"dialsync/change"
)

// The replay guard.
//
// A server asked for the binlog after a position must send only later
// transactions. Not every server does: one MySQL-protocol server resends its
// binlog from the start on every connect when the COM_BINLOG_DUMP_GTID
// request lacks a flag it wants (go-mysql v1.16.0 does not send it; MySQL
// and MariaDB read the GTID set anyway). Handed on, such transactions would
// be applied again and, past JetStream's duplicate window, announced twice.
// So a transaction that lies at or before the start position (its GTID is
// in the start GTID set; without GTIDs, it ends at or before the start) is
// skipped, counted, and the range logged once per stream start. The guard
// ends at the first transaction past the start: the server sends in binlog
// order, so nothing after it can be old (and the check costs nothing on a
// stream that behaves).

var replayedTxns atomic.Uint64

// ReplayedTransactions returns how many transactions the server sent again
// although they lie at or before the stream's start position (skipped), since
// the process started (for a metric).
func ReplayedTransactions() uint64 { return replayedTxns.Load() }

// replayRange is what the guard skipped in this stream.
type replayRange struct {
	n                  int
	start, first, last string
	logged             bool
}

// replay reports whether txn lies at or before the start and must be
// skipped. A piece of a large transaction carries the position of the
// transaction's start as its End, so where the judgement is by file and
// offset (no GTID on either side) a piece is judged by where its last rows
// event ends instead: that lies inside the transaction, and the start is a
// commit boundary, so at or before it means the whole transaction is.
func (s *streamer) replay(txn *change.Txn) bool {
	if s.guard.IsZero() {
		return false
	}
	judged := txn
	if txn.Partial && (txn.GTID == "" || s.guard.GTIDSet == "") {
		judged = &change.Txn{End: change.Position{File: s.file, Pos: s.rowsEnd}}
	}
	if !Includes(s.guard, judged) {
		s.logReplayed()
		s.guard = change.Position{}
		return false
	}
	replayedTxns.Add(1)
	if s.replayed.n == 0 {
		s.replayed.start, s.replayed.first = s.guard.String(), txn.ID()
	}
	s.replayed.n++
	s.replayed.last = txn.ID()
	return true
}

// logReplayed logs the skipped range once, when the stream passes it (or
// ends while in it).
func (s *streamer) logReplayed() {
	r := &s.replayed
	if r.n == 0 || r.logged {
		return
	}
	r.logged = true
	s.log.Warn("the source resent transactions at or before the start position; skipped them (already applied)",
		"start", r.start, "skipped", r.n, "first", r.first, "last", r.last)
}

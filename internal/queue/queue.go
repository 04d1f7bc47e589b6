// Package queue holds the call-queue row type shared by the rule evaluator
// (which computes rows on the lookup server) and the queue store (which
// writes them to PostgreSQL).
package queue

import "time"

// Row is one user's call-queue entry as computed by the rule. A user the
// rule does not return is not queued.
type Row struct {
	UserID              uint64
	OpenClaims          int64
	PendingRequirements int64
	OldestPendingAt     *time.Time // nil when the rule gives no time
}

// ChangeKind is what happened to a user's queue entry.
type ChangeKind uint8

const (
	Entered ChangeKind = iota + 1
	Left
	Updated
)

func (k ChangeKind) String() string {
	switch k {
	case Entered:
		return "entered"
	case Left:
		return "left"
	case Updated:
		return "updated"
	}
	return "unknown"
}

// Change is a difference the queue store applied (or, in a dry run, would
// apply). Row is the new row for Entered/Updated and the old one for Left.
type Change struct {
	Kind ChangeKind
	Row  Row
}

// Mark names the last source transaction (or piece of a large one) whose
// queue writes are durable. It is stored in the same PostgreSQL transaction
// as those writes, so after a crash the apply loop knows exactly which
// replayed transactions already reached the queue and does not recompute
// their rows: a recomputation would read the source as it is now and
// attribute newer values to an old transaction, a second queue notice for
// it (the later transaction that made those values announces them).
type Mark struct {
	// End of the last whole transaction applied (File/Pos and GTIDSet, as
	// change.Position).
	File    string
	Pos     uint32
	GTIDSet string
	// When the last write was a piece of a large transaction: that
	// transaction's identity (change.Txn.ID()) and the piece's index.
	// PartialTxn is "" otherwise.
	PartialTxn string
	Piece      int
}

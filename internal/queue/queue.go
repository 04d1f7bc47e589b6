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

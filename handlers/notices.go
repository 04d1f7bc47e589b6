package handlers

import (
	"slices"
	"strconv"
	"time"

	"dialsync/change"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// Notice composition: pure, like the handlers. The apply loop and reconcile
// decide when a notice goes out; these functions decide what it says.

// UserChanges collects what one transaction did to one user (tables,
// operations, changed columns), for its user.changed notice.
type UserChanges struct {
	tables, ops, cols []string
}

func addUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// Add records change c.
func (u *UserChanges) Add(c *change.Change) {
	u.tables = addUnique(u.tables, c.Table)
	u.ops = addUnique(u.ops, c.Op.String())
	for _, col := range c.Changed {
		u.cols = addUnique(u.cols, col)
	}
}

// Merge records everything b recorded (the pieces of a large transaction).
func (u *UserChanges) Merge(b *UserChanges) {
	for _, v := range b.tables {
		u.tables = addUnique(u.tables, v)
	}
	for _, v := range b.ops {
		u.ops = addUnique(u.ops, v)
	}
	for _, v := range b.cols {
		u.cols = addUnique(u.cols, v)
	}
}

// Notices composes the notices of one pipeline.
type Notices struct {
	Source string // the CloudEvents source, "dialsync/<pipeline>"
	Prefix string // the NATS subject prefix
}

// NewNotices is the composer of pipeline's notices under subjectPrefix.
func NewNotices(pipeline, subjectPrefix string) Notices {
	return Notices{Source: "dialsync/" + pipeline, Prefix: subjectPrefix}
}

// UserChanged makes the user.changed notice of (t, user). Sorting makes the
// payload identical on replay, whatever the batch boundaries (it sorts u's
// lists in place).
func (n Notices) UserChanged(t *change.Txn, user uint64, u *UserChanges) notice.Message {
	slices.Sort(u.tables)
	slices.Sort(u.ops)
	slices.Sort(u.cols)
	return notice.NewUserChanged(n.Source, n.Prefix, t.CommitTime, notice.UserChanged{
		UserID:     user,
		Tables:     u.tables,
		Operations: u.ops,
		Columns:    u.cols,
		Source:     notice.SourcePosition{File: t.End.File, Pos: t.End.Pos, GTID: t.GTID, Txn: t.ID()},
	})
}

// Origin is what a queue change is attributed to: a source transaction
// (TxnOrigin), or a reconcile run (Txn "reconcile-<run id>", no position).
type Origin struct {
	Txn  string // the transaction's identity (change.Txn.ID) or the run's
	GTID string
	End  change.Position
	At   time.Time // the source commit (or the run's start)
}

// TxnOrigin attributes queue changes to source transaction t.
func TxnOrigin(t *change.Txn) Origin {
	return Origin{Txn: t.ID(), GTID: t.GTID, End: t.End, At: t.CommitTime}
}

// Queue makes the queue notice of a queue change. The id carries a digest
// of the new values: a replay that recomputes different values (the source
// moved on meanwhile) is a different notice, while a replay of the same
// values is dropped by the stream's duplicate window.
func (n Notices) Queue(o Origin, ch queue.Change) notice.Message {
	r := ch.Row
	d := notice.QueueChanged{
		UserID:              r.UserID,
		OpenClaims:          r.OpenClaims,
		PendingRequirements: r.PendingRequirements,
		OldestPendingAt:     r.OldestPendingAt,
		Source:              notice.SourcePosition{File: o.End.File, Pos: o.End.Pos, GTID: o.GTID, Txn: o.Txn + "#" + rowDigest(r)},
	}
	return notice.NewQueueChanged(n.Source, n.Prefix, ch.Kind.String(), o.At, d)
}

// QueueBuilder is the build callback of a queue write (apply.QueueStore's
// Apply, reconcile's ApplyRange): the queue notice of each change the write
// made, attributed to originOf(the change's user). When changes is not nil,
// the write's changes are stored in *changes (the last call wins, as a
// retried write calls build again).
func (n Notices) QueueBuilder(originOf func(user uint64) Origin, changes *[]queue.Change) func([]queue.Change) []notice.Message {
	return func(chs []queue.Change) []notice.Message {
		if changes != nil {
			*changes = chs
		}
		msgs := make([]notice.Message, 0, len(chs))
		for _, ch := range chs {
			msgs = append(msgs, n.Queue(originOf(ch.Row.UserID), ch))
		}
		return msgs
	}
}

// DeadLetter makes the notice announcing dead letter d; at is the source
// commit of its transaction.
func (n Notices) DeadLetter(at time.Time, d notice.DeadLetter) (notice.Message, error) {
	return notice.NewDeadLetter(n.Source, n.Prefix, at, d)
}

// ReconcileCompleted makes the summary notice of a reconcile run that ended
// at at.
func (n Notices) ReconcileCompleted(at time.Time, d notice.ReconcileCompleted) (notice.Message, error) {
	return notice.NewReconcileCompleted(n.Source, n.Prefix, at, d)
}

// rowDigest is a short, stable digest of a queue row's values (FNV-1a).
func rowDigest(r queue.Row) string {
	h := uint64(14695981039346656037)
	mix := func(v uint64) {
		for i := 0; i < 8; i++ {
			h ^= v & 0xff
			h *= 1099511628211
			v >>= 8
		}
	}
	mix(uint64(r.OpenClaims))
	mix(uint64(r.PendingRequirements))
	if r.OldestPendingAt != nil {
		mix(uint64(r.OldestPendingAt.UnixMicro()))
	}
	return strconv.FormatUint(h, 36)
}

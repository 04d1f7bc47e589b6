package handlers

import (
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/internal/queue"
	"dialsync/notice"
)

func TestRowDigest(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	r := queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: &at}
	// The digest is part of queue notice ids, which the stream's duplicate
	// window compares across versions: it must not change.
	if got := rowDigest(r); got != rowDigest(r) || got == "" {
		t.Fatalf("digest %q is not stable", got)
	}
	if got, want := rowDigest(queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2}), "1t74u0aq7h4km"; got != want {
		t.Fatalf("digest %q, want %q", got, want)
	}
	other := r
	other.UserID = 8
	if rowDigest(other) != rowDigest(r) {
		t.Fatal("the digest covers the values, not the user")
	}
	for _, o := range []queue.Row{
		{UserID: 7, OpenClaims: 2, PendingRequirements: 2, OldestPendingAt: &at},
		{UserID: 7, OpenClaims: 1, PendingRequirements: 3, OldestPendingAt: &at},
		{UserID: 7, OpenClaims: 1, PendingRequirements: 2},
	} {
		if rowDigest(o) == rowDigest(r) {
			t.Fatalf("%+v and %+v share a digest", o, r)
		}
	}
}

func TestQueueNotice(t *testing.T) {
	n := NewNotices("main", "ds")
	if n.Source != "dialsync/main" || n.Prefix != "ds" {
		t.Fatalf("notices %+v", n)
	}
	tx := &change.Txn{GTID: "0-1-9", End: change.Position{File: "bin.000002", Pos: 400}, CommitTime: time.Unix(1700000000, 0).UTC()}
	o := TxnOrigin(tx)
	if o.Txn != "0-1-9" || o.GTID != "0-1-9" || o.End != tx.End || !o.At.Equal(tx.CommitTime) {
		t.Fatalf("origin %+v", o)
	}
	row := queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2}
	m := n.Queue(o, queue.Change{Kind: queue.Entered, Row: row})
	if want := "0-1-9#" + rowDigest(row) + "/queue.entered/7"; m.ID != want || m.Subject != "ds.queue.7" {
		t.Fatalf("id %q subject %q, want %q", m.ID, m.Subject, want)
	}
	ev, err := notice.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := ev.QueueChanged()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != notice.TypeQueueEntered || ev.Source != "dialsync/main" || !ev.Time.Equal(tx.CommitTime) ||
		qc.OpenClaims != 1 || qc.PendingRequirements != 2 || qc.Source.File != "bin.000002" || qc.Source.Pos != 400 || qc.Source.GTID != "0-1-9" {
		t.Fatalf("event %+v, data %+v", ev, qc)
	}
	// A replay that recomputes other values is another notice.
	row.PendingRequirements = 3
	if n.Queue(o, queue.Change{Kind: queue.Entered, Row: row}).ID == m.ID {
		t.Fatal("different values, same id")
	}
}

func TestQueueBuilder(t *testing.T) {
	n := NewNotices("p", "dialsync")
	origins := map[uint64]Origin{1: {Txn: "a"}, 2: {Txn: "b"}}
	var seen []queue.Change
	build := n.QueueBuilder(func(u uint64) Origin { return origins[u] }, &seen)
	chs := []queue.Change{{Kind: queue.Entered, Row: queue.Row{UserID: 1}}, {Kind: queue.Left, Row: queue.Row{UserID: 2}}}
	msgs := build(chs)
	if len(msgs) != 2 || !strings.HasPrefix(msgs[0].ID, "a#") || !strings.HasPrefix(msgs[1].ID, "b#") ||
		!strings.Contains(msgs[1].ID, "/queue.left/2") {
		t.Fatalf("messages %v", msgs)
	}
	if !slices.Equal(seen, chs) {
		t.Fatalf("changes seen %v", seen)
	}
	// A retried write builds again; the last call's changes stand.
	build(chs[:1])
	if len(seen) != 1 {
		t.Fatalf("changes seen %v after a second build", seen)
	}
	if got := n.QueueBuilder(func(uint64) Origin { return Origin{} }, nil)(chs); len(got) != 2 {
		t.Fatalf("without a changes pointer: %v", got)
	}
}

// A user's notice lists each table, operation and column once, sorted, so
// the payload is the same whatever order (or batch boundaries, or pieces)
// the changes came in.
func TestUserChangedNotice(t *testing.T) {
	n := NewNotices("p", "dialsync")
	tx := &change.Txn{GTID: "0-1-4", End: change.Position{File: "bin.000001", Pos: 90}, CommitTime: time.Unix(1700000000, 0).UTC()}
	req := change.Change{Table: "claim_requirements", Op: change.Update, Changed: []string{"status"}}
	usr := change.Change{Table: "users", Op: change.Update, Changed: []string{"phone_number", "email"}}
	ins := change.Change{Table: "claim_requirements", Op: change.Insert}

	var one UserChanges
	for _, c := range []*change.Change{&req, &usr, &ins, &req} {
		one.Add(c)
	}
	var a, b UserChanges
	a.Add(&ins)
	a.Add(&usr)
	b.Add(&req)
	b.Merge(&a)
	m1, m2 := n.UserChanged(tx, 5, &one), n.UserChanged(tx, 5, &b)
	if m1.ID != "0-1-4/user.changed/5" || m1.Subject != "dialsync.user.5" || string(m1.Data) != string(m2.Data) {
		t.Fatalf("notices differ:\n%s\n%s", m1.Data, m2.Data)
	}
	ev, err := notice.Decode(m1.Data)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := ev.UserChanged()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uc.Tables, []string{"claim_requirements", "users"}) || !slices.Equal(uc.Operations, []string{"insert", "update"}) ||
		!slices.Equal(uc.Columns, []string{"email", "phone_number", "status"}) || uc.UserID != 5 || uc.Source.Txn != "0-1-4" {
		t.Fatalf("user.changed %+v", uc)
	}
}

func TestDeadLetterAndReconcileNotices(t *testing.T) {
	n := NewNotices("p", "dialsync")
	at := time.Unix(1700000000, 0).UTC()
	m, err := n.DeadLetter(at, notice.DeadLetter{Table: "users", Operation: "insert", Seq: 2, Error: "bad",
		Source: notice.SourcePosition{File: "bin.000001", Pos: 5, Txn: "0-1-1"}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := notice.Decode(m.Data)
	if err != nil || ev.Type != notice.TypeDeadLetter || ev.Source != "dialsync/p" || !strings.HasPrefix(m.Subject, "dialsync.") {
		t.Fatalf("dead letter notice %+v %v (%s)", ev, err, m.Subject)
	}
	m, err = n.ReconcileCompleted(at, notice.ReconcileCompleted{RunID: "r1", StartedAt: at, FinishedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	ev, err = notice.Decode(m.Data)
	if err != nil || ev.Type != notice.TypeReconcileCompleted || ev.Source != "dialsync/p" {
		t.Fatalf("reconcile notice %+v %v", ev, err)
	}
}

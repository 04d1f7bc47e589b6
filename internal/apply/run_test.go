package apply

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// The order of the four steps is the heart of invariants 1 and 3.
func TestStepOrderAndCheckpoint(t *testing.T) {
	f := newFakes()
	f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2}
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	runLoop(t, l)
	if err := l.Submit(context.Background(), txn("0-1-5", 500, userUpdate(7, "status"))); err != nil {
		t.Fatal(err)
	}
	st := <-applied
	<-f.savedCh
	want := []string{"outbox", "barrier", "rule", "postgres", "redis", "nats", "clear", "checkpoint"}
	if !slices.Equal(f.calls, want) {
		t.Fatalf("calls = %v, want %v", f.calls, want)
	}
	if st.Checkpoint.Pos != 500 || len(f.saved) != 1 {
		t.Fatalf("checkpoint = %+v saved %v", st.Checkpoint, f.saved)
	}
	if !slices.Equal(f.deleted, []string{"t:user:7:context", "t:user:7:claims", "t:eligible_users", "t:queue:queued"}) {
		t.Fatalf("deleted = %v", f.deleted)
	}
	if len(f.pubs) != 2 {
		t.Fatalf("published %d, want queue.entered + user.changed", len(f.pubs))
	}
	var types []string
	for _, m := range f.pubs {
		ev, err := notice.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
		if ev.ID != m.ID {
			t.Fatalf("event id %q != Nats-Msg-Id %q", ev.ID, m.ID)
		}
	}
	if !slices.Equal(types, []string{notice.TypeQueueEntered, notice.TypeUserChanged}) {
		t.Fatalf("types = %v", types)
	}
}

// A large transaction arrives in pieces: effects apply per piece, but the
// checkpoint stays put until the last piece, and each user gets exactly one
// user.changed notice for the transaction.
func TestPartialTransaction(t *testing.T) {
	f := newFakes()
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	runLoop(t, l)
	p0 := txn("0-1-3", 0, userUpdate(1, "status"), userUpdate(2, "phone_number"))
	p0.Partial, p0.End = true, change.Position{File: "bin.000001", Pos: 100, GTIDSet: "0-1-2"}
	p1 := txn("0-1-3", 0, userUpdate(2, "email"))
	p1.Partial, p1.Piece, p1.End = true, 1, p0.End
	last := txn("0-1-3", 700, userUpdate(3, "status"))
	last.Piece = 2
	for _, x := range []*change.Txn{p0, p1, last} {
		if err := l.Submit(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		<-applied
		if !x.Partial {
			<-f.savedCh
		}
		f.mu.Lock()
		n := len(f.saved)
		f.mu.Unlock()
		if x.Partial && n != 0 {
			t.Fatalf("checkpoint moved inside a transaction: %v", f.saved)
		}
	}
	if len(f.saved) != 1 || f.saved[0].Pos != 700 {
		t.Fatalf("saved = %v", f.saved)
	}
	byUser := map[string][]string{}
	for _, m := range f.pubs {
		ev, _ := notice.Decode(m.Data)
		uc, err := ev.UserChanged()
		if err != nil {
			t.Fatal(err)
		}
		byUser[ev.Subject] = append(byUser[ev.Subject], strings.Join(uc.Columns, ","))
	}
	want := map[string][]string{"1": {"status"}, "2": {"email,phone_number"}, "3": {"status"}}
	for u, cols := range want {
		if !slices.Equal(byUser[u], cols) {
			t.Fatalf("user %s notices %v, want %v (all: %v)", u, byUser[u], cols, byUser)
		}
	}
}

// Queue notices stored in the outbox by a run that died before publishing
// them are published first on the next start.
func TestOutboxReplayedAtStart(t *testing.T) {
	f := newFakes()
	left := notice.NewQueueChanged("dialsync/p", "dialsync", "left", time.Now(), notice.QueueChanged{UserID: 4, Source: notice.SourcePosition{Txn: "0-1-1#x"}})
	f.outbox = []notice.Message{left}
	applied := make(chan BatchStats, 1)
	l := newTestLoop(t, f, applied)
	runLoop(t, l)
	if err := l.Submit(context.Background(), txn("0-1-2", 200)); err != nil {
		t.Fatal(err)
	}
	<-applied
	<-f.savedCh
	if len(f.pubs) == 0 || f.pubs[0].ID != left.ID {
		t.Fatalf("outbox not published first: %v", f.pubs)
	}
	if len(f.outbox) != 0 {
		t.Fatal("outbox not cleared")
	}
	// An empty (ignored-tables) transaction still moves the checkpoint.
	if len(f.saved) != 1 || f.saved[0].Pos != 200 {
		t.Fatalf("saved = %v", f.saved)
	}
}

// A change the handlers reject halts the loop with the position; nothing
// after it is applied.
func TestPoisonHalts(t *testing.T) {
	f := newFakes()
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	bad := change.Change{Table: "users", Op: change.Insert, After: change.Row{"not-an-id"}}
	if err := l.Submit(ctx, txn("0-1-4", 400, bad)); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, ErrPoison) || !strings.Contains(err.Error(), "bin.000001:400") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "not-an-id") {
		t.Fatalf("error leaks a row value: %v", err)
	}
	if len(f.saved) != 0 {
		t.Fatalf("checkpoint moved past a poison row: %v", f.saved)
	}
}

type fakeDL struct{ got []DeadLetter }

func (f *fakeDL) AddDeadLetter(_ context.Context, d DeadLetter) error {
	f.got = append(f.got, d)
	return nil
}

// With a dead-letter policy a poison row is recorded and announced, and the
// stream goes on past it.
func TestDeadLetterPolicy(t *testing.T) {
	f := newFakes()
	dl := &fakeDL{}
	keys, _ := handlers.NewKeys("", handlers.DefaultUserKeyTemplates, handlers.DefaultQueueKeys)
	applied := make(chan BatchStats, 10)
	l := New(Config{Pipeline: "p", Keys: keys, OnApplied: func(s BatchStats) { applied <- s },
		DeadLetter: func(table string) bool { return table == "users" }},
		Deps{Lookup: f, Queue: f, Cache: f, Publisher: f, Checkpoint: f, DeadLetters: dl},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	runLoop(t, l)
	bad := change.Change{Table: "users", Op: change.Insert, After: change.Row{"secret-value"}}
	if err := l.Submit(context.Background(), txn("0-1-4", 400, bad, userUpdate(8, "status"))); err != nil {
		t.Fatal(err)
	}
	st := <-applied
	<-f.savedCh
	if len(dl.got) != 1 || dl.got[0].Table != "users" || dl.got[0].Seq != 0 || dl.got[0].End.Pos != 400 {
		t.Fatalf("dead letters = %+v", dl.got)
	}
	if strings.Contains(dl.got[0].Err, "secret-value") {
		t.Fatalf("dead letter error carries a row value: %s", dl.got[0].Err)
	}
	if st.Checkpoint.Pos != 400 {
		t.Fatalf("checkpoint = %v: the stream must go on", st.Checkpoint)
	}
	var types []string
	for _, m := range f.pubs {
		ev, _ := notice.Decode(m.Data)
		types = append(types, ev.Type)
	}
	if !slices.Contains(types, notice.TypeDeadLetter) || !slices.Contains(types, notice.TypeUserChanged) {
		t.Fatalf("notices = %v", types)
	}
}

// Two large transactions whose pieces meet in one batch: each user gets
// one user.changed notice under the transaction that touched it, never
// under the neighbour's (the end of one and the start of the next were
// merged before).
func TestAdjacentLargeTransactionsKeepTheirNotices(t *testing.T) {
	f := newFakes()
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	start := change.Position{File: "bin.000001", Pos: 100, GTIDSet: "0-1-2"}
	a0 := txn("0-1-3", 0, userUpdate(1, "status"))
	a0.Partial, a0.End = true, start
	a1 := txn("0-1-3", 400, userUpdate(1, "email"))
	a1.Piece = 1
	b0 := txn("0-1-4", 0, userUpdate(2, "status"))
	b0.Partial, b0.End = true, a1.End
	b1 := txn("0-1-4", 800, userUpdate(3, "status"))
	b1.Piece = 1
	// Queued before the loop runs, so they form one batch.
	for _, x := range []*change.Txn{a0, a1, b0, b1} {
		if err := l.Submit(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	runLoop(t, l)
	for n := 0; n < 4; {
		n += (<-applied).Txns
	}
	got := map[string]string{}
	eachUserChanged(f.pubs, func(subject string, uc notice.UserChanged) {
		if prev, ok := got[subject]; ok {
			t.Errorf("user %s: two notices (%s and %s)", subject, prev, uc.Source.Txn)
		}
		got[subject] = uc.Source.Txn
	})
	want := map[string]string{"1": "0-1-3", "2": "0-1-4", "3": "0-1-4"}
	if !maps.Equal(got, want) {
		t.Fatalf("user -> transaction of its notice = %v, want %v", got, want)
	}
}

// A user touched through the lookup server by an earlier transaction and
// directly by a later one: its queue notice goes under the later one (the
// touches are resolved out of transaction order: the maps' first).
func TestQueueNoticeUnderTheLastTouchingTransaction(t *testing.T) {
	f := newFakes()
	f.owners[70] = 7 // claim 70 is unknown to the claim map: resolved on the lookup server
	f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 1}
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	req := change.Change{Table: "claim_requirements", Op: change.Insert, After: change.Row{int64(1), int64(70)}}
	for _, x := range []*change.Txn{txn("0-1-5", 500, req), txn("0-1-6", 600, userUpdate(7, "status"))} {
		if err := l.Submit(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	runLoop(t, l)
	for n := 0; n < 2; {
		n += (<-applied).Txns
	}
	var origin string
	for _, m := range f.pubs {
		ev, _ := notice.Decode(m.Data)
		if ev.Type == notice.TypeQueueEntered {
			qc, err := ev.QueueChanged()
			if err != nil {
				t.Fatal(err)
			}
			origin = qc.Source.Txn
		}
	}
	if !strings.HasPrefix(origin, "0-1-6") {
		t.Fatalf("queue.entered of user 7 under transaction %q, want the later 0-1-6", origin)
	}
}

package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// These are unit tests of the loop's ordering and bookkeeping with fakes
// built from func fields; the real servers are exercised end to end in
// cmd/dialsync's integration tests.

type fakes struct {
	mu             sync.Mutex
	calls          []string
	owners         map[uint64]uint64
	addrs          map[uint64][]uint64
	queued         map[uint64]queue.Row // the rule's answer
	table          map[uint64]queue.Row // the "PostgreSQL" queue
	outbox         []notice.Message
	deleted        []string
	pubs           []notice.Message
	saved          []change.Position
	failNext       map[string]int // op -> failures to inject
	storedOwners   map[uint64]uint64
	storedPointers map[uint64]uint64
	savedCh        chan change.Position
	barriers       []map[string][]uint64
	mark           *queue.Mark // the last mark Apply stored
	applied        [][]uint64  // users of every Apply call
}

func newFakes() *fakes {
	return &fakes{owners: map[uint64]uint64{}, addrs: map[uint64][]uint64{}, queued: map[uint64]queue.Row{},
		table: map[uint64]queue.Row{}, failNext: map[string]int{}, storedOwners: map[uint64]uint64{}, storedPointers: map[uint64]uint64{}, savedCh: make(chan change.Position, 100)}
}

func (f *fakes) step(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
	if f.failNext[op] > 0 {
		f.failNext[op]--
		return errors.New(op + ": injected failure")
	}
	return nil
}

func (f *fakes) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakes) CommitBarrier(_ context.Context, rows map[string][]uint64) error {
	f.mu.Lock()
	f.barriers = append(f.barriers, rows)
	f.mu.Unlock()
	return f.step("barrier")
}

func (f *fakes) ClaimOwners(_ context.Context, ids []uint64) (map[uint64]uint64, error) {
	if err := f.step("claims"); err != nil {
		return nil, err
	}
	m := map[uint64]uint64{}
	for _, id := range ids {
		if u, ok := f.owners[id]; ok {
			m[id] = u
		}
	}
	return m, nil
}

func (f *fakes) AddressUsers(_ context.Context, ids []uint64) (map[uint64][]uint64, error) {
	if err := f.step("addresses"); err != nil {
		return nil, err
	}
	m := map[uint64][]uint64{}
	for _, id := range ids {
		m[id] = f.addrs[id]
	}
	return m, nil
}

func (f *fakes) QueueRows(_ context.Context, users []uint64) ([]queue.Row, error) {
	if err := f.step("rule"); err != nil {
		return nil, err
	}
	var rows []queue.Row
	for _, u := range users {
		if r, ok := f.queued[u]; ok {
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func (f *fakes) Apply(_ context.Context, users []uint64, rows []queue.Row, mark *queue.Mark, build func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	if err := f.step("postgres"); err != nil {
		return nil, err
	}
	if mark != nil {
		f.mark = mark
	}
	f.applied = append(f.applied, slices.Clone(users))
	in := map[uint64]queue.Row{}
	for _, r := range rows {
		in[r.UserID] = r
	}
	var chs []queue.Change
	for _, u := range users {
		old, had := f.table[u]
		nw, has := in[u]
		switch {
		case has && !had:
			chs = append(chs, queue.Change{Kind: queue.Entered, Row: nw})
			f.table[u] = nw
		case !has && had:
			chs = append(chs, queue.Change{Kind: queue.Left, Row: old})
			delete(f.table, u)
		case has && had && old != nw:
			chs = append(chs, queue.Change{Kind: queue.Updated, Row: nw})
			f.table[u] = nw
		}
	}
	msgs := build(chs)
	f.outbox = append(f.outbox, msgs...)
	return msgs, nil
}

func (f *fakes) Outbox(context.Context) ([]notice.Message, error) {
	return slices.Clone(f.outbox), f.step("outbox")
}
func (f *fakes) ClearOutbox(context.Context) error {
	if err := f.step("clear"); err != nil {
		return err
	}
	f.outbox = nil
	return nil
}
func (f *fakes) DeleteOutbox(_ context.Context, ids []string) error {
	if err := f.step("clear"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outbox = slices.DeleteFunc(f.outbox, func(m notice.Message) bool { return slices.Contains(ids, m.ID) })
	return nil
}

func (f *fakes) Del(_ context.Context, keys []string) error {
	if err := f.step("redis"); err != nil {
		return err
	}
	f.deleted = append(f.deleted, keys...)
	return nil
}
func (f *fakes) Publish(_ context.Context, msgs []notice.Message) error {
	if err := f.step("nats"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pubs = append(f.pubs, msgs...)
	return nil
}
func (f *fakes) Save(_ context.Context, p change.Position, owners, pointers map[uint64]uint64) error {
	if err := f.step("checkpoint"); err != nil {
		return err
	}
	f.mu.Lock()
	f.saved = append(f.saved, p)
	for c, u := range owners {
		f.storedOwners[c] = u
	}
	for u, a := range pointers {
		f.storedPointers[u] = a
	}
	f.mu.Unlock()
	f.savedCh <- p
	return nil
}

func newTestLoop(t *testing.T, f *fakes, applied chan BatchStats) *Loop {
	t.Helper()
	keys, err := handlers.NewKeys("t:", handlers.DefaultUserKeyTemplates, handlers.DefaultQueueKeys)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Pipeline: "p", Keys: keys, RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond,
		OnApplied: func(s BatchStats) { applied <- s }},
		Deps{Lookup: f, Queue: f, Cache: f, Publisher: f, Checkpoint: f},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func runLoop(t *testing.T, l *Loop) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func txn(gtid string, end uint32, changes ...change.Change) *change.Txn {
	return &change.Txn{Changes: changes, GTID: gtid, End: change.Position{File: "bin.000001", Pos: end, GTIDSet: "0-1-" + gtid[4:]},
		CommitTime: time.Unix(1700000000, 0).UTC(), Bytes: 100}
}

func userUpdate(id int64, cols ...string) change.Change {
	return change.Change{Table: "users", Op: change.Update, Before: change.Row{id, nil}, After: change.Row{id, nil}, Changed: cols}
}

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

// A failure of any server pauses and retries that stage; nothing is
// skipped and the checkpoint moves only after all effects.
func TestRetriesEveryStage(t *testing.T) {
	for _, op := range []string{"barrier", "rule", "postgres", "redis", "nats", "clear", "checkpoint", "claims"} {
		t.Run(op, func(t *testing.T) {
			f := newFakes()
			f.queued[7] = queue.Row{UserID: 7, OpenClaims: 1}
			f.owners[70] = 7
			f.failNext[op] = 3
			applied := make(chan BatchStats, 10)
			l := newTestLoop(t, f, applied)
			runLoop(t, l)
			req := change.Change{Table: "claim_requirements", Op: change.Insert, After: change.Row{int64(1), int64(70)}}
			if err := l.Submit(context.Background(), txn("0-1-9", 900, req)); err != nil {
				t.Fatal(err)
			}
			<-applied
			<-f.savedCh
			if f.failNext[op] != 0 {
				t.Fatalf("%s: injected failures not consumed", op)
			}
			if len(f.saved) != 1 || f.saved[0].Pos != 900 {
				t.Fatalf("saved = %v", f.saved)
			}
			if len(f.pubs) != 2 {
				t.Fatalf("published %d", len(f.pubs))
			}
			// The checkpoint is the last call: nothing after it.
			if f.calls[len(f.calls)-1] != "checkpoint" {
				t.Fatalf("calls = %v", f.calls)
			}
		})
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

// Claims learned from the claims stream resolve requirement changes without
// the lookup server, even after the claim was hard-deleted.
func TestLearnedOwners(t *testing.T) {
	f := newFakes()
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	runLoop(t, l)
	del := change.Change{Table: "claims", Op: change.Delete, Before: change.Row{int64(50), int64(5)}}
	req := change.Change{Table: "claim_requirements", Op: change.Delete, Before: change.Row{int64(1), int64(50)}}
	if err := l.Submit(context.Background(), txn("0-1-1", 100, del)); err != nil {
		t.Fatal(err)
	}
	<-applied
	<-f.savedCh
	if err := l.Submit(context.Background(), txn("0-1-2", 200, req)); err != nil {
		t.Fatal(err)
	}
	st := <-applied
	<-f.savedCh
	if st.Unresolved != 0 || st.Users != 1 {
		t.Fatalf("stats = %+v", st)
	}
	if slices.Contains(f.callList(), "claims") {
		t.Fatalf("looked up a claim the stream taught: %v", f.calls)
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

// A requirement change resolves to the claim's owner at the change's place
// in the binlog, even when a later change in the same batch moves the claim
// (the lookup server would already show the new owner). The map stored with
// the checkpoint is the map after the batch.
func TestOwnerAsOfBinlogPosition(t *testing.T) {
	f := newFakes()
	f.owners[60] = 9 // what the lookup server says now: already moved
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	l.SetOwners(map[uint64]uint64{60: 6}, false)
	runLoop(t, l)
	req := change.Change{Table: "claim_requirements", Op: change.Update, Before: change.Row{int64(1), int64(60)}, After: change.Row{int64(1), int64(60)}, Changed: []string{"status"}}
	move := change.Change{Table: "claims", Op: change.Update, Before: change.Row{int64(60), int64(6)}, After: change.Row{int64(60), int64(9)}, Changed: []string{"user_id"}}
	req2 := req
	// Two transactions in one batch: submit both before the loop can take
	// the first alone is not guaranteed, so check notices, not batches.
	if err := l.Submit(context.Background(), txn("0-1-1", 100, req, move, req2)); err != nil {
		t.Fatal(err)
	}
	<-applied
	<-f.savedCh
	got := map[string][]string{}
	for _, m := range f.pubs {
		ev, _ := notice.Decode(m.Data)
		if ev.Type != notice.TypeUserChanged {
			continue
		}
		uc, _ := ev.UserChanged()
		got[ev.Subject] = uc.Tables
	}
	if !slices.Equal(got["6"], []string{"claim_requirements", "claims"}) || !slices.Equal(got["9"], []string{"claim_requirements", "claims"}) {
		t.Fatalf("notices = %v", got)
	}
	if slices.Contains(f.callList(), "claims") {
		t.Fatal("looked up a claim the map knew")
	}
	if f.storedOwners[60] != 9 {
		t.Fatalf("stored owners = %v", f.storedOwners)
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

// An address change resolves to the users pointing at the address at that
// place in the binlog: a user who moved away later in the batch is still
// named, one who moved in later is not.
func TestAddressPointersAsOfBinlogPosition(t *testing.T) {
	f := newFakes()
	f.addrs[70] = []uint64{99} // the lookup server's (later) view: must not be used
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	l.SetPointers(map[uint64]uint64{5: 70, 6: 71}, false)
	runLoop(t, l)
	addrUpd := change.Change{Table: "user_addresses", Op: change.Update, Before: change.Row{int64(70), int64(5)}, After: change.Row{int64(70), int64(5)}, Changed: []string{"post_code"}}
	move5 := change.Change{Table: "users", Op: change.Update, Before: change.Row{int64(5), int64(70)}, After: change.Row{int64(5), int64(72)}, Changed: []string{"current_user_address_id"}}
	move6 := change.Change{Table: "users", Op: change.Update, Before: change.Row{int64(6), int64(71)}, After: change.Row{int64(6), int64(70)}, Changed: []string{"current_user_address_id"}}
	if err := l.Submit(context.Background(), txn("0-1-1", 100, addrUpd)); err != nil {
		t.Fatal(err)
	}
	if err := l.Submit(context.Background(), txn("0-1-2", 200, move5, move6)); err != nil {
		t.Fatal(err)
	}
	addrUpd2 := addrUpd
	if err := l.Submit(context.Background(), txn("0-1-3", 300, addrUpd2)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case <-applied:
		case <-time.After(5 * time.Second):
		}
	}
	waitFor := func() {
		for {
			f.mu.Lock()
			n := len(f.saved)
			f.mu.Unlock()
			if n > 0 && f.saved[n-1].Pos == 300 {
				return
			}
			<-f.savedCh
		}
	}
	waitFor()
	f.mu.Lock()
	defer f.mu.Unlock()
	got := map[string][]string{}
	for _, m := range f.pubs {
		ev, _ := notice.Decode(m.Data)
		if ev.Type != notice.TypeUserChanged {
			continue
		}
		uc, _ := ev.UserChanged()
		got[uc.Source.Txn] = append(got[uc.Source.Txn], ev.Subject)
	}
	for k := range got {
		slices.Sort(got[k])
	}
	if !slices.Equal(got["0-1-1"], []string{"5"}) || !slices.Equal(got["0-1-3"], []string{"5", "6"}) {
		t.Fatalf("notices by txn = %v; want 0-1-1 -> [5], 0-1-3 -> [5 6] (5 owns it, 6 points at it now)", got)
	}
	if slices.Contains(f.calls, "addresses") {
		t.Fatal("looked up an address the pointer map knew")
	}
	if f.storedPointers[5] != 72 || f.storedPointers[6] != 70 {
		t.Fatalf("stored pointers = %v", f.storedPointers)
	}
}

// A replay after a crash: transactions at or before the queue mark keep
// their queue rows (no recompute, no second queue notice); their keys and
// user.changed notices go out again (idempotent). From the first
// transaction past the mark on, rows are recomputed, and every queue write
// stores the mark of its batch's last transaction.
func TestReplayKeepsMarkedQueueRows(t *testing.T) {
	piece := func(gtid string, n int, partial bool, c change.Change) *change.Txn {
		tx := txn(gtid, 800, c)
		tx.Partial, tx.Piece = partial, n
		if partial {
			tx.End = change.Position{File: "bin.000001", Pos: 800, GTIDSet: "0-1-8"} // where it starts
		} else {
			tx.End = change.Position{File: "bin.000001", Pos: 900, GTIDSet: "0-1-9"}
		}
		return tx
	}
	cases := []struct {
		name      string
		mark      queue.Mark
		txns      []*change.Txn
		recompute []uint64 // users whose rows may be recomputed
		keep      []uint64 // users whose rows must not be
		lastMark  queue.Mark
	}{
		{"whole transactions", queue.Mark{File: "bin.000001", Pos: 600, GTIDSet: "0-1-6"},
			[]*change.Txn{txn("0-1-5", 500, userUpdate(7, "status")), txn("0-1-6", 600, userUpdate(8, "status")),
				txn("0-1-7", 700, userUpdate(9, "status")), txn("0-1-8", 800, userUpdate(7, "status"))},
			[]uint64{7, 9}, []uint64{8}, queue.Mark{File: "bin.000001", Pos: 800, GTIDSet: "0-1-8"}},
		{"pieces of a large transaction", queue.Mark{File: "bin.000001", Pos: 800, GTIDSet: "0-1-8", PartialTxn: "0-1-9", Piece: 0},
			[]*change.Txn{piece("0-1-9", 0, true, userUpdate(7, "status")), piece("0-1-9", 1, true, userUpdate(8, "status")),
				piece("0-1-9", 2, false, userUpdate(9, "status"))},
			[]uint64{8, 9}, []uint64{7}, queue.Mark{File: "bin.000001", Pos: 900, GTIDSet: "0-1-9"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakes()
			for _, u := range []uint64{7, 8, 9} {
				f.queued[u] = queue.Row{UserID: u, OpenClaims: 1}
			}
			applied := make(chan BatchStats, 10)
			l := newTestLoop(t, f, applied)
			l.SetMark(c.mark, canal.Includes)
			for _, tx := range c.txns {
				if err := l.Submit(context.Background(), tx); err != nil {
					t.Fatal(err)
				}
			}
			runLoop(t, l)
			for n := 0; n < len(c.txns); {
				n += (<-applied).Txns
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			var written []uint64
			for _, us := range f.applied {
				written = append(written, us...)
			}
			slices.Sort(written)
			if !slices.Equal(written, c.recompute) {
				t.Fatalf("queue rows written for users %v, want %v (rows of %v were already in the queue)", written, c.recompute, c.keep)
			}
			if f.mark == nil || *f.mark != c.lastMark {
				t.Fatalf("stored mark %+v, want %+v", f.mark, c.lastMark)
			}
			users := map[uint64]bool{}
			for _, m := range f.pubs {
				ev, err := notice.Decode(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				if ev.IsQueue() {
					qc, _ := ev.QueueChanged()
					if slices.Contains(c.keep, qc.UserID) {
						t.Fatalf("queue notice for user %d, whose row was already written: %s", qc.UserID, ev.ID)
					}
				} else if uc, err := ev.UserChanged(); err == nil {
					users[uc.UserID] = true
				}
			}
			for _, u := range c.keep {
				if !users[u] {
					t.Fatalf("no user.changed notice for user %d: replayed transactions still announce the change", u)
				}
				// The crash may have come between the queue write and the
				// cache deletion: a replay deletes the keys again.
				if k := fmt.Sprintf("t:user:%d:context", u); !slices.Contains(f.deleted, k) {
					t.Fatalf("key %s not deleted on replay (deleted %v)", k, f.deleted)
				}
			}
		})
	}
}

// The commit barrier locks one row per transaction, or, when the source
// commits in binlog order, one row of the batch's last transaction with a
// tracked row.
func TestCommitBarrierRows(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		f := newFakes()
		applied := make(chan BatchStats, 10)
		l := newTestLoop(t, f, applied)
		l.cfg.OrderedCommits = ordered
		req := change.Change{Table: "claim_requirements", Op: change.Insert, After: change.Row{int64(9), int64(70)}}
		f.owners[70] = 7
		for _, tx := range []*change.Txn{txn("0-1-5", 500, userUpdate(7, "status")), txn("0-1-6", 600, userUpdate(8, "status")),
			txn("0-1-7", 700, req), txn("0-1-8", 800)} {
			if err := l.Submit(context.Background(), tx); err != nil {
				t.Fatal(err)
			}
		}
		runLoop(t, l)
		for n := 0; n < 4; {
			n += (<-applied).Txns
		}
		f.mu.Lock()
		got := map[string][]uint64{}
		for _, b := range f.barriers {
			for tbl, ids := range b {
				got[tbl] = append(got[tbl], ids...)
			}
		}
		batches := len(f.barriers)
		f.mu.Unlock()
		if batches == 1 {
			want := map[string][]uint64{"users": {8, 7}, "claim_requirements": {9}}
			if ordered {
				want = map[string][]uint64{"claim_requirements": {9}}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("ordered=%v: barrier rows %v, want %v", ordered, got, want)
			}
		} else if !ordered && len(got["users"])+len(got["claim_requirements"]) != 3 {
			t.Fatalf("ordered=%v: barrier rows %v over %d batches, want one per transaction with rows", ordered, got, batches)
		}
	}
}

package apply

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

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

// eachUserChanged calls fn with the subject and data of every user.changed
// notice in msgs.
func eachUserChanged(msgs []notice.Message, fn func(subject string, uc notice.UserChanged)) {
	for _, m := range msgs {
		ev, _ := notice.Decode(m.Data)
		if ev.Type != notice.TypeUserChanged {
			continue
		}
		uc, _ := ev.UserChanged()
		fn(ev.Subject, uc)
	}
}

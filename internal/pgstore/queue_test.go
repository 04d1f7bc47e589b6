package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/checkpoint"
	"dialsync/internal/migrate"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// testSchema is dialsync's whole schema, the checkpoint package's tables and
// this package's. dialsync/internal/dbschema holds the same list, but it
// imports this package, so the test names the owners itself.
var testSchema = migrate.MustNew(
	migrate.Source{Owner: "checkpoint", FS: checkpoint.Migrations()},
	migrate.Source{Owner: "pgstore", FS: Migrations()},
)

func newQueue(t testing.TB) (*Queue, *pgxpool.Pool) {
	t.Helper()
	pool, _ := newDB(t)
	if err := testSchema.Migrate(context.Background(), pool, "dialsync"); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return NewQueue(pool, "dialsync", "main"), pool
}

func tp(s string) *time.Time {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return &v
}

// buildMsgs turns changes into one message per change, so tests can see
// exactly what build was given.
func buildMsgs(cs []queue.Change) []notice.Message {
	var out []notice.Message
	for _, c := range cs {
		id := fmt.Sprintf("%s-%d", c.Kind, c.Row.UserID)
		out = append(out, notice.Message{Subject: "dialsync.queue." + strconv.FormatUint(c.Row.UserID, 10), ID: id, Data: []byte(id)})
	}
	return out
}

type stored struct {
	row                 queue.Row
	enteredAt, updateAt time.Time
}

func readQueue(t testing.TB, pool *pgxpool.Pool) map[uint64]stored {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT user_id, open_claims, pending_requirements, oldest_pending_at, entered_at, updated_at FROM dialsync.call_queue`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[uint64]stored{}
	for rows.Next() {
		var s stored
		var oc, pr int32
		if err := rows.Scan(&s.row.UserID, &oc, &pr, &s.row.OldestPendingAt, &s.enteredAt, &s.updateAt); err != nil {
			t.Fatal(err)
		}
		s.row.OpenClaims, s.row.PendingRequirements = int64(oc), int64(pr)
		out[s.row.UserID] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func kinds(cs []queue.Change) map[uint64]queue.ChangeKind {
	m := map[uint64]queue.ChangeKind{}
	for _, c := range cs {
		m[c.Row.UserID] = c.Kind
	}
	return m
}

func TestApplyEnteredUpdatedLeftUnchanged(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()

	var got []queue.Change
	capture := func(cs []queue.Change) []notice.Message { got = cs; return buildMsgs(cs) }

	first := []queue.Row{
		{UserID: 1, OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: tp("2024-01-02T03:04:05.123456789Z")},
		{UserID: 2, OpenClaims: 2, PendingRequirements: 3},
		{UserID: 3, OpenClaims: 1, PendingRequirements: 1, OldestPendingAt: tp("2024-01-01T00:00:00Z")},
		{UserID: 4, OpenClaims: 1, PendingRequirements: 1},
	}
	msgs, err := q.Apply(ctx, []uint64{1, 2, 3, 4, 5}, first, nil, capture)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]queue.ChangeKind{1: queue.Entered, 2: queue.Entered, 3: queue.Entered, 4: queue.Entered}
	if !reflect.DeepEqual(kinds(got), want) || len(msgs) != 4 {
		t.Fatalf("first apply changes = %v (%d msgs); want %v", kinds(got), len(msgs), want)
	}
	// Times come back truncated to microseconds, in UTC.
	if !got[0].Row.OldestPendingAt.Equal(*tp("2024-01-02T03:04:05.123456Z")) || got[0].Row.OldestPendingAt.Location() != time.UTC {
		t.Errorf("user 1 oldest_pending_at = %v; want 2024-01-02T03:04:05.123456Z UTC", got[0].Row.OldestPendingAt)
	}
	before := readQueue(t, pool)
	time.Sleep(5 * time.Millisecond) // so a bumped updated_at is visibly later

	// Same input again (nanoseconds and a non-UTC zone included): nothing changes.
	got = nil
	called := false
	same := append([]queue.Row(nil), first...)
	loc := time.FixedZone("X", 3600)
	inZone := first[0].OldestPendingAt.In(loc)
	same[0].OldestPendingAt = &inZone
	msgs, err = q.Apply(ctx, []uint64{1, 2, 3, 4, 5}, same, nil, func(cs []queue.Change) []notice.Message { called = true; return buildMsgs(cs) })
	if err != nil {
		t.Fatal(err)
	}
	if called || len(msgs) != 0 {
		t.Fatalf("unchanged apply called build=%v and returned %d messages; want no changes", called, len(msgs))
	}
	if after := readQueue(t, pool); !reflect.DeepEqual(after, before) {
		t.Fatalf("unchanged apply rewrote rows:\nbefore %v\nafter  %v", before, after)
	}

	// 1: unchanged; 2: count changes (updated); 3: time changes (updated);
	// 4: leaves; 5: enters; 6: not in users but has a row: enters.
	second := []queue.Row{
		first[0],
		{UserID: 2, OpenClaims: 2, PendingRequirements: 4},
		{UserID: 3, OpenClaims: 1, PendingRequirements: 1, OldestPendingAt: tp("2024-01-01T00:00:01Z")},
		{UserID: 5, OpenClaims: 1, PendingRequirements: 1},
		{UserID: 6, OpenClaims: 1, PendingRequirements: 1},
	}
	msgs, err = q.Apply(ctx, []uint64{1, 2, 3, 4, 5}, second, nil, capture)
	if err != nil {
		t.Fatal(err)
	}
	want = map[uint64]queue.ChangeKind{2: queue.Updated, 3: queue.Updated, 4: queue.Left, 5: queue.Entered, 6: queue.Entered}
	if !reflect.DeepEqual(kinds(got), want) {
		t.Fatalf("second apply changes = %v; want %v", kinds(got), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].Row.UserID >= got[i].Row.UserID {
			t.Fatalf("changes not sorted by user id: %v", got)
		}
	}
	for _, c := range got {
		switch c.Row.UserID {
		case 2:
			if c.Row.PendingRequirements != 4 {
				t.Errorf("updated row carries %+v; want the new row", c.Row)
			}
		case 4:
			if c.Row != first[3] {
				t.Errorf("left row = %+v; want the old row %+v", c.Row, first[3])
			}
		}
	}
	if len(msgs) != 5 {
		t.Errorf("returned %d messages; want 5", len(msgs))
	}
	after := readQueue(t, pool)
	if _, ok := after[4]; ok {
		t.Error("user 4 still queued")
	}
	if !after[1].updateAt.Equal(before[1].updateAt) {
		t.Error("unchanged user 1 had updated_at bumped")
	}
	for _, u := range []uint64{2, 3} {
		if !after[u].enteredAt.Equal(before[u].enteredAt) {
			t.Errorf("user %d entered_at changed on update: %v -> %v", u, before[u].enteredAt, after[u].enteredAt)
		}
		if !after[u].updateAt.After(before[u].updateAt) {
			t.Errorf("user %d updated_at not bumped on a real change", u)
		}
	}
	if after[3].row.OldestPendingAt == nil || !after[3].row.OldestPendingAt.Equal(*tp("2024-01-01T00:00:01Z")) {
		t.Errorf("user 3 oldest_pending_at = %v", after[3].row.OldestPendingAt)
	}

	// Duplicate rows for one user: the last wins, no ON CONFLICT error.
	_, err = q.Apply(ctx, []uint64{7}, []queue.Row{{UserID: 7, OpenClaims: 1}, {UserID: 7, OpenClaims: 2}}, nil, capture)
	if err != nil {
		t.Fatalf("apply with duplicate rows: %v", err)
	}
	if r := readQueue(t, pool)[7]; r.row.OpenClaims != 2 {
		t.Errorf("duplicate rows: stored open_claims %d; want the last row's 2", r.row.OpenClaims)
	}
}

func TestOutboxRoundTripAndAtomicity(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()

	msgs, err := q.Apply(ctx, []uint64{3, 1, 2}, []queue.Row{{UserID: 3, OpenClaims: 1}, {UserID: 1, OpenClaims: 1}, {UserID: 2, OpenClaims: 1}}, nil, buildMsgs)
	if err != nil {
		t.Fatal(err)
	}
	out, err := q.Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, msgs) || len(out) != 3 || out[0].ID != "entered-1" {
		t.Fatalf("Outbox = %+v; want what Apply returned, in order: %+v", out, msgs)
	}
	// Another pipeline's outbox is separate.
	other := NewQueue(pool, "dialsync", "other")
	if o, err := other.Outbox(ctx); err != nil || len(o) != 0 {
		t.Fatalf("other pipeline outbox = %v, %v; want empty", o, err)
	}
	if err := q.ClearOutbox(ctx); err != nil {
		t.Fatal(err)
	}
	if o, err := q.Outbox(ctx); err != nil || len(o) != 0 {
		t.Fatalf("Outbox after clear = %v, %v; want empty", o, err)
	}

	// The outbox insert is in the queue transaction: when it fails (a NUL
	// byte is invalid in PostgreSQL text), the queue change is rolled back.
	before := readQueue(t, pool)
	_, err = q.Apply(ctx, []uint64{1, 9}, []queue.Row{{UserID: 9, OpenClaims: 1}}, nil, func(cs []queue.Change) []notice.Message {
		return []notice.Message{{Subject: "bad\x00subject", ID: "x", Data: []byte("x")}}
	})
	if err == nil {
		t.Fatal("Apply with an unstorable message succeeded")
	}
	if after := readQueue(t, pool); !reflect.DeepEqual(after, before) {
		t.Fatalf("queue changed although the outbox insert failed:\nbefore %v\nafter  %v", before, after)
	}
	if o, _ := q.Outbox(ctx); len(o) != 0 {
		t.Fatalf("outbox has %d messages after a failed apply", len(o))
	}
}

func TestApplyRangeRepairsAndDiffIsDryRun(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	// Rows written by "someone else": 15 should not be queued, 12 is wrong,
	// 25 is outside the range and must survive.
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.call_queue VALUES
		(10, 1, 1, NULL, now(), now()), (12, 9, 9, NULL, now(), now()),
		(15, 1, 1, NULL, now(), now()), (25, 1, 1, NULL, now(), now())`); err != nil {
		t.Fatal(err)
	}
	want := []queue.Row{
		{UserID: 10, OpenClaims: 1, PendingRequirements: 1},
		{UserID: 12, OpenClaims: 1, PendingRequirements: 2},
		{UserID: 20, OpenClaims: 1, PendingRequirements: 1, OldestPendingAt: tp("2024-05-01T10:00:00.5Z")},
	}
	before := readQueue(t, pool)
	diff, err := q.Diff(ctx, want, 9, 20)
	if err != nil {
		t.Fatal(err)
	}
	wantKinds := map[uint64]queue.ChangeKind{12: queue.Updated, 15: queue.Left, 20: queue.Entered}
	if !reflect.DeepEqual(kinds(diff), wantKinds) {
		t.Fatalf("Diff = %v; want %v", kinds(diff), wantKinds)
	}
	if after := readQueue(t, pool); !reflect.DeepEqual(after, before) {
		t.Fatal("Diff changed the table")
	}

	var applied []queue.Change
	_, err = q.ApplyRange(ctx, 9, 20, want, func(cs []queue.Change) []notice.Message { applied = cs; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(applied, diff) {
		t.Fatalf("ApplyRange changes %+v differ from Diff %+v", applied, diff)
	}
	after := readQueue(t, pool)
	if _, ok := after[15]; ok {
		t.Error("bogus row 15 not removed")
	}
	if _, ok := after[25]; !ok {
		t.Error("row 25 outside the range was removed")
	}
	if after[12].row.PendingRequirements != 2 || after[20].row.OpenClaims != 1 {
		t.Errorf("range not applied: %v", after)
	}
	// Converged: a second Diff finds no drift.
	if diff, err := q.Diff(ctx, want, 9, 20); err != nil || len(diff) != 0 {
		t.Fatalf("Diff after ApplyRange = %v, %v; want no drift", diff, err)
	}
	// Rows outside the range are refused, not silently written.
	if _, err := q.ApplyRange(ctx, 9, 20, []queue.Row{{UserID: 21}}, nil); err == nil {
		t.Error("ApplyRange accepted a row outside its range")
	}
	// An empty range result empties the range.
	if _, err := q.ApplyRange(ctx, 0, 20, nil, nil); err != nil {
		t.Fatal(err)
	}
	if after := readQueue(t, pool); len(after) != 1 {
		t.Errorf("after emptying (0,20] the queue holds %v; want only user 25", after)
	}
}

func TestDeadLettersAndPrune(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	old := time.Now().Add(-48 * time.Hour)
	if err := q.AddDeadLetter(ctx, DeadLetter{At: old, File: "bin.000001", Pos: 400, Table: "claims", PrimaryKey: "7", Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	img := json.RawMessage(`{"id": 8}`)
	if err := q.AddDeadLetter(ctx, DeadLetter{File: "bin.000002", Pos: 4000, GTID: "0-1-5", Table: "users", PrimaryKey: "8", Error: "bad", RowImage: img}); err != nil {
		t.Fatal(err)
	}
	dls, err := q.DeadLetters(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 || dls[0].Table != "users" || dls[0].GTID != "0-1-5" || dls[0].Pos != 4000 || string(dls[0].RowImage) != `{"id": 8}` || dls[1].RowImage != nil {
		t.Fatalf("DeadLetters = %+v", dls)
	}
	if err := q.MarkRetried(ctx, dls[0].ID); err != nil {
		t.Fatal(err)
	}
	if dls, _ := q.DeadLetters(ctx, 1); len(dls) != 1 || dls[0].RetriedAt == nil {
		t.Fatalf("after MarkRetried (limit 1): %+v", dls)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.checkpoint_history (pipeline, at, actor) VALUES
		('main', now() - interval '3 days', 'x'), ('main', now(), 'x'), ('other', now() - interval '3 days', 'x')`); err != nil {
		t.Fatal(err)
	}
	h, d, err := q.Prune(ctx, 24*time.Hour, checkpoint.NewStore(pool, "dialsync", "main").PruneHistory)
	if err != nil {
		t.Fatal(err)
	}
	if h != 1 || d != 1 {
		t.Fatalf("Prune deleted %d history, %d dead letters; want 1, 1", h, d)
	}
	if dls, _ := q.DeadLetters(ctx, 0); len(dls) != 1 || dls[0].Table != "users" {
		t.Fatalf("after prune: %+v", dls)
	}
}

// TestApplyLargeBatch logs the cost of big batches (no timing assertion;
// the benchmark harness measures) and checks the results are exact.
func TestApplyLargeBatch(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	const n = 5000
	users := make([]uint64, n)
	rows := make([]queue.Row, n)
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		users[i] = uint64(i + 1)
		at := base.Add(time.Duration(i) * time.Second)
		rows[i] = queue.Row{UserID: uint64(i + 1), OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: &at}
	}
	count := func(cs []queue.Change) []notice.Message { return buildMsgs(cs) }

	start := time.Now()
	msgs, err := q.Apply(ctx, users, rows, nil, count)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply %d users, all entering: %v", n, time.Since(start))
	if len(msgs) != n {
		t.Fatalf("%d messages; want %d", len(msgs), n)
	}
	if err := q.ClearOutbox(ctx); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	msgs, err = q.Apply(ctx, users, rows, nil, count)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply %d users, none changed: %v", n, time.Since(start))
	start = time.Now()
	if _, err := q.Apply(ctx, users, rows, nil, count); err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply %d users, none changed, again: %v", n, time.Since(start))
	if len(msgs) != 0 {
		t.Fatalf("%d messages for an unchanged batch", len(msgs))
	}

	// Every 10th updates, every 10th (offset 5) leaves.
	var next []queue.Row
	for i, r := range rows {
		switch i % 10 {
		case 0:
			r.PendingRequirements = 3
		case 5:
			continue
		}
		next = append(next, r)
	}
	start = time.Now()
	msgs, err = q.Apply(ctx, users, next, nil, count)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply %d users, 10%% updated + 10%% left: %v", n, time.Since(start))
	if len(msgs) != n/5 {
		t.Fatalf("%d messages; want %d", len(msgs), n/5)
	}
	if got := len(readQueue(t, pool)); got != n-n/10 {
		t.Fatalf("queue has %d rows; want %d", got, n-n/10)
	}
}

// The queue mark travels in the queue write's transaction and is read back
// exactly; a write without a mark leaves it alone.
func TestQueueMark(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	if _, ok, err := q.Mark(ctx); err != nil || ok {
		t.Fatalf("Mark on a new pipeline = %v, %v; want none", ok, err)
	}
	m1 := queue.Mark{File: "bin.000003", Pos: 4711, GTIDSet: "0-1-42"}
	if _, err := q.Apply(ctx, []uint64{1}, []queue.Row{{UserID: 1, OpenClaims: 1}}, &m1, nil); err != nil {
		t.Fatal(err)
	}
	m2 := queue.Mark{File: "bin.000003", Pos: 4711, GTIDSet: "0-1-42", PartialTxn: "0-1-43", Piece: 3}
	if _, err := q.Apply(ctx, []uint64{2}, []queue.Row{{UserID: 2, OpenClaims: 1}}, &m2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Apply(ctx, []uint64{3}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := q.Mark(ctx); err != nil || !ok || got != m2 {
		t.Fatalf("Mark = %+v, %v, %v; want %+v", got, ok, err, m2)
	}
	// Rows and mark commit together or not at all (PostgreSQL text
	// refuses a NUL byte, which fails the mark inside the transaction).
	bad := queue.Mark{File: "bin\x00", Pos: 1}
	if _, err := q.Apply(ctx, []uint64{4}, []queue.Row{{UserID: 4, OpenClaims: 1}}, &bad, nil); err == nil {
		t.Fatal("Apply with an unstorable mark succeeded")
	}
	if got, _, _ := q.Mark(ctx); got != m2 {
		t.Fatalf("Mark after a failed write = %+v; want %+v", got, m2)
	}
	if _, ok := readQueue(t, pool)[4]; ok {
		t.Fatal("the queue row of a failed write is stored")
	}
}

type testFence struct{ ok *bool }

func (f testFence) FenceQuery() (string, []any) { return `SELECT $1::boolean`, []any{*f.ok} }
func (f testFence) FenceError() error           { return errFencedForTest }

var errFencedForTest = errors.New("fenced")

// A write whose fence says no changes nothing (rows, mark, outbox), even
// though its statements ran in the same pipelined batch as the fence.
func TestFencedWriteChangesNothing(t *testing.T) {
	t.Parallel()
	q, pool := newQueue(t)
	ctx := context.Background()
	ok := true
	q.SetFence(testFence{&ok})
	m1 := queue.Mark{File: "bin.000001", Pos: 10}
	if _, err := q.Apply(ctx, []uint64{1}, []queue.Row{{UserID: 1, OpenClaims: 1}}, &m1, buildMsgs); err != nil {
		t.Fatal(err)
	}
	ok = false
	m2 := queue.Mark{File: "bin.000001", Pos: 20}
	_, err := q.Apply(ctx, []uint64{1, 2}, []queue.Row{{UserID: 2, OpenClaims: 1}}, &m2, buildMsgs)
	if !errors.Is(err, errFencedForTest) {
		t.Fatalf("Apply = %v, want the fence's error", err)
	}
	if got := readQueue(t, pool); len(got) != 1 || got[1].row.OpenClaims != 1 {
		t.Fatalf("queue after a fenced write = %+v; want only user 1", got)
	}
	if got, _, _ := q.Mark(ctx); got != m1 {
		t.Fatalf("mark after a fenced write = %+v; want %+v", got, m1)
	}
	if msgs, err := q.Outbox(ctx); err != nil || len(msgs) != 1 {
		t.Fatalf("outbox after a fenced write: %d messages, %v; want the first write's 1", len(msgs), err)
	}
	if err := q.ClearOutbox(ctx); !errors.Is(err, errFencedForTest) {
		t.Fatalf("ClearOutbox = %v, want the fence's error", err)
	}
	// The connection went back to the pool outside any transaction.
	ok = true
	if err := q.ClearOutbox(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := q.Outbox(ctx); len(msgs) != 0 {
		t.Fatalf("outbox after ClearOutbox: %d", len(msgs))
	}
}

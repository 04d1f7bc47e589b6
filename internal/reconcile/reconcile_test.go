package reconcile

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"dialsync/handlers"
	"dialsync/internal/apply"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// Pure unit tests with in-memory fakes: the rule is a map of users to
// rows, the queue a map the fake store diffs and applies like pgstore
// (the end-to-end tests in cmd/dialsync run the real stores).

type fakeLookup struct {
	users []uint64             // every user id, sorted
	rule  map[uint64]queue.Row // queued users
	asked [][]uint64           // QueueRows calls
}

func (f *fakeLookup) QueueRowsRange(_ context.Context, after uint64, limit int) ([]queue.Row, uint64, bool, error) {
	i, _ := slices.BinarySearch(f.users, after+1)
	chunk := f.users[i:min(i+limit, len(f.users))]
	if len(chunk) == 0 {
		return nil, after, true, nil
	}
	last := chunk[len(chunk)-1]
	var rows []queue.Row
	for _, u := range chunk {
		if r, ok := f.rule[u]; ok {
			rows = append(rows, r)
		}
	}
	return rows, last, len(chunk) < limit, nil
}

func (f *fakeLookup) QueueRows(_ context.Context, ids []uint64) ([]queue.Row, error) {
	f.asked = append(f.asked, slices.Clone(ids))
	var rows []queue.Row
	for _, u := range ids {
		if r, ok := f.rule[u]; ok {
			rows = append(rows, r)
		}
	}
	return rows, nil
}

type fakeQueue struct {
	rows   map[uint64]queue.Row
	writes int
}

func (q *fakeQueue) diff(rows []queue.Row, in func(uint64) bool) []queue.Change {
	var out []queue.Change
	want := map[uint64]bool{}
	for _, r := range rows {
		want[r.UserID] = true
		have, ok := q.rows[r.UserID]
		switch {
		case !ok:
			out = append(out, queue.Change{Kind: queue.Entered, Row: r})
		case have != r:
			out = append(out, queue.Change{Kind: queue.Updated, Row: r})
		}
	}
	for u, r := range q.rows {
		if in(u) && !want[u] {
			out = append(out, queue.Change{Kind: queue.Left, Row: r})
		}
	}
	slices.SortFunc(out, func(a, b queue.Change) int { return int(a.Row.UserID) - int(b.Row.UserID) })
	return out
}

func (q *fakeQueue) write(chs []queue.Change, build func([]queue.Change) []notice.Message) []notice.Message {
	q.writes++
	for _, ch := range chs {
		if ch.Kind == queue.Left {
			delete(q.rows, ch.Row.UserID)
		} else {
			q.rows[ch.Row.UserID] = ch.Row
		}
	}
	return build(chs)
}

func (q *fakeQueue) Apply(_ context.Context, users []uint64, rows []queue.Row, _ *queue.Mark, build func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	return q.write(q.diff(rows, func(u uint64) bool { return slices.Contains(users, u) }), build), nil
}

func (q *fakeQueue) ApplyRange(_ context.Context, from, to uint64, rows []queue.Row, build func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	return q.write(q.diff(rows, func(u uint64) bool { return u > from && u <= to }), build), nil
}

func (q *fakeQueue) Diff(_ context.Context, rows []queue.Row, from, to uint64) ([]queue.Change, error) {
	return q.diff(rows, func(u uint64) bool { return u > from && u <= to }), nil
}

func (q *fakeQueue) ClearOutbox(context.Context) error { return nil }

type fakeSinks struct {
	deleted   []string
	published []notice.Message
}

func (s *fakeSinks) Del(_ context.Context, keys []string) error {
	s.deleted = append(s.deleted, keys...)
	return nil
}

func (s *fakeSinks) Publish(_ context.Context, msgs []notice.Message) error {
	s.published = append(s.published, msgs...)
	return nil
}

func row(u uint64, n int64) queue.Row {
	return queue.Row{UserID: u, OpenClaims: 1, PendingRequirements: n}
}

// world: users 1..10; the rule queues 2, 4, 6, 8; the queue has 2 (right),
// 4 (wrong count), 5 (should not be queued), 99 (no such user), lacks 6, 8.
func world(t *testing.T) (*Reconciler, *fakeLookup, *fakeQueue, *fakeSinks) {
	t.Helper()
	lk := &fakeLookup{users: []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
		rule: map[uint64]queue.Row{2: row(2, 1), 4: row(4, 2), 6: row(6, 1), 8: row(8, 3)}}
	q := &fakeQueue{rows: map[uint64]queue.Row{2: row(2, 1), 4: row(4, 5), 5: row(5, 1), 99: row(99, 1)}}
	sinks := &fakeSinks{}
	keys, err := handlers.NewKeys("", []string{"user:{id}:context"}, []string{"queue:queued"})
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Loop: Direct{}, Lookup: lk, Queue: q, Cache: sinks, Publisher: sinks, Keys: keys,
		Pipeline: "main", SubjectPrefix: "dialsync", ChunkSize: 3}
	return r, lk, q, sinks
}

func ids(chs []uint64) []uint64 { return slices.Sorted(slices.Values(chs)) }

func TestRunRepairsEveryRangeIncludingAboveTheLastUser(t *testing.T) {
	r, lk, q, sinks := world(t)
	var progress []uint64
	s, err := r.Run(context.Background(), Options{Trigger: "manual", CollectIDs: true,
		Progress: func(last uint64, _ Summary) { progress = append(progress, last) }})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(s.EnteredIDs), []uint64{6, 8}) || !slices.Equal(ids(s.LeftIDs), []uint64{5, 99}) ||
		!slices.Equal(ids(s.ChangedIDs), []uint64{4}) || s.Drift() != 5 || !s.Complete {
		t.Fatalf("summary %+v", s)
	}
	if len(q.rows) != len(lk.rule) {
		t.Fatalf("queue %v, want the rule's %v", q.rows, lk.rule)
	}
	for u, want := range lk.rule {
		if q.rows[u] != want {
			t.Fatalf("user %d: %v, want %v", u, q.rows[u], want)
		}
	}
	// Chunks of 3 over 10 users: (0,3] (3,6] (6,9] (9,max].
	if !slices.Equal(progress, []uint64{3, 6, 9, 10}) || s.Chunks != 4 {
		t.Fatalf("progress %v, chunks %d", progress, s.Chunks)
	}
	if !slices.Contains(sinks.deleted, "user:99:context") || !slices.Contains(sinks.deleted, "queue:queued") {
		t.Fatalf("deleted keys %v", sinks.deleted)
	}
	var types []string
	for _, m := range sinks.published {
		ev, err := notice.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
	}
	if len(types) != 6 || types[5] != notice.TypeReconcileCompleted {
		t.Fatalf("published %v: want 5 queue notices then the summary", types)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	r, _, q, sinks := world(t)
	before := len(q.rows)
	s, err := r.Run(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Drift() != 5 || !slices.Equal(ids(s.LeftIDs), []uint64{5, 99}) {
		t.Fatalf("summary %+v", s)
	}
	if q.writes != 0 || len(q.rows) != before || len(sinks.deleted)+len(sinks.published) != 0 {
		t.Fatalf("dry run wrote: %d queue writes, %d keys, %d notices", q.writes, len(sinks.deleted), len(sinks.published))
	}
}

func TestRunUsersTouchesOnlyTheListedUsers(t *testing.T) {
	r, lk, q, _ := world(t)
	// 99 and 5 leave, 6 enters; 4 (wrong) and 8 (missing) are not listed.
	users := []uint64{99, 6, 5, 6}
	dry, err := r.RunUsers(context.Background(), users, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	// The dry run's diff spans (4, 99]: 8 is in that range but not listed.
	if !slices.Equal(ids(dry.EnteredIDs), []uint64{6}) || !slices.Equal(ids(dry.LeftIDs), []uint64{5, 99}) || dry.Changed != 0 {
		t.Fatalf("dry run %+v", dry)
	}
	s, err := r.RunUsers(context.Background(), users, Options{CollectIDs: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Users != 3 || s.Drift() != 3 || !s.Complete {
		t.Fatalf("summary %+v", s)
	}
	if _, ok := q.rows[8]; ok || q.rows[4].PendingRequirements != 5 {
		t.Fatal("an unlisted user was repaired")
	}
	if q.rows[6] != lk.rule[6] {
		t.Fatal("listed user 6 not repaired")
	}
	if _, err := r.RunUsers(context.Background(), []uint64{0, 1}, Options{}); err == nil {
		t.Fatal("user id 0 accepted")
	}
}

func TestRunUsersChunks(t *testing.T) {
	r, lk, _, _ := world(t)
	if _, err := r.RunUsers(context.Background(), []uint64{7, 1, 2, 3, 4, 5, 6}, Options{}); err != nil {
		t.Fatal(err)
	}
	if len(lk.asked) != 3 || !slices.Equal(lk.asked[0], []uint64{1, 2, 3}) || !slices.Equal(lk.asked[2], []uint64{7}) {
		t.Fatalf("rule evaluated for %v, want sorted chunks of 3", lk.asked)
	}
}

func TestDirectRetryGivesUp(t *testing.T) {
	calls := 0
	boom := errors.New("boom")
	err := Direct{Attempts: 3, Backoff: time.Millisecond}.Retry(context.Background(), apply.StageOther, "op", func() error {
		calls++
		return boom
	})
	if calls != 3 || !errors.Is(err, boom) {
		t.Fatalf("calls %d, err %v", calls, err)
	}
	calls = 0
	err = Direct{}.Retry(context.Background(), apply.StageOther, "op", func() error {
		calls++
		if calls < 2 {
			return boom
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("calls %d, err %v", calls, err)
	}
}

// stageLoop is Direct, recording the stage every retried operation is
// reported under.
type stageLoop struct {
	Direct
	stages map[string]apply.Stage
}

func (l *stageLoop) Retry(ctx context.Context, stage apply.Stage, op string, fn func() error) error {
	l.stages[op] = stage
	return l.Direct.Retry(ctx, stage, op, fn)
}

// Every reconcile operation reports the stage (hence the metric labels) of
// the server it talks to.
func TestRetryStages(t *testing.T) {
	want := map[string]apply.Stage{
		"reconcile: evaluate rule":     apply.StageLookup,
		"reconcile: diff":              apply.StagePostgres,
		"reconcile: write queue":       apply.StagePostgres,
		"reconcile: delete cache keys": apply.StageRedis,
		"reconcile: publish":           apply.StageNATS,
		"reconcile: clear outbox":      apply.StagePostgres,
		"reconcile: delete queue keys": apply.StageRedis,
		"reconcile: publish summary":   apply.StageNATS,
	}
	loop := &stageLoop{stages: map[string]apply.Stage{}}
	for _, dry := range []bool{false, true} {
		r, _, _, _ := world(t)
		r.Loop = loop
		if _, err := r.Run(context.Background(), Options{DryRun: dry}); err != nil {
			t.Fatal(err)
		}
	}
	if len(loop.stages) != len(want) {
		t.Errorf("operations %v, want %v", loop.stages, want)
	}
	for op, s := range want {
		if got, ok := loop.stages[op]; !ok || got != s {
			t.Errorf("%s: stage %v (seen %v), want %v", op, got, ok, s)
		}
	}
}

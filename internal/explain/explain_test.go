package explain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/internal/queue"
	"dialsync/notice"
)

func TestParseUserID(t *testing.T) {
	good := map[string]uint64{"1": 1, "42": 42, "18446744073709551615": 1<<64 - 1, "007": 7}
	for in, want := range good {
		got, err := ParseUserID(in)
		if err != nil || got != want {
			t.Errorf("ParseUserID(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"0": "start at 1", "-1": "positive decimal", "abc": "positive decimal", "": "positive decimal",
		"1.5": "positive decimal", "+3": "positive decimal", " 4": "positive decimal", "0x10": "positive decimal",
		"18446744073709551616": "larger than the largest",
	}
	for in, want := range bad {
		_, err := ParseUserID(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseUserID(%q) error %v, want one line containing %q", in, err, want)
		}
	}
}

// Fakes for the pure logic; the real ports are tested against real servers
// in servers_test.go.
type fakeFacts struct{ f Facts }

func (f fakeFacts) Facts(context.Context, uint64) (Facts, error) { return f.f, nil }

type fakeRule struct{ rows []queue.Row }

func (f fakeRule) QueueRows(context.Context, []uint64) ([]queue.Row, error) { return f.rows, nil }

type fakeQueue struct{ row *Row }

func (f fakeQueue) QueueRow(context.Context, uint64) (*Row, error) { return f.row, nil }

type fakeKeys map[string]bool

func (f fakeKeys) Exists(_ context.Context, keys []string) ([]bool, error) {
	out := make([]bool, len(keys))
	for i, k := range keys {
		out[i] = f[k]
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }

var t0 = time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)

func queuedFacts() Facts {
	return Facts{
		Found:           true,
		User:            UserFacts{Enabled: true, IsEnabled: ptr(int64(1)), Status: ptr("active"), Active: true, PhonePresent: true},
		HasPendingClaim: true,
		Claims: []Claim{{ID: 9, Status: ptr("open"), Open: true, Requirements: 3, PendingRequirements: 2, OldestPendingAt: &t0},
			{ID: 10, Status: ptr("closed"), Requirements: 1, PendingRequirements: 1, OldestPendingAt: &t0}},
		ClaimsTotal: 2,
	}
}

func deps(f Facts, rule *queue.Row, stored *Row) Deps {
	var rows []queue.Row
	if rule != nil {
		rows = []queue.Row{*rule}
	}
	return Deps{Facts: fakeFacts{f}, Rule: fakeRule{rows}, Queue: fakeQueue{stored},
		Keys: fakeKeys{"user:7:context": true}, UserKeys: []string{"user:7:context", "user:7:claims"},
		QueueKeys: []string{"eligible_users"}, Notices: Failed{errors.New("unused")}}
}

func TestBuildQueuedAgrees(t *testing.T) {
	rule := &queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: &t0}
	stored := &Row{OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: ptr(t0.Add(300 * time.Nanosecond)), EnteredAt: &t0}
	r, err := Build(context.Background(), deps(queuedFacts(), rule, stored), 7)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Found || !r.Rule.Queued || len(r.Rule.Failing) != 0 || r.Rule.Note != "" {
		t.Fatalf("verdict %+v", r.Rule)
	}
	if len(r.Rule.Clauses) != 5 {
		t.Fatalf("clauses %+v", r.Rule.Clauses)
	}
	// Sub-microsecond differences are PostgreSQL's rounding, not drift.
	if !r.Queue.Agrees || r.Queue.Drift != "" {
		t.Fatalf("queue %+v", r.Queue)
	}
	want := []KeyState{{"user:7:context", ScopeUser, true}, {"user:7:claims", ScopeUser, false}, {"eligible_users", ScopeQueue, false}}
	if !slices.Equal(r.Cache.Keys, want) {
		t.Fatalf("keys %+v", r.Cache.Keys)
	}
	if r.Incomplete() != "" {
		t.Fatalf("incomplete: %s", r.Incomplete())
	}
}

func TestBuildEachFailingClause(t *testing.T) {
	cases := map[string]func(*Facts){
		ClauseNotSoftDeleted: func(f *Facts) { f.User.SoftDeleted = true },
		ClauseEnabled:        func(f *Facts) { f.User.Enabled = false },
		ClauseActive:         func(f *Facts) { f.User.Active = false },
		ClauseHasPhone:       func(f *Facts) { f.User.PhonePresent = false },
		ClausePendingClaim:   func(f *Facts) { f.HasPendingClaim = false },
	}
	for clause, mutate := range cases {
		f := queuedFacts()
		mutate(&f)
		r, err := Build(context.Background(), deps(f, nil, nil), 7)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rule.Queued || !slices.Equal(r.Rule.Failing, []string{clause}) || r.Rule.Note != "" {
			t.Errorf("%s: verdict %+v", clause, r.Rule)
		}
		if !r.Queue.Agrees {
			t.Errorf("%s: no row and not queued must agree: %+v", clause, r.Queue)
		}
	}
}

func TestBuildDrift(t *testing.T) {
	rule := &queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: &t0}
	cases := []struct {
		name   string
		rule   *queue.Row
		stored *Row
		want   string
	}{
		{"missing row", rule, nil, "call_queue has no row"},
		{"stale row", nil, &Row{OpenClaims: 1}, "does not queue the user"},
		{"counts differ", rule, &Row{OpenClaims: 1, PendingRequirements: 3, OldestPendingAt: &t0}, "pending_requirements 2 (rule) != 3"},
		{"time differs", rule, &Row{OpenClaims: 1, PendingRequirements: 2}, "oldest_pending_at 2024-03-04T05:06:07Z (rule) != none"},
	}
	for _, c := range cases {
		f := queuedFacts()
		if c.rule == nil {
			f.HasPendingClaim = false
		}
		r, err := Build(context.Background(), deps(f, c.rule, c.stored), 7)
		if err != nil {
			t.Fatal(err)
		}
		if r.Queue.Agrees || !strings.Contains(r.Queue.Drift, c.want) {
			t.Errorf("%s: queue state %+v, want drift containing %q", c.name, r.Queue, c.want)
		}
	}
}

func TestBuildRuleAndClausesDisagree(t *testing.T) {
	f := queuedFacts()
	f.User.Active = false
	rule := &queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2}
	r, err := Build(context.Background(), deps(f, rule, nil), 7)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Rule.Queued || !strings.Contains(r.Rule.Note, "clauses say queued=false but the rule query says queued=true") {
		t.Fatalf("verdict %+v", r.Rule)
	}
}

func TestBuildCustomRuleHasNoClauses(t *testing.T) {
	d := deps(queuedFacts(), &queue.Row{UserID: 7, OpenClaims: 5}, &Row{OpenClaims: 5})
	d.CustomRule = true
	r, err := Build(context.Background(), d, 7)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rule.Rule != RuleCustom || len(r.Rule.Clauses) != 0 || !r.Rule.Queued ||
		!strings.Contains(r.Rule.Note, "only available for the built-in rule") || !r.Queue.Agrees {
		t.Fatalf("report %+v", r)
	}
}

func TestBuildNotFoundAndFailedSections(t *testing.T) {
	d := deps(Facts{}, nil, nil)
	d.Queue = Failed{errors.New("pg down")}
	d.Keys = Failed{errors.New("redis down")}
	d.LatestNotices = 3
	r, err := Build(context.Background(), d, 99)
	if err != nil {
		t.Fatal(err)
	}
	if r.Found || r.User != nil || r.Rule.Queued || !strings.Contains(r.Rule.Note, "does not exist") {
		t.Fatalf("report %+v", r)
	}
	inc := r.Incomplete()
	for _, want := range []string{"call_queue: pg down", "cache: redis down", "notices: unused"} {
		if !strings.Contains(inc, want) {
			t.Errorf("Incomplete() = %q, want %q in it", inc, want)
		}
	}
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"user 99: NOT QUEUED", "not found: no users row with id 99", "ERROR: pg down", "ERROR: redis down"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	// JSON keeps empty lists as [] (a consumer can iterate without checks).
	j, _ := json.Marshal(r)
	if !bytes.Contains(j, []byte(`"claims":[]`)) || !bytes.Contains(j, []byte(`"user":null`)) {
		t.Fatalf("json %s", j)
	}
}

func TestWriteTextQueued(t *testing.T) {
	rule := &queue.Row{UserID: 7, OpenClaims: 1, PendingRequirements: 2, OldestPendingAt: &t0}
	d := deps(queuedFacts(), rule, nil)
	r, err := Build(context.Background(), d, 7)
	if err != nil {
		t.Fatal(err)
	}
	r.Notices = NoticeHistory{Stream: "S", Filter: "ds.*.7", Total: 1, Latest: []Notice{{Time: t0, Type: notice.TypeQueueEntered,
		UserID: 7, OpenClaims: ptr(int64(1)), PendingRequirements: ptr(int64(2)), OldestPendingAt: &t0}}}
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"user 7: QUEUED (built-in rule)", "phone", "present", `"active"`, "[pass]", "open_claim_with_pending_requirement",
		"agrees with the rule: NO, DRIFT: the rule queues the user but call_queue has no row",
		"user:7:context  exists", "queue.entered", "user 7  open_claims=1 pending_requirements=2",
		"last 1 of 1 on ds.*.7 in stream S",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

func TestSummarizeDropsValues(t *testing.T) {
	m := notice.NewUserChanged("dialsync/x", "ds", t0, notice.UserChanged{UserID: 5, Tables: []string{"users"},
		Operations: []string{"update"}, Columns: []string{"email"}, Values: map[string]any{"email": "secret@example.com"},
		Source: notice.SourcePosition{Txn: "0-1-2"}})
	ev, err := notice.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(ev)
	if s.UserID != 5 || !slices.Equal(s.Columns, []string{"email"}) || s.ID != m.ID {
		t.Fatalf("summary %+v", s)
	}
	j, _ := json.Marshal(s)
	line := NoticeLine(s)
	if bytes.Contains(j, []byte("secret")) || strings.Contains(line, "secret") {
		t.Fatalf("value leaked: %s / %s", j, line)
	}
	if !strings.Contains(line, "user.changed") || !strings.Contains(line, "tables=users operations=update columns=email") {
		t.Fatalf("line %q", line)
	}
}

package explain

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/testenv"
	"dialsync/internal/lookup"
	"dialsync/internal/pgstore"
	"dialsync/notice"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// sourceDB makes a private source database with the demo schema and the
// rows of one user per failing clause (ids fixed so the test reads well).
func sourceDB(t *testing.T) (*testenv.MariaDB, string) {
	t.Helper()
	my := testenv.SharedMariaDB(t)
	name := testenv.Name(t)
	my.CreateDatabase(t, name)
	db, err := sql.Open("mysql", my.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := demo.CreateSchema(ctx, db); err != nil {
		t.Fatal(err)
	}
	user := func(id int, phone, status string, enabled int, deleted bool) string {
		p, d := "NULL", "NULL"
		if phone != "<null>" {
			p = "'" + phone + "'"
		}
		if deleted {
			d = "'2024-02-02 00:00:00'"
		}
		return fmt.Sprintf(`INSERT INTO users (id, first_name, last_name, email, phone_number, status, is_enabled, deleted_at)
			VALUES (%d, 'Ann%d', 'Secretname', 'ann%d@example.com', %s, '%s', %d, %s)`, id, id, id, p, status, enabled, d)
	}
	stmts := []string{
		user(1, "07700900001", "active", 1, false),
		user(2, "07700900002", "active", 0, false),
		user(3, "07700900003", "inactive", 1, false),
		user(4, "<null>", "active", 1, false),
		user(5, "", "active", 1, false),
		user(6, "07700900006", "active", 1, true),
		user(7, "07700900007", "active", 1, false),
		user(8, "07700900008", "ACTIVE", 1, false), // the collation says active
		user(9, "   ", "active", 1, false),         // PAD SPACE: empty
	}
	// Every user but 7 has one open claim with a PENDING requirement; user 7's
	// requirement is done. User 1 also has a closed and a soft-deleted claim
	// with PENDING requirements that must not count.
	for u := 1; u <= 9; u++ {
		st := "PENDING"
		if u == 7 {
			st = "DONE"
		}
		stmts = append(stmts,
			fmt.Sprintf(`INSERT INTO claims (id, user_id, type, status) VALUES (%d, %d, 'pcp', 'open')`, u*10, u),
			fmt.Sprintf(`INSERT INTO claim_requirements (claim_id, type, status, created_at) VALUES (%d, 'id', '%s', '2024-01-0%d 10:00:00')`, u*10, st, u))
	}
	stmts = append(stmts,
		`INSERT INTO claim_requirements (claim_id, type, status, created_at) VALUES (10, 'bank', 'PENDING', '2023-12-31 09:30:00')`,
		`INSERT INTO claim_requirements (claim_id, type, status, created_at) VALUES (10, 'sig', 'DONE', '2023-01-01 00:00:00')`,
		`INSERT INTO claims (id, user_id, type, status) VALUES (11, 1, 'pcp', 'closed')`,
		`INSERT INTO claim_requirements (claim_id, type, status, created_at) VALUES (11, 'id', 'PENDING', '2020-01-01 00:00:00')`,
		`INSERT INTO claims (id, user_id, type, status, deleted_at) VALUES (12, 1, 'pcp', 'open', '2024-01-01 00:00:00')`,
		`INSERT INTO claim_requirements (claim_id, type, status, created_at) VALUES (12, 'id', 'PENDING', '2020-01-01 00:00:00')`,
	)
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return my, name
}

func TestSourceFactsAndClausesMatchTheRule(t *testing.T) {
	my, name := sourceDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := OpenSource(ctx, SourceConfig{Addr: my.Addr(), User: "root", Database: name})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	lk, err := lookup.Open(ctx, lookup.Config{Addr: my.Addr(), User: "root", Database: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()

	failing := map[uint64][]string{
		1: nil, 2: {ClauseEnabled}, 3: {ClauseActive}, 4: {ClauseHasPhone}, 5: {ClauseHasPhone},
		6: {ClauseNotSoftDeleted}, 7: {ClausePendingClaim}, 8: nil, 9: {ClauseHasPhone},
	}
	for u := uint64(1); u <= 9; u++ {
		r, err := Build(ctx, Deps{Facts: src, Rule: lk, Queue: fakeQueue{}, Keys: fakeKeys{}}, u)
		if err != nil {
			t.Fatal(err)
		}
		// The per-clause SQL and the rule the pipeline runs must agree on
		// every case, including the collation ones (8, 9).
		if r.Rule.Note != "" {
			t.Errorf("user %d: %s", u, r.Rule.Note)
		}
		if !slices.Equal(r.Rule.Failing, failing[u]) || r.Rule.Queued != (failing[u] == nil) {
			t.Errorf("user %d: queued %t failing %v, want %v", u, r.Rule.Queued, r.Rule.Failing, failing[u])
		}
		j, _ := json.Marshal(r)
		for _, pii := range []string{"@example.com", "Secretname", "077009000", fmt.Sprintf("Ann%d", u)} {
			if strings.Contains(string(j), pii) {
				t.Errorf("user %d: report carries a row value %q: %s", u, pii, j)
			}
		}
	}

	f, err := src.Facts(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Found || f.ClaimsTotal != 3 || len(f.Claims) != 3 || *f.User.Status != "active" || *f.User.IsEnabled != 1 {
		t.Fatalf("facts %+v", f)
	}
	c10, c11, c12 := f.Claims[0], f.Claims[1], f.Claims[2]
	oldest := time.Date(2023, 12, 31, 9, 30, 0, 0, time.UTC)
	if c10.ID != 10 || !c10.Open || c10.Requirements != 3 || c10.PendingRequirements != 2 || !c10.OldestPendingAt.Equal(oldest) {
		t.Errorf("claim 10: %+v (oldest %v)", c10, c10.OldestPendingAt)
	}
	if c11.ID != 11 || c11.Open || c11.SoftDeleted || *c11.Status != "closed" || c11.PendingRequirements != 1 {
		t.Errorf("claim 11: %+v", c11)
	}
	if c12.ID != 12 || c12.Open || !c12.SoftDeleted || c12.PendingRequirements != 1 {
		t.Errorf("claim 12: %+v", c12)
	}
	// The rule's row matches the facts: claim 10 only, oldest pending there.
	rows, err := lk.QueueRows(ctx, []uint64{1})
	if err != nil || len(rows) != 1 || rows[0].OpenClaims != 1 || rows[0].PendingRequirements != 2 || !rows[0].OldestPendingAt.Equal(oldest) {
		t.Fatalf("rule rows %+v %v", rows, err)
	}

	f, err = src.Facts(ctx, 100)
	if err != nil || f.Found || len(f.Claims) != 0 || f.HasPendingClaim {
		t.Fatalf("unknown user: %+v %v", f, err)
	}
	// The session is read-only: even this connection cannot write.
	if _, err := src.exec(ctx, "UPDATE users SET status = 'x' WHERE id = 1"); err == nil {
		t.Fatal("write on the explain session succeeded")
	}
}

func TestSourceHonoursContext(t *testing.T) {
	my, name := sourceDB(t)
	src, err := OpenSource(context.Background(), SourceConfig{Addr: my.Addr(), User: "root", Database: name})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = src.exec(ctx, "SELECT SLEEP(5)")
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("exec returned %v after %s, want a prompt error", err, time.Since(start))
	}
}

func TestPGQueueRow(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.PostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	q := PGQueue{Pool: pool, Schema: "ds_explain"}
	if _, err := q.QueueRow(ctx, 1); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("unmigrated schema: %v", err)
	}
	if err := pgstore.Migrate(ctx, pool, "ds_explain"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO ds_explain.call_queue VALUES (5, 2, 3, '2024-01-02T03:04:05.123456Z', now(), now())`); err != nil {
		t.Fatal(err)
	}
	r, err := q.QueueRow(ctx, 5)
	want := time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)
	if err != nil || r == nil || r.OpenClaims != 2 || r.PendingRequirements != 3 || !r.OldestPendingAt.Equal(want) || r.EnteredAt == nil {
		t.Fatalf("row %+v %v", r, err)
	}
	for _, u := range []uint64{6, 1 << 63, 1<<64 - 1} {
		if r, err := q.QueueRow(ctx, u); err != nil || r != nil {
			t.Fatalf("user %d: %+v %v", u, r, err)
		}
	}
}

func TestRedisKeysExists(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	p := testenv.Name(t) + ":"
	t.Cleanup(func() { rdb.Del(ctx, p+"a", p+"c") })
	if err := rdb.Set(ctx, p+"a", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, p+"c", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := RedisKeys{Client: rdb}.Exists(ctx, []string{p + "a", p + "b", p + "c"})
	if err != nil || !slices.Equal(got, []bool{true, false, true}) {
		t.Fatalf("exists %v %v", got, err)
	}
}

func TestStreamNoticesLatest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.Name(t)
	stream, prefix := strings.ToUpper("EX_"+name), "ex_"+name
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })
	pub := func(m notice.Message) {
		if _, err := js.Publish(ctx, m.Subject, m.Data, jetstream.WithMsgID(m.ID)); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// User 7: 6 user.changed and 2 queue notices, interleaved with user 8's
	// and 17's (which share digits: the filter must be exact) and a reconcile.
	for i := 0; i < 6; i++ {
		for _, u := range []uint64{7, 8, 17} {
			pub(notice.NewUserChanged("dialsync/t", prefix, at.Add(time.Duration(i)*time.Second), notice.UserChanged{
				UserID: u, Tables: []string{"claims"}, Operations: []string{"update"}, Columns: []string{"status"},
				Source: notice.SourcePosition{Txn: fmt.Sprintf("0-1-%d", i)}}))
		}
		if i == 2 || i == 5 {
			kind := notice.KindEntered
			if i == 5 {
				kind = notice.KindUpdated
			}
			pub(notice.NewQueueChanged("dialsync/t", prefix, kind, at.Add(time.Duration(i)*time.Second),
				notice.QueueChanged{UserID: 7, OpenClaims: 1, PendingRequirements: int64(i), Source: notice.SourcePosition{Txn: fmt.Sprintf("0-1-%d", i)}}))
		}
	}
	rc, err := notice.NewReconcileCompleted("dialsync/t", prefix, at, notice.ReconcileCompleted{RunID: "r1", StartedAt: at, FinishedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	pub(rc)

	s := StreamNotices{JS: js, Stream: stream, SubjectPrefix: prefix, FetchWait: 2 * time.Second}
	h, err := s.Latest(ctx, 7, 3)
	if err != nil {
		t.Fatal(err)
	}
	if h.Total != 8 || len(h.Latest) != 3 || h.Filter != prefix+".*.7" || h.Note != "" {
		t.Fatalf("history %+v", h)
	}
	// The last three in stream order: user.changed(4), user.changed(5), queue.updated(5).
	types := []string{h.Latest[0].Type, h.Latest[1].Type, h.Latest[2].Type}
	if !slices.Equal(types, []string{notice.TypeUserChanged, notice.TypeUserChanged, notice.TypeQueueUpdated}) ||
		h.Latest[2].PendingRequirements == nil || *h.Latest[2].PendingRequirements != 5 || h.Latest[1].ID != "0-1-5/user.changed/7" {
		t.Fatalf("latest %+v", h.Latest)
	}
	for i, n := range h.Latest {
		if n.UserID != 7 || (i > 0 && n.Seq <= h.Latest[i-1].Seq) {
			t.Fatalf("latest %+v", h.Latest)
		}
	}
	// Asking for more than there are gives all of them.
	if h, err := s.Latest(ctx, 7, 50); err != nil || len(h.Latest) != 8 {
		t.Fatalf("all: %d %v", len(h.Latest), err)
	}
	// A user without notices: none, at once (no fetch wait).
	start := time.Now()
	if h, err := s.Latest(ctx, 99, 5); err != nil || h.Total != 0 || len(h.Latest) != 0 || time.Since(start) > time.Second {
		t.Fatalf("none: %+v %v in %s", h, err, time.Since(start))
	}
	// Past MaxScan: the last notice per subject only.
	s.MaxScan = 4
	h, err = s.Latest(ctx, 7, 3)
	if err != nil || len(h.Latest) != 2 || !strings.Contains(h.Note, "last one per subject") {
		t.Fatalf("bounded: %+v %v", h, err)
	}
	// A missing stream is an error naming it.
	if _, err := (StreamNotices{JS: js, Stream: "NOPE_" + stream, SubjectPrefix: prefix}).Latest(ctx, 7, 3); err == nil ||
		!strings.Contains(err.Error(), "NOPE_") {
		t.Fatalf("missing stream: %v", err)
	}
}

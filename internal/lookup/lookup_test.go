package lookup

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/internal/dev/demo"
	"dialsync/internal/queue"
)

// mariaAddr is the machine MariaDB (root, no password); each test uses its
// own database named after the test.
const mariaAddr = "127.0.0.1:3306"

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sourceDB creates a database named after the test holding the demo schema
// seeded with size, and returns its name and a read-write pool on it (the
// test's stand-in for the application). Dropped on cleanup.
func sourceDB(t testing.TB, size demo.Size) (string, *sql.DB) {
	t.Helper()
	name := "t_lookup_" + nonWord.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 64 {
		name = name[:64]
	}
	admin, err := sql.Open("mysql", "root@"+mariaAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ctx := context.Background()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + name, "CREATE DATABASE " + name} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db, err := sql.Open("mysql", "root@"+mariaAddr+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	if err := demo.CreateSchema(ctx, db); err != nil {
		t.Fatal(err)
	}
	if size.Users > 0 {
		if err := demo.Seed(ctx, db, size); err != nil {
			t.Fatal(err)
		}
	}
	return name, db
}

func openLookup(t testing.TB, database, rule string) *Lookup {
	t.Helper()
	l, err := Open(context.Background(), Config{Addr: mariaAddr, User: "root", Database: database, QueueSQL: rule}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

var small = demo.Size{Users: 400, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 21}

func query(t testing.TB, db *sql.DB, q string, fn func(rows *sql.Rows) error) {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// bruteForce reads every relevant row into Go and applies the queue rule of
// docs/design.md independently of the SQL. Times are read as UNIX_TIMESTAMP, which
// does not depend on any session time zone. It returns the expected rows and
// all user ids.
func bruteForce(t testing.TB, db *sql.DB) (map[uint64]queue.Row, []uint64) {
	t.Helper()
	type user struct {
		eligible bool
	}
	users := map[uint64]user{}
	var ids []uint64
	query(t, db, "SELECT id, deleted_at IS NULL, is_enabled, status, phone_number FROM users", func(r *sql.Rows) error {
		var id uint64
		var notDeleted, enabled int
		var status string
		var phone sql.NullString
		if err := r.Scan(&id, &notDeleted, &enabled, &status, &phone); err != nil {
			return err
		}
		users[id] = user{eligible: notDeleted == 1 && enabled == 1 && status == "active" && phone.Valid && phone.String != ""}
		ids = append(ids, id)
		return nil
	})
	openClaimOwner := map[uint64]uint64{}
	query(t, db, "SELECT id, user_id, status, deleted_at IS NULL FROM claims", func(r *sql.Rows) error {
		var id, owner uint64
		var status string
		var notDeleted int
		if err := r.Scan(&id, &owner, &status, &notDeleted); err != nil {
			return err
		}
		if notDeleted == 1 && status != "closed" && status != "rejected" && status != "paid" {
			openClaimOwner[id] = owner
		}
		return nil
	})
	type agg struct {
		claims  map[uint64]bool
		pending int64
		oldest  *time.Time
	}
	per := map[uint64]*agg{}
	query(t, db, "SELECT claim_id, status, UNIX_TIMESTAMP(created_at) FROM claim_requirements", func(r *sql.Rows) error {
		var claim uint64
		var status string
		var created sql.NullInt64
		if err := r.Scan(&claim, &status, &created); err != nil {
			return err
		}
		owner, open := openClaimOwner[claim]
		if !open || status != "PENDING" || !users[owner].eligible {
			return nil
		}
		a := per[owner]
		if a == nil {
			a = &agg{claims: map[uint64]bool{}}
			per[owner] = a
		}
		a.claims[claim] = true
		a.pending++
		if created.Valid {
			ts := time.Unix(created.Int64, 0).UTC()
			if a.oldest == nil || ts.Before(*a.oldest) {
				a.oldest = &ts
			}
		}
		return nil
	})
	want := map[uint64]queue.Row{}
	for u, a := range per {
		want[u] = queue.Row{UserID: u, OpenClaims: int64(len(a.claims)), PendingRequirements: a.pending, OldestPendingAt: a.oldest}
	}
	return want, ids
}

func sameRow(a, b queue.Row) bool {
	if a.UserID != b.UserID || a.OpenClaims != b.OpenClaims || a.PendingRequirements != b.PendingRequirements {
		return false
	}
	if (a.OldestPendingAt == nil) != (b.OldestPendingAt == nil) {
		return false
	}
	return a.OldestPendingAt == nil || a.OldestPendingAt.Equal(*b.OldestPendingAt) && b.OldestPendingAt.Location() == time.UTC
}

func fmtRow(r queue.Row) string {
	ts := "nil"
	if r.OldestPendingAt != nil {
		ts = r.OldestPendingAt.String()
	}
	return fmt.Sprintf("{user %d claims %d pending %d oldest %s}", r.UserID, r.OpenClaims, r.PendingRequirements, ts)
}

// checkAgainstBruteForce compares QueueRows for every user (plus ids that do
// not exist) with the Go evaluation.
func checkAgainstBruteForce(t *testing.T, l *Lookup, db *sql.DB) []queue.Row {
	t.Helper()
	want, ids := bruteForce(t, db)
	asked := append(slices.Clone(ids), 0, 1<<40, ids[0]) // missing ids and a duplicate
	got, err := l.QueueRows(context.Background(), asked)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(got, func(a, b queue.Row) int { return int(a.UserID) - int(b.UserID) }) {
		t.Error("QueueRows result is not sorted by user id")
	}
	if len(got) != len(want) {
		t.Errorf("QueueRows returned %d rows, brute force %d", len(got), len(want))
	}
	for _, r := range got {
		w, ok := want[r.UserID]
		if !ok {
			t.Errorf("user %d queued by SQL, not by brute force: %s", r.UserID, fmtRow(r))
			continue
		}
		if !sameRow(r, w) {
			t.Errorf("user %d: SQL %s, brute force %s", r.UserID, fmtRow(r), fmtRow(w))
		}
	}
	frac := float64(len(want)) / float64(len(ids))
	if frac < 0.15 || frac > 0.5 {
		t.Errorf("%.0f%% of users queued; the seed should queue a meaningful minority", frac*100)
	}
	return got
}

func TestQueueRowsMatchesBruteForce(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	checkAgainstBruteForce(t, l, db)

	// After a realistic workload (moved claims, deletes, status flips...).
	w := demo.NewWorkload(db, 99)
	for range 400 {
		if _, err := w.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := checkAgainstBruteForce(t, l, db)

	var withTime int
	for _, r := range got {
		if r.OldestPendingAt != nil {
			withTime++
		}
	}
	if withTime == 0 {
		t.Error("no queued user has an oldest_pending_at")
	}
	if got, err := l.QueueRows(context.Background(), nil); err != nil || got != nil {
		t.Errorf("QueueRows(nil) = %v, %v", got, err)
	}
}

// TestQueueRowsBatches splits more than BatchSize ids over several queries.
func TestQueueRowsBatches(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	want, ids := bruteForce(t, db)
	// Pad with ids that do not exist so the list spans three batches.
	asked := slices.Clone(ids)
	for i := range 2*BatchSize + 10 {
		asked = append(asked, uint64(1_000_000+i))
	}
	got, err := l.QueueRows(context.Background(), asked)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows across batches, want %d", len(got), len(want))
	}
}

func TestQueueRowsRangeCoversEveryUserOnce(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	// Holes in the id sequence must not confuse the cursor.
	if _, err := db.Exec("DELETE FROM users WHERE id BETWEEN 100 AND 150 OR id = 400"); err != nil {
		t.Fatal(err)
	}
	want, ids := bruteForce(t, db)
	ctx := context.Background()
	covered := map[uint64]int{}
	var rows []queue.Row
	var after uint64
	chunks := 0
	for {
		got, last, done, err := l.QueueRowsRange(ctx, after, 37)
		if err != nil {
			t.Fatal(err)
		}
		chunks++
		if last < after {
			t.Fatalf("cursor went back from %d to %d", after, last)
		}
		for _, id := range ids {
			if id > after && id <= last {
				covered[id]++
			}
		}
		for _, r := range got {
			if r.UserID <= after || r.UserID > last {
				t.Errorf("chunk (%d, %d] returned user %d", after, last, r.UserID)
			}
		}
		rows = append(rows, got...)
		after = last
		if done {
			break
		}
		if chunks > 1000 {
			t.Fatal("pagination does not end")
		}
	}
	if after != ids[len(ids)-1] {
		t.Errorf("last cursor %d, want the highest user id %d", after, ids[len(ids)-1])
	}
	for _, id := range ids {
		if covered[id] != 1 {
			t.Errorf("user %d covered %d times", id, covered[id])
		}
	}
	if wantChunks := (len(ids) + 36) / 37; chunks != wantChunks && chunks != wantChunks+1 {
		t.Errorf("%d chunks for %d users at 37 per chunk", chunks, len(ids))
	}
	if len(rows) != len(want) {
		t.Errorf("range pass queued %d users, brute force %d", len(rows), len(want))
	}
	for _, r := range rows {
		if !sameRow(r, want[r.UserID]) {
			t.Errorf("user %d: range %s, brute force %s", r.UserID, fmtRow(r), fmtRow(want[r.UserID]))
		}
	}
	// Past the end: done at once, cursor unchanged.
	got, last, done, err := l.QueueRowsRange(ctx, after, 10)
	if err != nil || len(got) != 0 || last != after || !done {
		t.Errorf("after the end: %v %d %v %v", got, last, done, err)
	}
	if _, _, _, err := l.QueueRowsRange(ctx, 0, 0); err == nil {
		t.Error("limit 0 accepted")
	}
}

func TestClaimOwners(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	want := map[uint64]uint64{}
	var ids []uint64
	query(t, db, "SELECT id, user_id FROM claims", func(r *sql.Rows) error {
		var id, user uint64
		if err := r.Scan(&id, &user); err != nil {
			return err
		}
		want[id] = user
		ids = append(ids, id)
		return nil
	})
	var softDeleted int
	if err := db.QueryRow("SELECT COUNT(*) FROM claims WHERE deleted_at IS NOT NULL").Scan(&softDeleted); err != nil || softDeleted == 0 {
		t.Fatalf("seed has no soft-deleted claims to check (%d, %v)", softDeleted, err)
	}
	got, err := l.ClaimOwners(context.Background(), append(ids, 0, 999_999_999))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d owners, want %d (missing ids must be absent)", len(got), len(want))
	}
	for id, u := range want {
		if got[id] != u {
			t.Errorf("claim %d: owner %d, want %d", id, got[id], u)
		}
	}
	if got, err := l.ClaimOwners(context.Background(), nil); err != nil || len(got) != 0 {
		t.Errorf("ClaimOwners(nil) = %v, %v", got, err)
	}
}

func TestAddressUsers(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	// A dangling pointer: the address row is gone, a user still points at it.
	var gone, resident uint64
	if err := db.QueryRow("SELECT current_user_address_id, id FROM users WHERE id = 50").Scan(&gone, &resident); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf("DELETE FROM user_addresses WHERE id = %d", gone)); err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]uint64{}
	add := func(a, u uint64) {
		if !slices.Contains(want[a], u) {
			want[a] = append(want[a], u)
		}
	}
	var ids []uint64
	query(t, db, "SELECT id, user_id FROM user_addresses", func(r *sql.Rows) error {
		var id, u uint64
		if err := r.Scan(&id, &u); err != nil {
			return err
		}
		add(id, u)
		ids = append(ids, id)
		return nil
	})
	query(t, db, "SELECT current_user_address_id, id FROM users WHERE current_user_address_id IS NOT NULL", func(r *sql.Rows) error {
		var a, u uint64
		if err := r.Scan(&a, &u); err != nil {
			return err
		}
		add(a, u)
		return nil
	})
	shared := 0
	for _, us := range want {
		slices.Sort(us)
		if len(us) > 1 {
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("seed has no address shared by two users")
	}
	got, err := l.AddressUsers(context.Background(), append(ids, gone, 0, 888_888_888))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d addresses, want %d", len(got), len(want))
	}
	for a, us := range want {
		if !slices.Equal(got[a], us) {
			t.Errorf("address %d: users %v, want %v", a, got[a], us)
		}
	}
	// User 50 lives at user 49's current address (a seeded household):
	// both still point at it after the row is gone.
	if !slices.Equal(got[gone], []uint64{resident - 1, resident}) {
		t.Errorf("deleted address %d: users %v, want the residents %d and %d", gone, got[gone], resident-1, resident)
	}
}

func TestBadQueueSQL(t *testing.T) {
	name, db := sourceDB(t, demo.Size{Users: 20, ClaimsPerUser: 2, RequirementsPerClaim: 2, RandSeed: 1})
	ctx := context.Background()
	cfg := Config{Addr: mariaAddr, User: "root", Database: name}
	for _, tc := range []struct {
		name, rule string
		want       []string
	}{
		{"syntax", "SELEC u.id AS user_id FROM users u WHERE {users}", []string{"rules.queue_sql", "syntax"}},
		{"unknown column", strings.Replace(DefaultQueueSQL, "u.is_enabled", "u.enabled_flag", 1), []string{"rules.queue_sql", "enabled_flag"}},
		{"wrong columns", strings.Replace(DefaultQueueSQL, "AS oldest_pending_at", "AS oldest", 1),
			[]string{"rules.queue_sql", "missing: [oldest_pending_at]", "unexpected: [oldest]"}},
		{"extra column", strings.Replace(DefaultQueueSQL, "SELECT u.id AS user_id,", "SELECT u.id AS user_id, u.email,", 1),
			[]string{"rules.queue_sql", "unexpected: [email]"}},
		{"no token", strings.Replace(DefaultQueueSQL, "{users}", "TRUE", 1), []string{"rules.queue_sql", "{users}"}},
		{"writes", "DELETE FROM users WHERE {users}", []string{"rules.queue_sql", "READ ONLY"}},
		{"text count", strings.Replace(DefaultQueueSQL, "COUNT(DISTINCT c.id) AS open_claims", "'many' AS open_claims", 1),
			[]string{"rules.queue_sql returns columns dialsync cannot read", "open_claims is text, want an integer"}},
		{"numeric time", strings.Replace(DefaultQueueSQL, "MIN(r.created_at) AS oldest_pending_at", "5 AS oldest_pending_at", 1),
			[]string{"oldest_pending_at is a number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg.QueueSQL = tc.rule
			l, err := Open(ctx, cfg, discard())
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a bad rule")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM users").Scan(&n); err != nil || n != 20 {
		t.Errorf("users after a writing rule: %d (%v), want 20 untouched", n, err)
	}

	// A value the declared type allows but dialsync cannot use (a count
	// with a fraction) stops the pipeline: retrying reads it again.
	frac := strings.Replace(DefaultQueueSQL, "COUNT(*) AS pending_requirements", "2.5 AS pending_requirements", 1)
	if _, err := openLookup(t, name, frac).QueueRows(ctx, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}); err == nil ||
		!strings.Contains(err.Error(), "pending_requirements") || !isPermanent(err) {
		t.Errorf("fractional count: err = %v, want a permanent error naming pending_requirements", err)
	}

	// A rule that ignores {users} for some rows passes validation (id 0
	// matches nothing) but is caught on use instead of queueing strangers.
	leaky := strings.Replace(DefaultQueueSQL, "WHERE {users}", "WHERE ({users} OR u.id > 0)", 1)
	l := openLookup(t, name, leaky)
	if _, err := l.QueueRows(ctx, []uint64{1}); err == nil || !strings.Contains(err.Error(), "rules.queue_sql returned user") {
		t.Errorf("leaky rule: err = %v", err)
	}
}

func isPermanent(err error) bool {
	var f interface{ Fatal() bool }
	return errors.As(err, &f) && f.Fatal()
}

// TestCustomRule: a business rule with other shapes (SUM gives DECIMAL,
// a DATETIME-typed time, a different user id column) still parses.
func TestCustomRule(t *testing.T) {
	name, _ := sourceDB(t, small)
	rule := `SELECT x.uid AS user_id, SUM(1) AS open_claims, CAST(2 AS DECIMAL(10,2)) AS pending_requirements,
	       CAST('2024-05-06 07:08:09.5' AS DATETIME(1)) AS oldest_pending_at
	FROM (SELECT id AS uid FROM users) AS x WHERE {users} GROUP BY x.uid`
	l, err := Open(context.Background(), Config{Addr: mariaAddr, User: "root", Database: name, QueueSQL: rule, UserIDColumn: "x.uid"}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, err := l.QueueRows(context.Background(), []uint64{3, 5})
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2024, 5, 6, 7, 8, 9, 500_000_000, time.UTC)
	if len(got) != 2 || got[0].UserID != 3 || got[1].UserID != 5 || got[0].OpenClaims != 1 ||
		got[0].PendingRequirements != 2 || got[0].OldestPendingAt == nil || !got[0].OldestPendingAt.Equal(want) {
		t.Fatalf("custom rule rows %+v", got)
	}
}

func TestServerUUID(t *testing.T) {
	name, db := sourceDB(t, demo.Size{})
	l := openLookup(t, name, "")
	id, err := l.ServerUUID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var serverID, port int
	var host string
	if err := db.QueryRow("SELECT @@server_id, @@hostname, @@port").Scan(&serverID, &host, &port); err != nil {
		t.Fatal(err)
	}
	// The machine server is MariaDB: no server_uuid.
	if want := fmt.Sprintf("server_id=%d;hostname=%s;port=%d", serverID, host, port); id != want {
		t.Errorf("identity %q, want %q", id, want)
	}
	if got := Identity(map[string]string{"server_uuid": "3e11fa47-71ca-11e1-9e33-c80aa9429562", "server_id": "1"}); got != "server_uuid=3e11fa47-71ca-11e1-9e33-c80aa9429562" {
		t.Errorf("MySQL identity %q", got)
	}
}

// TestSessionIsReadOnlyAndUTC: the session setup reaches every connection.
func TestSessionIsReadOnlyAndUTC(t *testing.T) {
	name, _ := sourceDB(t, demo.Size{})
	l := openLookup(t, name, "")
	var tz string
	if err := l.db.QueryRow("SELECT @@session.time_zone").Scan(&tz); err != nil || tz != "+00:00" {
		t.Errorf("session time zone %q (%v)", tz, err)
	}
	if _, err := l.db.Exec("INSERT INTO audit_log (actor, action) VALUES ('x', 'y')"); err == nil || !strings.Contains(err.Error(), "READ ONLY") {
		t.Errorf("write on a lookup session: err = %v", err)
	}
}

// TestTLSConfigReachesClient: the machine server has no TLS, so asking for
// it must fail the handshake (proves the *tls.Config is applied).
func TestTLSConfigReachesClient(t *testing.T) {
	name, _ := sourceDB(t, demo.Size{})
	_, err := Open(context.Background(), Config{Addr: mariaAddr, User: "root", Database: name, TLS: &tls.Config{}}, discard())
	if err == nil {
		t.Fatal("TLS to a server without TLS succeeded")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "ssl") && !strings.Contains(strings.ToLower(err.Error()), "tls") {
		t.Errorf("error does not mention TLS/SSL: %v", err)
	}
}

// TestReconcileDefaultSize measures a full range pass over the
// reference data set of docs/design.md (50k users, 150k claims, 300k requirements). Opt in with
// DIALSYNC_SEED_DEFAULT=1 (seeding takes seconds); the figure is logged,
// not asserted (timing belongs to the benchmark harness).
func TestReconcileDefaultSize(t *testing.T) {
	if os.Getenv("DIALSYNC_SEED_DEFAULT") == "" {
		t.Skip("set DIALSYNC_SEED_DEFAULT=1 to run at the default size")
	}
	name, db := sourceDB(t, demo.DefaultSize)
	l := openLookup(t, name, "")
	want, _ := bruteForce(t, db)
	for _, chunk := range []int{5000, 10000} {
		for range 2 { // the second pass runs with a warm buffer pool
			start := time.Now()
			queued, chunks := 0, 0
			var after uint64
			for {
				rows, last, done, err := l.QueueRowsRange(context.Background(), after, chunk)
				if err != nil {
					t.Fatal(err)
				}
				queued += len(rows)
				chunks++
				after = last
				if done {
					break
				}
			}
			t.Logf("full reconcile pass, chunk %d: %d chunks, %d of 50000 users queued, %v", chunk, chunks, queued, time.Since(start))
			if queued != len(want) {
				t.Errorf("queued %d, brute force %d", queued, len(want))
			}
		}
	}
}

// BenchmarkReconcilePass times one full QueueRowsRange pass (chunks of
// 5,000) over the default data set. It seeds its own database, or reuses an
// already seeded one named by DIALSYNC_LOOKUP_BENCH_DB.
//
//	go test -run '^$' -bench ReconcilePass ./internal/lookup
func BenchmarkReconcilePass(b *testing.B) {
	name := os.Getenv("DIALSYNC_LOOKUP_BENCH_DB")
	if name == "" {
		name, _ = sourceDB(b, demo.DefaultSize)
	}
	l := openLookup(b, name, "")
	ctx := context.Background()
	for _, chunk := range []int{5000, 10000} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			for b.Loop() {
				var after uint64
				for {
					_, last, done, err := l.QueueRowsRange(ctx, after, chunk)
					if err != nil {
						b.Fatal(err)
					}
					after = last
					if done {
						break
					}
				}
			}
		})
	}
}

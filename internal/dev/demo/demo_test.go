package demo

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
)

// mariaAddr is the machine MariaDB (root, no password); every test uses its
// own database named after the test.
const mariaAddr = "127.0.0.1:3306"

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// testDB creates a fresh database named after the test (plus suffix) with
// the demo schema and returns a pool on it; the database is dropped on
// cleanup.
func testDB(t testing.TB, suffix string) *sql.DB {
	t.Helper()
	name := "t_" + nonWord.ReplaceAllString(strings.ToLower(t.Name()+suffix), "_")
	if len(name) > 64 {
		name = name[:64]
	}
	admin, err := sql.Open("mysql", "root@"+mariaAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		t.Fatalf("drop database: %v", err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	db, err := sql.Open("mysql", "root@"+mariaAddr+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	if err := CreateSchema(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

var smallSize = Size{Users: 600, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 7}

func count(t testing.TB, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestStatementsSplitsSchema(t *testing.T) {
	stmts := Statements()
	if len(stmts) != 6 {
		t.Fatalf("got %d statements, want 6 (five tracked tables + audit_log)", len(stmts))
	}
	for _, s := range stmts {
		if !strings.HasPrefix(s, "CREATE TABLE IF NOT EXISTS ") || strings.Contains(s, "--") {
			t.Errorf("unexpected statement: %.80q", s)
		}
	}
}

func TestSeedCountsAndDeterminism(t *testing.T) {
	ctx := context.Background()
	a, b := testDB(t, "_a"), testDB(t, "_b")
	if err := CreateSchema(ctx, a); err != nil { // idempotent
		t.Fatalf("second CreateSchema: %v", err)
	}
	for _, db := range []*sql.DB{a, b} {
		if err := Seed(ctx, db, smallSize); err != nil {
			t.Fatal(err)
		}
	}
	want := smallSize.Counts()
	if want.Claims != 1800 || want.Requirements != 3600 || want.VehiclePackages != 900 {
		t.Fatalf("Counts() = %+v", want)
	}
	got := Counts{
		Users:           count(t, a, "SELECT COUNT(*) FROM users"),
		Addresses:       count(t, a, "SELECT COUNT(*) FROM user_addresses"),
		Claims:          count(t, a, "SELECT COUNT(*) FROM claims"),
		Requirements:    count(t, a, "SELECT COUNT(*) FROM claim_requirements"),
		VehiclePackages: count(t, a, "SELECT COUNT(*) FROM claim_vehicle_packages"),
	}
	if got != want {
		t.Fatalf("row counts %+v, want %+v", got, want)
	}

	// Every user with an address points at one; every 50th user lives at a
	// neighbour's address.
	if n := count(t, a, `SELECT COUNT(*) FROM users u WHERE u.current_user_address_id IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM user_addresses a WHERE a.id = u.current_user_address_id)`); n != 0 {
		t.Errorf("%d users point at a missing address", n)
	}
	if n := count(t, a, `SELECT COUNT(*) FROM users u JOIN user_addresses a ON a.id = u.current_user_address_id
		WHERE a.user_id <> u.id`); n != smallSize.Users/50 {
		t.Errorf("%d users live at someone else's address, want %d", n, smallSize.Users/50)
	}
	// The mix the queue rule needs: a spread of statuses, some missing
	// phones, some soft deletes, timestamps inside the seeded year (UTC).
	for q, lo := range map[string]int{
		"SELECT COUNT(*) FROM users WHERE status = 'active'":                       400,
		"SELECT COUNT(*) FROM users WHERE status <> 'active'":                      60,
		"SELECT COUNT(*) FROM users WHERE phone_number IS NULL":                    5,
		"SELECT COUNT(*) FROM users WHERE phone_number = ''":                       5,
		"SELECT COUNT(*) FROM users WHERE deleted_at IS NOT NULL":                  3,
		"SELECT COUNT(*) FROM users WHERE is_enabled = 0":                          5,
		"SELECT COUNT(*) FROM claims WHERE deleted_at IS NOT NULL":                 20,
		"SELECT COUNT(*) FROM claims WHERE status IN ('closed','rejected','paid')": 500,
		"SELECT COUNT(*) FROM claim_requirements WHERE status = 'PENDING'":         900,
		"SELECT COUNT(*) FROM claim_requirements WHERE status = 'CANCELLED'":       150,
	} {
		if n := count(t, a, q); n < lo {
			t.Errorf("%s = %d, want at least %d", q, n, lo)
		}
	}
	var minTS, maxTS int64
	if err := a.QueryRow("SELECT MIN(UNIX_TIMESTAMP(created_at)), MAX(UNIX_TIMESTAMP(created_at)) FROM claims").Scan(&minTS, &maxTS); err != nil {
		t.Fatal(err)
	}
	if minTS < seedEpoch.Unix() || maxTS >= seedEpoch.AddDate(1, 0, 0).Unix() {
		t.Errorf("claims.created_at spans %v..%v, want inside 2024 UTC", time.Unix(minTS, 0).UTC(), time.Unix(maxTS, 0).UTC())
	}

	// Same Size, same rows (CHECKSUM TABLE hashes every column of every row).
	for _, table := range Tables {
		if ca, cb := checksum(t, a, table), checksum(t, b, table); ca != cb {
			t.Errorf("%s differs between two seeds of the same size: %d vs %d", table, ca, cb)
		}
	}

	if err := Seed(ctx, a, smallSize); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Seed on seeded tables: err = %v, want a 'not empty' error", err)
	}

	// Same seed on the same data: the same workload.
	wa, wb := NewWorkload(a, 42), NewWorkload(b, 42)
	for i := range 100 {
		oa, err := wa.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ob, err := wb.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(oa) != fmt.Sprint(ob) {
			t.Fatalf("step %d: %+v vs %+v", i, oa, ob)
		}
	}
}

func checksum(t testing.TB, db *sql.DB, table string) int64 {
	t.Helper()
	var name string
	var sum int64
	if err := db.QueryRow("CHECKSUM TABLE "+table).Scan(&name, &sum); err != nil {
		t.Fatalf("checksum %s: %v", table, err)
	}
	return sum
}

func TestSamplePII(t *testing.T) {
	ctx := context.Background()
	db := testDB(t, "")
	if err := Seed(ctx, db, Size{Users: 20, ClaimsPerUser: 1, RandSeed: 3}); err != nil {
		t.Fatal(err)
	}
	pii, err := SamplePII(ctx, db, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(pii) != 9 {
		t.Fatalf("got %d values, want 3 emails + 3 phones + 3 addresses: %d", len(pii), len(pii))
	}
	for _, v := range pii {
		n := count(t, db, "SELECT COUNT(*) FROM users u LEFT JOIN user_addresses a ON a.user_id = u.id WHERE u.email = "+
			quote(v)+" OR u.phone_number = "+quote(v)+" OR a.full_address = "+quote(v))
		if v == "" || n == 0 {
			t.Errorf("sample %q is not a seeded value", v)
		}
	}
}

func TestWorkloadTouchesEveryTable(t *testing.T) {
	ctx := context.Background()
	db := testDB(t, "")
	if err := Seed(ctx, db, Size{Users: 200, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 11}); err != nil {
		t.Fatal(err)
	}
	w := NewWorkload(db, 1)
	tables := map[string]int{}
	kinds := map[string]int{}
	for i := range 500 {
		op, err := w.Step(ctx)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if op.Kind == "" || op.Rows <= 0 || len(op.Tables) == 0 || !slices.IsSorted(op.Users) {
			t.Fatalf("step %d: malformed op %+v", i, op)
		}
		for _, tb := range op.Tables {
			tables[tb]++
		}
		kinds[op.Kind]++
		switch op.Kind {
		case "claim.move":
			if len(op.Users) != 2 {
				t.Errorf("claim.move touched %v, want old and new owner", op.Users)
			}
		case "audit.insert":
			if len(op.Users) != 0 || !slices.Equal(op.Tables, []string{UntrackedTable}) {
				t.Errorf("untracked op %+v touched users or tracked tables", op)
			}
		case "user.status", "user.phone", "user.enabled", "user.soft_delete", "user.insert":
			if len(op.Users) != 1 || !slices.Equal(op.Tables, []string{"users"}) && op.Kind != "user.insert" {
				t.Errorf("%+v: want exactly one user on users", op)
			}
		}
	}
	for _, tb := range append(slices.Clone(Tables), UntrackedTable) {
		if tables[tb] == 0 {
			t.Errorf("500 steps never wrote %s (tables %v)", tb, tables)
		}
	}
	if len(kinds) < 18 {
		t.Errorf("only %d operation kinds in 500 steps: %v", len(kinds), kinds)
	}
	t.Logf("tables %v", tables)
}

// TestWorkloadConcurrentWriters runs several workloads at once: their row
// locks may deadlock, which Step must retry rather than report.
func TestWorkloadConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	db := testDB(t, "")
	if err := Seed(ctx, db, Size{Users: 100, ClaimsPerUser: 2, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 5}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var mu sync.Mutex
	steps := 0
	for i := range 4 {
		wg.Go(func() {
			w := NewWorkload(db, int64(100+i))
			for range 100 {
				if _, err := w.Step(ctx); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				steps++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if steps != 400 {
		t.Errorf("%d steps committed, want 400", steps)
	}
}

// TestSeedDefaultSize measures the default data set (DefaultSize: 50k users, 150k
// claims, 300k requirements). Slow-ish, so opt in: DIALSYNC_SEED_DEFAULT=1.
func TestSeedDefaultSize(t *testing.T) {
	if os.Getenv("DIALSYNC_SEED_DEFAULT") == "" {
		t.Skip("set DIALSYNC_SEED_DEFAULT=1 to seed the default size")
	}
	db := testDB(t, "")
	start := time.Now()
	if err := Seed(context.Background(), db, DefaultSize); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %+v in %v", DefaultSize.Counts(), time.Since(start))
	if n := count(t, db, "SELECT COUNT(*) FROM claim_requirements"); n != 300_000 {
		t.Errorf("%d requirements, want 300000", n)
	}
}

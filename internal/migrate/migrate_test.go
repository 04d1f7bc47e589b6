package migrate

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/dev/testenv"
)

func src(owner string, files map[string]string) Source {
	fsys := fstest.MapFS{}
	for n, body := range files {
		fsys[n] = &fstest.MapFile{Data: []byte(body)}
	}
	return Source{Owner: owner, FS: fsys}
}

func TestNewRejectsGaps(t *testing.T) {
	t.Parallel()
	if _, err := New(src("a", map[string]string{"0001_a.sql": "SELECT 1", "0003_c.sql": "SELECT 1"})); err == nil {
		t.Fatal("New accepted a gap in versions")
	}
	if _, err := New(src("a", map[string]string{"first.sql": "SELECT 1"})); err == nil {
		t.Fatal("New accepted a file without a version")
	}
	p, err := New(src("a", map[string]string{"0002_b.sql": "B", "0001_a.sql": "A"}))
	if err != nil || len(p.steps) != 2 || p.steps[0].parts[0].sql != "A" || p.steps[1].version != 2 || p.Latest() != 2 {
		t.Fatalf("New = %+v, %v", p, err)
	}
}

// The numbers are one sequence across owners: each may skip the others'
// numbers, but together they must have no gap, and two owners must not take
// the same number for different migrations.
func TestNewAcrossOwners(t *testing.T) {
	t.Parallel()
	a := src("a", map[string]string{"0001_init.sql": "A1", "0002_a.sql": "A2", "0004_a.sql": "A4"})
	b := src("b", map[string]string{"0001_init.sql": "B1", "0003_b.sql": "B3"})
	p, err := New(a, b)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range p.steps {
		var parts []string
		for _, pt := range st.parts {
			parts = append(parts, pt.owner+":"+pt.sql)
		}
		got = append(got, st.name+"="+strings.Join(parts, "+"))
	}
	want := "0001_init=a:A1+b:B1 0002_a=a:A2 0003_b=b:B3 0004_a=a:A4"
	if strings.Join(got, " ") != want {
		t.Fatalf("steps = %v; want %s", got, want)
	}
	if _, err := New(a); err == nil {
		t.Fatal("New accepted one owner alone with a gap left by the other")
	}
	clash := src("b", map[string]string{"0001_init.sql": "B1", "0002_b.sql": "B2", "0003_b.sql": "B3"})
	if _, err := New(a, clash); err == nil || !strings.Contains(err.Error(), "same number") {
		t.Fatalf("New with two owners' different version 2: %v", err)
	}
	if _, err := New(src("a", map[string]string{"0001_x.sql": "X", "0001_y.sql": "Y"})); err == nil {
		t.Fatal("New accepted one owner using a number twice")
	}
	if _, err := New(a, src("a", map[string]string{"0003_b.sql": "B3"})); err == nil {
		t.Fatal("New accepted two sources of the same owner")
	}
	if _, err := New(a, src("empty", nil)); err == nil {
		t.Fatal("New accepted a source without migrations")
	}
}

func newDB(t testing.TB) *pgxpool.Pool {
	pool, _ := testenv.PostgresPool(t)
	return pool
}

// A version with parts in two owners is one transaction and one history
// row: a failing part rolls back the other.
func TestSharedVersionIsOneTransaction(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	ctx := context.Background()
	bad, err := New(
		src("a", map[string]string{"0001_init.sql": "CREATE TABLE a1 (x int)", "0002_a.sql": "CREATE TABLE a2 (x int)"}),
		src("b", map[string]string{"0001_init.sql": "CREATE TABLE b1 (x int); SELECT 1/0"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Migrate(ctx, pool, "s")
	if err == nil || !strings.Contains(err.Error(), "apply 0001_init") || !strings.Contains(err.Error(), "b part") {
		t.Fatalf("Migrate with a failing part: %v", err)
	}
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('s.a1') IS NULL AND to_regclass('s.b1') IS NULL`).Scan(&ok); err != nil || !ok {
		t.Fatalf("a failed version left tables behind (%v)", err)
	}
	if v, err := Version(ctx, pool, "s"); err != nil || v != 0 {
		t.Fatalf("Version after a failed version 1 = %d, %v; want 0", v, err)
	}

	// b's part runs after a's, in the same transaction: it may use what
	// a's part created.
	good, err := New(
		src("a", map[string]string{"0001_init.sql": "CREATE TABLE a1 (x int PRIMARY KEY)", "0002_a.sql": "CREATE TABLE a2 (x int)"}),
		src("b", map[string]string{"0001_init.sql": "CREATE TABLE b1 (x int REFERENCES a1)"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Migrate(ctx, pool, "s"); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT version || ' ' || name FROM s.schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	var hist []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		hist = append(hist, h)
	}
	if rows.Err() != nil || strings.Join(hist, ", ") != "1 0001_init, 2 0002_a" {
		t.Fatalf("history = %v, %v; want one row per version", hist, rows.Err())
	}
	if err := good.Check(ctx, pool, "s"); err != nil {
		t.Fatalf("Check after Migrate: %v", err)
	}
	older := MustNew(src("a", map[string]string{"0001_init.sql": "SELECT 1"}))
	if err := older.Migrate(ctx, pool, "s"); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Migrate by an older plan: %v; want ErrSchemaTooNew", err)
	}
}

package dbschema

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/dev/testenv"
	"dialsync/internal/pgstore"
)

// newDB is a fresh database for the test (testenv.PostgresPool).
func newDB(t testing.TB) (*pgxpool.Pool, string) { return testenv.PostgresPool(t) }

func TestMigrateTwiceIsIdempotent(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	if v, err := Version(ctx, pool, "dialsync"); err != nil || v != 0 {
		t.Fatalf("Version before migrate = %d, %v; want 0, nil", v, err)
	}
	for i := 0; i < 2; i++ {
		if err := Migrate(ctx, pool, "dialsync"); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	v, err := Version(ctx, pool, "dialsync")
	if err != nil || v != LatestVersion() || v < 1 {
		t.Fatalf("Version = %d, %v; want %d", v, err, LatestVersion())
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dialsync.schema_migrations`).Scan(&n); err != nil || n != LatestVersion() {
		t.Fatalf("schema_migrations rows = %d, %v; want %d", n, err, LatestVersion())
	}
	for _, tbl := range []string{"checkpoints", "checkpoint_history", "leases", "call_queue", "outbox", "dead_letters",
		"claim_owners", "user_pointers", "lease_heartbeats", "queue_marks"} {
		var ok bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass('dialsync.' || $1) IS NOT NULL`, tbl).Scan(&ok); err != nil || !ok {
			t.Errorf("table dialsync.%s missing (%v)", tbl, err)
		}
	}
	if err := CheckVersion(ctx, pool, "dialsync"); err != nil {
		t.Errorf("CheckVersion after migrate: %v", err)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Migrate(ctx, pool, "dialsync")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate #%d: %v", i, err)
		}
	}
	if v, err := Version(ctx, pool, "dialsync"); err != nil || v != LatestVersion() {
		t.Fatalf("Version = %d, %v; want %d", v, err, LatestVersion())
	}
}

// A schema name that needs quoting works end to end.
func TestMigrateQuotedSchema(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	schema := `My "Odd" Schema`
	if err := Migrate(ctx, pool, schema); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if v, err := Version(ctx, pool, schema); err != nil || v != LatestVersion() {
		t.Fatalf("Version = %d, %v", v, err)
	}
	q := pgstore.NewQueue(pool, schema, "main")
	if _, err := q.Apply(ctx, []uint64{1}, nil, nil, nil); err != nil {
		t.Fatalf("Apply on quoted schema: %v", err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	if err := Migrate(ctx, pool, "dialsync"); err != nil {
		t.Fatal(err)
	}
	future := LatestVersion() + 1
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.schema_migrations (version, name) VALUES ($1, 'from_the_future')`, future); err != nil {
		t.Fatal(err)
	}
	err := Migrate(ctx, pool, "dialsync")
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Migrate on newer schema: %v; want ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), "upgrade dialsync") || !strings.Contains(err.Error(), "dialsync is at version") {
		t.Errorf("error does not tell the operator what to do: %v", err)
	}
	if err := CheckVersion(ctx, pool, "dialsync"); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("CheckVersion: %v; want ErrSchemaTooNew", err)
	}
}

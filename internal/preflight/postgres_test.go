package preflight

import (
	"context"
	"strings"
	"testing"

	"dialsync/internal/dbschema"
	"dialsync/internal/dev/testenv"
)

// The postgres check reports the schema version against the binary's, and
// never migrates: a missing or older schema that this user (a superuser
// here) may create or migrate is OK (nothing to fix), a newer one a FAIL.
func TestCheckPostgresSchemaVersion(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.PostgresPool(t)
	ctx := context.Background()
	check := func(want Status, detail string) {
		t.Helper()
		r := CheckPostgres(ctx, pool, "dialsync", "db")
		if r.Status != want || !strings.Contains(r.Detail, detail) {
			t.Fatalf("CheckPostgres = %v %q; want %v with %q", r.Status, r.Detail, want, detail)
		}
	}
	check(OK, "does not exist yet: `dialsync run` creates it")
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'dialsync')`).Scan(&exists); err != nil || exists {
		t.Fatalf("the check created the schema (%v)", err)
	}
	if err := dbschema.Migrate(ctx, pool, "dialsync"); err != nil {
		t.Fatal(err)
	}
	check(OK, "schema dialsync at version 7, usable by")
	if _, err := pool.Exec(ctx, `DELETE FROM dialsync.schema_migrations WHERE version = 7`); err != nil {
		t.Fatal(err)
	}
	check(OK, "at version 6 and `dialsync run` migrates it to 7")
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.schema_migrations (version, name) VALUES (7, '0007_queue_marks'), (8, 'future')`); err != nil {
		t.Fatal(err)
	}
	check(Fail, "at version 8, newer than this binary's 7")
}

package dbschema

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/migrate"
)

// legacy is the migration set as released before the tables got one owner
// each (testdata/legacy: verbatim copies of internal/pgstore/migrations then,
// one source with versions 1 to 7), limited to versions up to upTo: what the
// databases in the field were made with.
func legacy(t testing.TB, upTo int) *migrate.Plan {
	t.Helper()
	all := os.DirFS("testdata/legacy")
	names, err := fs.Glob(all, "*.sql")
	if err != nil || len(names) != 7 {
		t.Fatalf("legacy migrations = %v, %v; want the 7 released files", names, err)
	}
	sub := fstest.MapFS{}
	for _, n := range names {
		var v int
		if _, err := fmt.Sscanf(n, "%04d_", &v); err != nil {
			t.Fatalf("legacy file %s: %v", n, err)
		}
		if v > upTo {
			continue
		}
		body, err := fs.ReadFile(all, n)
		if err != nil {
			t.Fatal(err)
		}
		sub[n] = &fstest.MapFile{Data: body}
	}
	p, err := migrate.New(migrate.Source{Owner: "legacy", FS: sub})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// catalog describes every relation of schema (tables, sequences, indexes),
// column (position, type, nullability, default), constraint and index
// definition, sorted, with the schema name taken out so two schemas compare.
func catalog(t testing.TB, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT 'relation ' || c.relname || ' kind ' || c.relkind::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1
		UNION ALL
		SELECT 'column ' || c.relname || '.' || a.attname || ' #' || a.attnum || ' ' ||
			format_type(a.atttypid, a.atttypmod) ||
			CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END ||
			COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'constraint ' || c.relname || '.' || con.conname || ' ' || con.contype::text || ' ' || pg_get_constraintdef(con.oid)
		FROM pg_constraint con
		JOIN pg_class c ON c.oid = con.conrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1
		UNION ALL
		SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = $1
		UNION ALL
		SELECT 'sequence ' || sequencename || ' ' || data_type || ' ' || start_value || ' ' || increment_by
		FROM pg_sequences WHERE schemaname = $1
		ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	quoted := pgx.Identifier{schema}.Sanitize()
	for i, s := range out {
		s = strings.ReplaceAll(s, quoted+".", "")
		out[i] = strings.ReplaceAll(s, schema+".", "")
	}
	return out
}

type historyRow struct {
	Version int
	Name    string
	At      time.Time
}

func history(t testing.TB, pool *pgxpool.Pool, schema string) []historyRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT version, name, applied_at FROM `+
		pgx.Identifier{schema, "schema_migrations"}.Sanitize()+` ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[historyRow])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func names(h []historyRow) []string {
	var out []string
	for _, r := range h {
		out = append(out, fmt.Sprintf("%d %s", r.Version, r.Name))
	}
	return out
}

// A fresh database gets exactly the schema the single-owner migrations made:
// the same tables, columns, defaults, constraints, indexes and sequences,
// and the same history rows (version and name).
func TestFreshSchemaEqualsLegacy(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	if err := legacy(t, 7).Migrate(ctx, pool, "ds_old"); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool, "ds_new"); err != nil {
		t.Fatal(err)
	}
	old, fresh := catalog(t, pool, "ds_old"), catalog(t, pool, "ds_new")
	if len(fresh) < 50 {
		t.Fatalf("catalog has only %d entries: the query misses things\n%s", len(fresh), strings.Join(fresh, "\n"))
	}
	if !slices.Equal(old, fresh) {
		t.Fatalf("fresh schema differs from the released one:\nreleased:\n%s\n\nfresh:\n%s",
			strings.Join(old, "\n"), strings.Join(fresh, "\n"))
	}
	if h1, h2 := names(history(t, pool, "ds_old")), names(history(t, pool, "ds_new")); !slices.Equal(h1, h2) {
		t.Fatalf("history differs: released %v, fresh %v", h1, h2)
	}
	if LatestVersion() != 7 {
		t.Fatalf("LatestVersion = %d; the split must keep the released numbers (7)", LatestVersion())
	}
}

// A database the released binary migrated to version 7 is fully migrated
// for this one: Version and CheckVersion say so, Migrate changes nothing
// (no history row, no catalog change, no data touched).
func TestReleasedVersion7IsCurrent(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	if err := legacy(t, 7).Migrate(ctx, pool, "dialsync"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO dialsync.checkpoints (pipeline, gtid_set, file, pos) VALUES ('main', '0-1-9', 'b.000002', 77);
		INSERT INTO dialsync.queue_marks (pipeline, file, pos, gtid_set, partial_txn, piece) VALUES ('main', 'b.000002', 77, '0-1-9', '', 0);
		INSERT INTO dialsync.call_queue VALUES (5, 2, 3, now(), now(), now())`); err != nil {
		t.Fatal(err)
	}
	before, cat := history(t, pool, "dialsync"), catalog(t, pool, "dialsync")
	if v, err := Version(ctx, pool, "dialsync"); err != nil || v != LatestVersion() {
		t.Fatalf("Version of a released v7 database = %d, %v; want %d", v, err, LatestVersion())
	}
	if err := CheckVersion(ctx, pool, "dialsync"); err != nil {
		t.Fatalf("CheckVersion of a released v7 database: %v", err)
	}
	if err := Migrate(ctx, pool, "dialsync"); err != nil {
		t.Fatal(err)
	}
	if after := history(t, pool, "dialsync"); !reflect.DeepEqual(before, after) {
		t.Fatalf("Migrate changed the history of a current database:\nbefore %v\nafter  %v", before, after)
	}
	if after := catalog(t, pool, "dialsync"); !slices.Equal(cat, after) {
		t.Fatalf("Migrate changed the catalog of a current database")
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM dialsync.checkpoints) + (SELECT count(*) FROM dialsync.queue_marks) +
		(SELECT count(*) FROM dialsync.call_queue)`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("rows after Migrate = %d, %v; want the 3 stored before", n, err)
	}
}

// A database the released binary left at any older version upgrades to the
// same schema and history as a fresh one.
func TestReleasedOlderVersionsUpgrade(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	if err := Migrate(ctx, pool, "ds_fresh"); err != nil {
		t.Fatal(err)
	}
	want, wantHist := catalog(t, pool, "ds_fresh"), names(history(t, pool, "ds_fresh"))
	for v := 1; v < LatestVersion(); v++ {
		schema := fmt.Sprintf("ds_v%d", v)
		if err := legacy(t, v).Migrate(ctx, pool, schema); err != nil {
			t.Fatal(err)
		}
		if got, err := Version(ctx, pool, schema); err != nil || got != v {
			t.Fatalf("released v%d: Version = %d, %v", v, got, err)
		}
		if err := CheckVersion(ctx, pool, schema); err == nil {
			t.Fatalf("released v%d: CheckVersion accepted an old schema", v)
		}
		if err := Migrate(ctx, pool, schema); err != nil {
			t.Fatalf("upgrade from released v%d: %v", v, err)
		}
		if got := catalog(t, pool, schema); !slices.Equal(got, want) {
			t.Errorf("upgrade from released v%d: schema differs from a fresh one:\n%s\n\nfresh:\n%s", v,
				strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if got := names(history(t, pool, schema)); !slices.Equal(got, wantHist) {
			t.Errorf("upgrade from released v%d: history %v; want %v", v, got, wantHist)
		}
	}
}

// Each owner's migrations create and change only its own tables.
func TestOwnersMigrateOnlyTheirTables(t *testing.T) {
	t.Parallel()
	owns := map[string][]string{
		"checkpoint": {"checkpoint_history", "checkpoints", "claim_owners", "lease_heartbeats", "leases", "user_pointers"},
		"pgstore":    {"call_queue", "dead_letters", "outbox", "queue_marks"},
	}
	created := regexp.MustCompile(`(?i)CREATE\s+TABLE\s+(\w+)`)
	named := regexp.MustCompile(`(?i)(?:CREATE\s+TABLE|ALTER\s+TABLE|INDEX\s+\w+\s+ON)\s+(\w+)`)
	var order []string
	for _, src := range sources() {
		order = append(order, src.Owner)
		files, err := fs.Glob(src.FS, "*.sql")
		if err != nil {
			t.Fatal(err)
		}
		var made []string
		for _, f := range files {
			body, err := fs.ReadFile(src.FS, f)
			if err != nil {
				t.Fatal(err)
			}
			sql := regexp.MustCompile(`--[^\n]*`).ReplaceAllString(string(body), "")
			for _, m := range created.FindAllStringSubmatch(sql, -1) {
				made = append(made, m[1])
			}
			for _, m := range named.FindAllStringSubmatch(sql, -1) {
				if !slices.Contains(owns[src.Owner], m[1]) {
					t.Errorf("%s/%s touches table %s of another owner", src.Owner, f, m[1])
				}
			}
		}
		slices.Sort(made)
		if !slices.Equal(made, owns[src.Owner]) {
			t.Errorf("%s creates %v; want %v", src.Owner, made, owns[src.Owner])
		}
	}
	// Version 1 is shared: the checkpoint's part runs first, as the
	// released 0001_init.sql created its tables first.
	if !slices.Equal(order, []string{"checkpoint", "pgstore"}) {
		t.Errorf("sources in order %v", order)
	}
}

package checkpoint

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/change"
	"dialsync/internal/migrate"
	"dialsync/internal/pgstore"
)

// testSchema is dialsync's whole schema, this package's tables and the queue
// store's. dialsync/internal/dbschema holds the same list, but it imports
// this package, so the test names the owners itself.
var testSchema = migrate.MustNew(
	migrate.Source{Owner: "checkpoint", FS: Migrations()},
	migrate.Source{Owner: "pgstore", FS: pgstore.Migrations()},
)

func migrated(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	pool, connString := newDB(t)
	if err := testSchema.Migrate(context.Background(), pool, "dialsync"); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return pool, connString
}

func TestLoadSave(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	s := NewStore(pool, "dialsync", "main")
	if _, found, err := s.Load(ctx); err != nil || found {
		t.Fatalf("Load on empty = found %v, %v; want not found", found, err)
	}
	s.SetServerUUID("uuid-1")
	p1 := change.Position{File: "mysql-bin.000001", Pos: 1234, GTIDSet: "0-1-10"}
	if err := s.Save(ctx, p1, nil, nil); err != nil {
		t.Fatal(err)
	}
	p2 := change.Position{File: "mysql-bin.000002", Pos: 4294967295, GTIDSet: "0-1-11"}
	if err := s.Save(ctx, p2, nil, nil); err != nil {
		t.Fatal(err)
	}
	cp, found, err := s.Load(ctx)
	if err != nil || !found {
		t.Fatalf("Load = %v, %v", found, err)
	}
	if cp.Pos != p2 || cp.ServerUUID != "uuid-1" || cp.Pipeline != "main" || cp.Epoch != 0 || cp.UpdatedAt.IsZero() {
		t.Fatalf("Load = %+v; want %v from uuid-1", cp, p2)
	}
	// Pipelines are independent.
	other := NewStore(pool, "dialsync", "other")
	if _, found, _ := other.Load(ctx); found {
		t.Fatal("other pipeline sees main's checkpoint")
	}
	// Saves write no history (they are the normal flow).
	if h, err := s.History(ctx, 0); err != nil || len(h) != 0 {
		t.Fatalf("History after saves = %v, %v; want empty", h, err)
	}
}

func TestSetHistoryRollback(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	s := NewStore(pool, "dialsync", "main")
	auto := change.Position{File: "bin.000001", Pos: 100, GTIDSet: "0-1-1"}
	if err := s.Save(ctx, auto, nil, nil); err != nil {
		t.Fatal(err)
	}
	a := change.Position{File: "bin.000002", Pos: 200, GTIDSet: "0-1-2"}
	b := change.Position{File: "bin.000003", Pos: 300}
	if err := s.Set(ctx, a, "alice", "skip poison txn"); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, b, "bob", "jump"); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, change.Position{}, "bob", ""); err == nil {
		t.Error("Set accepted an empty position")
	}
	if err := s.Set(ctx, a, "", "no actor"); err == nil {
		t.Error("Set accepted an empty actor")
	}
	h, err := s.History(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 {
		t.Fatalf("History has %d entries; want 2: %+v", len(h), h)
	}
	// Newest first, each with old and new.
	if h[0].Actor != "bob" || h[0].Old != a || h[0].New != b || h[0].Reason != "jump" {
		t.Errorf("entry 0 = %+v", h[0])
	}
	if h[1].Actor != "alice" || h[1].Old != auto || h[1].New != a || h[1].Reason != "skip poison txn" || h[1].At.IsZero() {
		t.Errorf("entry 1 = %+v", h[1])
	}
	if h1, _ := s.History(ctx, 1); len(h1) != 1 || h1[0].ID != h[0].ID {
		t.Errorf("History(1) = %+v", h1)
	}

	// Rollback to alice's entry restores the value it set (its NEW value).
	if err := s.Rollback(ctx, h[1].ID, "carol", "undo bob"); err != nil {
		t.Fatal(err)
	}
	if cp, _, _ := s.Load(ctx); cp.Pos != a {
		t.Fatalf("after rollback checkpoint = %v; want %v", cp.Pos, a)
	}
	h, _ = s.History(ctx, 1)
	if h[0].Actor != "carol" || h[0].Old != b || h[0].New != a || h[0].Reason == "" {
		t.Errorf("rollback history entry = %+v", h[0])
	}
	if err := s.Rollback(ctx, 999999, "carol", ""); !errors.Is(err, ErrNoHistoryEntry) {
		t.Errorf("Rollback to unknown entry: %v; want ErrNoHistoryEntry", err)
	}
	// Another pipeline's entries are not reachable.
	if err := NewStore(pool, "dialsync", "other").Rollback(ctx, h[0].ID, "carol", ""); !errors.Is(err, ErrNoHistoryEntry) {
		t.Errorf("Rollback across pipelines: %v; want ErrNoHistoryEntry", err)
	}

	// Reset removes the checkpoint and is recorded.
	if err := s.Reset(ctx, "dave", "rebootstrap"); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Load(ctx); found {
		t.Fatal("checkpoint still there after Reset")
	}
	h, _ = s.History(ctx, 1)
	if h[0].Old != a || !h[0].New.IsZero() {
		t.Errorf("reset history entry = %+v", h[0])
	}
}

// The claim map is stored with the checkpoint, in the same transaction: a
// fenced save stores neither, and an operator's change drops the map (it
// belongs to the old position).
func TestOwnersSavedWithCheckpoint(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	s := NewStore(pool, "dialsync", "main")
	s.SetOnMove(pgstore.NewQueue(pool, "dialsync", "main").DropMark)
	if err := s.Save(ctx, change.Position{File: "b.000001", Pos: 10}, map[uint64]uint64{1: 100, 2: 200}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, change.Position{File: "b.000001", Pos: 20}, map[uint64]uint64{2: 201, 3: 300}, map[uint64]uint64{7: 70, 8: 80}); err != nil {
		t.Fatal(err)
	}
	// A pointer 0 (user points nowhere / deleted) removes the user's row.
	if err := s.Save(ctx, change.Position{File: "b.000001", Pos: 25}, nil, map[uint64]uint64{7: 0, 8: 81}); err != nil {
		t.Fatal(err)
	}
	if ptrs, err := s.Pointers(ctx); err != nil || len(ptrs) != 1 || ptrs[8] != 81 {
		t.Fatalf("pointers = %v, %v; want {8: 81}", ptrs, err)
	}
	got, err := s.Owners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]uint64{1: 100, 2: 201, 3: 300}
	if len(got) != len(want) {
		t.Fatalf("owners = %v, want %v", got, want)
	}
	for c, u := range want {
		if got[c] != u {
			t.Fatalf("owners = %v, want %v", got, want)
		}
	}
	// Moving the checkpoint by hand drops the maps and the queue mark.
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.queue_marks (pipeline, file, pos, gtid_set, partial_txn, piece) VALUES ('main', 'b.000001', 25, '', '', 0)`); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, change.Position{File: "b.000001", Pos: 10}, "test", "rewind"); err != nil {
		t.Fatal(err)
	}
	var marks int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dialsync.queue_marks WHERE pipeline = 'main'`).Scan(&marks); err != nil || marks != 0 {
		t.Fatalf("queue marks after Set = %d, %v; want 0", marks, err)
	}
	if m, _ := s.Owners(ctx); len(m) != 0 {
		t.Fatalf("owners after Set = %v; want none", m)
	}
	if err := s.Save(ctx, change.Position{File: "b.000001", Pos: 25}, want, nil); err != nil {
		t.Fatal(err)
	}
	other := NewStore(pool, "dialsync", "other")
	if m, _ := other.Owners(ctx); len(m) != 0 {
		t.Fatalf("another pipeline sees owners %v", m)
	}
	// Fenced: a newer epoch exists, the map must not move either.
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.leases (pipeline, epoch, holder, acquired_at) VALUES ('main', 5, 'x', now())`); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, change.Position{File: "b.000001", Pos: 30}, map[uint64]uint64{1: 999}, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("Save = %v, want ErrFenced", err)
	}
	if m, _ := s.Owners(ctx); m[1] != 100 {
		t.Fatalf("fenced save changed the map: %v", m)
	}
	if err := s.Set(ctx, change.Position{File: "b.000002", Pos: 4}, "op", "test"); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Owners(ctx); len(m) != 0 {
		t.Fatalf("Set kept the old map: %v", m)
	}
	if m, _ := s.Pointers(ctx); len(m) != 0 {
		t.Fatalf("Set kept the old pointers: %v", m)
	}
}

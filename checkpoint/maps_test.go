package checkpoint

import (
	"context"
	"errors"
	"math"
	"testing"

	"dialsync/change"
	"dialsync/internal/idmap"
)

// TestSaveWholeAndLoadMaps: whole compact maps are stored with the
// checkpoint in one fenced transaction, more than a statement's chunk of
// them, ids above 2^32 and 2^63 included, and LoadMaps reads them back.
func TestSaveWholeAndLoadMaps(t *testing.T) {
	t.Parallel()
	pool, _ := migrated(t)
	ctx := context.Background()
	s := NewStore(pool, "dialsync", "main")
	owners, pointers := idmap.New(0), idmap.New(0)
	n := uint64(mapChunk*2 + 17)
	for c := uint64(1); c <= n; c++ {
		owners.Append(c, c/3+1)
	}
	owners.Set(1<<40, 5)
	owners.Set(math.MaxUint64, math.MaxUint64-1)
	pointers.Append(1, 10)
	pointers.Append(2, 0) // points nowhere: no row
	pointers.Append(3, 1<<33)
	pos := change.Position{File: "b.000001", Pos: 10}
	if err := s.SaveWhole(ctx, pos, owners, pointers); err != nil {
		t.Fatal(err)
	}
	if cp, ok, err := s.Load(ctx); err != nil || !ok || cp.Pos != pos {
		t.Fatalf("checkpoint = %+v, %v, %v; want %v", cp, ok, err, pos)
	}
	gotO, gotP, err := s.LoadMaps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gotO.Len() != owners.Len() {
		t.Fatalf("owners: %d entries, want %d", gotO.Len(), owners.Len())
	}
	owners.Range(func(k, v uint64) bool {
		if g, ok := gotO.Get(k); !ok || g != v {
			t.Fatalf("owners[%d] = %d, %v; want %d", k, g, ok, v)
		}
		return true
	})
	if gotP.Len() != 2 {
		t.Fatalf("pointers: %d entries, want 2", gotP.Len())
	}
	if v, _ := gotP.Get(3); v != 1<<33 {
		t.Fatalf("pointers[3] = %d", v)
	}
	// The map-returning readers agree.
	if m, err := s.Owners(ctx); err != nil || uint64(len(m)) != n+2 {
		t.Fatalf("Owners: %d, %v", len(m), err)
	}
	// Fenced: nothing moves.
	if _, err := pool.Exec(ctx, `INSERT INTO dialsync.leases (pipeline, epoch, holder, acquired_at) VALUES ('main', 5, 'x', now())`); err != nil {
		t.Fatal(err)
	}
	owners.Set(1, 999)
	if err := s.SaveWhole(ctx, change.Position{File: "b.000001", Pos: 30}, owners, pointers); !errors.Is(err, ErrFenced) {
		t.Fatalf("SaveWhole = %v, want ErrFenced", err)
	}
	if gotO, _, _ = s.LoadMaps(ctx); func() bool { v, _ := gotO.Get(1); return v != 1 }() {
		t.Fatal("a fenced SaveWhole changed the stored map")
	}
}

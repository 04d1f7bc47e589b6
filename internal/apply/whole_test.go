package apply

import (
	"context"
	"maps"
	"testing"

	"dialsync/change"
)

// A map seeded whole (read again from the lookup server: a checkpoint moved
// by hand) goes whole with the first checkpoint, as of that checkpoint: what
// the first pieces of a large transaction in the same batch taught is not in
// it (docs/design.md, the maps as of the binlog position); it joins with the
// checkpoint of the transaction's last piece.
func TestWholeMapStoredAsOfCheckpoint(t *testing.T) {
	f := newFakes()
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	l.SetOwners(map[uint64]uint64{60: 6, 61: 7}, true)
	moveA := change.Change{Table: "claims", Op: change.Update, Before: change.Row{int64(61), int64(7)}, After: change.Row{int64(61), int64(8)}, Changed: []string{"user_id"}}
	a := txn("0-1-1", 100, moveA)
	moveB := change.Change{Table: "claims", Op: change.Update, Before: change.Row{int64(60), int64(6)}, After: change.Row{int64(60), int64(9)}, Changed: []string{"user_id"}}
	newB := change.Change{Table: "claims", Op: change.Insert, After: change.Row{int64(62), int64(3)}}
	b0 := txn("0-1-2", 0, moveB, newB)
	b0.Partial, b0.End = true, a.End
	// Queued before the loop runs: one batch, [a, b0].
	for _, x := range []*change.Txn{a, b0} {
		if err := l.Submit(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	runLoop(t, l)
	<-applied
	if p := <-f.savedCh; p != a.End {
		t.Fatalf("saved %v, want %v", p, a.End)
	}
	f.mu.Lock()
	got := maps.Clone(f.storedOwners)
	f.mu.Unlock()
	if want := map[uint64]uint64{60: 6, 61: 8}; !maps.Equal(got, want) {
		t.Fatalf("stored owners with the first checkpoint = %v, want %v", got, want)
	}
	last := txn("0-1-2", 200, userUpdate(1, "status"))
	last.Piece = 1
	if err := l.Submit(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	<-applied
	<-f.savedCh
	f.mu.Lock()
	got = maps.Clone(f.storedOwners)
	f.mu.Unlock()
	if want := map[uint64]uint64{60: 9, 61: 8, 62: 3}; !maps.Equal(got, want) {
		t.Fatalf("stored owners after the last piece = %v, want %v", got, want)
	}
}

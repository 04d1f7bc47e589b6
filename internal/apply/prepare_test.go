package apply

import (
	"context"
	"fmt"
	"testing"

	"dialsync/change"
)

// The commit barrier locks one row per transaction, or, when the source
// commits in binlog order, one row of the batch's last transaction with a
// tracked row.
func TestCommitBarrierRows(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		f := newFakes()
		applied := make(chan BatchStats, 10)
		l := newTestLoop(t, f, applied)
		l.cfg.OrderedCommits = ordered
		req := change.Change{Table: "claim_requirements", Op: change.Insert, After: change.Row{int64(9), int64(70)}}
		f.owners[70] = 7
		for _, tx := range []*change.Txn{txn("0-1-5", 500, userUpdate(7, "status")), txn("0-1-6", 600, userUpdate(8, "status")),
			txn("0-1-7", 700, req), txn("0-1-8", 800)} {
			if err := l.Submit(context.Background(), tx); err != nil {
				t.Fatal(err)
			}
		}
		runLoop(t, l)
		for n := 0; n < 4; {
			n += (<-applied).Txns
		}
		f.mu.Lock()
		got := map[string][]uint64{}
		for _, b := range f.barriers {
			for tbl, ids := range b {
				got[tbl] = append(got[tbl], ids...)
			}
		}
		batches := len(f.barriers)
		f.mu.Unlock()
		if batches == 1 {
			want := map[string][]uint64{"users": {8, 7}, "claim_requirements": {9}}
			if ordered {
				want = map[string][]uint64{"claim_requirements": {9}}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("ordered=%v: barrier rows %v, want %v", ordered, got, want)
			}
		} else if !ordered && len(got["users"])+len(got["claim_requirements"]) != 3 {
			t.Fatalf("ordered=%v: barrier rows %v over %d batches, want one per transaction with rows", ordered, got, batches)
		}
	}
}

package apply

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// A replay after a crash: transactions at or before the queue mark keep
// their queue rows (no recompute, no second queue notice); their keys and
// user.changed notices go out again (idempotent). From the first
// transaction past the mark on, rows are recomputed, and every queue write
// stores the mark of its batch's last transaction.
func TestReplayKeepsMarkedQueueRows(t *testing.T) {
	piece := func(gtid string, n int, partial bool, c change.Change) *change.Txn {
		tx := txn(gtid, 800, c)
		tx.Partial, tx.Piece = partial, n
		if partial {
			tx.End = change.Position{File: "bin.000001", Pos: 800, GTIDSet: "0-1-8"} // where it starts
		} else {
			tx.End = change.Position{File: "bin.000001", Pos: 900, GTIDSet: "0-1-9"}
		}
		return tx
	}
	cases := []struct {
		name      string
		mark      queue.Mark
		txns      []*change.Txn
		recompute []uint64 // users whose rows may be recomputed
		keep      []uint64 // users whose rows must not be
		lastMark  queue.Mark
	}{
		{"whole transactions", queue.Mark{File: "bin.000001", Pos: 600, GTIDSet: "0-1-6"},
			[]*change.Txn{txn("0-1-5", 500, userUpdate(7, "status")), txn("0-1-6", 600, userUpdate(8, "status")),
				txn("0-1-7", 700, userUpdate(9, "status")), txn("0-1-8", 800, userUpdate(7, "status"))},
			[]uint64{7, 9}, []uint64{8}, queue.Mark{File: "bin.000001", Pos: 800, GTIDSet: "0-1-8"}},
		{"pieces of a large transaction", queue.Mark{File: "bin.000001", Pos: 800, GTIDSet: "0-1-8", PartialTxn: "0-1-9", Piece: 0},
			[]*change.Txn{piece("0-1-9", 0, true, userUpdate(7, "status")), piece("0-1-9", 1, true, userUpdate(8, "status")),
				piece("0-1-9", 2, false, userUpdate(9, "status"))},
			[]uint64{8, 9}, []uint64{7}, queue.Mark{File: "bin.000001", Pos: 900, GTIDSet: "0-1-9"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakes()
			for _, u := range []uint64{7, 8, 9} {
				f.queued[u] = queue.Row{UserID: u, OpenClaims: 1}
			}
			applied := make(chan BatchStats, 10)
			l := newTestLoop(t, f, applied)
			l.SetMark(c.mark, canal.Includes)
			for _, tx := range c.txns {
				if err := l.Submit(context.Background(), tx); err != nil {
					t.Fatal(err)
				}
			}
			runLoop(t, l)
			for n := 0; n < len(c.txns); {
				n += (<-applied).Txns
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			var written []uint64
			for _, us := range f.applied {
				written = append(written, us...)
			}
			slices.Sort(written)
			if !slices.Equal(written, c.recompute) {
				t.Fatalf("queue rows written for users %v, want %v (rows of %v were already in the queue)", written, c.recompute, c.keep)
			}
			if f.mark == nil || *f.mark != c.lastMark {
				t.Fatalf("stored mark %+v, want %+v", f.mark, c.lastMark)
			}
			users := map[uint64]bool{}
			for _, m := range f.pubs {
				ev, err := notice.Decode(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				if ev.IsQueue() {
					qc, _ := ev.QueueChanged()
					if slices.Contains(c.keep, qc.UserID) {
						t.Fatalf("queue notice for user %d, whose row was already written: %s", qc.UserID, ev.ID)
					}
				} else if uc, err := ev.UserChanged(); err == nil {
					users[uc.UserID] = true
				}
			}
			for _, u := range c.keep {
				if !users[u] {
					t.Fatalf("no user.changed notice for user %d: replayed transactions still announce the change", u)
				}
				// The crash may have come between the queue write and the
				// cache deletion: a replay deletes the keys again.
				if k := fmt.Sprintf("t:user:%d:context", u); !slices.Contains(f.deleted, k) {
					t.Fatalf("key %s not deleted on replay (deleted %v)", k, f.deleted)
				}
			}
		})
	}
}

package apply

import (
	"context"
	"slices"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/notice"
)

// Claims learned from the claims stream resolve requirement changes without
// the lookup server, even after the claim was hard-deleted.
func TestLearnedOwners(t *testing.T) {
	f := newFakes()
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	runLoop(t, l)
	del := change.Change{Table: "claims", Op: change.Delete, Before: change.Row{int64(50), int64(5)}}
	req := change.Change{Table: "claim_requirements", Op: change.Delete, Before: change.Row{int64(1), int64(50)}}
	if err := l.Submit(context.Background(), txn("0-1-1", 100, del)); err != nil {
		t.Fatal(err)
	}
	<-applied
	<-f.savedCh
	if err := l.Submit(context.Background(), txn("0-1-2", 200, req)); err != nil {
		t.Fatal(err)
	}
	st := <-applied
	<-f.savedCh
	if st.Unresolved != 0 || st.Users != 1 {
		t.Fatalf("stats = %+v", st)
	}
	if slices.Contains(f.callList(), "claims") {
		t.Fatalf("looked up a claim the stream taught: %v", f.calls)
	}
}

// A requirement change resolves to the claim's owner at the change's place
// in the binlog, even when a later change in the same batch moves the claim
// (the lookup server would already show the new owner). The map stored with
// the checkpoint is the map after the batch.
func TestOwnerAsOfBinlogPosition(t *testing.T) {
	f := newFakes()
	f.owners[60] = 9 // what the lookup server says now: already moved
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	l.SetOwners(map[uint64]uint64{60: 6}, false)
	runLoop(t, l)
	req := change.Change{Table: "claim_requirements", Op: change.Update, Before: change.Row{int64(1), int64(60)}, After: change.Row{int64(1), int64(60)}, Changed: []string{"status"}}
	move := change.Change{Table: "claims", Op: change.Update, Before: change.Row{int64(60), int64(6)}, After: change.Row{int64(60), int64(9)}, Changed: []string{"user_id"}}
	req2 := req
	// Two transactions in one batch: submit both before the loop can take
	// the first alone is not guaranteed, so check notices, not batches.
	if err := l.Submit(context.Background(), txn("0-1-1", 100, req, move, req2)); err != nil {
		t.Fatal(err)
	}
	<-applied
	<-f.savedCh
	got := map[string][]string{}
	eachUserChanged(f.pubs, func(subject string, uc notice.UserChanged) { got[subject] = uc.Tables })
	if !slices.Equal(got["6"], []string{"claim_requirements", "claims"}) || !slices.Equal(got["9"], []string{"claim_requirements", "claims"}) {
		t.Fatalf("notices = %v", got)
	}
	if slices.Contains(f.callList(), "claims") {
		t.Fatal("looked up a claim the map knew")
	}
	if f.storedOwners[60] != 9 {
		t.Fatalf("stored owners = %v", f.storedOwners)
	}
}

// An address change resolves to the users pointing at the address at that
// place in the binlog: a user who moved away later in the batch is still
// named, one who moved in later is not.
func TestAddressPointersAsOfBinlogPosition(t *testing.T) {
	f := newFakes()
	f.addrs[70] = []uint64{99} // the lookup server's (later) view: must not be used
	applied := make(chan BatchStats, 10)
	l := newTestLoop(t, f, applied)
	l.SetPointers(map[uint64]uint64{5: 70, 6: 71}, false)
	runLoop(t, l)
	addrUpd := change.Change{Table: "user_addresses", Op: change.Update, Before: change.Row{int64(70), int64(5)}, After: change.Row{int64(70), int64(5)}, Changed: []string{"post_code"}}
	move5 := change.Change{Table: "users", Op: change.Update, Before: change.Row{int64(5), int64(70)}, After: change.Row{int64(5), int64(72)}, Changed: []string{"current_user_address_id"}}
	move6 := change.Change{Table: "users", Op: change.Update, Before: change.Row{int64(6), int64(71)}, After: change.Row{int64(6), int64(70)}, Changed: []string{"current_user_address_id"}}
	if err := l.Submit(context.Background(), txn("0-1-1", 100, addrUpd)); err != nil {
		t.Fatal(err)
	}
	if err := l.Submit(context.Background(), txn("0-1-2", 200, move5, move6)); err != nil {
		t.Fatal(err)
	}
	addrUpd2 := addrUpd
	if err := l.Submit(context.Background(), txn("0-1-3", 300, addrUpd2)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case <-applied:
		case <-time.After(5 * time.Second):
		}
	}
	waitFor := func() {
		for {
			f.mu.Lock()
			n := len(f.saved)
			f.mu.Unlock()
			if n > 0 && f.saved[n-1].Pos == 300 {
				return
			}
			<-f.savedCh
		}
	}
	waitFor()
	f.mu.Lock()
	defer f.mu.Unlock()
	got := map[string][]string{}
	eachUserChanged(f.pubs, func(subject string, uc notice.UserChanged) {
		got[uc.Source.Txn] = append(got[uc.Source.Txn], subject)
	})
	for k := range got {
		slices.Sort(got[k])
	}
	if !slices.Equal(got["0-1-1"], []string{"5"}) || !slices.Equal(got["0-1-3"], []string{"5", "6"}) {
		t.Fatalf("notices by txn = %v; want 0-1-1 -> [5], 0-1-3 -> [5 6] (5 owns it, 6 points at it now)", got)
	}
	if slices.Contains(f.calls, "addresses") {
		t.Fatal("looked up an address the pointer map knew")
	}
	if f.storedPointers[5] != 72 || f.storedPointers[6] != 70 {
		t.Fatalf("stored pointers = %v", f.storedPointers)
	}
}

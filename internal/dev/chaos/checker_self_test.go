package chaos

import (
	"context"
	"encoding/json"
	"testing"

	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/testenv"
)

// The checker must see what it is meant to see: these feed it known losses,
// duplicates and stale keys and expect exact counts (a checker that always
// says zero would pass the chaos run too).

func msg(t *testing.T, id, typ, gtid string, user uint64) streamMsg {
	t.Helper()
	return wire(t, id, typ, map[string]any{"user_id": user, "source": map[string]any{"gtid": gtid, "txn": gtid}})
}

// wire decodes a notice with the given data the way the checker reads the
// stream.
func wire(t *testing.T, id, typ string, data map[string]any) streamMsg {
	t.Helper()
	var n wireNotice
	raw := map[string]any{"id": id, "type": typ, "subject": "x", "data": data}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &n); err != nil {
		t.Fatal(err)
	}
	return streamMsg{n: n, msgID: id}
}

func TestCheckerCountsLossAndDuplicates(t *testing.T) {
	txns := []committed{
		{gtid: "0-1-10", seq: 10, users: []uint64{1, 2}},
		{gtid: "0-1-11", seq: 11, users: []uint64{3}},
		{gtid: "0-1-12", seq: 12}, // untracked table only
	}
	msgs := []streamMsg{
		msg(t, "a", userChanged, "0-1-10", 1),
		msg(t, "a", userChanged, "0-1-10", 1), // same id twice (dedupe failed)
		msg(t, "b", userChanged, "0-1-10", 1), // same pair, another id
		msg(t, "c", userChanged, "0-1-11", 3),
		msg(t, "d", userChanged, "0-1-11", 4), // a user the writer did not list
		msg(t, "e", "dialsync.queue.entered", "0-1-11", 3),
	}
	msgs[3].msgID = "not-c"
	f := &figures{}
	checkNotices(f, txns, msgs)
	if f.Lost != 1 || f.DupIDs != 1 || f.DupPairs != 1 || f.IDMismatch != 1 || f.Unattributed != 1 {
		t.Fatalf("lost %d dupIDs %d dupPairs %d mismatch %d unattributed %d; want 1 each\n%v",
			f.Lost, f.DupIDs, f.DupPairs, f.IDMismatch, f.Unattributed, f.Examples)
	}
	if f.Txns != 3 || f.TxnsTouchingUsers != 2 || f.Pairs != 3 || f.NoticesByType[userChanged] != 5 {
		t.Fatalf("counts: %+v", f)
	}
}

func TestCheckerCountsStaleKeys(t *testing.T) {
	ctx := context.Background()
	prefix := testenv.Name(t) + ":"
	rdb := dstest.Redis(t, prefix)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Skipf("no redis on %s: %v", dstest.MachineRedis, err)
	}
	// Set at head seq 100..101 for each user.
	sets := map[string]keySet{
		"t1": {user: 1, before: 100, after: 101}, // touched at 105: stale
		"t2": {user: 2, before: 100, after: 101}, // touched at 90 only: fine
		"t3": {user: 3, before: 100, after: 102}, // touched at 101: ambiguous
		"t4": {user: 4, before: 100, after: 101}, // never touched
	}
	for tok, ks := range sets {
		for _, k := range cacheKeys(prefix, ks.user) {
			if err := rdb.Set(ctx, k, tok, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rdb.Set(ctx, prefix+"user:9:context", "someone-else", 0).Err(); err != nil {
		t.Fatal(err)
	}
	txns := []committed{
		{gtid: "0-1-90", seq: 90, users: []uint64{2}},
		{gtid: "0-1-101", seq: 101, users: []uint64{3}},
		{gtid: "0-1-105", seq: 105, users: []uint64{1}},
	}
	f := &figures{}
	if err := checkKeys(ctx, f, rdb, prefix, txns, sets); err != nil {
		t.Fatal(err)
	}
	// Two keys per user.
	if f.StaleKeys != 2 || f.AmbiguousKeys != 2 || f.UnknownTokens != 1 || f.KeysPresent != 9 {
		t.Fatalf("stale %d ambiguous %d unknown %d present %d; want 2, 2, 1, 9\n%v",
			f.StaleKeys, f.AmbiguousKeys, f.UnknownTokens, f.KeysPresent, f.Examples)
	}
}

func TestGTIDSeq(t *testing.T) {
	for in, want := range map[string]uint64{"0-1-42": 42, "1-5-7,0-1-9": 9, "0-1-3,0-2-8": 8} {
		if got, ok := gtidSeq(in); !ok || got != want {
			t.Errorf("gtidSeq(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "1-1-5", "garbage"} {
		if _, ok := gtidSeq(in); ok {
			t.Errorf("gtidSeq(%q) ok, want none", in)
		}
	}
}

func queueMsg(t *testing.T, id, kind string, user uint64, open, pending int64, oldest any) streamMsg {
	t.Helper()
	return wire(t, id, "dialsync.queue."+kind, map[string]any{"user_id": user, "open_claims": open,
		"pending_requirements": pending, "oldest_pending_at": oldest, "source": map[string]any{"gtid": id, "txn": id}})
}

// A user's last queue notice must match its final call_queue row: a
// subscriber following the notices would otherwise hold a wrong row.
func TestCheckerCountsStaleQueueNotices(t *testing.T) {
	msgs := []streamMsg{
		queueMsg(t, "q1", "entered", 1, 1, 2, "2024-01-02T03:04:05Z"),
		queueMsg(t, "q2", "updated", 1, 1, 3, "2024-01-02T03:04:05Z"), // last for 1: matches
		queueMsg(t, "q3", "entered", 2, 1, 1, nil),
		queueMsg(t, "q4", "left", 2, 1, 1, nil),    // last for 2: left, but still queued
		queueMsg(t, "q5", "updated", 3, 2, 2, nil), // last for 3: stale values
		queueMsg(t, "q6", "left", 4, 1, 1, nil),    // left and gone: fine
	}
	f := &figures{}
	checkNotices(f, nil, msgs)
	got := map[uint64]queueRow{
		1: {1, 3, 1704164645},
		2: {1, 1, -1},
		3: {2, 1, -1},
	}
	if err := checkQueueNotices(f, got); err != nil {
		t.Fatal(err)
	}
	if f.StaleQueueNotices != 2 {
		t.Fatalf("stale queue notices %d, want 2 (users 2 and 3)\n%v", f.StaleQueueNotices, f.Examples)
	}
}

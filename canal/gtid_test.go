package canal

import (
	"context"
	"dialsync/change"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// MySQL-flavor GTID sets (uuid:interval[:interval...][,uuid:...]) as the
// checkpoint sees them: go-mysql's syncer adds each transaction's GTID to
// the executed set (replication/binlogsyncer.go, MysqlGTIDSet.AddGTID), OnPosSynced
// turns the set into text for Position.GTIDSet, and Run parses that text
// back to start a later stream. unit_test.go covers plain parsing and
// normalisation; these cover merge, containment and the round trip.

const (
	uuidA = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	uuidB = "4e11fa47-71ca-11e1-9e33-c80aa9429562"
)

func mustMySQLSet(t *testing.T, s string) *mysql.MysqlGTIDSet {
	t.Helper()
	set, err := mysql.ParseGTIDSet(mysql.MySQLFlavor, s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return set.(*mysql.MysqlGTIDSet)
}

// addGTID adds one transaction's GTID to set, as the syncer's AddGTID does
// (through Update, so this test needs no uuid package).
func addGTID(t *testing.T, set *mysql.MysqlGTIDSet, u string, gno int64) {
	t.Helper()
	if err := set.Update(fmt.Sprintf("%s:%d", u, gno)); err != nil {
		t.Fatal(err)
	}
}

// Adding transactions one by one, out of order and across servers, gives
// the normalised text the server itself prints (intervals merged, uuids
// sorted), whatever the order they arrived in.
func TestMySQLGTIDSetMerge(t *testing.T) {
	set := mustMySQLSet(t, uuidA+":1-5")
	steps := []struct {
		add  func()
		want string
	}{
		{func() { addGTID(t, set, uuidA, 6) }, uuidA + ":1-6"},
		{func() { addGTID(t, set, uuidA, 9) }, uuidA + ":1-6:9"},
		{func() { addGTID(t, set, uuidB, 1) }, uuidA + ":1-6:9," + uuidB + ":1"},
		{func() { addGTID(t, set, uuidA, 8) }, uuidA + ":1-6:8-9," + uuidB + ":1"},
		{func() { addGTID(t, set, uuidA, 7) }, uuidA + ":1-9," + uuidB + ":1"},
		{func() { addGTID(t, set, uuidA, 3) }, uuidA + ":1-9," + uuidB + ":1"}, // already in: no change
		{func() {
			if err := set.Update(uuidB + ":2-4:10"); err != nil {
				t.Fatal(err)
			}
		}, uuidA + ":1-9," + uuidB + ":1-4:10"},
	}
	for i, s := range steps {
		s.add()
		if got := set.String(); got != s.want {
			t.Fatalf("step %d: set = %q, want %q", i+1, got, s.want)
		}
	}
	// Merging is order-independent: the same GTIDs in another order.
	other := mustMySQLSet(t, uuidB+":10")
	for _, g := range []string{uuidA + ":9", uuidB + ":1-4", uuidA + ":1-8"} {
		if err := other.Update(g); err != nil {
			t.Fatal(err)
		}
	}
	if !other.Equal(set) || other.String() != set.String() {
		t.Fatalf("merge order matters: %q vs %q", other, set)
	}
}

func TestMySQLGTIDSetContain(t *testing.T) {
	have := mustMySQLSet(t, uuidA+":1-9:20-30,"+uuidB+":1-3")
	for _, tc := range []struct {
		want string
		in   bool
	}{
		{uuidA + ":1-9", true},
		{uuidA + ":2-5:21", true},
		{uuidA + ":1-9:20-30," + uuidB + ":1-3", true}, // itself
		{uuidB + ":3", true},
		{uuidA + ":10", false},   // in the gap
		{uuidA + ":1-10", false}, // runs into the gap
		{uuidA + ":30-31", false},
		{uuidB + ":1-4", false},
		{"5e11fa47-71ca-11e1-9e33-c80aa9429562:1", false}, // unknown server
	} {
		if got := have.Contain(mustMySQLSet(t, tc.want)); got != tc.in {
			t.Errorf("%s contains %s = %v, want %v", have, tc.want, got, tc.in)
		}
	}
	// A checkpoint is covered by a later one: a transaction's own GTID
	// (gtidString) is in the set after the syncer added it.
	sid, _ := hex.DecodeString(strings.ReplaceAll(uuidB, "-", ""))
	ev := &replication.GTIDEvent{SID: sid, GNO: 4}
	own := mustMySQLSet(t, gtidString(ev))
	if have.Contain(own) {
		t.Fatalf("%s already contains %s", have, own)
	}
	before := have.Clone()
	addGTID(t, have, uuidB, 4)
	if !have.Contain(own) || !have.Contain(before) || before.Contain(have) {
		t.Fatalf("after adding %s: %s should contain it and %s, and not the reverse", own, have, before)
	}
}

// The text written into the checkpoint parses back to the same set, for
// every shape a server produces: several uuids, gaps, upper case (older
// servers), Executed_Gtid_Set's line breaks (Head strips them) and MySQL
// 8.4 tags.
func TestMySQLGTIDSetCheckpointRoundTrip(t *testing.T) {
	for _, in := range []string{
		uuidA + ":1",
		uuidA + ":1-5:7-9:11",
		uuidB + ":1-3," + uuidA + ":1-100",
		strings.ToUpper(uuidA) + ":1-5",
		uuidA + ":1-5,\n" + uuidB + ":1-2",
		uuidA + ":1-5:mytag:1-3",
	} {
		set := mustMySQLSet(t, strings.ReplaceAll(in, "\n", ""))
		text := change.Position{File: "binlog.000003", Pos: 4, GTIDSet: set.String()}.GTIDSet
		back, err := mysql.ParseGTIDSet(mysql.MySQLFlavor, text)
		if err != nil {
			t.Fatalf("%q: checkpoint text %q does not parse: %v", in, text, err)
		}
		if !back.Equal(set) || back.String() != text {
			t.Fatalf("%q: round trip %q -> %q", in, text, back)
		}
		// Stable: the text of the parsed text is the text (a checkpoint
		// saved again unchanged compares equal as a string).
		if again := mustMySQLSet(t, back.String()).String(); again != text {
			t.Fatalf("%q: text not stable: %q then %q", in, text, again)
		}
	}
	if got := mustMySQLSet(t, "").String(); got != "" {
		t.Fatalf("empty set text = %q", got)
	}
}

// OnPosSynced writes the syncer's executed set as the commit's
// End.GTIDSet, and that text starts a later stream at the same set.
func TestOnPosSyncedMySQLGTIDSet(t *testing.T) {
	var got []*change.Txn
	s := &streamer{ctx: context.Background(), h: func(_ context.Context, txn *change.Txn) error {
		got = append(got, txn)
		return nil
	}}
	set := mustMySQLSet(t, uuidA+":1-41")
	sid, _ := hex.DecodeString(strings.ReplaceAll(uuidA, "-", ""))
	for gno := int64(42); gno <= 43; gno++ {
		ev := &replication.GTIDEvent{SID: sid, GNO: gno}
		if err := s.OnGTID(&replication.EventHeader{EventType: replication.GTID_EVENT}, ev); err != nil {
			t.Fatal(err)
		}
		addGTID(t, set, uuidA, gno) // what the syncer does
		if err := s.OnPosSynced(&replication.EventHeader{EventType: replication.XID_EVENT, Timestamp: 1700000000},
			mysql.Position{Name: "binlog.000007", Pos: uint32(1000 * gno)}, set, false); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d transactions handed on, want 2", len(got))
	}
	if got[0].GTID != uuidA+":42" || got[0].End.GTIDSet != uuidA+":1-42" {
		t.Fatalf("first txn: GTID %q End %q", got[0].GTID, got[0].End.GTIDSet)
	}
	if got[1].End.GTIDSet != uuidA+":1-43" || got[1].End.File != "binlog.000007" || got[1].End.Pos != 43000 {
		t.Fatalf("second txn End = %+v", got[1].End)
	}
	// The stored text is a snapshot: later additions to the live set do not
	// change a position already handed on.
	addGTID(t, set, uuidA, 44)
	if got[1].End.GTIDSet != uuidA+":1-43" {
		t.Fatalf("End.GTIDSet changed after the fact: %q", got[1].End.GTIDSet)
	}
	resume := mustMySQLSet(t, got[1].End.GTIDSet)
	if !resume.Contain(mustMySQLSet(t, got[0].GTID)) || resume.Contain(mustMySQLSet(t, uuidA+":44")) {
		t.Fatalf("resume set %s: must contain the handed-on transactions and nothing later", resume)
	}
}

package preflight

import (
	"strings"
	"testing"

	"dialsync/change"
	"dialsync/checkpoint"
)

// Each cause a checkpoint cannot be served for is told apart, and only a
// provable purge is Purged (the one recovery.on_purged may act on).
func TestJudgePosition(t *testing.T) {
	const here, there = "server_id=1;hostname=a;port=1", "server_id=2;hostname=b;port=2"
	logs := []BinlogFile{{Name: "mysql-bin.000003", Size: 1000}, {Name: "mysql-bin.000004", Size: 500}}
	maria := func(f PositionFacts) PositionFacts {
		f.Flavor, f.Identity, f.Logs = "mariadb", here, logs
		return f
	}
	cases := []struct {
		name   string
		cp     checkpoint.Checkpoint
		f      PositionFacts
		cause  Cause
		failov bool
		want   []string
	}{
		{"file/pos on the server", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000004", Pos: 120}, ServerUUID: here},
			maria(PositionFacts{}), "", false, []string{"is on the server"}},
		{"file purged, same server", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000001", Pos: 4}, ServerUUID: here},
			maria(PositionFacts{}), CausePurged, false, []string{"mysql-bin.000001 was purged", "mysql-bin.000003", "on_purged"}},
		{"file purged, identity unknown: not proven", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000001", Pos: 4}},
			maria(PositionFacts{}), CauseUnknownFile, false, []string{"was purged", "no server identity"}},
		{"file newer than the newest", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000009", Pos: 4}, ServerUUID: here},
			maria(PositionFacts{}), CauseUnknownFile, false, []string{"not older than its oldest", "not a purge"}},
		{"other naming", checkpoint.Checkpoint{Pos: change.Position{File: "binlog.000001", Pos: 4}, ServerUUID: here},
			maria(PositionFacts{}), CauseUnknownFile, false, []string{"not a file of this server"}},
		{"past the end", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000004", Pos: 501}, ServerUUID: here},
			maria(PositionFacts{}), CausePastEnd, false, []string{"past the end of mysql-bin.000004 (500 bytes)", "not a purge"}},
		{"inside an event", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000004", Pos: 259}, ServerUUID: here},
			maria(PositionFacts{NotEventStart: "Wrong offset or I/O error"}), CauseMidEvent, false, []string{"not an event boundary", "Wrong offset", "checkpoint set"}},
		{"gtid ahead", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "0-1-99"}, ServerUUID: here},
			maria(PositionFacts{Executed: "0-1-50", State: "0-1-50"}), CauseAhead, false, []string{"ahead of the source", "0-1-50", "not a purge"}},
		{"gtid purged", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "0-1-9"}, ServerUUID: here},
			maria(PositionFacts{Executed: "0-1-50", State: "0-1-50", Purged: "0-1-20", PurgedKnown: true}), CausePurged, false, []string{"purged", "0-1-20"}},
		{"gtid fine", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "0-1-30", File: "mysql-bin.000001", Pos: 4}, ServerUUID: here},
			maria(PositionFacts{Executed: "0-1-50", State: "0-1-50", Purged: "0-1-20", PurgedKnown: true}), "", false, nil},
		{"other server, file/pos", checkpoint.Checkpoint{Pos: change.Position{File: "mysql-bin.000004", Pos: 120}, ServerUUID: there},
			maria(PositionFacts{}), CauseOtherServer, false, []string{there, here, "another server", "checkpoint reset --to-head", "checkpoint set"}},
		{"other server, same domain sequence but not its history", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "0-2-10"}, ServerUUID: there},
			maria(PositionFacts{Executed: "0-1-50", State: "0-1-50"}), CauseOtherServer, false, []string{"do not contain the checkpoint's 0-2-10"}},
		{"failover with the history", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "0-2-10", File: "other-bin.000001", Pos: 4}, ServerUUID: there},
			maria(PositionFacts{Executed: "0-1-50", State: "0-2-12,0-1-50"}), "", true, []string{"failover"}},
		{"mysql gtid ahead, by go-mysql sets", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-20"}, ServerUUID: here},
			PositionFacts{Flavor: "mysql", Identity: here, Logs: logs, Executed: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10", PurgedKnown: true}, CauseAhead, false, []string{"ahead"}},
		{"mysql gtid purged", checkpoint.Checkpoint{Pos: change.Position{GTIDSet: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"}, ServerUUID: here},
			PositionFacts{Flavor: "mysql", Identity: here, Logs: logs, Executed: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10", Purged: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7", PurgedKnown: true}, CausePurged, false, []string{"purged"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := JudgePosition(c.cp, c.f)
			if v.Cause != c.cause || v.Failover != c.failov {
				t.Fatalf("cause %q failover %v, want %q %v: %+v", v.Cause, v.Failover, c.cause, c.failov, v)
			}
			if v.Purged() != (c.cause == CausePurged) || v.OK() != (c.cause == "") {
				t.Errorf("Purged/OK disagree with the cause: %+v", v)
			}
			text := v.Detail + " | " + v.Fix
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("%q not in %q", w, text)
				}
			}
			if !v.OK() && (v.Fix == "" || strings.Contains(v.Detail, "\n")) {
				t.Errorf("a refusal needs a fix and one line: %+v", v)
			}
		})
	}
}

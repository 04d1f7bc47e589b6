package preflight

import (
	"dialsync/change"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
)

func TestJudgeGrants(t *testing.T) {
	needs := GrantNeeds{MariaDB: true, Database: "app", Tables: []string{"users", "claims"}, Account: "'ds'@'%'"}
	cases := []struct {
		name   string
		lines  []string
		status Status
		want   []string // substrings of detail+fix
	}{
		{"least privilege", []string{
			"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `ds`@`%`",
			"GRANT SELECT ON `app`.* TO `ds`@`%`",
		}, OK, []string{"nothing more"}},
		{"per-table select", []string{
			"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `ds`@`%`",
			"GRANT SELECT ON `app`.`users` TO `ds`@`%`",
			"GRANT SELECT (`id`, `user_id`) ON `app`.`claims` TO `ds`@`%`",
		}, OK, nil},
		{"root", []string{"GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"},
			Warn, []string{"ALL PRIVILEGES on *.*", "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ds'@'%'"}},
		{"write on db", []string{
			"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `ds`@`%`",
			"GRANT SELECT, INSERT, UPDATE ON `app`.* TO `ds`@`%`",
		}, Warn, []string{"INSERT on app.*", "UPDATE on app.*"}},
		{"write on other db is fine", []string{
			"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `ds`@`%`",
			"GRANT SELECT ON `app`.* TO `ds`@`%`",
			"GRANT ALL PRIVILEGES ON `scratch`.* TO `ds`@`%`",
		}, OK, nil},
		{"super", []string{
			"GRANT SUPER, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `ds`@`%`",
			"GRANT SELECT ON `app`.* TO `ds`@`%`",
		}, Warn, []string{"SUPER"}},
		{"select only", []string{
			"GRANT USAGE ON *.* TO `ds`@`%`",
			"GRANT SELECT ON `app`.* TO `ds`@`%`",
		}, Fail, []string{"missing REPLICATION SLAVE, BINLOG MONITOR", "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ds'@'%';"}},
		{"no select on a table", []string{
			"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `ds`@`%`",
			"GRANT SELECT ON `app`.`users` TO `ds`@`%`",
			"GRANT `reader` TO `ds`@`%`",
		}, Fail, []string{"no SELECT on app.{claims}", "GRANT SELECT ON `app`.* TO 'ds'@'%';", "roles `reader`"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := JudgeGrants(c.lines, needs)
			if r.Status != c.status {
				t.Fatalf("status %s, want %s: %+v", r.Status, c.status, r)
			}
			for _, w := range c.want {
				if !strings.Contains(r.Detail+" | "+r.Fix, w) {
					t.Errorf("%q not in %+v", w, r)
				}
			}
		})
	}
	// MySQL wording of the fix.
	r := JudgeGrants([]string{"GRANT USAGE ON *.* TO `ds`@`%`"}, GrantNeeds{Database: "app", Tables: []string{"users"}})
	if r.Status != Fail || !strings.Contains(r.Fix, "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the dialsync user;") {
		t.Errorf("mysql fix: %+v", r)
	}
}

func TestBinlogRetention(t *testing.T) {
	cases := []struct {
		vars  map[string]string
		want  time.Duration
		known bool
	}{
		{map[string]string{"binlog_expire_logs_seconds": "0", "expire_logs_days": "0.000000"}, 0, true},
		{map[string]string{"binlog_expire_logs_seconds": "3600", "expire_logs_days": "0.041667"}, time.Hour, true},
		{map[string]string{"expire_logs_days": "2"}, 48 * time.Hour, true},
		{map[string]string{"binlog_expire_logs_seconds": "0", "expire_logs_days": "7"}, 7 * 24 * time.Hour, true},
		{map[string]string{}, 0, false},
	}
	for _, c := range cases {
		d, known := BinlogRetention(c.vars)
		if d != c.want || known != c.known {
			t.Errorf("%v: got %s %v, want %s %v", c.vars, d, known, c.want, c.known)
		}
	}
}

func TestBytesBehind(t *testing.T) {
	logs := []BinlogFile{{"b.000001", 1000}, {"b.000002", 500}, {"b.000003", 300}}
	cases := []struct {
		from, head change.Position
		n          uint64
		ok         bool
	}{
		{change.Position{File: "b.000003", Pos: 100}, change.Position{File: "b.000003", Pos: 250}, 150, true},
		{change.Position{File: "b.000001", Pos: 900}, change.Position{File: "b.000003", Pos: 250}, 100 + 500 + 250, true},
		{change.Position{File: "b.000000", Pos: 4}, change.Position{File: "b.000003", Pos: 250}, 0, false},
		{change.Position{File: "b.000003", Pos: 260}, change.Position{File: "b.000003", Pos: 250}, 0, false},
	}
	for _, c := range cases {
		n, ok := BytesBehind(logs, c.from, c.head)
		if n != c.n || ok != c.ok {
			t.Errorf("%s -> %s: got %d %v, want %d %v", c.from, c.head, n, ok, c.n, c.ok)
		}
	}
}

// The group walker on the event sequences both flavors write (as SHOW
// BINLOG EVENTS shows them).
func TestGroupWalker(t *testing.T) {
	seqs := map[string][]struct {
		typ, info string
		boundary  bool
	}{
		"mariadb": {
			{"Format_desc", "Server ver: 10.11", true},
			{"Gtid_list", "[]", true},
			{"Binlog_checkpoint", "mysql-bin.000001", true},
			{"Gtid", "BEGIN GTID 0-1-1", false},
			{"Annotate_rows", "INSERT INTO t VALUES (1)", false},
			{"Table_map", "table_id: 1 (d.t)", false},
			{"Write_rows_v1", "table_id: 1 flags: STMT_END_F", false},
			{"Xid", "COMMIT /* xid=5 */", true},
			{"Gtid", "GTID 0-1-2", false},
			{"Query", "use `d`; CREATE TABLE u (id INT PRIMARY KEY)", true},
			{"Gtid", "BEGIN GTID 0-1-3", false},
			{"Query", "use `d`; INSERT INTO m VALUES (1)", false},
			{"Query", "COMMIT", true},
		},
		"mysql": {
			{"Format_desc", "Server ver: 8.0.36, Binlog ver: 4", true},
			{"Previous_gtids", "", true},
			{"Gtid", "SET @@SESSION.GTID_NEXT= 'u:1'", false},
			{"Query", "BEGIN", false},
			{"Table_map", "table_id: 90 (d.t)", false},
			{"Update_rows", "table_id: 90 flags: STMT_END_F", false},
			{"Xid", "COMMIT /* xid=10 */", true},
			{"Anonymous_Gtid", "SET @@SESSION.GTID_NEXT= 'ANONYMOUS'", false},
			{"Query", "ALTER TABLE t ADD c INT", true},
		},
	}
	for name, seq := range seqs {
		var w groupWalker
		for i, e := range seq {
			if got := w.step(Event{Type: e.typ, Info: e.info}); got != e.boundary {
				t.Errorf("%s event %d (%s %q): boundary %v, want %v", name, i, e.typ, e.info, got, e.boundary)
			}
		}
	}
}

func TestMariaDBMissing(t *testing.T) {
	set, err := mysql.ParseMariadbGTIDSet("0-1-10,1-2-5")
	if err != nil {
		t.Fatal(err)
	}
	pos := set.(*mysql.MariadbGTIDSet)
	for info, want := range map[string]string{
		"[]":                   "",
		"[0-1-10]":             "",
		"[0-1-9,1-2-5]":        "",
		"[0-1-11]":             "0-1-11",
		"[0-1-3,2-1-1]":        "2-1-1",
		"[0-2-12,1-2-4,0-1-2]": "0-2-12",
	} {
		if got := mariaDBMissing(pos, info); got != want {
			t.Errorf("%s: got %q, want %q", info, got, want)
		}
	}
}

func TestCheckTLSAndReport(t *testing.T) {
	if r := CheckTLS("source", "127.0.0.1", false); r.Status != OK {
		t.Errorf("loopback plaintext: %+v", r)
	}
	if r := CheckTLS("source", "db.internal", false); r.Status != Warn || !strings.Contains(r.Fix, `source.tls_mode = "required"`) {
		t.Errorf("remote plaintext: %+v", r)
	}
	if r := CheckTLS("postgres", "10.0.0.5", false); r.Status != Warn || !strings.Contains(r.Fix, "sslmode=verify-full") {
		t.Errorf("remote postgres plaintext: %+v", r)
	}
	rep := Report{{Name: "a", Status: OK}}
	if rep.ExitCode() != 0 {
		t.Error("all OK must exit 0")
	}
	rep = append(rep, Result{Name: "b", Status: Warn, Fix: "do x"})
	if rep.ExitCode() != 1 {
		t.Error("a warning must exit 1")
	}
	rep = append(rep, Result{Name: "c", Status: Fail, Fix: "do y"})
	if rep.ExitCode() != 2 || rep.Worst() != Fail {
		t.Error("a failure must exit 2")
	}
	var b strings.Builder
	rep.Print(&b)
	if !strings.Contains(b.String(), "FAIL  c") || !strings.Contains(b.String(), "fix: do y") || strings.Count(b.String(), "fix:") != 2 {
		t.Errorf("print:\n%s", b.String())
	}
}

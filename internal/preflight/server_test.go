package preflight

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/handlers"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// srv is a private MariaDB with the demo schema and a checks input.
type srv struct {
	my  *testenv.MariaDB
	db  string
	in  SourceInput
	src *Source // as root
}

func startSrv(t *testing.T, opt testenv.MariaDBOptions) *srv {
	t.Helper()
	my := testenv.StartMariaDB(t, opt)
	name := testenv.Name(t)
	my.CreateDatabase(t, name)
	db, err := sql.Open("mysql", my.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := demo.CreateSchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	s := &srv{my: my, db: name,
		in:  SourceInput{Flavor: "mariadb", ServerID: 4242, Database: name, Tables: handlers.Specs()},
		src: &Source{Addr: my.Addr(), User: "root", Timeout: 5 * time.Second}}
	t.Cleanup(s.src.Close)
	return s
}

// user creates an account with the given grants (each "PRIVS ON OBJ").
func (s *srv) user(t *testing.T, name string, grants ...string) *Source {
	t.Helper()
	s.my.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw'", name))
	for _, g := range grants {
		s.my.Exec(t, fmt.Sprintf("GRANT %s TO '%s'@'%%'", strings.ReplaceAll(g, "{db}", "`"+s.db+"`"), name))
	}
	src := &Source{Addr: s.my.Addr(), User: name, Password: "pw", Timeout: 5 * time.Second}
	t.Cleanup(src.Close)
	return src
}

func find(t *testing.T, r Report, name string) Result {
	t.Helper()
	for _, x := range r {
		if x.Name == name {
			return x
		}
	}
	t.Fatalf("no %q check in report:\n%s", name, dump(r))
	return Result{}
}

func dump(r Report) string {
	var b strings.Builder
	r.Print(&b)
	return b.String()
}

func expectFail(t *testing.T, r Report, name, fixPart string) {
	t.Helper()
	x := find(t, r, name)
	if x.Status != Fail || !strings.Contains(x.Fix, fixPart) {
		t.Errorf("%s: want FAIL with fix containing %q, got %s %q fix %q\n%s", name, fixPart, x.Status, x.Detail, x.Fix, dump(r))
	}
}

// leastPrivilege is the documented grant set plus the two optional
// monitoring privileges the replica checks use on MariaDB >= 10.5.2.
var leastPrivilege = []string{
	"REPLICATION SLAVE, BINLOG MONITOR, SLAVE MONITOR, REPLICATION MASTER ADMIN ON *.*",
	"SELECT ON {db}.*",
}

func TestCheckSourceCorrectSetup(t *testing.T) {
	s := startSrv(t, testenv.MariaDBOptions{})
	ds := s.user(t, "ds", leastPrivilege...)
	r := CheckSource(context.Background(), ds, s.in)
	if r.Worst() != OK {
		t.Fatalf("a correct setup with a least-privilege user must be all OK:\n%s", dump(r))
	}
	for _, n := range []string{"source", "flavor", "log_bin", "binlog_format", "binlog_row_image", "log_replica_updates",
		"binlog_retention", "gtid_mode", "grants", "server_id", "tables", "checkpoint"} {
		find(t, r, n)
	}
	// Root works but has more than it needs: a warning, never a failure.
	r = CheckSource(context.Background(), s.src, s.in)
	if r.Worst() != Warn || find(t, r, "grants").Status != Warn {
		t.Fatalf("root: want only the grants warning:\n%s", dump(r))
	}
}

func TestCheckSourceProblems(t *testing.T) {
	ctx := context.Background()
	t.Run("binlog off", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{NoBinlog: true})
		expectFail(t, CheckSource(ctx, s.src, s.in), "log_bin", "log_bin = mysql-bin")
	})
	t.Run("statement format", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{BinlogFormat: "STATEMENT"})
		expectFail(t, CheckSource(ctx, s.src, s.in), "binlog_format", "SET GLOBAL binlog_format = 'ROW'")
	})
	t.Run("minimal image", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{BinlogRowImage: "MINIMAL"})
		expectFail(t, CheckSource(ctx, s.src, s.in), "binlog_row_image", "SET GLOBAL binlog_row_image = 'FULL'")
	})
	t.Run("select only user", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{})
		ro := s.user(t, "ro", "SELECT ON {db}.*")
		expectFail(t, CheckSource(ctx, ro, s.in), "grants", "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ro'@'%';")
	})
	t.Run("server_id equals the source's", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{})
		in := s.in
		in.ServerID = s.my.ServerID()
		expectFail(t, CheckSource(ctx, s.src, in), "server_id", "source.server_id")
	})
	t.Run("wrong flavor and missing tables", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{})
		in := s.in
		in.Flavor, in.Database = "mysql", "nope"
		r := CheckSource(ctx, s.src, in)
		expectFail(t, r, "flavor", `source.flavor = "mariadb"`)
		expectFail(t, r, "tables", `source.database (now "nope")`)
	})
	t.Run("unreachable", func(t *testing.T) {
		src := &Source{Addr: "127.0.0.1:1", User: "root", Timeout: time.Second}
		r := CheckSource(ctx, src, SourceInput{Flavor: "mariadb"})
		if len(r) != 1 {
			t.Fatalf("want one line:\n%s", dump(r))
		}
		expectFail(t, r, "source", "source.addr")
	})
	t.Run("purged checkpoint", func(t *testing.T) {
		s := startSrv(t, testenv.MariaDBOptions{})
		s.my.Exec(t, "CREATE TABLE `"+s.db+"`.t1 (id INT PRIMARY KEY)")
		cp := headPos(t, s)
		// A transaction after the checkpoint, purged below: with GTIDs, a
		// purge is a loss only when something after the checkpoint went
		// (a purged file with nothing after the checkpoint is still
		// served by GTID).
		s.my.Exec(t, "CREATE TABLE `"+s.db+"`.t0 (id INT PRIMARY KEY)")
		s.my.Exec(t, "FLUSH BINARY LOGS")
		logs, err := s.src.BinaryLogs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		newest := logs[len(logs)-1].Name
		in := s.in
		in.Checkpoint = &checkpoint.Checkpoint{Pos: cp, UpdatedAt: time.Now()}
		r := CheckSource(ctx, s.src, in)
		if x := find(t, r, "checkpoint"); x.Status != OK {
			t.Fatalf("before the purge the checkpoint is there:\n%s", dump(r))
		}
		s.my.Exec(t, "PURGE BINARY LOGS TO '"+newest+"'")
		r = CheckSource(ctx, s.src, in)
		expectFail(t, r, "checkpoint", "dialsync checkpoint reset --to-head")
		// GTID-only checkpoint: judged by the oldest binlog's Gtid_list.
		in.Checkpoint = &checkpoint.Checkpoint{Pos: change.Position{GTIDSet: cp.GTIDSet}, UpdatedAt: time.Now()}
		s.my.Exec(t, "CREATE TABLE `"+s.db+"`.t2 (id INT PRIMARY KEY)")
		s.my.Exec(t, "FLUSH BINARY LOGS")
		logs, _ = s.src.BinaryLogs(ctx)
		s.my.Exec(t, "PURGE BINARY LOGS TO '"+logs[len(logs)-1].Name+"'")
		expectFail(t, CheckSource(ctx, s.src, in), "checkpoint", "reset --to-head")
	})
}

func headPos(t *testing.T, s *srv) change.Position {
	t.Helper()
	p, err := canal.Head(context.Background(), canal.Config{Addr: s.my.Addr(), User: "root", Flavor: "mariadb", ServerID: 4242, Database: s.db})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRetentionHeadroom(t *testing.T) {
	s := startSrv(t, testenv.MariaDBOptions{Args: []string{"--binlog-expire-logs-seconds=10800"}})
	cp := headPos(t, s)
	in := s.in
	in.Checkpoint = &checkpoint.Checkpoint{Pos: cp, UpdatedAt: time.Now().Add(-90 * time.Minute)}
	r := CheckSource(context.Background(), s.src, in)
	if x := find(t, r, "binlog_retention"); x.Status != Warn || !strings.Contains(x.Fix, "binlog_expire_logs_seconds = 86400") {
		t.Errorf("3h retention: %+v", x)
	}
	if x := find(t, r, "retention_headroom"); x.Status != Warn || !strings.Contains(x.Detail, "within 1h30m") {
		t.Errorf("headroom: %+v", x)
	}
	in.Checkpoint.UpdatedAt = time.Now()
	if x := find(t, CheckSource(context.Background(), s.src, in), "retention_headroom"); x.Status != OK {
		t.Errorf("fresh checkpoint: %+v", x)
	}
}

// TxnBoundary against a real binlog: boundaries after every commit and DDL,
// not inside a transaction.
func TestTxnBoundary(t *testing.T) {
	ctx := context.Background()
	s := startSrv(t, testenv.MariaDBOptions{})
	s.my.Exec(t, "FLUSH BINARY LOGS")
	s.my.Exec(t, "CREATE TABLE `"+s.db+"`.t (id INT PRIMARY KEY, v INT)",
		"BEGIN; INSERT INTO `"+s.db+"`.t VALUES (1, 1); INSERT INTO `"+s.db+"`.t VALUES (2, 2); COMMIT",
		"UPDATE `"+s.db+"`.t SET v = 3")
	file, head, _, err := s.src.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.src.Events(ctx, file, 4, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var commits, inside []uint32
	for _, e := range evs {
		switch e.Type {
		case "Xid":
			commits = append(commits, e.End)
		case "Query":
			if strings.Contains(e.Info, "CREATE TABLE") {
				commits = append(commits, e.End)
			}
		case "Table_map", "Annotate_rows":
			inside = append(inside, e.End)
		}
	}
	if len(commits) != 3 || len(inside) == 0 || commits[2] != head {
		t.Fatalf("unexpected binlog: commits %v inside %v head %d\n%+v", commits, inside, head, evs)
	}
	eventsPage = 3 // exercise paging
	t.Cleanup(func() { eventsPage = 2000 })
	for _, p := range append([]uint32{4}, commits...) {
		b, err := s.src.TxnBoundary(ctx, file, p)
		if err != nil || !b.OK {
			t.Errorf("%d: want a boundary, got %+v %v", p, b, err)
		}
	}
	for _, p := range append(inside, commits[0]+1) {
		b, err := s.src.TxnBoundary(ctx, file, p)
		if err != nil || b.OK || b.Before >= p || (b.After != 0 && b.After <= p) {
			t.Errorf("%d: want no boundary with neighbours around it, got %+v %v", p, b, err)
		}
	}
}

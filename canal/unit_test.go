package canal

import (
	"context"
	"dialsync/change"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-mysql-org/go-mysql/schema"
	perrors "github.com/pingcap/errors"
)

func TestParseGTIDSets(t *testing.T) {
	for _, tc := range []struct{ flavor, in, want string }{
		{"mariadb", "0-1-42", "0-1-42"},
		{"mariadb", "1-2-7,0-1-42", "0-1-42,1-2-7"},
		{"mariadb", "", ""},
		{"mysql", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"},
		{"mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9,4e11fa47-71ca-11e1-9e33-c80aa9429562:1", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9,4e11fa47-71ca-11e1-9e33-c80aa9429562:1"},
	} {
		set, err := mysql.ParseGTIDSet(tc.flavor, tc.in)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.flavor, tc.in, err)
		}
		if got := set.String(); got != tc.want {
			t.Errorf("%s %q: String() = %q, want %q", tc.flavor, tc.in, got, tc.want)
		}
	}
	for _, bad := range []struct{ flavor, in string }{{"mariadb", "0-1"}, {"mysql", "not-a-uuid:1"}} {
		if _, err := mysql.ParseGTIDSet(bad.flavor, bad.in); err == nil {
			t.Errorf("%s %q parsed without error", bad.flavor, bad.in)
		}
	}
}

func TestGTIDString(t *testing.T) {
	u, _ := hex.DecodeString("3e11fa4771ca11e19e33c80aa9429562")
	for _, tc := range []struct {
		ev   mysql.BinlogGTIDEvent
		want string
	}{
		{&replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 0, ServerID: 1, SequenceNumber: 42}}, "0-1-42"},
		{&replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 3, ServerID: 9, SequenceNumber: 1}}, "3-9-1"},
		{&replication.GTIDEvent{SID: u[:], GNO: 42}, "3e11fa47-71ca-11e1-9e33-c80aa9429562:42"},
		{&replication.GTIDEvent{SID: make([]byte, 16), GNO: 0}, ""}, // anonymous
	} {
		if got := gtidString(tc.ev); got != tc.want {
			t.Errorf("gtidString(%#v) = %q, want %q", tc.ev, got, tc.want)
		}
	}
}

// Our MariaDB tracker (used when streaming from file/pos) must give the
// same text as the server's gtid_binlog_pos: one GTID per domain.
func TestMariaDBTracker(t *testing.T) {
	set, _ := mysql.ParseMariadbGTIDSet("0-1-5")
	tr := set.(*mysql.MariadbGTIDSet)
	for _, g := range []mysql.MariadbGTID{{DomainID: 0, ServerID: 1, SequenceNumber: 6}, {DomainID: 0, ServerID: 2, SequenceNumber: 7}, {DomainID: 1, ServerID: 2, SequenceNumber: 1}} {
		if err := tr.AddSet(&g); err != nil {
			t.Fatal(err)
		}
	}
	if got := tr.String(); got != "0-2-7,1-2-1" {
		t.Fatalf("tracker = %q", got)
	}
}

func TestNormalize(t *testing.T) {
	local := time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))
	buf := []byte("blob")
	for _, tc := range []struct{ in, want any }{
		{nil, nil},
		{int8(-1), int64(-1)}, {int16(2), int64(2)}, {int32(3), int64(3)}, {int64(4), int64(4)}, {5, int64(5)},
		{uint8(6), int64(6)}, {uint16(7), int64(7)}, {uint32(8), int64(8)},
		{uint64(math.MaxInt64), int64(math.MaxInt64)}, {uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{"text", "text"}, {buf, "blob"}, {"12.50", "12.50"}, {float64(1.5), float64(1.5)},
		{local, local.UTC()},
	} {
		got := normalize(tc.in)
		if got != tc.want {
			t.Errorf("normalize(%#v) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
	if tm := normalize(local).(time.Time); tm.Location() != time.UTC {
		t.Errorf("time not in UTC: %v", tm.Location())
	}
	// The copy must not share memory with the event buffer.
	s := normalize(buf).(string)
	buf[0] = 'X'
	if s != "blob" {
		t.Errorf("normalized []byte shares memory: %q", s)
	}
}

func TestChangedColumns(t *testing.T) {
	tbl := &schema.Table{Schema: "db", Name: "users"}
	for _, c := range []string{"id", "name", "bio", "at", "n", "gone"} {
		tbl.AddColumn(c, "varchar(10)", "", "")
	}
	at := time.Unix(100, 0)
	before := []any{int64(1), "a", []byte("x"), at, nil, "same"}
	after := []any{int64(1), "b", []byte("x"), at.In(time.FixedZone("Y", 60)), int32(0), "same"}
	got := changedColumns(tbl, before, after)
	if strings.Join(got, ",") != "name,n" {
		t.Fatalf("changed = %v, want [name n]", got)
	}
	if got := changedColumns(tbl, before, before); got != nil {
		t.Fatalf("no change gave %v", got)
	}
	if valueEqual([]byte("x"), "x") || valueEqual(int32(1), int64(1)) || !valueEqual(struct{ a []int }{[]int{1}}, struct{ a []int }{[]int{1}}) {
		t.Fatal("valueEqual type handling")
	}
}

func TestClassify(t *testing.T) {
	purged := perrors.Trace(&mysql.MyError{Code: mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG, Message: "Could not find first log file name in binary log index file"})
	if err := classify(Config{}, purged); !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "1236") {
		t.Fatalf("1236 not fatal: %v", err)
	}
	lost := perrors.Trace(&mysql.MyError{Code: mysql.ER_SERVER_SHUTDOWN, Message: "shutdown"})
	if err := classify(Config{}, lost); errors.Is(err, ErrFatal) {
		t.Fatalf("shutdown classified fatal: %v", err)
	}
	// Our fatal errors survive go-mysql's wrapping.
	if !errors.Is(perrors.Trace(fatalf("x")), ErrFatal) {
		t.Fatal("fatal lost through errors.Trace")
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Addr: "h:1", Flavor: "mariadb", ServerID: 7, Database: "app", Tables: []change.TableSpec{{Table: "users"}}}.withDefaults()
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for field, mutate := range map[string]func(*Config){
		"ServerID":    func(c *Config) { c.ServerID = 0 },
		"Flavor":      func(c *Config) { c.Flavor = "postgres" },
		"Database":    func(c *Config) { c.Database = "" },
		"ReadTimeout": func(c *Config) { c.ReadTimeout = c.HeartbeatPeriod },
		"twice":       func(c *Config) { c.Tables = append(c.Tables, change.TableSpec{Table: "users"}) },
	} {
		c := ok
		mutate(&c)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
}

func TestIncludeRegexesAreAnchored(t *testing.T) {
	cfg := Config{Database: "app.v2", Tables: []change.TableSpec{{Table: "users"}}, Logger: nil}.withDefaults()
	cc := canalConfig(context.Background(), cfg, false)
	re := regexp.MustCompile(cc.IncludeTableRegex[0])
	for key, want := range map[string]bool{"app.v2.users": true, "app.v2.users2": false, "xapp.v2.users": false, "appxv2.users": false} {
		if re.MatchString(key) != want {
			t.Errorf("%q: match %v, want %v", key, !want, want)
		}
	}
	cfg.Tables = nil
	re = regexp.MustCompile(canalConfig(context.Background(), cfg, false).IncludeTableRegex[0])
	if re.MatchString("app.v2.users") {
		t.Error("no tables must match nothing")
	}
	if cc.ServerID != 0 || cc.Dump.ExecutionPath != "" || cc.DiscardNoMetaRowEvent || !cc.DisableRetrySync || !cc.ParseTime || cc.TimestampStringLocation != time.UTC {
		t.Errorf("canal config rules not applied: %+v", cc)
	}
}

// go-mysql's records reach the process log one line per value (its errors
// carry pingcap stack traces that would otherwise fill the log), and
// without SQL text (it may hold row values).
func TestOneLineHandler(t *testing.T) {
	var b strings.Builder
	l := goMySQLLogger(context.Background(), slog.New(slog.NewJSONHandler(&b, nil)))
	l.Error("canal start sync binlog err\nmore", "error", perrors.Trace(errors.New("boom")), "query", "UPDATE users SET email = 'secret@example.com'\nWHERE id = 1",
		slog.Group("g", "e", fmt.Errorf("x\n\tframe.go:1")), "n", 7)
	var sb strings.Builder
	debug := &slog.HandlerOptions{Level: slog.LevelDebug}
	goMySQLLogger(context.Background(), slog.New(slog.NewJSONHandler(&sb, debug))).Info("create BinlogSyncer", slog.Any("config", replication.BinlogSyncerConfig{ServerID: 7, Flavor: "mariadb",
		Password: "pw-secret", Dialer: (&net.Dialer{}).DialContext, HeartbeatPeriod: 10 * time.Second}))
	if c := sb.String(); !strings.Contains(c, `"config":{"server_id":7,"flavor":"mariadb"`) || strings.Contains(c, "!ERROR") || strings.Contains(c, "pw-secret") {
		t.Fatalf("go-mysql's syncer config not logged as a clean summary: %s", c)
	}
	if c := sb.String(); !strings.Contains(c, `"level":"DEBUG"`) {
		t.Fatalf("go-mysql's INFO narration not demoted to DEBUG: %s", c)
	}
	var quiet strings.Builder
	goMySQLLogger(context.Background(), slog.New(slog.NewJSONHandler(&quiet, nil))).Info("received fake rotate event")
	goMySQLLogger(context.Background(), slog.New(slog.NewJSONHandler(&quiet, nil))).Warn("could not close connection",
		"error", fmt.Errorf("Conn.Close failed: close tcp 127.0.0.1:1->127.0.0.1:2: %w", net.ErrClosed))
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	goMySQLLogger(stopped, slog.New(slog.NewJSONHandler(&quiet, nil))).Error("canal start sync binlog err", "error", "io.ReadFull(header) failed")
	if quiet.Len() != 0 {
		t.Fatalf("go-mysql INFO record, a warning about a connection we closed, or an error after the stream stopped, logged at level info: %s", quiet.String())
	}
	out := b.String()
	if strings.Contains(out, "secret") {
		t.Fatalf("SQL text (row values) reached the log: %s", out)
	}
	if strings.Count(out, "\n") != 1 || strings.Contains(out, `\n`) || strings.Contains(out, ".go:") {
		t.Fatalf("record not one line per value: %s", out)
	}
	for _, want := range []string{`"msg":"canal start sync binlog err"`, `"error":"boom"`, `"query":"(not logged: SQL text may hold row values)"`, `"g":{"e":"x"}`, `"n":7`, `"component":"go-mysql"`} {
		if !strings.Contains(out, want) {
			t.Errorf("record lacks %s: %s", want, out)
		}
	}
}

func TestPositionIncludes(t *testing.T) {
	cases := []struct {
		p    change.Position
		t    change.Txn
		want bool
	}{
		// MariaDB: per-domain sequence numbers; server id does not matter.
		{change.Position{GTIDSet: "0-1-100,1-2-7"}, change.Txn{GTID: "0-1-100"}, true},
		{change.Position{GTIDSet: "0-1-100,1-2-7"}, change.Txn{GTID: "0-3-99"}, true},
		{change.Position{GTIDSet: "0-1-100,1-2-7"}, change.Txn{GTID: "0-1-101"}, false},
		{change.Position{GTIDSet: "0-1-100"}, change.Txn{GTID: "1-1-1"}, false},
		// MySQL: set membership.
		{change.Position{GTIDSet: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42"}, change.Txn{GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:42"}, true},
		{change.Position{GTIDSet: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42"}, change.Txn{GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:43"}, false},
		// File and offset when there are no GTIDs.
		{change.Position{File: "bin.000002", Pos: 500}, change.Txn{End: change.Position{File: "bin.000002", Pos: 500}}, true},
		{change.Position{File: "bin.000002", Pos: 500}, change.Txn{End: change.Position{File: "bin.000002", Pos: 501}}, false},
		{change.Position{File: "bin.000002", Pos: 500}, change.Txn{End: change.Position{File: "bin.000001", Pos: 9000}}, true},
		{change.Position{File: "bin.999999", Pos: 500}, change.Txn{End: change.Position{File: "bin.1000000", Pos: 4}}, false},
		{change.Position{File: "my.host-bin.000003", Pos: 4}, change.Txn{End: change.Position{File: "my.host-bin.000010", Pos: 4}}, false},
		// Cannot tell: false.
		{change.Position{}, change.Txn{GTID: "0-1-1", End: change.Position{File: "bin.000001", Pos: 4}}, false},
		{change.Position{GTIDSet: "garbage"}, change.Txn{GTID: "0-1-1"}, false},
	}
	for _, c := range cases {
		if got := Includes(c.p, &c.t); got != c.want {
			t.Errorf("%v.Includes(gtid %q end %v) = %v, want %v", c.p, c.t.GTID, c.t.End, got, c.want)
		}
	}
}

// File names and offsets from the stream are checked where they enter: a
// name with junk bytes appended stops the stream, never reaches the
// checkpoint.
func TestStreamPositionsAreValidated(t *testing.T) {
	for name, want := range map[string]bool{
		"mysql-bin.000001": true, "my.host-bin.1000000": true, "binlog.000003": true,
		"mysql-bin.000002\x00\x00\x00\x00": false, "mysql-bin.000002\xde\xad\xbe\xef": false,
		"": false, "mysql-bin": false, "mysql-bin.": false, ".000001": false, "a/b.000001": false, "x'.000001": false,
	} {
		if got := validBinlogName(name); got != want {
			t.Errorf("validBinlogName(%q) = %v, want %v", name, got, want)
		}
	}
	s := &streamer{cfg: Config{Addr: "src:3306"}, log: slog.New(slog.DiscardHandler)}
	handed := 0
	s.h = func(context.Context, *change.Txn) error { handed++; return nil }
	err := s.OnRotate(&replication.EventHeader{}, &replication.RotateEvent{Position: 4, NextLogName: []byte("mysql-bin.000002\x00\x01\x02\x03")})
	if !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "src:3306") || !strings.Contains(err.Error(), "not a binlog file name") {
		t.Fatalf("rotate with a junk name: got %v", err)
	}
	err = s.OnPosSynced(&replication.EventHeader{EventType: replication.XID_EVENT}, mysql.Position{Name: "mysql-bin.000002\xff", Pos: 900}, nil, false)
	if !errors.Is(err, ErrFatal) || handed != 0 {
		t.Fatalf("commit at a junk name: got %v, %d transactions handed on", err, handed)
	}
	err = s.OnPosSynced(&replication.EventHeader{EventType: replication.XID_EVENT}, mysql.Position{Name: "mysql-bin.000002", Pos: 0}, nil, false)
	if !errors.Is(err, ErrFatal) || handed != 0 {
		t.Fatalf("commit at offset 0: got %v, %d transactions handed on", err, handed)
	}
	if err := s.OnPosSynced(&replication.EventHeader{EventType: replication.XID_EVENT}, mysql.Position{Name: "mysql-bin.000002", Pos: 900}, nil, false); err != nil || handed != 1 {
		t.Fatalf("valid commit: got %v, %d handed on", err, handed)
	}
}

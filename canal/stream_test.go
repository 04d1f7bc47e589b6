package canal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/internal/dev/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var readerIDs atomic.Uint32

// fixture is one test database on a MariaDB with the Laravel-like tables
// users (tracked), claims (tracked) and other (not tracked).
type fixture struct {
	db  *testenv.MariaDB
	dbn string
	cfg Config
}

var userCols = []string{"id", "first_name", "email", "status", "is_enabled", "balance", "bio", "updated_at"}

func newFixture(t *testing.T, db *testenv.MariaDB) *fixture {
	t.Helper()
	n := testenv.Name(t)
	db.CreateDatabase(t, n)
	db.Exec(t, fmt.Sprintf(`
CREATE TABLE %[1]s.users (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  first_name VARCHAR(50) NULL,
  email VARCHAR(100) NULL,
  status VARCHAR(20) NOT NULL DEFAULT 'active',
  is_enabled TINYINT(1) NOT NULL DEFAULT 1,
  balance DECIMAL(10,2) NULL,
  notes TEXT NULL,
  bio BLOB NULL,
  updated_at TIMESTAMP NULL,
  deleted_at DATETIME NULL
) ENGINE=InnoDB;
CREATE TABLE %[1]s.claims (id BIGINT UNSIGNED PRIMARY KEY, user_id BIGINT UNSIGNED NOT NULL, status VARCHAR(20)) ENGINE=InnoDB;
CREATE TABLE %[1]s.other (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;`, n))
	return &fixture{db: db, dbn: n, cfg: Config{
		Addr:     db.Addr(),
		User:     "root",
		Flavor:   "mariadb",
		ServerID: 5000 + readerIDs.Add(1),
		Database: n,
		Tables: []change.TableSpec{
			{Table: "users", Columns: userCols},
			{Table: "claims", Columns: []string{"id", "user_id"}},
		},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}}
}

func (f *fixture) exec(t *testing.T, sql ...string) {
	t.Helper()
	for i, q := range sql {
		sql[i] = strings.ReplaceAll(q, "DB.", "`"+f.dbn+"`.")
	}
	f.db.Exec(t, sql...)
}

func (f *fixture) head(t *testing.T) change.Position {
	t.Helper()
	p, err := Head(context.Background(), f.cfg)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return p
}

// stream runs Stream (or Run) in the background and collects what it hands on.
type testStream struct {
	txns   chan *change.Txn
	done   chan error
	cancel context.CancelFunc
}

func startStream(t *testing.T, cfg Config, from change.Position, supervised bool) *testStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &testStream{txns: make(chan *change.Txn, 100000), done: make(chan error, 1), cancel: cancel}
	h := func(ctx context.Context, txn *change.Txn) error {
		select {
		case s.txns <- txn:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		if supervised {
			s.done <- Run(ctx, cfg, from, h)
		} else {
			s.done <- Stream(ctx, cfg, from, h)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("stream did not stop within 10s of cancel")
		}
	})
	return s
}

// next waits for the next transaction; it fails the test on timeout or if
// the stream ended.
func (s *testStream) next(t *testing.T) *change.Txn {
	t.Helper()
	select {
	case txn := <-s.txns:
		return txn
	case err := <-s.done:
		s.done <- err
		t.Fatalf("stream ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no transaction within 20s")
	}
	return nil
}

// nextWithChanges skips transactions without tracked changes.
func (s *testStream) nextWithChanges(t *testing.T) *change.Txn {
	t.Helper()
	for {
		if txn := s.next(t); len(txn.Changes) > 0 {
			return txn
		}
	}
}

// none asserts that nothing more arrives for a short while.
func (s *testStream) none(t *testing.T) {
	t.Helper()
	select {
	case txn := <-s.txns:
		t.Fatalf("unexpected transaction %s with %d changes", txn.ID(), len(txn.Changes))
	case <-time.After(300 * time.Millisecond):
	}
}

func TestInsertUpdateDelete(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	s := startStream(t, f.cfg, f.head(t), false)
	start := time.Now().Add(-2 * time.Second)

	f.exec(t,
		`INSERT INTO DB.users VALUES (1, 'Ann', 'a@x.test', 'active', 1, 12.50, 'n1', x'00ff', '2024-01-02 03:04:05', NULL)`,
		`UPDATE DB.users SET email = 'b@x.test', status = 'inactive' WHERE id = 1`,
		`UPDATE DB.users SET notes = 'n2' WHERE id = 1`,
		`DELETE FROM DB.users WHERE id = 1`,
		`INSERT INTO DB.users (id, first_name) VALUES (18446744073709551615, NULL)`,
	)
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	inserted := change.Row{int64(1), "Ann", "a@x.test", "active", int64(1), "12.50", "\x00\xff", ts}
	updated := change.Row{int64(1), "Ann", "b@x.test", "inactive", int64(1), "12.50", "\x00\xff", ts}
	want := []change.Change{
		{Table: "users", Op: change.Insert, After: inserted},
		{Table: "users", Op: change.Update, Before: inserted, After: updated, Changed: []string{"email", "status"}},
		{Table: "users", Op: change.Update, Before: updated, After: updated, Changed: []string{"notes"}},
		{Table: "users", Op: change.Delete, Before: updated},
		{Table: "users", Op: change.Insert, After: change.Row{uint64(math.MaxUint64), nil, nil, "active", int64(1), nil, nil, nil}},
	}
	var prev change.Position
	for i, w := range want {
		txn := s.next(t)
		if len(txn.Changes) != 1 || !reflect.DeepEqual(txn.Changes[0], w) {
			t.Fatalf("txn %d changes:\n got %#v\nwant %#v", i, txn.Changes, w)
		}
		if txn.Partial || txn.Piece != 0 || txn.Bytes <= 0 {
			t.Errorf("txn %d: Partial %v Piece %d Bytes %d", i, txn.Partial, txn.Piece, txn.Bytes)
		}
		if !strings.HasPrefix(txn.GTID, "0-1000-") || txn.End.GTIDSet != txn.GTID || txn.ID() != txn.GTID {
			t.Errorf("txn %d: GTID %q, End.GTIDSet %q", i, txn.GTID, txn.End.GTIDSet)
		}
		if txn.End.File == "" || (prev.File == txn.End.File && txn.End.Pos <= prev.Pos) {
			t.Errorf("txn %d: End %s does not advance past %s", i, txn.End, prev)
		}
		if txn.CommitTime.Location() != time.UTC || txn.CommitTime.Before(start.Truncate(time.Second)) || txn.CommitTime.After(time.Now()) {
			t.Errorf("txn %d: CommitTime %v", i, txn.CommitTime)
		}
		prev = txn.End
	}
	// A checkpoint at the last End is the server's head.
	if h := f.head(t); h != prev {
		t.Errorf("head %s != last End %s", h, prev)
	}
}

func TestMultiStatementTransaction(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	f.exec(t, `INSERT INTO DB.users (id, first_name) VALUES (7, 'Old')`)
	s := startStream(t, f.cfg, f.head(t), false)

	f.exec(t, `BEGIN;
INSERT INTO DB.users (id, first_name) VALUES (10, 'A'), (11, 'B');
INSERT INTO DB.other VALUES (1, 1);
INSERT INTO DB.claims VALUES (100, 10, 'open');
UPDATE DB.claims SET user_id = 11 WHERE id = 100;
DELETE FROM DB.users WHERE id = 7;
COMMIT`)
	txn := s.next(t)
	var got []string
	for _, c := range txn.Changes {
		got = append(got, fmt.Sprintf("%s %s %v %v %v", c.Table, c.Op, c.Before, c.After, c.Changed))
	}
	want := []string{
		"users insert [] [10 A <nil> active 1 <nil> <nil> <nil>] []",
		"users insert [] [11 B <nil> active 1 <nil> <nil> <nil>] []",
		"claims insert [] [100 10] []",
		"claims update [100 10] [100 11] [user_id]",
		"users delete [7 Old <nil> active 1 <nil> <nil> <nil>] [] []",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got %q\nwant %q", got, want)
	}
	s.none(t)
}

func TestIgnoredTablesAdvanceTheEnd(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	otherDB := testenv.Name(t) + "_x"
	f.db.CreateDatabase(t, otherDB)
	f.exec(t, "CREATE TABLE "+otherDB+".users (id INT PRIMARY KEY)")
	from := f.head(t)
	s := startStream(t, f.cfg, from, false)

	f.exec(t, `INSERT INTO DB.other VALUES (1, 1)`, "INSERT INTO "+otherDB+".users VALUES (1)")
	prev := from
	for i := range 2 {
		txn := s.next(t)
		if len(txn.Changes) != 0 || txn.Partial || txn.GTID == "" {
			t.Fatalf("txn %d: %d changes, Partial %v, GTID %q; want an empty final transaction", i, len(txn.Changes), txn.Partial, txn.GTID)
		}
		if txn.End == prev || txn.End.GTIDSet != txn.GTID || (txn.End.File == prev.File && txn.End.Pos <= prev.Pos) {
			t.Fatalf("txn %d: End %s does not advance past %s", i, txn.End, prev)
		}
		prev = txn.End
	}
	if h := f.head(t); h != prev {
		t.Errorf("head %s != last End %s", h, prev)
	}
}

// Resuming from any handed-out End gives exactly the transactions after it,
// by GTID set and by file/pos.
func TestResumeFromEnd(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	from := f.head(t)
	for i := 1; i <= 6; i++ {
		f.exec(t, fmt.Sprintf(`INSERT INTO DB.users (id) VALUES (%d)`, i))
	}
	first := startStream(t, f.cfg, from, false)
	var all []*change.Txn
	for range 6 {
		all = append(all, first.next(t))
	}
	first.cancel()

	for _, tc := range []struct {
		name string
		from change.Position
	}{
		{"gtid", change.Position{GTIDSet: all[1].End.GTIDSet}},
		{"filepos", change.Position{File: all[1].End.File, Pos: all[1].End.Pos}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStream(t, f.cfg, tc.from, false)
			for _, want := range all[2:] {
				got := s.next(t)
				if got.GTID != want.GTID || got.End != want.End || !reflect.DeepEqual(got.Changes, want.Changes) {
					t.Fatalf("got txn %s end %s, want %s end %s", got.GTID, got.End, want.GTID, want.End)
				}
			}
			s.none(t)
		})
	}
}

// A zero Position starts at the oldest binlog, and End.GTIDSet is tracked
// from the first transaction although the start was by file/pos.
func TestStartFromOldestBinlog(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	s := startStream(t, f.cfg, change.Position{}, false)
	txn := s.next(t)
	if txn.End.File != "mysql-bin.000001" || txn.GTID != "0-1000-1" || txn.End.GTIDSet != "0-1000-1" {
		t.Fatalf("first transaction: GTID %q End %s; want 0-1000-1 in mysql-bin.000001", txn.GTID, txn.End)
	}
}

// DDL on a tracked table while streaming: column positions are re-resolved,
// so a column added in front does not shift the values.
func TestSchemaChangeIsFollowed(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	s := startStream(t, f.cfg, f.head(t), false)
	// Wait until the stream runs (schemas loaded): a schema loaded after the
	// ALTER would decode the INSERT with the new columns, which the
	// row-length check rightly refuses (TestRowLengthMismatchIsFatal).
	f.exec(t, `INSERT INTO DB.other VALUES (1, 1)`)
	s.next(t)
	f.exec(t, `INSERT INTO DB.users (id, email) VALUES (1, 'a@x.test')`,
		`ALTER TABLE DB.users ADD COLUMN nick VARCHAR(10) NULL FIRST`,
		`UPDATE DB.users SET email = 'b@x.test', nick = 'n' WHERE id = 1`)
	if txn := s.next(t); txn.Changes[0].After[2] != "a@x.test" {
		t.Fatalf("before DDL: %v", txn.Changes)
	}
	if ddl := s.next(t); len(ddl.Changes) != 0 || ddl.GTID == "" {
		t.Fatalf("DDL transaction: %d changes, GTID %q", len(ddl.Changes), ddl.GTID)
	}
	c := s.next(t).Changes[0]
	if c.After[0] != int64(1) || c.Before[2] != "a@x.test" || c.After[2] != "b@x.test" || strings.Join(c.Changed, ",") != "nick,email" {
		t.Fatalf("after DDL: %+v", c)
	}
}

func TestLargeTransactionInPieces(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	f.cfg.MaxTxnBytes = 256 << 10
	from := f.head(t)
	s := startStream(t, f.cfg, from, false)

	const n = 50000
	f.exec(t, fmt.Sprintf(`INSERT INTO DB.users (id, first_name, email) SELECT seq, CONCAT('user', seq), CONCAT('u', seq, '@x.test') FROM DB.seq_1_to_%d`, n))
	seen := make(map[int64]bool, n)
	pieces := 0
	for {
		txn := s.next(t)
		if txn.Piece != pieces {
			t.Fatalf("piece number %d, want %d", txn.Piece, pieces)
		}
		pieces++
		if txn.Bytes > f.cfg.MaxTxnBytes+16<<10 {
			t.Errorf("piece %d holds %d bytes, bound %d", txn.Piece, txn.Bytes, f.cfg.MaxTxnBytes)
		}
		for _, c := range txn.Changes {
			id := c.After[0].(int64)
			if seen[id] || c.Op != change.Insert {
				t.Fatalf("row %d: op %s, seen before %v", id, c.Op, seen[id])
			}
			seen[id] = true
		}
		if txn.Partial {
			if txn.End != from {
				t.Fatalf("piece %d End %s, want the last committed position %s", txn.Piece, txn.End, from)
			}
			continue
		}
		if txn.End == from || txn.End.GTIDSet == "" {
			t.Fatalf("final piece End %s does not advance past %s", txn.End, from)
		}
		break
	}
	if len(seen) != n || pieces < 5 {
		t.Fatalf("got %d rows in %d pieces, want %d rows in several pieces", len(seen), pieces, n)
	}
	s.none(t)
}

func TestSourceNotRowFormatIsFatal(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{BinlogFormat: "STATEMENT"})
	f := newFixture(t, db)
	ctx := context.Background()
	h := func(context.Context, *change.Txn) error { return nil }

	err := Stream(ctx, f.cfg, change.Position{}, h)
	if !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "binlog_format") {
		t.Fatalf("STATEMENT format: got %v, want a fatal error naming binlog_format", err)
	}
	db.Exec(t, "SET GLOBAL binlog_format = 'ROW'", "SET GLOBAL binlog_row_image = 'MINIMAL'")
	start := time.Now()
	err = Run(ctx, f.cfg, change.Position{}, h) // must not retry
	if !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "binlog_row_image") || time.Since(start) > 5*time.Second {
		t.Fatalf("MINIMAL image: got %v after %s, want a fatal error naming binlog_row_image at once", err, time.Since(start))
	}
}

func TestMissingTableOrColumnIsFatal(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	h := func(context.Context, *change.Txn) error { return nil }
	for _, tc := range []struct {
		spec change.TableSpec
		want []string
	}{
		{change.TableSpec{Table: "users", Columns: []string{"id", "no_such_column"}}, []string{"users", "no_such_column"}},
		{change.TableSpec{Table: "ghosts", Columns: []string{"id"}}, []string{"ghosts", "does not exist"}},
	} {
		cfg := f.cfg
		cfg.Tables = []change.TableSpec{tc.spec}
		err := Run(context.Background(), cfg, f.head(t), h)
		if !errors.Is(err, ErrFatal) {
			t.Fatalf("%v: got %v, want fatal", tc.spec, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not mention %q", tc.spec, err, w)
			}
		}
	}
}

// Rows written before a DDL but decoded after it (canal uses the live schema)
// must stop the stream, not be misattributed.
func TestRowLengthMismatchIsFatal(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	from := f.head(t)
	f.exec(t, `INSERT INTO DB.users (id) VALUES (1)`, `ALTER TABLE DB.users ADD COLUMN extra INT NULL`)
	err := Stream(context.Background(), f.cfg, from, func(context.Context, *change.Txn) error { return nil })
	if !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "row has 10 columns but the schema has 11") || !strings.Contains(err.Error(), "mysql-bin.") {
		t.Fatalf("got %v, want a fatal column-count error with the position", err)
	}
}

func TestUnparseableStatementIsCounted(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	s := startStream(t, f.cfg, f.head(t), false)
	before := SkippedStatements()
	f.exec(t, "CREATE TRIGGER DB.other_bi BEFORE INSERT ON DB.other FOR EACH ROW SET NEW.v = NEW.v + 1",
		`INSERT INTO DB.users (id) VALUES (5)`)
	txn := s.nextWithChanges(t)
	if txn.Changes[0].After[0] != int64(5) {
		t.Fatalf("got %v", txn.Changes)
	}
	if got := SkippedStatements() - before; got != 1 {
		t.Fatalf("SkippedStatements grew by %d, want 1", got)
	}
}

// Run rides out a clean restart and a crash of the source: every
// transaction arrives exactly once, in order.
func TestRunSurvivesSourceRestart(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	f := newFixture(t, db)
	f.cfg.HeartbeatPeriod, f.cfg.ReadTimeout = time.Second, 3*time.Second
	s := startStream(t, f.cfg, f.head(t), true)

	id := 0
	write := func(k int) {
		for range k {
			id++
			f.exec(t, fmt.Sprintf(`INSERT INTO DB.users (id) VALUES (%d)`, id))
		}
	}
	write(10)
	db.Stop(t)
	db.Start(t)
	write(10)
	db.Kill(t)
	db.Start(t)
	write(10)

	var lastGTID string
	for want := int64(1); want <= int64(id); want++ {
		txn := s.nextWithChanges(t)
		if got := txn.Changes[0].After[0]; got != want || len(txn.Changes) != 1 {
			t.Fatalf("got id %v (%d changes), want %d", got, len(txn.Changes), want)
		}
		if txn.GTID == lastGTID {
			t.Fatalf("GTID %s handed over twice", txn.GTID)
		}
		lastGTID = txn.GTID
	}
	s.none(t)
}

func TestCancelReturnsNil(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	for _, supervised := range []bool{false, true} {
		s := startStream(t, f.cfg, f.head(t), supervised)
		f.exec(t, `INSERT INTO DB.users (id) VALUES (1)`, `DELETE FROM DB.users`)
		s.next(t) // streaming for real
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Fatalf("supervised=%v: got %v after cancel, want nil", supervised, err)
			}
			s.done <- nil // for the cleanup
		case <-time.After(5 * time.Second):
			t.Fatalf("supervised=%v: did not return within 5s of cancel", supervised)
		}
	}
}

func TestHandlerErrorStopsRun(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	boom := errors.New("boom")
	from := f.head(t)
	f.exec(t, `INSERT INTO DB.users (id) VALUES (1)`)
	err := Run(context.Background(), f.cfg, from, func(context.Context, *change.Txn) error { return boom })
	if !errors.Is(err, boom) || errors.Is(err, ErrFatal) {
		t.Fatalf("got %v, want the handler's error", err)
	}
}

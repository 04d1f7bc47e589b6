package canal

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"dialsync/change"
	"dialsync/internal/dev/testenv"

	"github.com/pingcap/tidb/pkg/parser"
)

// streamUntilError streams from `from` and returns the error that ended the
// stream and every transaction handed on before it.
func streamUntilError(t *testing.T, cfg Config, from change.Position) (error, []*change.Txn) {
	t.Helper()
	var got []*change.Txn
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Stream(ctx, cfg, from, func(_ context.Context, txn *change.Txn) error {
		got = append(got, txn)
		return nil
	})
	if ctx.Err() != nil {
		t.Fatalf("stream did not stop by itself within 20s (err %v)", err)
	}
	return err, got
}

// A session that switches to statement-based (or mixed) logging while we
// stream writes its changes as SQL text, which canal does not turn into
// rows. The stream must stop at that event, naming the cause and the fix,
// and hand on nothing past the last row-based transaction.
func TestStatementEventOnTrackedTableStops(t *testing.T) {
	cases := []struct {
		name string
		sql  string
	}{
		{"session STATEMENT", "SET SESSION binlog_format = 'STATEMENT'; UPDATE DB.users SET is_enabled = 0 WHERE id = 9"},
		{"session MIXED", "SET SESSION binlog_format = 'MIXED'; UPDATE DB.users SET status = 'inactive' WHERE id = 9"},
		{"unqualified after USE", "SET SESSION binlog_format = 'STATEMENT'; USE DB_NAME; DELETE FROM claims WHERE id = 1"},
		{"multi-table update", "SET SESSION binlog_format = 'STATEMENT'; UPDATE DB.other o JOIN DB.claims c ON c.id = o.id SET c.status = 'x'"},
		{"insert select", "SET SESSION binlog_format = 'STATEMENT'; INSERT INTO DB.claims (id, user_id) SELECT id + 100, 9 FROM DB.other"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testenv.SharedMariaDB(t))
			f.exec(t, `INSERT INTO DB.users (id) VALUES (9)`, `INSERT INTO DB.claims VALUES (1, 9, 'open')`, `INSERT INTO DB.other VALUES (1, 1)`)
			from := f.head(t)
			f.exec(t, `INSERT INTO DB.users (id) VALUES (10)`) // row-based: handed on
			f.exec(t, strings.ReplaceAll(tc.sql, "DB_NAME", "`"+f.dbn+"`"))
			f.exec(t, `INSERT INTO DB.users (id) VALUES (11)`) // after the statement: never handed on
			err, got := streamUntilError(t, f.cfg, from)
			if !errors.Is(err, ErrFatal) || !errors.Is(err, errStatementDML) ||
				!strings.Contains(err.Error(), "binlog_format") || !strings.Contains(err.Error(), "checkpoint reset") ||
				!strings.Contains(err.Error(), "mysql-bin.") {
				t.Fatalf("got %v, want a fatal statement-event error naming the position, binlog_format and the fix", err)
			}
			var before bool
			for _, txn := range got {
				for _, c := range txn.Changes {
					if c.Table == "users" && c.After != nil && c.After[0] == int64(11) {
						t.Fatalf("a transaction after the statement event was handed on (%s): the checkpoint could move past the statement", txn.ID())
					}
					before = before || (c.Table == "users" && c.After != nil && c.After[0] == int64(10))
				}
			}
			if !before {
				t.Fatalf("the row-based transaction before the statement was not handed on (%d txns)", len(got))
			}
		})
	}
}

// SET GLOBAL binlog_format while we stream reaches every new session.
func TestGlobalFormatChangeWhileStreamingStops(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	f := newFixture(t, db)
	f.exec(t, `INSERT INTO DB.users (id) VALUES (9)`)
	s := startStream(t, f.cfg, f.head(t), false)
	f.exec(t, `INSERT INTO DB.users (id) VALUES (10)`)
	if txn := s.nextWithChanges(t); txn.Changes[0].After[0] != int64(10) {
		t.Fatalf("got %v", txn.Changes)
	}
	db.Exec(t, "SET GLOBAL binlog_format = 'STATEMENT'")
	f.exec(t, `UPDATE DB.users SET is_enabled = 0 WHERE id = 9`)
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if !errors.Is(err, errStatementDML) {
			t.Fatalf("got %v, want the statement-event error", err)
		}
	case txn := <-s.txns:
		t.Fatalf("transaction %s with %d changes handed on past the statement event", txn.ID(), len(txn.Changes))
	case <-time.After(20 * time.Second):
		t.Fatal("stream did not stop within 20s")
	}
}

// Statements that change no tracked table pass: DML on an untracked table
// (not a transaction boundary: the position stays at the XID), account
// statements, ANALYZE.
func TestHarmlessStatementEventsPass(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	s := startStream(t, f.cfg, f.head(t), false)
	f.exec(t, "SET SESSION binlog_format = 'STATEMENT'; BEGIN; UPDATE DB.other SET v = v + 1; INSERT INTO DB.other VALUES (7, 7); COMMIT; SET SESSION binlog_format = 'ROW'",
		"ANALYZE TABLE DB.other",
		"CREATE USER IF NOT EXISTS 'stmt_probe'@'%' IDENTIFIED BY 'x'", "DROP USER 'stmt_probe'@'%'",
		`INSERT INTO DB.users (id) VALUES (12)`)
	txn := s.nextWithChanges(t)
	if txn.Changes[0].After[0] != int64(12) {
		t.Fatalf("got %v", txn.Changes)
	}
	// The untracked statement transaction was handed on once, at its end.
	s.none(t)
}

func TestStatementTables(t *testing.T) {
	cases := []struct {
		q    string
		dml  bool
		refs string
	}{
		{"use `d`; UPDATE users SET a = 1", true, "d.users"},
		{"UPDATE d.users u JOIN claims c ON c.user_id = u.id SET c.x = 1", true, "d.users .claims"},
		{"DELETE a FROM d.a JOIN d.b ON a.id = b.id", true, ".a d.a d.b"},
		{"INSERT INTO d.t (a, b) SELECT a + 1, 9 FROM e.u", true, "d.t"},
		{"use `d`; REPLACE INTO t VALUES (1)", true, "d.t"},
		{"DELETE FROM t", true, ".t"},
		{"COMMIT", false, ""},
		{"GRANT SELECT ON d.* TO 'u'@'%'", false, ""},
	}
	for _, c := range cases {
		refs, dml, _, err := statementTables(parser.New(), c.q)
		if err != nil {
			t.Fatalf("%q: %v", c.q, err)
		}
		var names []string
		for _, r := range refs {
			names = append(names, r.db+"."+r.table)
		}
		if dml != c.dml || strings.Join(names, " ") != c.refs {
			t.Errorf("%q: dml %v refs %q, want %v %q", c.q, dml, strings.Join(names, " "), c.dml, c.refs)
		}
	}
}

// ROLLBACK TO SAVEPOINT is announced like a commit (go-mysql calls
// OnPosSynced after it), but the transaction goes on: it must be handed on
// once, whole, at its XID.
func TestRollbackToSavepointIsNotABoundary(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	s := startStream(t, f.cfg, f.head(t), false)
	// The server logs ROLLBACK TO only when a non-transactional table
	// changed after the savepoint (else it just drops the cached rows).
	f.exec(t, "CREATE TABLE DB.nt (id INT PRIMARY KEY) ENGINE=MyISAM")
	f.exec(t, "BEGIN; INSERT INTO DB.users (id) VALUES (20); SAVEPOINT a; INSERT INTO DB.users (id) VALUES (21); INSERT INTO DB.nt VALUES (1); ROLLBACK TO SAVEPOINT a; INSERT INTO DB.users (id) VALUES (22); COMMIT")
	txn := s.nextWithChanges(t)
	var ids []any
	for _, c := range txn.Changes {
		ids = append(ids, c.After[0])
	}
	// MariaDB logs the rolled-back insert too (its rows event precedes
	// the ROLLBACK TO), so the transaction holds 20, 21 and 22; what
	// matters is that it arrives once, whole.
	if len(ids) < 2 || ids[0] != int64(20) || ids[len(ids)-1] != int64(22) {
		t.Fatalf("transaction split at the savepoint rollback: got ids %v", ids)
	}
	s.none(t)
}

// A session with binlog_row_image = MINIMAL logs an update's after image
// without its primary key: the stream stops naming the row image.
func TestMinimalRowImageAtRuntimeStops(t *testing.T) {
	f := newFixture(t, testenv.SharedMariaDB(t))
	f.exec(t, `INSERT INTO DB.users (id) VALUES (9)`)
	from := f.head(t)
	f.exec(t, "SET SESSION binlog_row_image = 'MINIMAL'; UPDATE DB.users SET status = 'inactive' WHERE id = 9")
	err, got := streamUntilError(t, f.cfg, from)
	if !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "binlog_row_image") || !strings.Contains(err.Error(), `primary key column "id"`) {
		t.Fatalf("got %v, want a fatal error naming binlog_row_image", err)
	}
	for _, txn := range got {
		if len(txn.Changes) > 0 {
			t.Fatalf("the MINIMAL update was handed on: %v", txn.Changes)
		}
	}
}

// The replay guard: a server that sends transactions at or before the
// start position (played here by asking it for an earlier one) has them
// skipped and counted; the first later transaction goes through.
func TestReplayedTransactionsAreSkipped(t *testing.T) {
	for _, byGTID := range []bool{true, false} {
		t.Run(map[bool]string{true: "gtid", false: "file-pos"}[byGTID], func(t *testing.T) {
			f := newFixture(t, testenv.SharedMariaDB(t))
			early := f.head(t)
			f.exec(t, `INSERT INTO DB.users (id) VALUES (30)`, `INSERT INTO DB.users (id) VALUES (31)`)
			start := f.head(t)
			if !byGTID {
				early.GTIDSet, start.GTIDSet = "", ""
			}
			f.exec(t, `INSERT INTO DB.users (id) VALUES (32)`)
			cfg := f.cfg
			cfg.askFrom = &early
			before := ReplayedTransactions()
			s := startStream(t, cfg, start, false)
			txn := s.nextWithChanges(t)
			if txn.Changes[0].After[0] != int64(32) {
				t.Fatalf("first transaction handed on is %s with id %v, want the one after the start (32)", txn.ID(), txn.Changes[0].After[0])
			}
			if got := ReplayedTransactions() - before; got < 2 {
				t.Fatalf("ReplayedTransactions grew by %d, want at least 2", got)
			}
			f.exec(t, `INSERT INTO DB.users (id) VALUES (33)`)
			if txn := s.nextWithChanges(t); txn.Changes[0].After[0] != int64(33) {
				t.Fatalf("got %v after the replayed range", txn.Changes)
			}
		})
	}
}

// The guard and large transactions: a resent large transaction is skipped
// piece by piece, and the pieces of the first large transaction after the
// start (whose End is the start) all go through.
func TestReplayGuardAndPieces(t *testing.T) {
	for _, byGTID := range []bool{true, false} {
		t.Run(map[bool]string{true: "gtid", false: "file-pos"}[byGTID], func(t *testing.T) {
			f := newFixture(t, testenv.SharedMariaDB(t))
			early := f.head(t)
			f.exec(t, "BEGIN; INSERT INTO DB.users (id) VALUES (40); INSERT INTO DB.users (id) VALUES (41); INSERT INTO DB.users (id) VALUES (42); COMMIT")
			start := f.head(t)
			if !byGTID {
				early.GTIDSet, start.GTIDSet = "", ""
			}
			f.exec(t, "BEGIN; INSERT INTO DB.users (id) VALUES (50); INSERT INTO DB.users (id) VALUES (51); INSERT INTO DB.users (id) VALUES (52); COMMIT")
			cfg := f.cfg
			cfg.askFrom = &early
			cfg.MaxTxnBytes = 1 // every row a piece
			s := startStream(t, cfg, start, false)
			var ids []any
			for len(ids) < 3 {
				txn := s.nextWithChanges(t)
				for _, c := range txn.Changes {
					ids = append(ids, c.After[0])
				}
			}
			if !reflect.DeepEqual(ids, []any{int64(50), int64(51), int64(52)}) {
				t.Fatalf("rows handed on %v, want exactly the large transaction after the start (50, 51, 52)", ids)
			}
		})
	}
}

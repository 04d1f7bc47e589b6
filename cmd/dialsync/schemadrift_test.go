package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"dialsync/notice"
)

// Schema drift: DDL on tracked tables, against the real binary. Every test
// changes only its own source database, so the shared MariaDB is enough.
// See canal/drift.go for what go-mysql lets us check and docs/
// troubleshooting.md ("Schema changes") for the operator's side.

// waitHalt waits for dialsync to exit by itself and returns its exit code
// and its last "dialsync: ..." line (the one-line error).
func (p *pipe) waitHalt(within time.Duration) (int, string) {
	p.t.Helper()
	waitFor(p.t, within, "dialsync to halt", p.exited)
	code := p.stop() // reaps; the process is gone already
	var last string
	for _, l := range strings.Split(p.allLogs(), "\n") {
		if strings.HasPrefix(l, "dialsync: ") {
			last = l
		}
	}
	if last == "" {
		p.t.Fatalf("no one-line error from dialsync:\n%s", p.logTail(20))
	}
	return code, last
}

// userChangedAfter returns the user.changed notices past the first skip.
func (p *pipe) userChangedAfter(skip int) []notice.UserChanged {
	p.t.Helper()
	var out []notice.UserChanged
	for _, ev := range p.notices()[skip:] {
		if ev.Type != notice.TypeUserChanged {
			continue
		}
		uc, err := ev.UserChanged()
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, uc)
	}
	return out
}

// noticeFor finds the one user.changed notice about user in the
// transaction that ends at GTID position txnGTID ("0-1-42": the head right
// after the statement committed).
func noticeFor(t *testing.T, ucs []notice.UserChanged, user uint64, txnGTID string) notice.UserChanged {
	t.Helper()
	var found []notice.UserChanged
	for _, uc := range ucs {
		if uc.UserID == user && uc.Source.Txn == txnGTID {
			found = append(found, uc)
		}
	}
	if len(found) != 1 {
		t.Fatalf("user %d, transaction %s: %d user.changed notices, want 1 (all: %+v)", user, txnGTID, len(found), ucs)
	}
	return found[0]
}

// execTxn runs one statement (one source transaction) and returns its GTID,
// read in the same session (@@last_gtid): the server's head may already
// name a later transaction of another session.
func (p *pipe) execTxn(stmt string) string {
	p.t.Helper()
	ctx := context.Background()
	conn, err := p.src.Conn(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, stmt); err != nil {
		p.t.Fatalf("source: %s: %v", stmt, err)
	}
	var g string
	if err := conn.QueryRowContext(ctx, "SELECT @@last_gtid").Scan(&g); err != nil || g == "" {
		p.t.Fatalf("source: @@last_gtid after %s: %q, %v", stmt, g, err)
	}
	return g
}

func twoUsers(t *testing.T, p *pipe) (a, b uint64) {
	t.Helper()
	a, _, _ = queuedUser(t, p)
	if err := p.src.QueryRow(`SELECT MAX(id) FROM users WHERE id <> ?`, a).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// 1a, 1b: while streaming, added, dropped, renamed and moved columns that no
// handler needs are followed: the right users, the right changed columns
// (new ones included), no queue drift.
func TestSchemaDriftWhileStreaming(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	u, v := twoUsers(t, p)
	var claim uint64
	if err := p.src.QueryRow(`SELECT id FROM claims WHERE user_id = ? LIMIT 1`, u).Scan(&claim); err != nil {
		t.Fatal(err)
	}
	skip := len(p.notices())

	type want struct {
		user    uint64
		gtid    string
		columns []string // must be exactly these (sorted)
	}
	var wants []want
	step := func(stmt string, cols []string, users ...uint64) {
		t.Helper()
		g := p.execTxn(stmt)
		for _, x := range users {
			wants = append(wants, want{x, g, cols})
		}
	}

	// a. A column added at the end, then changed, alone and with others.
	p.exec(`ALTER TABLE users ADD COLUMN nickname VARCHAR(20) NULL`)
	step(fmt.Sprintf(`UPDATE users SET nickname = 'nick' WHERE id = %d`, u), []string{"nickname"}, u)
	step(fmt.Sprintf(`UPDATE users SET status = 'inactive', nickname = 'n2' WHERE id = %d`, v), []string{"nickname", "status"}, v)
	step(fmt.Sprintf(`UPDATE users SET status = 'inactive' WHERE id = %d`, u), []string{"status"}, u)
	// b. A column no handler needs, dropped.
	// Caught up first: canal reads a table's schema from the live server
	// when it next decodes the table, so a DDL must not overtake rows
	// written before it (the documented operating rule).
	p.waitCaughtUp(20 * time.Second)
	p.exec(`ALTER TABLE users DROP COLUMN introducer`)
	step(fmt.Sprintf(`UPDATE users SET status = 'active', solicitor = 'S' WHERE id = %d`, u), []string{"solicitor", "status"}, u)
	// Renamed, and moved in front of current_user_address_id's old place.
	// Caught up first: canal reads a table's schema from the live server
	// when it next decodes the table, so a DDL must not overtake rows
	// written before it (the documented operating rule).
	p.waitCaughtUp(20 * time.Second)
	p.exec(`ALTER TABLE users CHANGE solicitor lawyer VARCHAR(255) NULL AFTER id`)
	g := p.execTxn(fmt.Sprintf(`UPDATE users SET lawyer = 'L', status = 'active' WHERE id IN (%d, %d)`, u, v))
	wants = append(wants, want{u, g, []string{"lawyer"}}, want{v, g, []string{"lawyer", "status"}})
	// A column added FIRST shifts every position of claims, user_id included.
	// Caught up first: canal reads a table's schema from the live server
	// when it next decodes the table, so a DDL must not overtake rows
	// written before it (the documented operating rule).
	p.waitCaughtUp(20 * time.Second)
	p.exec(`ALTER TABLE claims ADD COLUMN note VARCHAR(10) NULL FIRST`)
	step(fmt.Sprintf(`UPDATE claims SET user_id = %d WHERE id = %d`, v, claim), []string{"user_id"}, u, v)
	step(fmt.Sprintf(`UPDATE claims SET note = 'x', user_id = %d WHERE id = %d`, u, claim), []string{"note", "user_id"}, u, v)
	p.waitCaughtUp(20 * time.Second)

	ucs := p.userChangedAfter(skip)
	for _, w := range wants {
		uc := noticeFor(t, ucs, w.user, w.gtid)
		if !slices.Equal(uc.Columns, w.columns) {
			t.Errorf("user %d, txn %s: changed columns %v, want %v", w.user, w.gtid, uc.Columns, w.columns)
		}
	}
	// Nobody else was told about anything.
	for _, uc := range ucs {
		if uc.UserID != u && uc.UserID != v {
			t.Errorf("notice for user %d, who was not touched: %+v", uc.UserID, uc)
		}
	}
	if len(ucs) != len(wants) {
		t.Errorf("%d user.changed notices, want %d", len(ucs), len(wants))
	}
	p.assertNoDrift()
	if p.exited() {
		t.Fatalf("dialsync exited:\n%s", p.logTail(20))
	}
}

// 1c: while streaming, a column a handler needs is renamed or dropped:
// dialsync halts at the first change of that table after the DDL, with one
// line naming the table, the column, the DDL and the position; the
// checkpoint stays before that change; the documented recovery works.
func TestSchemaDriftNeededColumnHalts(t *testing.T) {
	for _, tc := range []struct {
		name, ddl, fix, table, column string
		change                        func(u, claim uint64) string
	}{
		{
			name:   "rename claims.user_id",
			ddl:    `ALTER TABLE claims CHANGE user_id owner_id BIGINT UNSIGNED NOT NULL`,
			fix:    `ALTER TABLE claims CHANGE owner_id user_id BIGINT UNSIGNED NOT NULL`,
			table:  "claims",
			column: "user_id",
			change: func(_, claim uint64) string {
				return fmt.Sprintf(`UPDATE claims SET status = 'closed' WHERE id = %d`, claim)
			},
		},
		{
			name:   "drop users.current_user_address_id",
			ddl:    `ALTER TABLE users DROP COLUMN current_user_address_id`,
			fix:    `ALTER TABLE users ADD COLUMN current_user_address_id BIGINT UNSIGNED NULL AFTER solicitor`,
			table:  "users",
			column: "current_user_address_id",
			change: func(u, _ uint64) string {
				return fmt.Sprintf(`UPDATE users SET status = 'inactive' WHERE id = %d`, u)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipe(t, pipeOpt{})
			startCaughtUp(t, p)
			u, claim, _ := queuedUser(t, p)
			skip := len(p.notices())

			ddlGTID := p.execTxn(tc.ddl)
			changeGTID := p.execTxn(tc.change(u, claim))
			p.exec(`UPDATE claim_requirements SET status = 'COMPLETE' WHERE status = 'PENDING' LIMIT 5`)
			code, line := p.waitHalt(30 * time.Second)
			t.Logf("halted with exit %d: %s", code, line)
			if code == 0 {
				t.Fatalf("exit code 0 after a needed column vanished")
			}
			for _, w := range []string{tc.table, `"` + tc.column + `"`, "renamed or dropped by the DDL at mysql-bin.", "after the last committed position", "checkpoint reset --to-head"} {
				if !strings.Contains(line, w) {
					t.Errorf("error line does not say %q: %s", w, line)
				}
			}
			// The checkpoint may pass the DDL, never the change after it.
			if ck := p.checkpointGTID(); gtidCovers(ck, changeGTID) {
				t.Fatalf("checkpoint %s moved past the change %s that could not be decoded", ck, changeGTID)
			} else if !gtidCovers(ck, prevGTID(ddlGTID)) {
				t.Fatalf("checkpoint %s went back before the DDL %s", ck, ddlGTID)
			}
			if ucs := p.userChangedAfter(skip); len(ucs) != 0 {
				t.Fatalf("notices after the DDL: %+v", ucs)
			}

			// Recovery, as the error line says.
			p.exec(tc.fix)
			opsOK(t, p, "checkpoint", "reset", "--to-head", "--reason", "schema fixed after "+tc.name)
			p.start()
			p.waitCaughtUp(30 * time.Second)
			p.assertNoDrift()
			skip = len(p.notices())
			g := p.execTxn(fmt.Sprintf(`UPDATE users SET status = IF(status = 'active', 'inactive', 'active') WHERE id = %d`, u))
			p.waitCaughtUp(10 * time.Second)
			noticeFor(t, p.userChangedAfter(skip), u, g)
			p.assertNoDrift()
		})
	}
}

// prevGTID is the GTID position just before g ("0-1-42" -> "0-1-41").
func prevGTID(g string) string {
	i := strings.LastIndex(g, "-")
	n, _ := strconv.ParseUint(g[i+1:], 10, 64)
	return fmt.Sprintf("%s-%d", g[:i], n-1)
}

// 1d: stopped (lagging) across a DDL with changes before and after it.
// go-mysql decodes the old rows with the live schema; dialsync must halt
// before handing on any of them (never a misattributed value), say where
// and what to run, and the recovery must leave no drift.
func TestSchemaDriftWhileLagging(t *testing.T) {
	for _, tc := range []struct{ name, ddl, want string }{
		// The common case: a column added. Caught by the column count.
		{"add column", `ALTER TABLE users ADD COLUMN nickname VARCHAR(20) NULL`, "columns but the schema has"},
		// Same width: positions shift by one; current_user_address_id
		// would read the solicitor's name. Caught by the value types.
		{"drop and add", `ALTER TABLE users DROP COLUMN introducer, ADD COLUMN nickname VARCHAR(20) NULL`, "the live schema has column"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipe(t, pipeOpt{})
			startCaughtUp(t, p)
			u, v := twoUsers(t, p)
			if code := p.stop(); code != 0 {
				t.Fatalf("exit %d", code)
			}
			ck := p.checkpointGTID()
			skip := len(p.notices())

			p.exec(fmt.Sprintf(`UPDATE users SET status = 'inactive', solicitor = 'Sol' WHERE id = %d`, u),
				`UPDATE claim_requirements SET status = 'COMPLETE' WHERE status = 'PENDING' LIMIT 3`,
				tc.ddl,
				fmt.Sprintf(`UPDATE users SET status = 'inactive', nickname = 'n' WHERE id = %d`, v),
				`UPDATE claim_requirements SET status = 'PENDING' WHERE status = 'COMPLETE' LIMIT 3`)
			p.start()
			code, line := p.waitHalt(30 * time.Second)
			t.Logf("halted with exit %d: %s", code, line)
			if code == 0 {
				t.Fatal("exit code 0")
			}
			for _, w := range []string{".users at mysql-bin.", tc.want, "after the last committed position", "checkpoint reset --to-head"} {
				if !strings.Contains(line, w) {
					t.Errorf("error line does not say %q: %s", w, line)
				}
			}
			if now := p.checkpointGTID(); now != ck {
				t.Fatalf("checkpoint moved from %s to %s over rows that cannot be decoded", ck, now)
			}
			if ucs := p.userChangedAfter(skip); len(ucs) != 0 {
				t.Fatalf("notices were published from undecodable rows: %+v", ucs)
			}

			opsOK(t, p, "checkpoint", "reset", "--to-head", "--reason", "lagged across "+tc.name)
			p.start()
			p.waitCaughtUp(30 * time.Second)
			p.assertNoDrift()
			skip = len(p.notices())
			g := p.execTxn(fmt.Sprintf(`UPDATE users SET status = 'active', nickname = 'x' WHERE id = %d`, u))
			p.waitCaughtUp(10 * time.Second)
			if uc := noticeFor(t, p.userChangedAfter(skip), u, g); !slices.Equal(uc.Columns, []string{"nickname", "status"}) {
				t.Fatalf("columns %v after recovery", uc.Columns)
			}
			p.assertNoDrift()
		})
	}
}

// 1e: DDL go-mysql's parser cannot read, on a tracked table, is counted in
// dialsync_skipped_ddl_total and logged; the schemas are reloaded so a
// column it added is followed.
func TestSchemaDriftUnparseableDDL(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p.startEnv("DIALSYNC_HTTP_LISTEN=" + addr)
	waitFor(t, 60*time.Second, "bootstrap", func() bool { return p.checkpointGTID() != "" })
	p.waitCaughtUp(30 * time.Second)
	u, _ := twoUsers(t, p)
	before := skippedDDL(t, addr)
	skip := len(p.notices())

	// Neither parses with the TiDB parser go-mysql bundles: CREATE TRIGGER,
	// and MariaDB's ALTER ONLINE TABLE (which adds a column canal's cache
	// would not know about if nothing reloaded it).
	p.exec(`CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW SET NEW.updated_at = NOW()`,
		`ALTER ONLINE TABLE users ADD COLUMN nickname VARCHAR(20) NULL`)
	g := p.execTxn(fmt.Sprintf(`UPDATE users SET nickname = 'n' WHERE id = %d`, u))
	p.waitCaughtUp(20 * time.Second)
	if uc := noticeFor(t, p.userChangedAfter(skip), u, g); !slices.Contains(uc.Columns, "nickname") {
		t.Fatalf("changed columns %v, want nickname among them", uc.Columns)
	}
	var after float64
	waitFor(t, 10*time.Second, "dialsync_skipped_ddl_total to count both statements", func() bool {
		after = skippedDDL(t, addr)
		return after-before >= 2
	})
	if after-before != 2 {
		t.Fatalf("dialsync_skipped_ddl_total grew by %v, want 2", after-before)
	}
	if n := strings.Count(p.allLogs(), "skipped a statement it could not parse"); n != 2 {
		t.Fatalf("%d log lines about skipped statements, want 2", n)
	}
	p.assertNoDrift()
}

var skippedRE = regexp.MustCompile(`(?m)^dialsync_skipped_ddl_total ([0-9.e+]+)$`)

func skippedDDL(t *testing.T, addr string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := skippedRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no dialsync_skipped_ddl_total in /metrics")
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return f
}

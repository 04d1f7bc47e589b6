package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/testenv"
	"dialsync/internal/lookup"
)

// serverIdentity is the identity dialsync stores with a checkpoint of my
// (lookup.Identity; MariaDB has no server_uuid).
func serverIdentity(t *testing.T, my *testenv.MariaDB) string {
	t.Helper()
	return lookup.Identity(map[string]string{
		"server_id": my.QueryString(t, "SELECT @@server_id"),
		"hostname":  my.QueryString(t, "SELECT @@hostname"),
		"port":      my.QueryString(t, "SELECT @@port"),
	})
}

// setIdentifiedCheckpoint writes a checkpoint row with a server identity,
// as `dialsync run` stores it.
func (e *badEnv) setIdentifiedCheckpoint(gtid, file string, pos int64, server string) {
	e.t.Helper()
	e.setCheckpoint(gtid, file, pos)
	if _, err := e.pool().Exec(context.Background(), `UPDATE dialsync.checkpoints SET server_uuid = $2 WHERE pipeline = $1`,
		e.cfg.Pipeline.Name, server); err != nil {
		e.t.Fatal(err)
	}
}

// checkLines runs `dialsync check --json` on the case's config.
func (e *badEnv) checkLines() ([]checkLine, int) {
	e.t.Helper()
	e.args = []string{"check", "--json", "--config", filepath.Join(e.dir, "config.toml")}
	defer func() { e.args = nil }()
	res := e.runBinary()
	var lines []checkLine
	if err := json.Unmarshal([]byte(res.stdout), &lines); err != nil {
		e.t.Fatalf("check --json: %v\n%s\n%s", err, res.stdout, res.stderr)
	}
	return lines, res.code
}

func (e *badEnv) masterStatus() (string, int64) {
	e.t.Helper()
	var f string
	var pos int64
	if err := e.src.QueryRow("SHOW MASTER STATUS").Scan(&f, &pos, new(sql.NullString), new(sql.NullString)); err != nil {
		e.t.Fatal(err)
	}
	return f, pos
}

// A checkpoint the source cannot serve for a reason other than a purge is
// reported with that reason, `run` stops with exit 1 and the checkpoint
// untouched even with recovery.on_purged = "reconcile" (no automatic jump),
// and `check` fails with the same cause. A real purge is still recovered
// from automatically (TestPurgedAutoReconcile, and the last case here).
func TestCheckpointCauses(t *testing.T) {
	type causeCase struct {
		name  string
		my    func(t *testing.T) *testenv.MariaDB
		setup func(e *badEnv)
		want  []string // in the run error line and the check FAIL line
		jumps bool     // on_purged = "reconcile" recovers (a real purge)
	}
	cases := []causeCase{
		{name: "inside an event", setup: func(e *badEnv) {
			f, _ := e.masterStatus()
			var pos int64
			if err := e.src.QueryRow(fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' LIMIT 1, 1", f)).Scan(new(string), &pos, new(string), new(int64), new(int64), new(string)); err != nil {
				e.t.Fatal(err)
			}
			e.setIdentifiedCheckpoint("", f, pos+3, serverIdentity(e.t, e.my))
		}, want: []string{"not an event boundary", "not a purge", "checkpoint set"}},
		{name: "gtid set ahead", setup: func(e *badEnv) {
			head := e.my.QueryString(e.t, "SELECT @@gtid_binlog_pos")
			parts := strings.Split(head, "-")
			seq, _ := strconv.ParseUint(parts[2], 10, 64)
			e.setIdentifiedCheckpoint(fmt.Sprintf("%s-%s-%d", parts[0], parts[1], seq+1000), "", 0, serverIdentity(e.t, e.my))
		}, want: []string{"ahead of the source", "has not executed transactions", "not a purge", "checkpoint reset --to-head"}},
		{name: "past the end of its file", setup: func(e *badEnv) {
			f, pos := e.masterStatus()
			e.setIdentifiedCheckpoint("", f, pos+1_000_000, serverIdentity(e.t, e.my))
		}, want: []string{"past the end", "not a purge"}},
		{name: "real purge", my: privateMariaDB(testenv.MariaDBOptions{}), setup: func(e *badEnv) {
			id := serverIdentity(e.t, e.my)
			e.purgeBinlogs()
			e.setIdentifiedCheckpoint("", "mysql-bin.000001", 4, id)
		}, want: []string{"mysql-bin.000001 was purged", "on_purged"}, jumps: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var my *testenv.MariaDB
			if tc.my != nil {
				my = tc.my(t)
			}
			e := newBadEnv(t, my)
			e.cfg.Recovery.OnPurged = "reconcile"
			tc.setup(e)
			before := e.checkpointRow()

			lines, code := e.checkLines()
			l := checkResult(t, lines, "checkpoint")
			if code != 2 || l.Status != "FAIL" {
				t.Fatalf("check: exit %d, checkpoint %+v", code, l)
			}
			for _, w := range tc.want {
				if !strings.Contains(l.Detail+" "+l.Fix, w) {
					t.Errorf("check's checkpoint line does not say %q: %+v", w, l)
				}
			}
			if tc.jumps {
				return // the jump itself: TestPurgedAutoReconcile
			}
			res := e.runBinary()
			line := errorLine(t, res.stderr, false)
			t.Logf("exit %d: %s", res.code, line)
			if res.code != 1 {
				t.Errorf("exit %d, want 1", res.code)
			}
			for _, w := range append(tc.want, "cannot serve the checkpoint") {
				if !strings.Contains(line, w) {
					t.Errorf("run's error does not say %q", w)
				}
			}
			if strings.Contains(line, "binlog purged") || strings.Contains(res.stderr, "AUTOMATIC RECOVERY") {
				t.Errorf("reported (or recovered) as a purge")
			}
			if after := e.checkpointRow(); after != before {
				t.Errorf("checkpoint changed from %s to %s", before, after)
			}
		})
	}
}

func checkResult(t *testing.T, lines []checkLine, name string) checkLine {
	t.Helper()
	for _, l := range lines {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no %q line in %+v", name, lines)
	return checkLine{}
}

// A checkpoint taken on one server is refused on another (another
// server_id, no GTID history in common) with both identities and the fix,
// by run (exit 1, checkpoint unchanged, no automatic jump even with
// recovery.on_purged = "reconcile") and by check (FAIL, same cause).
func TestCheckpointFromAnotherServer(t *testing.T) {
	a := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 3101})
	b := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 3102})
	p := newPipe(t, pipeOpt{my: a, config: func(c *config.Config) { c.Recovery.OnPurged = "reconcile" }})
	startCaughtUp(t, p)
	if code := p.stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	var stored string
	if err := p.pg.QueryRow(t.Context(), `SELECT server_uuid FROM dialsync.checkpoints WHERE pipeline = $1`, p.cfg.Pipeline.Name).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if want := serverIdentity(t, a); stored != want {
		t.Fatalf("stored identity %q, want server A's %q", stored, want)
	}
	// Server B has the same schema (the lookups work) but not A's history.
	b.CreateDatabase(t, p.name)
	db, err := sql.Open("mysql", b.DSN(p.name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := demo.CreateSchema(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	before := p.checkpointGTID()
	p.editConfig(func(c *config.Config) { c.Source.Addr = b.Addr() })
	idA, idB := serverIdentity(t, a), serverIdentity(t, b)

	lines, code := checkJSON(t, p)
	l := statusOf(t, lines, "checkpoint")
	if code != 2 || l.Status != "FAIL" {
		t.Fatalf("check on server B: exit %d, %+v", code, l)
	}
	for _, w := range []string{"another server", idA, idB, "checkpoint reset --to-head", "checkpoint set"} {
		if !strings.Contains(l.Detail+" "+l.Fix, w) {
			t.Errorf("check does not say %q: %+v", w, l)
		}
	}
	out, _, _ := opsCLI(t, p, "checkpoint", "show")
	if s := squash(out); !strings.Contains(s, "on server: NO") || !strings.Contains(s, "another server") {
		t.Errorf("checkpoint show:\n%s", out)
	}

	_, stderr, code := runCLI(t, 60*time.Second, nil, "run", "--config", p.cfgPath)
	line := errorLine(t, stderr, false)
	t.Logf("exit %d: %s", code, line)
	if code != 1 {
		t.Errorf("run on server B: exit %d, want 1", code)
	}
	for _, w := range []string{"another server", idA, idB, "checkpoint reset --to-head", "checkpoint set"} {
		if !strings.Contains(line, w) {
			t.Errorf("run's error does not say %q", w)
		}
	}
	if strings.Contains(stderr, "AUTOMATIC RECOVERY") {
		t.Error("jumped ahead by itself on another server")
	}
	if after := p.checkpointGTID(); after != before {
		t.Errorf("checkpoint changed from %s to %s", before, after)
	}

	// A forced set is not checked against the source, so it must not
	// claim B's identity for A's position: the stored identity stays A's
	// and run still refuses.
	opsOK(t, p, "checkpoint", "set", "--force", "--gtid", before, "--reason", "forced, unchecked")
	if err := p.pg.QueryRow(t.Context(), `SELECT server_uuid FROM dialsync.checkpoints WHERE pipeline = $1`, p.cfg.Pipeline.Name).Scan(&stored); err != nil || stored != idA {
		t.Fatalf("after set --force on B the stored identity is %q (%v), want A's %q", stored, err, idA)
	}

	// The fix the message names works: reset --to-head stores B's head
	// with B's identity, and run streams from it.
	opsOK(t, p, "checkpoint", "reset", "--to-head", "--reason", "moved to server B")
	if err := p.pg.QueryRow(t.Context(), `SELECT server_uuid FROM dialsync.checkpoints WHERE pipeline = $1`, p.cfg.Pipeline.Name).Scan(&stored); err != nil || stored != idB {
		t.Fatalf("after reset --to-head on B the stored identity is %q (%v), want %q", stored, err, idB)
	}
	if lines, code := checkJSON(t, p); statusOf(t, lines, "checkpoint").Status != "OK" {
		t.Errorf("check after the reset: exit %d, %+v", code, statusOf(t, lines, "checkpoint"))
	}
}

// pgRole creates a login role on the machine's PostgreSQL (trust
// authentication: no password), runs grants as the administrator in dsn's
// database ({role} is the role's quoted name), and returns dsn for the
// role. The role and what it owns are dropped when the test ends.
func pgRole(t *testing.T, dsn string, grants ...string) string {
	t.Helper()
	name := fmt.Sprintf("ds_role_%d", nextServerID.Add(1))
	q := pgx.Identifier{name}.Sanitize()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	stmts := append([]string{"CREATE ROLE " + q + " LOGIN"}, grants...)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, strings.ReplaceAll(s, "{role}", q)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop role %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		for _, s := range []string{"DROP OWNED BY " + q, "DROP ROLE " + q} {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	return u.String()
}

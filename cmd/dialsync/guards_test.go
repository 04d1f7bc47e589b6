package main

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/config"
	"dialsync/internal/dev/testenv"
	"dialsync/internal/lookup"
)

// Fail loud, against the real binary: a source setting changed while `run`
// streams, a stream dialsync did not create, a binlog user without
// REPLICATION SLAVE, a queue rule with values dialsync cannot read. Each
// ends in a stop (exit 1) with a one-line cause and fix, and the checkpoint
// stays before what was not applied. The package tests (canal, publish,
// lookup) pin the mechanisms; these pin what an operator sees.

// sessionTxn runs stmts in a new source session (one that sees the current
// GLOBAL settings) and returns the GTID of the last transaction it wrote
// (@@last_gtid: the server head could name another session's).
func sessionTxn(t *testing.T, p *pipe, stmts ...string) string {
	t.Helper()
	c := p.my.Conn(t, p.name)
	for _, s := range stmts {
		if _, err := c.Execute(s); err != nil {
			t.Fatalf("source: %s: %v", s, err)
		}
	}
	r, err := c.Execute("SELECT @@last_gtid")
	if err != nil {
		t.Fatal(err)
	}
	g, err := r.GetString(0, 0)
	if err != nil || g == "" {
		t.Fatalf("@@last_gtid = %q, %v", g, err)
	}
	return g
}

// assertStoppedBefore checks the checkpoint is before the transaction
// ending at txnGTID and not before the one just before it.
func assertStoppedBefore(t *testing.T, p *pipe, txnGTID string) {
	t.Helper()
	ck := p.checkpointGTID()
	if gtidCovers(ck, txnGTID) {
		t.Fatalf("checkpoint %s moved past the transaction %s that was not applied", ck, txnGTID)
	}
	if !gtidCovers(ck, prevGTID(txnGTID)) {
		t.Fatalf("checkpoint %s went back before %s", ck, prevGTID(txnGTID))
	}
}

// restartStreaming starts `run` again and waits until it streams: a change
// written after the start is applied.
func restartStreaming(t *testing.T, p *pipe) {
	t.Helper()
	from := len(p.allLogs())
	p.start()
	waitFor(t, 30*time.Second, "binlog reader", func() bool {
		if p.exited() {
			t.Fatalf("dialsync exited:\n%s", p.logTail(40))
		}
		return strings.Contains(p.allLogs()[from:], "binlog stream starting")
	})
	sessionTxn(t, p, "INSERT INTO audit_log (actor, action, subject_id, created_at) VALUES ('test', 'restarted', 0, NOW())")
	p.waitCaughtUp(30 * time.Second)
}

// A format or row image switched while `run` streams, globally (new
// sessions) or by one session: `run` stops at that change within seconds,
// names the setting and the fix, and the checkpoint stays before it; the
// fix it names (ROW/FULL again, checkpoint reset --to-head, run) converges.
// Before the statement guard, STATEMENT and MIXED changes were passed over
// in silence (the checkpoint moved past them, the user stayed queued); a
// MINIMAL image stopped with "poison row ... is NULL", naming neither cause
// nor fix.
func TestSourceSettingsChangedWhileStreaming(t *testing.T) {
	// SET GLOBAL reaches every database of the server: a private one.
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	for _, tc := range []struct {
		name    string
		global  bool
		setting string // binlog_format or binlog_row_image
		value   string
		want    []string
	}{
		{"global STATEMENT", true, "binlog_format", "STATEMENT", formatWords},
		{"global MIXED", true, "binlog_format", "MIXED", formatWords},
		{"session STATEMENT", false, "binlog_format", "STATEMENT", formatWords},
		{"session MIXED", false, "binlog_format", "MIXED", formatWords},
		{"global MINIMAL", true, "binlog_row_image", "MINIMAL", rowImageWords},
		{"session MINIMAL", false, "binlog_row_image", "MINIMAL", rowImageWords},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := map[string]string{"binlog_format": "ROW", "binlog_row_image": "FULL"}[tc.setting]
			t.Cleanup(func() { my.Exec(t, fmt.Sprintf("SET GLOBAL %s = '%s'", tc.setting, good)) })
			p := newPipe(t, pipeOpt{my: my})
			startCaughtUp(t, p)
			u, _, _ := queuedUser(t, p)
			if _, ok := p.actualQueue()[u]; !ok {
				t.Fatalf("user %d is not queued before the change", u)
			}
			update := fmt.Sprintf("UPDATE users SET is_enabled = 0 WHERE id = %d", u)
			var g string
			at := time.Now()
			if tc.global {
				my.Exec(t, fmt.Sprintf("SET GLOBAL %s = '%s'", tc.setting, tc.value))
				g = sessionTxn(t, p, update)
			} else {
				g = sessionTxn(t, p, fmt.Sprintf("SET SESSION %s = '%s'", tc.setting, tc.value), update)
			}
			code, line := p.waitHalt(15 * time.Second)
			t.Logf("exit %d after %s: %s", code, time.Since(at).Round(time.Millisecond), line)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("the error line does not say %q: %s", w, line)
				}
			}
			assertStoppedBefore(t, p, g)
			if _, ok := p.actualQueue()[u]; !ok {
				t.Fatalf("user %d left the queue although the change was not applied", u)
			}

			// The fix, as the line says.
			my.Exec(t, fmt.Sprintf("SET GLOBAL %s = '%s'", tc.setting, good))
			opsOK(t, p, "checkpoint", "reset", "--to-head", "--reason", tc.name+" while streaming")
			restartStreaming(t, p)
			if _, ok := p.actualQueue()[u]; ok {
				t.Fatalf("user %d is still queued after the recovery", u)
			}
			p.assertNoDrift()
			if code := p.stop(); code != 0 {
				t.Fatalf("clean stop: exit %d", code)
			}
		})
	}
}

var (
	formatWords   = []string{"binlog_format", "statement event", "SET GLOBAL binlog_format = 'ROW'", "checkpoint reset --to-head"}
	rowImageWords = []string{"binlog_row_image", `primary key column "id"`, "SET GLOBAL binlog_row_image = 'FULL'", "checkpoint reset --to-head"}
)

// A stream of the configured name that another application created (its
// own description, a 10 s duplicate window): `run` refuses, naming the
// difference and the `nats stream edit` command, and leaves the stream as
// it was; `check` fails on it with the same words. After the edit it names,
// dialsync uses the stream unchanged (before, it rewrote subjects,
// duplicate window 10s -> 2m and max age 0 -> 72h, with an INFO line).
func TestForeignStreamIsNeverChanged(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	foreign := jetstream.StreamConfig{
		Name:        p.stream,
		Description: "orders service: order events",
		Subjects:    []string{p.subjects + ".>", "orders_" + p.name + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  10 * time.Second,
		Storage:     jetstream.FileStorage,
	}
	s, err := p.js.CreateStream(ctx, foreign)
	if err != nil {
		t.Fatal(err)
	}
	before := s.CachedInfo().Config
	streamConfig := func() jetstream.StreamConfig {
		t.Helper()
		s, err := p.js.Stream(ctx, p.stream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}

	code, line := runUntilExit(t, p)
	t.Logf("exit %d: %s", code, line)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, w := range []string{p.stream, "duplicate window 10s is shorter than the required 2m0s", "dialsync changes only streams it created",
		"nats stream edit " + p.stream + " --dupe-window 2m0s"} {
		if !strings.Contains(line, w) {
			t.Errorf("the error line does not say %q: %s", w, line)
		}
	}
	if after := streamConfig(); !reflect.DeepEqual(before, after) {
		t.Fatalf("the foreign stream was changed:\nbefore %+v\nafter  %+v", before, after)
	}

	lines, ccode := checkJSON(t, p)
	if ccode != 2 {
		t.Errorf("check: exit %d, want 2", ccode)
	}
	if l := statusOf(t, lines, "nats"); l.Status != "FAIL" || !strings.Contains(l.Detail+l.Fix, "--dupe-window 2m0s") {
		t.Errorf("check: nats line %+v, want FAIL naming the edit", l)
	}
	if after := streamConfig(); !reflect.DeepEqual(before, after) {
		t.Fatalf("check changed the stream:\nbefore %+v\nafter  %+v", before, after)
	}

	// What `nats stream edit --dupe-window 2m0s` does; then dialsync uses
	// the stream as it is: its subjects, description and unlimited age stay.
	edited := before
	edited.Duplicates = 2 * time.Minute
	if _, err := p.js.UpdateStream(ctx, edited); err != nil {
		t.Fatal(err)
	}
	edited = streamConfig()
	startCaughtUp(t, p)
	if !strings.Contains(p.allLogs(), "was not created by dialsync: using it unchanged") {
		t.Errorf("no warning that the stream is used unchanged:\n%s", p.logTail(30))
	}
	u, _, _ := queuedUser(t, p)
	skip := len(p.notices())
	g := sessionTxn(t, p, fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id = %d", u))
	p.waitCaughtUp(20 * time.Second)
	noticeFor(t, p.userChangedAfter(skip), u, g)
	if code := p.stop(); code != 0 {
		t.Fatalf("clean stop: exit %d", code)
	}
	if after := streamConfig(); !reflect.DeepEqual(edited, after) {
		t.Fatalf("dialsync changed the foreign stream:\nbefore %+v\nafter  %+v", edited, after)
	}
}

// A binlog user that may log in and read but lacks REPLICATION SLAVE:
// MariaDB refuses the dump with ERROR 1045, the wrong-password error. `run`
// stops (exit 1) within seconds naming the grant, instead of reconnecting
// forever with /readyz green.
func TestBinlogUserWithoutReplicationSlave(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	user := fmt.Sprintf("ds_norepl_%d", nextServerID.Add(1))
	secret := randomSecret(t)
	p.my.Exec(t,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, secret),
		fmt.Sprintf("GRANT BINLOG MONITOR, SLAVE MONITOR ON *.* TO '%s'@'%%'", user),
		fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", p.name, user))
	t.Cleanup(func() { p.my.Exec(t, fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	p.editConfig(func(c *config.Config) { c.Source.User, c.Source.Password = user, secret })

	at := time.Now()
	p.start()
	code, line := p.waitHalt(20 * time.Second)
	took := time.Since(at)
	t.Logf("exit %d after %s: %s", code, took.Round(time.Millisecond), line)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, w := range []string{user, "REPLICATION SLAVE", "GRANT REPLICATION SLAVE ON *.*"} {
		if !strings.Contains(line, w) {
			t.Errorf("the error line does not say %q: %s", w, line)
		}
	}
	if strings.Contains(p.allLogs(), secret) {
		t.Errorf("the password appears in the output")
	}
	if n := strings.Count(p.allLogs(), "binlog stream starting"); n > 1 {
		t.Errorf("the stream was started %d times: a reconnect loop, not a stop", n)
	}
}

// A queue rule whose column types dialsync cannot read is refused at start
// by `run` and `check`, naming the column; a rule whose value is bad only
// for one user (2.5 claims) stops `run` at the first change that meets it,
// naming rules.queue_sql, with the checkpoint before that change; with the
// rule fixed, the change is applied.
func TestQueueRuleBadTypes(t *testing.T) {
	t.Run("text count refused at start", func(t *testing.T) {
		rule := strings.Replace(lookup.DefaultQueueSQL, "COUNT(DISTINCT c.id) AS open_claims", "'many' AS open_claims", 1)
		if rule == lookup.DefaultQueueSQL {
			t.Fatal("the default rule changed: update the test")
		}
		p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.Rules.QueueSQL = rule }})
		code, line := runUntilExit(t, p)
		t.Logf("run: exit %d: %s", code, line)
		if code != 1 {
			t.Errorf("run: exit code %d, want 1", code)
		}
		for _, w := range []string{"rules.queue_sql", "open_claims is text, want an integer", "CAST"} {
			if !strings.Contains(line, w) {
				t.Errorf("run: the error line does not say %q: %s", w, line)
			}
		}
		if ck := p.checkpointGTID(); ck != "" {
			t.Errorf("run stored a checkpoint %s with a rule it cannot read", ck)
		}
		lines, ccode := checkJSON(t, p)
		if ccode != 2 {
			t.Errorf("check: exit %d, want 2: %+v", ccode, lines)
		}
		found := false
		for _, l := range lines {
			if l.Status == "FAIL" && strings.Contains(l.Detail, "rules.queue_sql") && strings.Contains(l.Detail, "open_claims") {
				found = true
			}
		}
		if !found {
			t.Errorf("check: no FAIL line naming rules.queue_sql and open_claims: %+v", lines)
		}
	})

	t.Run("bad value at run time stops", func(t *testing.T) {
		const phone = "+440000000025"
		rule := strings.Replace(lookup.DefaultQueueSQL, "COUNT(DISTINCT c.id) AS open_claims",
			"IF(u.phone_number = '"+phone+"', 2.5, COUNT(DISTINCT c.id)) AS open_claims", 1)
		p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.Rules.QueueSQL = rule }})
		startCaughtUp(t, p)
		u, _, _ := queuedUser(t, p)
		skip := len(p.notices())
		g := sessionTxn(t, p, fmt.Sprintf("UPDATE users SET phone_number = '%s' WHERE id = %d", phone, u))
		code, line := p.waitHalt(20 * time.Second)
		t.Logf("exit %d: %s", code, line)
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		for _, w := range []string{"rules.queue_sql returned a value dialsync cannot use", fmt.Sprintf("open_claims of user %d", u), "fix the rule"} {
			if !strings.Contains(line, w) {
				t.Errorf("the error line does not say %q: %s", w, line)
			}
		}
		if strings.Contains(p.allLogs(), phone) {
			t.Errorf("a row value (the phone number) appears in the output")
		}
		assertStoppedBefore(t, p, g)
		if ucs := p.userChangedAfter(skip); len(ucs) != 0 {
			t.Errorf("notices for the change that was not applied: %+v", ucs)
		}

		// The rule fixed: the same change is applied now, nothing lost.
		// It is the first transaction after the stored checkpoint, the one
		// a wrong replay guard would skip: the guard skips nothing here.
		p.editConfig(func(c *config.Config) { c.Rules.QueueSQL = "" })
		base := enableHTTP(t)
		restartStreaming(t, p)
		noticeFor(t, p.userChangedAfter(skip), u, g)
		p.assertNoDrift()
		if v, found := scrape(t, base).sum("dialsync_replayed_transactions_total"); !found || v != 0 {
			t.Errorf("dialsync_replayed_transactions_total = %v (exported: %v), want 0 on a server that honours the start position", v, found)
		}
		if code := p.stop(); code != 0 {
			t.Fatalf("clean stop: exit %d", code)
		}
	})
}

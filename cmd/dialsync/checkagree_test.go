package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/dev/testenv"
)

// `dialsync check` fails every setup `dialsync run` refuses at start, with
// the same cause: check's FAIL line and run's error line both say want.
func TestCheckAgreesWithRun(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *badEnv)
		check string   // the check line that fails
		want  []string // in both
	}{
		{name: "postgres user without CREATE", setup: func(e *badEnv) {
			e.cfg.Postgres.DSN = pgRole(e.t, e.pgDSN)
		}, check: "postgres", want: []string{"GRANT CREATE ON DATABASE"}},
		{name: "queue rule syntax error", setup: func(e *badEnv) {
			e.cfg.Rules.QueueSQL = "SELECT FROM WHERE\n  {users}\n"
		}, check: "lookup_session", want: []string{"rules.queue_sql does not run", "syntax"}},
		{name: "queue rule with a non-integer column", setup: func(e *badEnv) {
			e.cfg.Rules.QueueSQL = "SELECT u.id AS user_id, 'x' AS open_claims, 0 AS pending_requirements, NULL AS oldest_pending_at FROM users u WHERE {users}"
		}, check: "lookup_session", want: []string{"rules.queue_sql", "open_claims"}},
		{name: "stream duplicate window too short", setup: func(e *badEnv) {
			if _, err := e.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: e.cfg.NATS.Stream,
				Subjects: []string{e.cfg.NATS.SubjectPrefix + ".>"}, Duplicates: 10 * time.Second, Storage: jetstream.MemoryStorage}); err != nil {
				e.t.Fatal(err)
			}
		}, check: "nats", want: []string{"duplicate window 10s is shorter than the required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newBadEnv(t, nil)
			tc.setup(e)
			lines, code := e.checkLines()
			l := checkResult(t, lines, tc.check)
			if code != 2 || l.Status != "FAIL" || l.Fix == "" {
				t.Fatalf("check: exit %d, %s: %+v", code, tc.check, l)
			}
			res := e.runBinary()
			line := errorLine(t, res.stderr, false)
			t.Logf("check: %s | fix: %s\nrun (exit %d): %s", l.Detail, l.Fix, res.code, line)
			if res.code != 1 {
				t.Errorf("run: exit %d, want 1", res.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(l.Detail+" "+l.Fix, w) {
					t.Errorf("check does not say %q", w)
				}
				if !strings.Contains(line, w) {
					t.Errorf("run does not say %q", w)
				}
			}
			if after := e.checkpointRow(); after != "" {
				t.Errorf("a checkpoint was stored: %s", after)
			}
		})
	}
}

// With exactly the grants the docs give (deploy/mysql/grants.sql, MariaDB
// block; deploy/postgres/grants.sql, variant B: a schema created for the
// role, no CREATE on the database), check passes with no warning, before
// the first run and after it, and run works.
func TestCheckLeastPrivilege(t *testing.T) {
	p := newPipe(t, pipeOpt{my: testenv.StartMariaDB(t, testenv.MariaDBOptions{})})
	user := fmt.Sprintf("ds_%d", nextServerID.Add(1))
	stmts := []string{fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw'", user),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", user)}
	for _, tbl := range []string{"users", "user_addresses", "claims", "claim_requirements", "claim_vehicle_packages"} {
		stmts = append(stmts, fmt.Sprintf("GRANT SELECT ON `%s`.`%s` TO '%s'@'%%'", p.name, tbl, user))
	}
	p.my.Exec(t, stmts...)
	role := pgRole(t, p.pgDSN, "CREATE SCHEMA dialsync AUTHORIZATION {role}")
	p.editConfig(func(c *config.Config) {
		c.Source.User, c.Source.Password = user, "pw"
		c.Postgres.DSN = role
	})
	assertAllOK := func(when string) {
		t.Helper()
		out, errOut, code := opsCLI(t, p, "check")
		if code != 0 || strings.Contains(out, "WARN") || strings.Contains(out, "FAIL") {
			t.Fatalf("%s: check exit %d, want 0\n%s\n%s", when, code, out, errOut)
		}
		for _, n := range []string{"grants", "log_replica_updates", "server_id", "postgres", "lookup_session", "checkpoint", "nats"} {
			if !strings.Contains(out, "OK    "+n) {
				t.Errorf("%s: no OK line for %s:\n%s", when, n, out)
			}
		}
	}
	assertAllOK("before the first run")
	startCaughtUp(t, p)
	if code := p.stop(); code != 0 {
		t.Fatalf("run with least privilege: exit %d:\n%s", code, p.logTail(30))
	}
	assertAllOK("after a run")
}

// The read-only commands never migrate: against a migrated schema they
// work for a role that may not CREATE anything (USAGE + SELECT), and
// against a database with no schema yet they say so and create nothing.
func TestReadOnlyCommandsNeverMigrate(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	user, _, _ := queuedUser(t, p)
	readOnly := [][]string{
		{"checkpoint", "show"}, {"checkpoint", "history"}, {"deadletters", "list"},
		{"reconcile", "--dry-run"}, {"explain", fmt.Sprint(user)},
	}
	// No schema yet (the role could not create one anyway).
	p.editConfig(func(c *config.Config) { c.Postgres.DSN = pgRole(t, p.pgDSN) })
	for _, args := range readOnly {
		out, errOut, code := opsCLI(t, p, args...)
		if code != 1 || !strings.Contains(out+errOut, "no dialsync schema dialsync yet") || !strings.Contains(out+errOut, "run `dialsync run` once") {
			t.Errorf("%v without a schema: exit %d\n%s\n%s", args, code, out, errOut)
		}
	}
	if v, err := dbschema.Version(t.Context(), p.pg, "dialsync"); err != nil || v != 0 {
		t.Fatalf("a read-only command created the schema: version %d, %v", v, err)
	}

	// Migrated (by run, as the administrator), then read by a role with
	// USAGE and SELECT only.
	p.editConfig(func(c *config.Config) { c.Postgres.DSN = p.pgDSN })
	startCaughtUp(t, p)
	p.stop()
	ro := pgRole(t, p.pgDSN, "GRANT USAGE ON SCHEMA dialsync TO {role}", "GRANT SELECT ON ALL TABLES IN SCHEMA dialsync TO {role}")
	p.editConfig(func(c *config.Config) { c.Postgres.DSN = ro })
	for _, args := range readOnly {
		out, errOut, code := opsCLI(t, p, args...)
		if code != 0 {
			t.Errorf("%v as a read-only role: exit %d\n%s\n%s", args, code, out, errOut)
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dialsync/internal/config"
	"dialsync/internal/dev/testenv"
)

type checkLine struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

func checkJSON(t *testing.T, p *pipe) ([]checkLine, int) {
	t.Helper()
	out, errOut, code := opsCLI(t, p, "check", "--json")
	var lines []checkLine
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		t.Fatalf("check --json: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	return lines, code
}

func statusOf(t *testing.T, lines []checkLine, name string) checkLine {
	t.Helper()
	for _, l := range lines {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no %q line in %+v", name, lines)
	return checkLine{}
}

// Exit codes: 0 all OK (least-privilege user, everything set up), 1 with
// warnings (root: more grants than needed), 2 with a failure; an
// unreachable server is a FAIL line and the other checks still run.
func TestCheckCommand(t *testing.T) {
	p := newPipe(t, pipeOpt{my: testenv.StartMariaDB(t, testenv.MariaDBOptions{})})

	// Before the first run: the schema does not exist yet and the stream
	// neither (OK: run creates them, nothing to fix), and root's grants
	// warn (more than needed: REVOKE).
	lines, code := checkJSON(t, p)
	if code != 1 {
		t.Fatalf("fresh setup as root: exit %d, want 1: %+v", code, lines)
	}
	if l := statusOf(t, lines, "grants"); l.Status != "WARN" || l.Fix == "" {
		t.Errorf("grants: want WARN with a fix, got %+v", l)
	}
	if l := statusOf(t, lines, "postgres"); l.Status != "OK" || !strings.Contains(l.Detail, "creates it") {
		t.Errorf("postgres: want OK (run creates the schema, nothing to fix), got %+v", l)
	}
	for _, l := range lines {
		if l.Status == "WARN" && l.Name != "grants" {
			t.Errorf("a WARN that needs no fix: %+v", l)
		}
	}
	if l := statusOf(t, lines, "nats"); l.Status != "OK" || !strings.Contains(l.Detail, "creates it") {
		t.Errorf("nats: want OK (run creates the stream), got %+v", l)
	}
	for _, l := range lines {
		if l.Status == "FAIL" {
			t.Errorf("unexpected failure: %+v", l)
		}
	}

	startCaughtUp(t, p)
	p.stop()

	// A least-privilege account, exactly deploy/mysql/grants.sql's MariaDB
	// grants: all OK, exit 0.
	user := "ds_" + fmt.Sprint(nextServerID.Add(1))
	p.my.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw'", user),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", user),
		fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", p.name, user))
	p.editConfig(func(c *config.Config) { c.Source.User, c.Source.Password = user, "pw" })
	out, errOut, code := opsCLI(t, p, "check")
	if code != 0 || strings.Contains(out, "WARN") || strings.Contains(out, "FAIL") {
		t.Fatalf("least privilege: exit %d, want 0\n%s\n%s", code, out, errOut)
	}
	for _, n := range []string{"log_bin", "binlog_format", "binlog_row_image", "grants", "server_id", "checkpoint", "lookup_server", "postgres", "redis", "nats", "tables"} {
		if !strings.Contains(out, "OK    "+n) {
			t.Errorf("no OK line for %s:\n%s", n, out)
		}
	}

	// Unreachable Redis and source: FAIL lines naming the config key; the
	// PostgreSQL and NATS checks still ran.
	p.editConfig(func(c *config.Config) { c.Redis.Addr, c.Source.Addr = closedPort(t), closedPort(t) })
	lines, code = checkJSON(t, p)
	if code != 2 {
		t.Fatalf("unreachable servers: exit %d, want 2: %+v", code, lines)
	}
	if l := statusOf(t, lines, "source"); l.Status != "FAIL" || !strings.Contains(l.Fix, "source.addr") {
		t.Errorf("source: %+v", l)
	}
	if l := statusOf(t, lines, "redis"); l.Status != "FAIL" || !strings.Contains(l.Fix, "redis.addr") {
		t.Errorf("redis: %+v", l)
	}
	for _, n := range []string{"postgres", "nats"} {
		if l := statusOf(t, lines, n); l.Status != "OK" {
			t.Errorf("%s must still be checked: %+v", n, l)
		}
	}

	// A bad config is a usage error (exit 2) before any check.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("[source]\nnope = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := Main([]string{"check", "--config", bad}, &strings.Builder{}, &strings.Builder{}); code != exitUsage {
		t.Errorf("bad config: exit %d", code)
	}
}

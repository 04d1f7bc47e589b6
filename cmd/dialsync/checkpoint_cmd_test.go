package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"dialsync/internal/dev/testenv"
)

// opsCLI runs the dialsync binary with args (the pipe's --config appended)
// and returns its output and exit code.
func opsCLI(t *testing.T, p *pipe, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	// The harness's config logs at debug level (for run); these commands'
	// stderr is checked for their own lines, so at info level their log is
	// warnings only.
	return runCLI(t, 0, []string{"DIALSYNC_LOG_LEVEL=info"}, append(args, "--config", p.cfgPath)...)
}

// opsOK runs a command that must succeed and returns its stdout.
func opsOK(t *testing.T, p *pipe, args ...string) string {
	t.Helper()
	out, errOut, code := opsCLI(t, p, args...)
	if code != 0 {
		t.Fatalf("dialsync %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

// opsFails runs a command that must exit with code and say want on stderr
// in one line.
func opsFails(t *testing.T, p *pipe, code int, want string, args ...string) {
	t.Helper()
	out, errOut, got := opsCLI(t, p, args...)
	if got != code || !strings.Contains(errOut, want) {
		t.Fatalf("dialsync %v: want exit %d and %q, got exit %d\nstdout:\n%s\nstderr:\n%s", args, code, want, got, out, errOut)
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n > 0 && code == exitUsage && !strings.Contains(errOut, "usage:") {
		t.Errorf("dialsync %v: want a one-line error, got:\n%s", args, errOut)
	}
}

type showJSON struct {
	Stored         bool    `json:"stored"`
	File           string  `json:"file"`
	Pos            uint32  `json:"pos"`
	GTIDSet        string  `json:"gtid_set"`
	BytesBehind    *uint64 `json:"bytes_behind"`
	OnServer       *bool   `json:"on_server"`
	OnServerDetail string  `json:"on_server_detail"`
	SourceError    string  `json:"source_error"`
	LeaseHeld      bool    `json:"lease_held"`
	LeaseHolder    string  `json:"lease_holder"`
	AgeSeconds     *float64
}

func showCkpt(t *testing.T, p *pipe) showJSON {
	t.Helper()
	var s showJSON
	if err := json.Unmarshal([]byte(opsOK(t, p, "checkpoint", "show", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

type historyJSON struct {
	ID     int64  `json:"id"`
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
	Old    struct {
		File    string `json:"file"`
		Pos     uint32 `json:"pos"`
		GTIDSet string `json:"gtid_set"`
	} `json:"old"`
	New struct {
		File    string `json:"file"`
		Pos     uint32 `json:"pos"`
		GTIDSet string `json:"gtid_set"`
	} `json:"new"`
}

func historyCkpt(t *testing.T, p *pipe) []historyJSON {
	t.Helper()
	var h []historyJSON
	if err := json.Unmarshal([]byte(opsOK(t, p, "checkpoint", "history", "--json")), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// binlogEvent is a row of SHOW BINLOG EVENTS on the pipe's source.
type binlogEvent struct {
	pos, end uint32
	typ      string
}

func binlogEvents(t *testing.T, p *pipe, file string) []binlogEvent {
	t.Helper()
	rows, err := p.src.Query("SHOW BINLOG EVENTS IN '" + file + "'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []binlogEvent
	for rows.Next() {
		var name, typ, info string
		var pos, end uint32
		var sid uint64
		if err := rows.Scan(&name, &pos, &typ, &sid, &end, &info); err != nil {
			t.Fatal(err)
		}
		out = append(out, binlogEvent{pos, end, typ})
	}
	return out
}

// squash collapses runs of blanks, so tests do not depend on column widths.
func squash(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// purgeAll rotates the binlog and purges every file but the new one; it
// returns the new file's name. MariaDB keeps a file until the storage
// engine has made its transactions durable (its binlog checkpoint), so
// the purge is retried for a while.
func purgeAll(t *testing.T, my *testenv.MariaDB) string {
	t.Helper()
	my.Exec(t, "FLUSH BINARY LOGS")
	conn := my.Conn(t, "")
	var last string
	waitFor(t, 20*time.Second, "binlog purge", func() bool {
		r, err := conn.Execute("SHOW BINARY LOGS")
		if err != nil {
			t.Fatal(err)
		}
		last, _ = r.GetString(r.RowNumber()-1, 0)
		last = strings.Clone(last)
		if r.RowNumber() == 1 {
			return true
		}
		if _, err := conn.Execute("PURGE BINARY LOGS TO '" + last + "'"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	return last
}

func osUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		return os.Getenv("USER")
	}
	return u.Username
}

// Every subcommand, and the refusals while `run` holds the lease.
func TestCheckpointCommands(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)

	// While run holds the lease: show works, every change refuses naming
	// the holder.
	waitFor(t, 10*time.Second, "lease held", func() bool { return showCkpt(t, p).LeaseHeld })
	s := showCkpt(t, p)
	if !s.Stored || s.OnServer == nil || !*s.OnServer || !strings.Contains(s.LeaseHolder, "/pid-") {
		t.Fatalf("show while running: %+v", s)
	}
	refusal := fmt.Sprintf("refusing: instance %s holds the lease for pipeline p_%s", s.LeaseHolder, p.name)
	opsFails(t, p, exitFailure, refusal, "checkpoint", "set", "--file", s.File, "--pos", "4", "--reason", "test")
	opsFails(t, p, exitFailure, "stop it first", "checkpoint", "reset", "--reason", "test")
	opsFails(t, p, exitFailure, refusal, "checkpoint", "reset", "--to-head", "--reason", "test")
	opsFails(t, p, exitFailure, refusal, "checkpoint", "rollback", "--to", "1", "--reason", "test")
	if code := p.stop(); code != 0 {
		t.Fatalf("run exit %d", code)
	}

	// Text show.
	out := squash(opsOK(t, p, "checkpoint", "show"))
	for _, want := range []string{"position: " + s.File, "on server: yes", "behind: 0 bytes", "lease: free (last holder"} {
		if !strings.Contains(out, want) {
			t.Errorf("show: %q missing:\n%s", want, out)
		}
	}

	// Invalid input: one line, exit 2.
	opsFails(t, p, exitUsage, "--reason is required", "checkpoint", "set", "--file", s.File, "--pos", "4")
	opsFails(t, p, exitUsage, "not a valid mariadb GTID set", "checkpoint", "set", "--gtid", "garbage", "--reason", "r")
	opsFails(t, p, exitUsage, "not a valid mariadb GTID set", "checkpoint", "set", "--gtid", "0-1-x", "--reason", "r", "--force")
	opsFails(t, p, exitUsage, "is not a binlog offset", "checkpoint", "set", "--file", s.File, "--pos", "-5", "--reason", "r")
	opsFails(t, p, exitUsage, "is not on the source", "checkpoint", "set", "--file", "mysql-bin.999999", "--pos", "4", "--reason", "r")
	opsFails(t, p, exitUsage, "past the end", "checkpoint", "set", "--file", s.File, "--pos", "999999999", "--reason", "r")
	opsFails(t, p, exitUsage, "ahead of the source", "checkpoint", "set", "--gtid", "0-1000-99999999", "--reason", "r")
	opsFails(t, p, exitUsage, "not a history entry id", "checkpoint", "rollback", "--to", "abc", "--reason", "r")
	opsFails(t, p, exitUsage, "no history entry 999999", "checkpoint", "rollback", "--to", "999999", "--reason", "r")
	opsFails(t, p, exitUsage, "unknown subcommand", "checkpoint", "frobnicate")

	// A position inside a transaction is refused, naming the nearest
	// boundaries; --force stores it.
	p.exec("UPDATE users SET updated_at = NOW() WHERE id <= 3")
	file := s.File
	var inside, boundary uint32
	for _, e := range binlogEvents(t, p, file) {
		if e.typ == "Table_map" && e.pos > s.Pos {
			inside = e.end
		}
		if e.typ == "Xid" {
			boundary = e.end
		}
	}
	if inside == 0 || boundary <= inside {
		t.Fatalf("no transaction found in %s after %d", file, s.Pos)
	}
	opsFails(t, p, exitUsage, "is not a transaction boundary", "checkpoint", "set", "--file", file, "--pos", strconv.Itoa(int(inside)), "--reason", "try inside")
	out = opsOK(t, p, "checkpoint", "set", "--file", file, "--pos", strconv.Itoa(int(inside)), "--reason", "forced inside", "--force")
	if !strings.Contains(out, "history entry") {
		t.Errorf("set output: %s", out)
	}
	if g := showCkpt(t, p); g.File != file || g.Pos != inside || g.GTIDSet != "" {
		t.Fatalf("after forced set: %+v", g)
	}
	opsOK(t, p, "checkpoint", "set", "--file", file, "--pos", strconv.Itoa(int(boundary)), "--reason", "at a boundary")
	if g := showCkpt(t, p); g.Pos != boundary || g.BytesBehind == nil || *g.BytesBehind != 0 {
		t.Fatalf("after set at the boundary: %+v", g)
	}
	opsOK(t, p, "checkpoint", "set", "--gtid", s.GTIDSet, "--reason", "back by gtid")

	// History: newest first, with the OS user and the reasons.
	h := historyCkpt(t, p)
	if len(h) != 3 || h[0].Reason != "back by gtid" || h[1].Reason != "at a boundary" || h[2].Reason != "forced inside" {
		t.Fatalf("history: %+v", h)
	}
	me := osUser(t)
	for _, e := range h {
		if e.Actor != me {
			t.Errorf("history actor %q, want %q", e.Actor, me)
		}
	}
	if h[2].Old.GTIDSet != s.GTIDSet || h[2].New.Pos != inside || h[0].New.GTIDSet != s.GTIDSet {
		t.Errorf("history old/new: %+v", h)
	}
	if out := opsOK(t, p, "checkpoint", "history", "--limit", "1"); !strings.Contains(out, "back by gtid") || strings.Contains(out, "at a boundary") {
		t.Errorf("history --limit 1:\n%s", out)
	}

	// Rollback to the boundary entry.
	opsOK(t, p, "checkpoint", "rollback", "--to", strconv.FormatInt(h[1].ID, 10), "--reason", "undo")
	if g := showCkpt(t, p); g.File != file || g.Pos != boundary {
		t.Fatalf("after rollback: %+v", g)
	}
	if h := historyCkpt(t, p); len(h) != 4 || !strings.Contains(h[0].Reason, fmt.Sprintf("rollback to history entry %d: undo", h[2].ID)) {
		t.Fatalf("history after rollback: %+v", h)
	}

	// Plain reset: removed; the next run bootstraps.
	out = opsOK(t, p, "checkpoint", "reset", "--reason", "start over")
	if !strings.Contains(out, "next `dialsync run` bootstraps") {
		t.Errorf("reset output: %s", out)
	}
	if g := showCkpt(t, p); g.Stored {
		t.Fatalf("after reset: %+v", g)
	}
	if !strings.Contains(squash(opsOK(t, p, "checkpoint", "show")), "checkpoint: none") {
		t.Error("show after reset must say none")
	}

	// And it all still streams: roll back to the boundary, run, no drift.
	opsOK(t, p, "checkpoint", "rollback", "--to", strconv.FormatInt(h[1].ID, 10), "--reason", "resume")
	p.start()
	// A change that surely writes a binlog event (a no-op UPDATE writes none).
	p.exec("UPDATE users SET status = IF(status = 'active', 'inactive', 'active') WHERE id = 5")
	p.waitCaughtUp(30 * time.Second)
	p.assertNoDrift()
}

// Binlog purged past the checkpoint: check and show report it, run fails,
// and reset --to-head brings the pipeline back with a correct queue.
func TestCheckpointPurgedRecovery(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	p := newPipe(t, pipeOpt{my: my})
	startCaughtUp(t, p)
	p.stop()

	// Changes while stopped, then their binlog is purged: only a
	// reconcile can bring the queue back in step.
	p.exec("UPDATE users SET status = 'inactive' WHERE id % 3 = 0",
		"UPDATE claim_requirements SET status = 'DONE' WHERE id % 4 = 0")
	last := purgeAll(t, my)
	if len(p.queueDrift()) == 0 {
		t.Fatal("the changes must have drifted the queue")
	}

	out, _, code := opsCLI(t, p, "check")
	if code != 2 || !strings.Contains(out, "FAIL  checkpoint") || !strings.Contains(out, "dialsync checkpoint reset --to-head") {
		t.Fatalf("check after the purge: exit %d\n%s", code, out)
	}
	s := showCkpt(t, p)
	if s.OnServer == nil || *s.OnServer || !strings.Contains(s.OnServerDetail, "purged") || s.BytesBehind != nil {
		t.Fatalf("show after the purge: %+v", s)
	}
	if out := squash(opsOK(t, p, "checkpoint", "show")); !strings.Contains(out, "on server: NO") || !strings.Contains(out, "reset --to-head") {
		t.Errorf("show text after the purge:\n%s", out)
	}

	// run refuses to go on (recovery.on_purged defaults to "fail").
	p.start()
	waitFor(t, 30*time.Second, "run to exit", p.exited)
	if code := p.stop(); code == 0 || !strings.Contains(p.allLogs(), "checkpoint reset --to-head") {
		t.Fatalf("run after the purge: exit %d\n%s", code, p.logTail(20))
	}

	out = opsOK(t, p, "checkpoint", "reset", "--to-head", "--reason", "binlog purged")
	if !strings.Contains(out, "reconcile done") {
		t.Fatalf("reset --to-head output:\n%s", out)
	}
	p.assertNoDrift() // the reconcile alone fixed the queue
	h := historyCkpt(t, p)
	if len(h) == 0 || h[0].Reason != "binlog purged" || h[0].New.File != last {
		t.Fatalf("history after reset --to-head: %+v", h)
	}

	p.start()
	p.exec("UPDATE users SET status = IF(status = 'active', 'inactive', 'active') WHERE id % 5 = 0")
	p.waitCaughtUp(30 * time.Second)
	if d := p.queueDrift(); len(d) != 0 {
		t.Fatalf("queue drift after recovery: %v", d)
	}
	if out, _, code := opsCLI(t, p, "check"); code == 2 {
		t.Fatalf("check after recovery still fails:\n%s", out)
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
)

// logRecord is one decoded JSON log line: its keys in order (top level and
// nested, dotted) and the top-level values.
type logRecord struct {
	line string
	keys []string
	vals map[string]any
}

// decodeLogLine walks a JSON object token by token: encoding/json's
// Unmarshal keeps the last of two equal keys without a word, and some log
// stores reject such records, so duplicates are found here.
func decodeLogLine(line string) (logRecord, error) {
	rec := logRecord{line: line, vals: map[string]any{}}
	err := walkObject([]byte(line), "", &rec.keys, rec.vals)
	return rec, err
}

// walkObject checks that raw is one JSON object with no key twice (nested
// objects too), appends its keys (dotted) to keys and, when top is not
// nil, stores its values there.
func walkObject(raw []byte, prefix string, keys *[]string, top map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("not a JSON object (%v)", err)
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k := t.(string) // object keys are strings
		if seen[k] {
			return fmt.Errorf("key %q twice in one object", prefix+k)
		}
		seen[k] = true
		*keys = append(*keys, prefix+k)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if v[0] == '{' {
			if err := walkObject(v, prefix+k+".", keys, nil); err != nil {
				return err
			}
		}
		if top != nil {
			d := json.NewDecoder(bytes.NewReader(v))
			d.UseNumber()
			var val any
			if err := d.Decode(&val); err != nil {
				return err
			}
			top[k] = val
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("text after the object")
	}
	return nil
}

func TestDecodeLogLineFindsDuplicates(t *testing.T) {
	for _, bad := range []string{
		`{"msg":"x","pipeline":"a","component":"lease","pipeline":"a"}`,
		`{"msg":"x","config":{"host":"h","host":"h"}}`,
		`redis: 2026/12/04 03:13:25 pool.go:770: connection pool: failed to dial`,
		`{"msg":"x"} trailing`,
	} {
		if _, err := decodeLogLine(bad); err == nil {
			t.Errorf("decodeLogLine(%s) accepted it", bad)
		}
	}
	rec, err := decodeLogLine(`{"msg":"x","took":"82ms","config":{"a":1,"b":{"c":2}},"n":3}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.keys, " "); got != "msg took config config.a config.b config.b.c n" {
		t.Errorf("keys %q", got)
	}
}

// durationKey matches the log keys that carry a duration.
var durationKey = regexp.MustCompile(`(^|_)(took|after|ttl|age|elapsed|wait|backoff|duration|window|timeout|interval|lag|heartbeat)($|_)`)

// checkLogRecords decodes every line of a command's stderr as a JSON log
// record and fails on: a line that is not one JSON object (a library's
// raw line), a key twice in one record, a duration that is not a Go
// duration string, a warning with "err":null. It returns the records. The
// one exception is the last line of a failed command, "dialsync: <error>"
// (README, "Commands and exit codes"), which must then also be a record.
func checkLogRecords(t *testing.T, stderr string) []logRecord {
	t.Helper()
	var recs []logRecord
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if last := lines[len(lines)-1]; strings.HasPrefix(last, "dialsync: ") {
		stderr = strings.Join(lines[:len(lines)-1], "\n")
		defer func() {
			if len(recordsWith(recs, "stopped on error")) != 1 {
				t.Errorf("the error %q is not a log record too", last)
			}
		}()
	}
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		rec, err := decodeLogLine(line)
		if err != nil {
			t.Errorf("log line is not a well-formed JSON record (%v): %s", err, line)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec.vals[k]; !ok {
				t.Errorf("log record without %q: %s", k, line)
			}
		}
		for k, v := range rec.vals {
			if !durationKey.MatchString(k) {
				continue
			}
			switch v := v.(type) {
			case json.Number:
				t.Errorf("duration %q is a number (%s), want a Go duration string: %s", k, v, line)
			case string:
				if _, err := time.ParseDuration(v); err != nil && !strings.HasSuffix(k, "_at") {
					t.Errorf("duration %q = %q is not a Go duration string: %s", k, v, line)
				}
			}
		}
		if rec.vals["level"] == "WARN" || rec.vals["level"] == "ERROR" {
			if v, ok := rec.vals["err"]; ok && v == nil {
				t.Errorf("%s with \"err\":null: %s", rec.vals["level"], line)
			}
		}
		recs = append(recs, rec)
	}
	return recs
}

func recordsWith(recs []logRecord, msgPart string) []logRecord {
	var out []logRecord
	for _, r := range recs {
		if m, _ := r.vals["msg"].(string); strings.Contains(m, msgPart) {
			out = append(out, r)
		}
	}
	return out
}

// A full run's log, as a log store receives it (stderr not a terminal):
// one JSON object per line, no key twice in a record, durations as Go
// duration strings, nothing false at a clean stop (no "nats disconnected"
// warning with a nil error, no "standby" for a lone instance), and what is
// true about binlog_order_commits on MariaDB. Then a one-shot command:
// its result on stdout, and no INFO chatter on stderr unless log.level is
// debug.
func TestLogsAreWellFormedJSON(t *testing.T) {
	p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.Log.Level = "debug" }})
	startCaughtUp(t, p)
	user, _, req := queuedUser(t, p)
	p.exec(fmt.Sprintf("UPDATE claim_requirements SET status = 'DONE' WHERE id = %d", req),
		fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id = %d", user))
	p.waitCaughtUp(30 * time.Second)
	if code := p.stop(); code != 0 {
		t.Fatalf("run: exit %d after SIGTERM", code)
	}
	recs := checkLogRecords(t, p.allLogs())
	if len(recs) < 10 {
		t.Fatalf("only %d log records:\n%s", len(recs), p.allLogs())
	}
	// The duration check must have had something to check.
	took := 0
	for _, r := range recs {
		if v, ok := r.vals["took"].(string); ok && v != "" {
			took++
		}
	}
	if took == 0 {
		t.Errorf("no record with a \"took\" duration: the check above checked nothing")
	}
	if r := recordsWith(recs, "nats disconnected"); len(r) > 0 {
		t.Errorf("a clean stop logs %q", r[0].line)
	}
	if r := recordsWith(recs, "standby"); len(r) > 0 {
		t.Errorf("a lone instance says %q", r[0].line)
	}
	if len(recordsWith(recs, "lease acquired")) != 1 || len(recordsWith(recs, "stopped cleanly")) != 1 {
		t.Errorf("want one \"lease acquired\" and one \"stopped cleanly\" record")
	}
	bo := recordsWith(recs, "binlog_order_commits")
	if len(bo) != 1 || !strings.Contains(bo[0].line, "MariaDB commits in binlog order (it has no binlog_order_commits variable)") || bo[0].vals["level"] != "INFO" {
		t.Errorf("binlog_order_commits on MariaDB: want one INFO record saying MariaDB has no such variable and commits in order, got %v", bo)
	}
	for _, r := range recs {
		if r.vals["level"] == "WARN" || r.vals["level"] == "ERROR" {
			t.Errorf("a clean run logged %s", r.line)
		}
	}

	// A one-shot command: the result on stdout, nothing at INFO on stderr.
	p.editConfig(func(c *config.Config) { c.Log.Level = "info" })
	out, errOut, code := runCLI(t, 60*time.Second, nil, "reconcile", "--config", p.cfgPath)
	if code != 0 || !strings.Contains(out, "reconciled:") {
		t.Fatalf("reconcile: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if strings.TrimSpace(errOut) != "" {
		t.Errorf("reconcile at log.level info printed log lines besides its result:\n%s", errOut)
	}
	// log.level = debug brings them back, as DEBUG records.
	out, errOut, code = runCLI(t, 60*time.Second, []string{"DIALSYNC_LOG_LEVEL=debug"}, "reconcile", "--config", p.cfgPath)
	if code != 0 || !strings.Contains(out, "reconciled:") {
		t.Fatalf("reconcile (debug): exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	dbg := checkLogRecords(t, errOut)
	lease := recordsWith(dbg, "lease acquired")
	if len(lease) != 1 || lease[0].vals["level"] != "DEBUG" {
		t.Errorf("reconcile at debug: want the lease record at DEBUG, got %v\n%s", lease, errOut)
	}
	for _, r := range dbg {
		if r.vals["level"] == "INFO" {
			t.Errorf("one-shot command logged at INFO: %s", r.line)
		}
	}
}

// Every notice carries Content-Type: application/cloudevents+json (the
// CloudEvents NATS binding, structured mode) next to its JetStream headers.
func TestNoticeContentType(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	p.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatal("no notices stored")
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		if got := m.Header.Get("Content-Type"); got != "application/cloudevents+json" {
			t.Fatalf("message %d (%s): Content-Type %q, want application/cloudevents+json; headers %v", seq, m.Subject, got, m.Header)
		}
		if m.Header.Get("Nats-Msg-Id") == "" || m.Header.Get("Nats-Expected-Stream") != p.stream {
			t.Fatalf("message %d: JetStream headers missing: %v", seq, m.Header)
		}
	}
}

func TestVersion(t *testing.T) {
	head := ""
	if b, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		head = strings.TrimSpace(string(b))
	}
	// The Makefile sets what the -ldflags build below checks.
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"-X main.version=", "-X main.commit=", "-X main.date="} {
		if !strings.Contains(string(mk), x) {
			t.Errorf("Makefile LDFLAGS lack %s", x)
		}
	}
	var first string
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		out, errOut, code := runCLI(t, 10*time.Second, nil, args...)
		if code != 0 || errOut != "" {
			t.Fatalf("dialsync %v: exit %d, stderr %q", args, code, errOut)
		}
		if first == "" {
			first = out
		} else if out != first {
			t.Errorf("dialsync %v printed\n%s\nwhile dialsync version printed\n%s", args, out, first)
		}
	}
	for _, want := range []string{"dialsync ", "commit:", "built:", "go:", "go1.", "github.com/go-mysql-org/go-mysql v1.", "github.com/jackc/pgx/v5 v5.", "github.com/redis/go-redis/v9 v9.", "github.com/nats-io/nats.go v1."} {
		if !strings.Contains(first, want) {
			t.Errorf("version output lacks %q:\n%s", want, first)
		}
	}
	out, _, code := runCLI(t, 10*time.Second, nil, "--version", "--json")
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("--version --json: exit %d, %v:\n%s", code, err, out)
	}
	if v.Version == "" || v.Go == "" || v.Platform == "" || v.Deps["github.com/go-mysql-org/go-mysql"] == "" {
		t.Errorf("--json lacks fields: %+v", v)
	}
	// Without -ldflags the commit comes from Go's VCS stamp, when the
	// build had one (GOFLAGS=-buildvcs=false turns it off).
	if v.Commit != "" && v.Commit != head {
		t.Errorf("commit %q, want HEAD %q", v.Commit, head)
	}
	if _, _, code := runCLI(t, 10*time.Second, nil, "version", "extra"); code != exitUsage {
		t.Errorf("version extra: exit %d, want 2", code)
	}

	// What the Makefile and the Dockerfile set with -ldflags wins.
	bin := filepath.Join(t.TempDir(), "dialsync")
	build := exec.Command("go", "build", "-o", bin, "-ldflags",
		"-X main.version=v9.8.7 -X main.commit=0123456789abcdef -X main.date=2030-01-02T03:04:05Z", "dialsync/cmd/dialsync")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Version != "v9.8.7" || v.Commit != "0123456789abcdef" || v.BuildDate != "2030-01-02T03:04:05Z" {
		t.Errorf("-ldflags values not printed: %+v", v)
	}
}

// Command-line habits: an unexpected argument is an error naming it (exit
// 2); a flag error prints that subcommand's usage, not the group's; every
// command's help names its exit codes; run -h names its signals.
func TestCommandLineHabits(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "none.toml") // never read: the arguments fail first
	for _, args := range [][]string{
		{"run", "extra-arg", "--config", cfg},
		{"check", "extra-arg"},
		{"version", "extra-arg"},
		{"watch", "extra-arg"},
		{"reconcile", "extra-arg"},
		{"checkpoint", "show", "extra-arg"},
		{"deadletters", "list", "extra-arg"},
		{"explain", "1", "extra-arg"},
	} {
		_, errOut, code := runCLI(t, 10*time.Second, nil, args...)
		if code != exitUsage || !strings.Contains(errOut, "extra-arg") {
			t.Errorf("dialsync %v: exit %d, want 2 naming the argument; stderr:\n%s", args, code, errOut)
		}
	}

	_, errOut, code := runCLI(t, 10*time.Second, nil, "checkpoint", "show", "--bogus")
	if code != exitUsage || !strings.Contains(errOut, "-bogus") {
		t.Fatalf("checkpoint show --bogus: exit %d:\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "usage: dialsync checkpoint show [--config PATH] [--json]") ||
		strings.Contains(errOut, "rollback --to") || !strings.Contains(errOut, "Exit status") {
		t.Errorf("checkpoint show --bogus: want show's usage only (with its exit status), got:\n%s", errOut)
	}

	_, errOut, code = runCLI(t, 10*time.Second, nil, "run", "-h")
	if code != 0 {
		t.Errorf("run -h: exit %d", code)
	}
	for _, want := range []string{"Streams the source's binlog", "INT, TERM", "second INT/TERM", "130", "HUP", "Exit status: 0", "-config"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("run -h lacks %q:\n%s", want, errOut)
		}
	}
	for _, args := range [][]string{{"run"}, {"check"}, {"checkpoint"}, {"checkpoint", "set"}, {"reconcile"}, {"deadletters"}, {"deadletters", "retry"}, {"explain"}, {"watch"}, {"version"}, {"completion"}} {
		_, errOut, _ := runCLI(t, 10*time.Second, nil, append(args, "-h")...)
		if !regexp.MustCompile(`Exit (status|code)s?:? `).MatchString(errOut) || !strings.Contains(errOut, "2") {
			t.Errorf("dialsync %v -h names no exit codes:\n%s", args, errOut)
		}
	}
	_, errOut, _ = runCLI(t, 10*time.Second, nil, "help")
	if !strings.Contains(errOut, "Exit codes:") || !strings.Contains(errOut, "--version") {
		t.Errorf("dialsync help names no exit codes or --version:\n%s", errOut)
	}
}

// A DIALSYNC_ variable that is no config key is an error naming it (exit
// 2), in every command that reads the configuration; the project's own
// variables (NotConfigEnv) pass.
func TestUnknownEnvironmentVariable(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	for _, args := range [][]string{{"run"}, {"checkpoint", "show"}, {"check"}, {"config", "validate"}} {
		_, errOut, code := runCLI(t, 30*time.Second, []string{"DIALSYNC_SOURCE_ADRR=127.0.0.1:1"}, append(args, "--config", p.cfgPath)...)
		if code != exitUsage || !strings.Contains(errOut, "DIALSYNC_SOURCE_ADRR (did you mean DIALSYNC_SOURCE_ADDR?) matches no config key") {
			t.Errorf("dialsync %v with DIALSYNC_SOURCE_ADRR: exit %d, stderr:\n%s", args, code, errOut)
		}
	}
	out, errOut, code := runCLI(t, 30*time.Second, []string{"DIALSYNC_TEST_POSTGRES=" + p.pgDSN, "DIALSYNC_SEED_DEFAULT=1"}, "config", "validate", "--config", p.cfgPath)
	if code != 0 || !strings.Contains(out, "config OK") {
		t.Errorf("config validate with the project's own DIALSYNC_TEST_POSTGRES: exit %d\n%s\n%s", code, out, errOut)
	}
}

// checkpoint show: a GTID-only checkpoint prints no ":0" position, and an
// unreachable source is a partial answer: the stored checkpoint is printed,
// the exit code is 1 (like explain's).
func TestCheckpointShowPartialAnswers(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	p.stop()
	gtid := p.checkpointGTID()
	opsOK(t, p, "checkpoint", "set", "--gtid", gtid, "--reason", "test: GTID only", "--force")
	out := opsOK(t, p, "checkpoint", "show")
	if strings.Contains(out, ":0\n") || !strings.Contains(out, "(none: GTID only)") || !strings.Contains(out, gtid) {
		t.Errorf("GTID-only checkpoint shown as:\n%s", out)
	}

	p.editConfig(func(c *config.Config) { c.Source.Addr = closedPort(t) })
	for _, asJSON := range []bool{false, true} {
		args := []string{"checkpoint", "show"}
		if asJSON {
			args = append(args, "--json")
		}
		out, errOut, code := opsCLI(t, p, args...)
		if code != exitFailure {
			t.Errorf("%v, source unreachable: exit %d, want 1\n%s\n%s", args, code, out, errOut)
		}
		if !strings.Contains(out, gtid) || !strings.Contains(errOut, "incomplete: the source could not be read") {
			t.Errorf("%v, source unreachable: want the stored checkpoint printed and the reason on stderr\nstdout:\n%s\nstderr:\n%s", args, out, errOut)
		}
	}
}

// http.listen off loopback: a WARN line in check, FAIL with http.pprof;
// run says it at start.
func TestHTTPListenWarning(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	p.editConfig(func(c *config.Config) { c.HTTP.Listen = "0.0.0.0:9120" })
	lines, _ := checkJSON(t, p)
	if l := statusOf(t, lines, "http.listen"); l.Status != "WARN" || !strings.Contains(l.Detail, "not a loopback address") {
		t.Errorf("check, http.listen 0.0.0.0: %+v", l)
	}
	p.editConfig(func(c *config.Config) { c.HTTP.Pprof = true })
	lines, code := checkJSON(t, p)
	if l := statusOf(t, lines, "http.listen"); l.Status != "FAIL" || !strings.Contains(l.Detail, "pprof") || code != 2 {
		t.Errorf("check, pprof on 0.0.0.0: exit %d, %+v", code, l)
	}
	p.editConfig(func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:0"; c.HTTP.Pprof = false })
	lines, _ = checkJSON(t, p)
	if l := statusOf(t, lines, "http.listen"); l.Status != "OK" {
		t.Errorf("check, loopback: %+v", l)
	}

	// run warns before it opens anything: with PostgreSQL unreachable it
	// then stops, so nothing listens on 0.0.0.0 here.
	p.editConfig(func(c *config.Config) {
		c.HTTP.Listen, c.HTTP.Pprof = "0.0.0.0:9120", true
		c.Postgres.DSN = "postgres://postgres@" + closedPort(t) + "/x?sslmode=disable&connect_timeout=2"
	})
	_, errOut, code := runCLI(t, 60*time.Second, nil, "run", "--config", p.cfgPath)
	if code != exitFailure {
		t.Fatalf("run with PostgreSQL down: exit %d\n%s", code, errOut)
	}
	recs := checkLogRecords(t, errOut)
	w := recordsWith(recs, "http.listen")
	if len(w) != 1 || w[0].vals["level"] != "ERROR" || !strings.Contains(w[0].line, "pprof") {
		t.Errorf("run with pprof on 0.0.0.0: want one ERROR record, got %v\n%s", w, errOut)
	}
}

// dialsync completion bash|zsh: the scripts complete commands,
// subcommands and flags from the binary's own flag sets.
func TestCompletion(t *testing.T) {
	bash, _, code := runCLI(t, 10*time.Second, nil, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d", code)
	}
	script := filepath.Join(t.TempDir(), "dialsync.bash")
	if err := os.WriteFile(script, []byte(bash), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		sh := fmt.Sprintf(`source %q; COMP_WORDS=(%s); COMP_CWORD=%d; _dialsync; echo "${COMPREPLY[*]}"`, script, strings.Join(quoted, " "), len(words)-1)
		b, err := exec.Command("bash", "--norc", "-c", sh).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, b)
		}
		return strings.TrimSpace(string(b))
	}
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"dialsync", "che"}, "check checkpoint"},
		{[]string{"dialsync", "checkpoint", ""}, "show set reset history rollback"},
		{[]string{"dialsync", "checkpoint", "set", "--"}, "--config --file --force --gtid --pos --reason"},
		{[]string{"dialsync", "deadletters", "retry", "--a"}, "--all"},
		{[]string{"dialsync", "reconcile", "--d"}, "--dry-run"},
		{[]string{"dialsync", "completion", ""}, "bash zsh"},
		{[]string{"dialsync", "--ver"}, "--version"},
	} {
		if got := complete(c.words...); got != c.want {
			t.Errorf("bash completion of %q: %q, want %q", c.words, got, c.want)
		}
	}

	zsh, _, code := runCLI(t, 10*time.Second, nil, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(zsh, "#compdef dialsync\n") {
		t.Fatalf("completion zsh: exit %d:\n%s", code, zsh)
	}
	for _, want := range []string{"'checkpoint:", "compadd show set reset history rollback", "'--to-head[", "'--config[configuration file]:config:_files'"} {
		if !strings.Contains(zsh, want) {
			t.Errorf("zsh script lacks %q", want)
		}
	}
	if _, _, code := runCLI(t, 10*time.Second, nil, "completion", "fish"); code != exitUsage {
		t.Errorf("completion fish: exit %d, want 2", code)
	}
	// Where zsh is installed, run the script with the completion
	// functions replaced by printers.
	zshBin, err := exec.LookPath("zsh")
	if err != nil {
		t.Log("zsh not installed: the zsh script was checked as text only")
		return
	}
	zscript := filepath.Join(t.TempDir(), "_dialsync")
	if err := os.WriteFile(zscript, []byte(zsh), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(zshBin, "-n", zscript).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, b)
	}
	sh := fmt.Sprintf(`_describe() { print -r -- "describe: $*"; }
compadd() { print -r -- "compadd: $*"; }
_arguments() { print -r -- "arguments: ${(j:|:)@}"; }
compdef() { :; }
source %q
words=(dialsync checkpoint show --); CURRENT=4; _dialsync
words=(dialsync deadletters ''); CURRENT=3; _dialsync
`, zscript)
	b, err := exec.Command(zshBin, "-f", "-c", sh).CombinedOutput()
	if err != nil {
		t.Fatalf("zsh: %v\n%s", err, b)
	}
	got := string(b)
	if !strings.Contains(got, "arguments: --config[configuration file]:config:_files|--json[print JSON]\n") ||
		!strings.Contains(got, "compadd: list retry\n") {
		t.Errorf("zsh completion:\n%s", got)
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
	"dialsync/internal/dev/dstest"
)

// writeTestConfig writes a valid harness config (no server is contacted by
// the config commands, so the addresses need not answer).
func writeTestConfig(t *testing.T, edit func(c *config.Config)) string {
	t.Helper()
	c := dstest.Config(dstest.Target{
		Pipeline: "cfgcmd", SourceAddr: "127.0.0.1:1", Database: "nowhere", ServerID: 77,
		PostgresDSN: "postgres://u:pg-secret-4711@127.0.0.1:1/db", RedisPrefix: "x:", NATSURL: dstest.MachineNATS,
		Stream: "S", Subjects: "s",
	})
	if edit != nil {
		edit(c)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := dstest.WriteConfig(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigValidate(t *testing.T) {
	good := writeTestConfig(t, nil)
	out, errOut, code := runCLI(t, 30*time.Second, nil, "config", "validate", "--config", good)
	if code != 0 || strings.TrimSpace(out) != "config OK" || errOut != "" {
		t.Fatalf("good file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A bad file: a rule without {users}.
	bad := writeTestConfig(t, func(c *config.Config) { c.Rules.QueueSQL = "SELECT user_id FROM claims" })
	out, errOut, code = runCLI(t, 30*time.Second, nil, "config", "validate", "--config", bad)
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, "rules.queue_sql must contain {users}") {
		t.Errorf("rule without {users}: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A range error, a type error and a syntax error.
	for doc, want := range map[string]string{
		printDoc + "\n[ha]\nlease_ttl = \"500ms\"\n":        "ha.lease_ttl",
		printDoc + "\n[apply]\nmax_batch_txns = \"many\"\n": "apply.max_batch_txns",
		printDoc + "\n[apply\n":                             "invalid TOML at line",
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCLI(t, 30*time.Second, nil, "config", "validate", "--config", path)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", want, code, out, errOut)
		}
	}

	// A bad environment override names the variable.
	out, errOut, code = runCLI(t, 30*time.Second, []string{"DIALSYNC_APPLY_MAX_BATCH_TXNS=many"}, "config", "validate", "--config", good)
	if code != 2 || out != "" || !strings.Contains(errOut, "apply.max_batch_txns (from DIALSYNC_APPLY_MAX_BATCH_TXNS)") {
		t.Errorf("bad env var: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI(t, 30*time.Second, nil, "config", "validate", "--config", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 2 || !strings.Contains(errOut, "not found") {
		t.Errorf("missing file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	_, errOut, code = runCLI(t, 30*time.Second, nil, "config", "validate", "--config", good, "extra")
	if code != 2 || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("extra argument: exit %d, stderr %q", code, errOut)
	}
}

// printDoc sets only some keys, so the others show as defaults.
const printDoc = `
[source]
addr = "127.0.0.1:1"
user = "dialsync"
server_id = 77
database = "nowhere"

[postgres]
dsn = "postgres://u:pg-secret-4711@127.0.0.1:1/db"

[nats]
stream = "S"

[reconcile]
chunk_size = 77
`

func TestConfigPrint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(printDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"DIALSYNC_HTTP_LISTEN=127.0.0.1:9333", "DIALSYNC_REDIS_PASSWORD=redis-secret-4711"}
	out, errOut, code := runCLI(t, 30*time.Second, env, "config", "print", "--config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	t.Logf("config print:\n%s", out)
	if strings.Contains(out, "secret-4711") {
		t.Fatalf("config print shows a secret:\n%s", out)
	}
	for _, want := range []string{
		"chunk_size = 77  # file\n",
		"listen = '127.0.0.1:9333'  # environment DIALSYNC_HTTP_LISTEN\n",
		"password = 'REDACTED'  # environment DIALSYNC_REDIS_PASSWORD\n",
		"dsn = 'REDACTED'  # file\n",
		"stream = 'S'  # file\n",
		"lease_ttl = '3s'  # default\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q", want)
		}
	}

	out, errOut, code = runCLI(t, 30*time.Second, env, "config", "print", "--json", "--config", path)
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "secret-4711") {
		t.Fatalf("config print --json shows a secret:\n%s", out)
	}
	var keys []config.KeySource
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	by := map[string]config.KeySource{}
	for _, k := range keys {
		by[k.Key] = k
	}
	if k := by["reconcile.chunk_size"]; k.From != config.FromFile || k.Value != float64(77) {
		t.Errorf("reconcile.chunk_size: %+v", k)
	}
	if k := by["http.listen"]; k.From != config.FromEnv || k.Env != "DIALSYNC_HTTP_LISTEN" || k.Value != "127.0.0.1:9333" {
		t.Errorf("http.listen: %+v", k)
	}
	if k := by["ha.lease_ttl"]; k.From != config.FromDefault || k.Value != "3s" {
		t.Errorf("ha.lease_ttl: %+v", k)
	}
	if k := by["postgres.dsn"]; k.Value != config.Redacted {
		t.Errorf("postgres.dsn: %+v", k)
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// LoadSources names the right origin for a key set in the file, one set in
// the environment (which also beats the file) and one left at its default,
// and never shows a secret.
func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	doc := minimal + `
[http]
listen = "127.0.0.1:9999"

[tables.claims]
on_error = "dead_letter"
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := writeSecret(t, "nats-secret-4711\n")
	c, srcs, err := LoadSources(path, envMap(map[string]string{
		"DIALSYNC_HTTP_LISTEN":        "127.0.0.1:9121",
		"DIALSYNC_SOURCE_PASSWORD":    "src-secret-4711",
		"DIALSYNC_NATS_PASSWORD_FILE": secret,
		"DIALSYNC_NATS_USER":          "natsuser",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Listen != "127.0.0.1:9121" {
		t.Fatalf("http.listen = %q", c.HTTP.Listen)
	}
	by := map[string]KeySource{}
	for _, ks := range srcs {
		by[ks.Key] = ks
	}
	if len(by) != len(c.fields()) {
		t.Errorf("%d sources for %d keys", len(by), len(c.fields()))
	}
	checks := []struct {
		key, from, env string
		value          any
	}{
		{"source.server_id", FromFile, "", uint32(4242)},
		{"tables.claims.on_error", FromFile, "", "dead_letter"},
		{"http.listen", FromEnv, "DIALSYNC_HTTP_LISTEN", "127.0.0.1:9121"},
		{"source.password", FromEnv, "DIALSYNC_SOURCE_PASSWORD", Redacted},
		{"nats.stream", FromDefault, "", "DIALSYNC"},
		{"reconcile.interval", FromDefault, "", Dur(c.Reconcile.Interval.Duration())},
	}
	for _, ch := range checks {
		ks := by[ch.key]
		if ks.From != ch.from || ks.Env != ch.env || ks.Value != ch.value {
			t.Errorf("%s: got %+v, want from %q env %q value %v", ch.key, ks, ch.from, ch.env, ch.value)
		}
	}
	if ks := by["nats.password"]; ks.SecretFile != "nats.password_file" || ks.Value != "" {
		t.Errorf("nats.password: %+v, want empty value read from nats.password_file", ks)
	}

	out := srcs.TOML()
	if strings.Contains(out, "secret-4711") {
		t.Fatalf("TOML leaks a secret:\n%s", out)
	}
	for _, want := range []string{
		"[source]\n", "server_id = 4242  # file\n",
		"[tables.claims]\non_error = 'dead_letter'  # file\n",
		"listen = '127.0.0.1:9121'  # environment DIALSYNC_HTTP_LISTEN\n",
		"password = 'REDACTED'  # environment DIALSYNC_SOURCE_PASSWORD\n",
		"stream = 'DIALSYNC'  # default\n",
		"interval = '1h'  # default\n",
		"read from the file named by nats.password_file",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("TOML lacks %q:\n%s", want, out)
		}
	}
	// The annotated output is a config file again (with the secrets that
	// were redacted put back by the environment).
	back, err := Parse(strings.NewReader(out), envMap(map[string]string{"DIALSYNC_NATS_PASSWORD": "x"}))
	if err != nil {
		t.Fatalf("annotated output does not parse: %v\n%s", err, out)
	}
	if back.Tables.Claims.OnError != OnErrorDeadLetter || back.HTTP.Listen != "127.0.0.1:9121" {
		t.Errorf("round trip lost values: %+v", back.Tables.Claims)
	}
}

// A query with newlines stays one TOML line per key.
func TestSourcesTOMLMultilineValue(t *testing.T) {
	c := mustParse(t, minimal+"\n[rules]\nqueue_sql = '''\nSELECT 1\nWHERE {users}\n'''\n", nil)
	out := c.sources().TOML()
	if !strings.Contains(out, `queue_sql = "SELECT 1\nWHERE {users}\n"  # file`) {
		t.Errorf("queue_sql not on one line:\n%s", out)
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// Markers for secrets supplied through the environment and a _file; no error
// may ever contain them.
const (
	fuzzEnvSecret   = "EnvSecret-5c1d7a"
	fuzzTokenSecret = "TokenSecret-5c1d7a"
	fuzzFileSecret  = "FileSecret-5c1d7a"
)

// FuzzParse feeds arbitrary documents to Parse: it must never panic, every
// error must be one "config: " line, and no error may contain a secret,
// whether the secret came from the environment, a file, or the document.
// Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add(minimal)
	secretFile := filepath.Join(f.TempDir(), "redis-password")
	if err := os.WriteFile(secretFile, []byte(fuzzFileSecret+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	env := envMap(map[string]string{
		"DIALSYNC_SOURCE_PASSWORD":     fuzzEnvSecret,
		"DIALSYNC_NATS_TOKEN":          fuzzTokenSecret,
		"DIALSYNC_REDIS_PASSWORD_FILE": secretFile,
	})
	f.Fuzz(func(t *testing.T, doc string) {
		if strings.Contains(doc, "5c1d7a") {
			t.Skip("the document itself holds a marker")
		}
		_, err := Parse(strings.NewReader(doc), env)
		if err == nil {
			return
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "config: ") || strings.Contains(msg, "\n") {
			t.Fatalf("error is not one config: line: %q", msg)
		}
		if strings.Contains(msg, "5c1d7a") {
			t.Fatalf("error leaks a secret from the environment or a file: %q", msg)
		}

		// Secrets written in the document: if the error changes when the
		// secret's value is replaced, the error depends on (echoes) it.
		const repl = 'Z'
		if strings.Contains(doc, "ZZZ") {
			return
		}
		for _, v := range docSecrets(doc) {
			if len(v) < 6 || strings.Count(doc, v) != 1 || !strings.Contains(msg, v) {
				continue
			}
			z := strings.Repeat(string(repl), len(v))
			_, err2 := Parse(strings.NewReader(strings.Replace(doc, v, z, 1)), env)
			if err2 != nil && strings.Contains(err2.Error(), z) {
				t.Fatalf("error echoes the secret written in the document: %q", msg)
			}
		}
	})
}

// docSecrets returns the string values of the secret keys in doc, decoded
// leniently (nil when doc is not TOML).
func docSecrets(doc string) []string {
	var m map[string]any
	if toml.Unmarshal([]byte(doc), &m) != nil {
		return nil
	}
	var out []string
	for _, key := range secretKeys {
		section, name, _ := strings.Cut(key, ".")
		if s, ok := m[section].(map[string]any); ok {
			if v, ok := s[name].(string); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// Package kubernetes_test keeps the manifests in step with the binary: the
// config.toml in configmap.yaml, with the environment the Deployment sets,
// must load through the real config parser (which rejects unknown keys).
package kubernetes_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"dialsync/internal/config"
)

// configMapTOML returns the config.toml block of configmap.yaml: the lines
// after "config.toml: |", with their indentation removed.
func configMapTOML(tb testing.TB) string {
	tb.Helper()
	raw, err := os.ReadFile("configmap.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	_, block, ok := strings.Cut(string(raw), "config.toml: |\n")
	if !ok {
		tb.Fatal("configmap.yaml has no config.toml block")
	}
	var b strings.Builder
	for _, line := range strings.Split(block, "\n") {
		if line != "" && !strings.HasPrefix(line, "    ") {
			break // end of the block scalar
		}
		b.WriteString(strings.TrimPrefix(line, "    ") + "\n")
	}
	return b.String()
}

// deploymentEnv returns the literal env values and the secret-fed names the
// Deployment sets (secret values are placeholders here).
func deploymentEnv(tb testing.TB) map[string]string {
	tb.Helper()
	raw, err := os.ReadFile("deployment.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	env := map[string]string{}
	re := regexp.MustCompile(`(?m)^\s+- name: (DIALSYNC_[A-Z_]+)\n\s+(value: "([^"]*)"|valueFrom:)`)
	for _, m := range re.FindAllStringSubmatch(string(raw), -1) {
		if m[2] == "valueFrom:" {
			env[m[1]] = "placeholder"
			if m[1] == "DIALSYNC_POSTGRES_DSN" {
				env[m[1]] = "postgres://dialsync@postgres:5432/dialler"
			}
			continue
		}
		env[m[1]] = m[3]
	}
	return env
}

func TestConfigMapLoads(t *testing.T) {
	env := deploymentEnv(t)
	for _, k := range []string{"DIALSYNC_HTTP_LISTEN", "DIALSYNC_SOURCE_PASSWORD", "DIALSYNC_POSTGRES_DSN", "DIALSYNC_REDIS_PASSWORD", "DIALSYNC_NATS_TOKEN"} {
		if _, ok := env[k]; !ok {
			t.Errorf("deployment.yaml does not set %s", k)
		}
	}
	cfg, err := config.Parse(strings.NewReader(configMapTOML(t)), func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatalf("config.toml of configmap.yaml with the Deployment's env: %v", err)
	}
	if cfg.HTTP.Listen != "0.0.0.0:9120" {
		t.Errorf("http listen = %q, want 0.0.0.0:9120 (probes and Prometheus reach the pod)", cfg.HTTP.Listen)
	}
	if cfg.Source.ServerID == 0 || cfg.Source.Password != "placeholder" {
		t.Errorf("source server_id %d, password from env %v", cfg.Source.ServerID, cfg.Source.Password == "placeholder")
	}
}

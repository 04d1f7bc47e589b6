package config

import (
	"strings"
	"testing"
)

func TestCheckEnv(t *testing.T) {
	if err := CheckEnv([]string{"HOME=/root", "DIALSYNC_SOURCE_ADDR=x:1", "DIALSYNC_TABLES_CLAIMS_ON_ERROR=halt", "DIALSYNC_TEST_POSTGRES=postgres://x"}); err != nil {
		t.Fatalf("known keys and the project's own variables: %v", err)
	}
	for name := range NotConfigEnv {
		if err := CheckEnv([]string{name + "=1"}); err != nil {
			t.Errorf("%s is the project's own variable: %v", name, err)
		}
	}
	// Kubernetes service links of the shipped dialsync-metrics Service.
	if err := CheckEnv([]string{"DIALSYNC_METRICS_SERVICE_HOST=10.0.0.1", "DIALSYNC_METRICS_SERVICE_PORT=9120",
		"DIALSYNC_METRICS_SERVICE_PORT_METRICS=9120", "DIALSYNC_METRICS_PORT=tcp://10.0.0.1:9120",
		"DIALSYNC_METRICS_PORT_9120_TCP=tcp://10.0.0.1:9120", "DIALSYNC_METRICS_PORT_9120_TCP_PROTO=tcp",
		"DIALSYNC_METRICS_PORT_9120_TCP_PORT=9120", "DIALSYNC_METRICS_PORT_9120_TCP_ADDR=10.0.0.1"}); err != nil {
		t.Fatalf("Kubernetes service-link variables refused: %v", err)
	}
	err := CheckEnv([]string{"DIALSYNC_SOURCE_ADRR=db:3306", "DIALSYNC_SOURCE_PASWORD=hunter2", "DIALSYNC_WHATEVER=1"})
	if err == nil {
		t.Fatal("misspelt variables accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"DIALSYNC_SOURCE_ADRR (did you mean DIALSYNC_SOURCE_ADDR?)",
		"DIALSYNC_SOURCE_PASWORD (did you mean DIALSYNC_SOURCE_PASSWORD?)",
		"DIALSYNC_WHATEVER match no config key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, "db:3306") {
		t.Errorf("error quotes a value: %q", msg)
	}
	if msg := CheckEnv([]string{"DIALSYNC_SOURCE_ADRR=x"}).Error(); !strings.Contains(msg, "variable DIALSYNC_SOURCE_ADRR (did you mean DIALSYNC_SOURCE_ADDR?) matches no config key") {
		t.Errorf("one variable: %q", msg)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("not one line: %q", msg)
	}
}

func TestServerIDMessages(t *testing.T) {
	noID := strings.Replace(minimal, "server_id = 4242\n", "", 1)
	if msg := parseErr(t, noID, nil); !strings.Contains(msg, "source.server_id is required") {
		t.Errorf("missing server_id: %q", msg)
	}
	zero := strings.Replace(minimal, "server_id = 4242", "server_id = 0", 1)
	msg := parseErr(t, zero, nil)
	if strings.Contains(msg, "is required") || !strings.Contains(msg, "source.server_id is 0, which is not a valid replica server_id") {
		t.Errorf("server_id = 0: %q", msg)
	}
	msg = parseErr(t, noID, map[string]string{"DIALSYNC_SOURCE_SERVER_ID": "0"})
	if !strings.Contains(msg, "source.server_id (from DIALSYNC_SOURCE_SERVER_ID) is 0") {
		t.Errorf("server_id = 0 from the environment: %q", msg)
	}
	for _, c := range []struct {
		doc string
		env map[string]string
	}{
		{strings.Replace(minimal, "server_id = 4242", "server_id = -1", 1), nil},
		{strings.Replace(minimal, "server_id = 4242", `server_id = "x"`, 1), nil},
		{minimal, map[string]string{"DIALSYNC_SOURCE_SERVER_ID": "x"}},
	} {
		msg := parseErr(t, c.doc, c.env)
		if strings.Contains(msg, "0..") || !strings.Contains(msg, "1..4294967295") {
			t.Errorf("bad server_id: %q does not give the range 1..4294967295", msg)
		}
	}
}

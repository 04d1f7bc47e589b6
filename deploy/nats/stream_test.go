// Package nats_test checks deploy/nats/stream.json against a real
// nats-server (the Debian 2.9 build this project targets): the file must be
// accepted by the JetStream API exactly as `nats stream add --config` sends
// it, and must carry the limits the README promises.
package nats_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func natsURL() string {
	if u := os.Getenv("DIALSYNC_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func TestStreamDefinitionAccepted(t *testing.T) {
	raw, err := os.ReadFile("stream.json")
	if err != nil {
		t.Fatal(err)
	}
	var def map[string]any
	if err := json.Unmarshal(raw, &def); err != nil {
		t.Fatalf("stream.json: %v", err)
	}
	if def["name"] != "DIALSYNC" || def["subjects"].([]any)[0] != "dialsync.>" {
		t.Fatalf("stream.json name/subjects = %v %v", def["name"], def["subjects"])
	}

	nc, err := nats.Connect(natsURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect %s: %v", natsURL(), err)
	}
	t.Cleanup(nc.Close)

	// Same definition, but a name and subjects of this test's own so it
	// cannot collide with anything else on the shared server.
	name := "T_" + strings.ToUpper(regexp.MustCompile(`[^A-Za-z0-9]`).ReplaceAllString(t.Name(), "_"))
	def["name"] = name
	def["subjects"] = []string{strings.ToLower(name) + ".>"}
	body, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := nc.Request("$JS.API.STREAM.DELETE."+name, nil, 5*time.Second); err != nil {
			t.Errorf("delete stream %s: %v", name, err)
		}
	})

	msg, err := nc.Request("$JS.API.STREAM.CREATE."+name, body, 5*time.Second)
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
		Config struct {
			Storage         string        `json:"storage"`
			Discard         string        `json:"discard"`
			MaxAge          time.Duration `json:"max_age"`
			DuplicateWindow time.Duration `json:"duplicate_window"`
			Retention       string        `json:"retention"`
		} `json:"config"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		t.Fatalf("create stream response %q: %v", msg.Data, err)
	}
	if resp.Error != nil {
		t.Fatalf("server rejected stream.json: %d %s", resp.Error.Code, resp.Error.Description)
	}
	c := resp.Config
	if c.Storage != "file" || c.Discard != "old" || c.Retention != "limits" ||
		c.MaxAge != 72*time.Hour || c.DuplicateWindow != 2*time.Minute {
		t.Fatalf("server stored %+v", c)
	}

	// The duplicate window drops a replayed notice carrying the same id,
	// which invariant 2 ("nothing doubled") relies on.
	subject := strings.ToLower(name) + ".user.1"
	for i, wantDup := range []bool{false, true} {
		m := nats.NewMsg(subject)
		m.Header.Set(nats.MsgIdHdr, "txn-1:user-1")
		m.Data = []byte(`{}`)
		reply, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		var ack struct {
			Seq       uint64 `json:"seq"`
			Duplicate bool   `json:"duplicate"`
		}
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			t.Fatalf("ack %q: %v", reply.Data, err)
		}
		if ack.Duplicate != wantDup || ack.Seq != 1 {
			t.Fatalf("publish %d: ack %+v, want seq 1 duplicate=%v", i, ack, wantDup)
		}
	}
}

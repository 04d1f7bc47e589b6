package main

import (
	"context"
	"dialsync/internal/config"
	"dialsync/internal/lookup"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A server that answers pings but refuses every write of one stage (here:
// the notices stream deleted under a running pipeline, so every publish
// fails) is a retry loop that must not look healthy: /readyz turns 503
// with the operation and the error within 30 s, the lag grows, and the
// checkpoint does not move past the unpublished change. A restart
// recreates the (managed) stream and the pipeline catches up.
func TestStuckRetryTurnsReadyzRed(t *testing.T) {
	base := enableHTTP(t)
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	waitReadyz(t, p, base, 30*time.Second, 200, `"apply":{"ok":true}`)

	ctx := context.Background()
	if err := p.js.DeleteStream(ctx, p.stream); err != nil {
		t.Fatal(err)
	}
	before := p.checkpointGTID()
	user, _, _ := queuedUser(t, p)
	p.exec(fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id = %d", user))

	start := time.Now()
	body := waitReadyz(t, p, base, 30*time.Second, 503, `"apply":{"ok":false`, "publish")
	t.Logf("/readyz after %s: %s", time.Since(start).Round(time.Second), body)
	if got := p.checkpointGTID(); got != before {
		t.Fatalf("checkpoint moved from %s to %s although the notices were never published", before, got)
	}
	if _, metrics, err := httpGet(base, "/metrics"); err != nil || strings.Contains(metrics, "\ndialsync_lag_seconds 0\n") {
		t.Fatalf("dialsync_lag_seconds is 0 while nothing is applied (err %v)", err)
	}

	p.stop()
	p.start()
	p.waitCaughtUp(60 * time.Second)
	waitReadyz(t, p, base, 30*time.Second, 200, `"apply":{"ok":true}`)
}

// A SIGTERM while the bootstrap reconcile runs is a clean stop: exit 0,
// no error logged, no checkpoint stored (the next run bootstraps again).
// The rule is slowed per row so the bootstrap is still running.
func TestSignalDuringBootstrap(t *testing.T) {
	p := newPipe(t, pipeOpt{config: func(c *config.Config) {
		c.Rules.QueueSQL = strings.Replace(lookup.DefaultQueueSQL, "WHERE {users}", "WHERE {users} AND SLEEP(0.002) = 0", 1)
	}})
	p.start()
	waitFor(t, 30*time.Second, "the bootstrap to start", func() bool {
		return strings.Contains(p.allLogs(), "no checkpoint: bootstrapping")
	})
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if code := p.stop(); code != 0 {
		t.Fatalf("SIGTERM during the bootstrap: exit %d\n%s", code, p.logTail(20))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stopping took %s", took)
	}
	logs := p.allLogs()
	if strings.Contains(logs, "bootstrap reconcile done") {
		t.Fatal("the bootstrap finished before the signal: the test checked nothing")
	}
	if strings.Contains(logs, `"level":"ERROR"`) || strings.Contains(logs, "bootstrap reconcile:") {
		t.Errorf("a signal during the bootstrap was logged as an error:\n%s", p.logTail(20))
	}
	if g := p.checkpointGTID(); g != "" {
		t.Errorf("a checkpoint was stored by an interrupted bootstrap: %s", g)
	}
}

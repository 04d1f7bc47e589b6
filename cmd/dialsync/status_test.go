package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dialsync/internal/config"
)

// statusJSON runs dialsync status --json and decodes its report.
func statusJSON(t *testing.T, p *pipe, env ...string) (statusReport, int) {
	t.Helper()
	out, errOut, code := runCLI(t, 30*time.Second, env, "status", "--json", "--config", p.cfgPath)
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json: exit %d, %v\nstdout %q\nstderr %q", code, err, out, errOut)
	}
	return r, code
}

func hasReason(r statusReport, frag string) bool {
	for _, s := range r.Reasons {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}

// dialsync status against a real pipeline: before the first run (no
// schema, and status creates none), while it runs (healthy, every field
// filled), degraded (a dead letter, an unreachable endpoint, a paused
// leader) and stopped (no leader).
func TestStatus(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	p := newPipe(t, pipeOpt{config: func(c *config.Config) {
		c.HTTP.Listen = addr
		c.Reconcile.Interval = config.Dur(0)
	}})
	ctx := context.Background()

	// Before any run: no schema, and status must not create it.
	r, code := statusJSON(t, p)
	if code != exitNoLeader || r.Health != healthNoLeader || r.Schema.Version != 0 || !hasReason(r, "does not exist") {
		t.Fatalf("before the first run: exit %d, %+v", code, r)
	}
	var schemaExists bool
	if err := p.pg.QueryRow(ctx, `SELECT to_regnamespace('dialsync') IS NOT NULL`).Scan(&schemaExists); err != nil {
		t.Fatal(err)
	}
	if schemaExists {
		t.Fatal("status created the schema: it must only read")
	}

	p.start()
	waitReadyz(t, p, "http://"+addr, 60*time.Second, http.StatusOK, `"binlog":{"ok":true}`)
	p.exec("UPDATE users SET status = 'inactive' WHERE id = 1")
	p.waitCaughtUp(30 * time.Second)

	r, code = statusJSON(t, p)
	if code != 0 || r.Health != healthHealthy || len(r.Reasons) != 0 {
		t.Fatalf("running: exit %d, %+v", code, r)
	}
	var queued int64
	if err := p.pg.QueryRow(ctx, `SELECT count(*) FROM dialsync.call_queue`).Scan(&queued); err != nil {
		t.Fatal(err)
	}
	l, c, q, in := r.Leader, r.Checkpoint, r.Queue, r.Instance
	switch {
	case l == nil || !l.Held || !strings.Contains(l.Holder, "pid-") || l.Epoch < 1 || l.HeartbeatStale || l.HeartbeatAgeSeconds > p.cfg.HA.LeaseTTL.Duration().Seconds():
		t.Errorf("leader: %+v", l)
	case c == nil || c.GTIDSet != p.checkpointGTID() || c.AgeSeconds < 0 || c.AgeSeconds > 60:
		t.Errorf("checkpoint: %+v (stored %q)", c, p.checkpointGTID())
	case q == nil || q.Queued != queued || queued == 0 || q.DeadLetters != 0:
		t.Errorf("queue: %+v (call_queue has %d)", q, queued)
	case in.Addr != addr || in.Ready == nil || !*in.Ready || in.Role != roleLeader || in.LagSeconds == nil || in.Version == "":
		t.Errorf("instance: %+v", in)
	case in.Reconcile == nil || in.Reconcile.LastAt == nil || in.Reconcile.Runs < 1 || len(in.Reconcile.Drift) != 3 ||
		in.Reconcile.Trigger != "bootstrap" || in.Reconcile.Drift["entered"] != float64(queued):
		t.Errorf("reconcile (the bootstrap's): %+v", in.Reconcile)
	case r.Schema.Version != r.Schema.Latest:
		t.Errorf("schema: %+v", r.Schema)
	}
	out, errOut, code := runCLI(t, 30*time.Second, nil, "status", "--config", p.cfgPath)
	t.Logf("status (running):\n%s", out)
	for _, want := range []string{"pipeline p_" + p.name + ": healthy\n", "  leader      ", "epoch ", "heartbeat ",
		"  checkpoint  " + c.GTIDSet, "  lag         ", "  queue       " + strconv.FormatInt(queued, 10) + " queued",
		"  reconcile   last ", "(bootstrap, ", "built the queue: " + strconv.Itoa(int(in.Reconcile.Drift["entered"])) + " entered", "  instance    " + addr + ": ready, leader"} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q", want)
		}
	}
	if code != 0 || errOut != "" {
		t.Errorf("status text: exit %d, stderr %q", code, errOut)
	}

	// A dead letter not yet retried: degraded.
	if _, err := p.pg.Exec(ctx, `INSERT INTO dialsync.dead_letters (pipeline, table_name, error) VALUES ($1, 'users', 'test')`, p.cfg.Pipeline.Name); err != nil {
		t.Fatal(err)
	}
	r, code = statusJSON(t, p)
	if code != exitDegraded || r.Health != healthDegraded || r.Queue == nil || r.Queue.DeadLetters != 1 || !hasReason(r, "dead letter") {
		t.Errorf("a pending dead letter: exit %d, %+v", code, r)
	}
	if _, err := p.pg.Exec(ctx, `UPDATE dialsync.dead_letters SET retried_at = now()`); err != nil {
		t.Fatal(err)
	}
	if r, code = statusJSON(t, p); code != 0 {
		t.Errorf("dead letter retried: exit %d, %+v", code, r)
	}

	// The endpoint cannot be reached (a config pointing elsewhere).
	other := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	r, code = statusJSON(t, p, "DIALSYNC_HTTP_LISTEN="+other)
	if code != exitDegraded || !hasReason(r, "does not answer") || r.Instance.LagSeconds != nil || r.Instance.Reconcile != nil {
		t.Errorf("unreachable endpoint: exit %d, %+v", code, r)
	}

	// A paused leader: its lock is held, its heartbeat goes stale.
	p.mu.Lock()
	pr := p.proc
	p.mu.Unlock()
	if err := pr.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(p.cfg.HA.LeaseTTL.Duration() + time.Second)
	r, code = statusJSON(t, p)
	if err := pr.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if code != exitDegraded || r.Leader == nil || !r.Leader.HeartbeatStale || !hasReason(r, "heartbeat") {
		t.Errorf("paused leader: exit %d, %+v", code, r)
	}

	// Stopped (the paused leader, woken, found its lease lost and stops by
	// itself): no leader; the checkpoint is still reported.
	if code := p.stop(); code != 0 && !strings.Contains(p.allLogs(), "lease lost") {
		t.Fatalf("dialsync exited %d", code)
	}
	r, code = statusJSON(t, p)
	if code != exitNoLeader || r.Health != healthNoLeader || r.Leader == nil || r.Leader.Held || r.Leader.Holder == "" ||
		r.Checkpoint == nil || !hasReason(r, "no instance holds the lease") {
		t.Errorf("stopped: exit %d, %+v", code, r)
	}
	out, _, code = runCLI(t, 30*time.Second, nil, "status", "--config", p.cfgPath)
	t.Logf("status (stopped):\n%s", out)
	if code != exitNoLeader || !strings.Contains(out, ": no leader\n") || !strings.Contains(out, "  leader      none (last: ") {
		t.Errorf("stopped, text: exit %d\n%s", code, out)
	}
}

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/proc"
	"dialsync/internal/dev/testenv"
	"dialsync/internal/publish/natstest"
)

// Production-readiness tests: metrics under a real workload, /readyz
// following the servers, and no secret or PII in any output.

// freeTCPPort asks the kernel for a free port (closed again at once; the
// small reuse race is acceptable in tests).
func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// enableHTTP turns on dialsync's HTTP server through the environment (the
// harness config disables it; env overrides every config key) and returns
// its base URL. Call before pipe.start.
func enableHTTP(t *testing.T) string {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	t.Setenv("DIALSYNC_HTTP_LISTEN", addr)
	return "http://" + addr
}

var httpc = &http.Client{Timeout: 3 * time.Second}

func httpGet(base, path string) (int, string, error) {
	resp, err := httpc.Get(base + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metricsText scrapes /metrics.
type metricsText string

func scrape(t testing.TB, base string) metricsText {
	t.Helper()
	code, body, err := httpGet(base, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	return metricsText(body)
}

// sum adds the values of every sample of name whose label set contains all
// of the given `key="value"` fragments; found is false when none matched.
func (m metricsText) sum(name string, labels ...string) (v float64, found bool) {
	sc := bufio.NewScanner(strings.NewReader(string(m)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, val := line[:i], line[i+1:]
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		v += f
		found = true
	}
	return v, found
}

func (m metricsText) get(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := m.sum(name, labels...)
	if !ok {
		t.Fatalf("metric %s%v not exported", name, labels)
	}
	return v
}

func runSteps(t testing.TB, w *demo.Workload, n int) {
	t.Helper()
	for range n {
		if _, err := w.Step(context.Background()); err != nil {
			t.Fatalf("workload: %v", err)
		}
	}
}

func (p *pipe) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		p.t.Fatal("dialsync not running")
	}
	return p.proc.Pid()
}

func TestMetricsUnderWorkload(t *testing.T) {
	base := enableHTTP(t)
	// The test freezes the process for 3s: a longer lease TTL keeps it the
	// leader through the freeze (with the default 3s it rightly stops,
	// having lost its lease).
	p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.HA.LeaseTTL = config.Dur(30 * time.Second) }})
	users := make([]uint64, 0, 300)
	for u := uint64(1); u <= 300; u++ {
		users = append(users, u)
	}
	p.setKeys(users...)
	p.start()
	// Writes made before the bootstrap reads the head are covered by the
	// bootstrap reconcile, not streamed: wait until the binlog reader runs.
	waitReadyz(t, p, base, 30*time.Second, http.StatusOK, `"binlog":{"ok":true`)
	w := demo.NewWorkload(p.src, 21)
	runSteps(t, w, 150)
	p.waitCaughtUp(30 * time.Second)

	// Counters are updated after the checkpoint of a batch; give the last
	// batch's hooks a moment.
	var m metricsText
	deadline := time.Now().Add(10 * time.Second)
	for {
		m = scrape(t, base)
		if v, _ := m.sum("dialsync_checkpoint_timestamp_seconds"); v > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dialsync_checkpoint_timestamp_seconds still 0 after catching up; /metrics:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"dialsync_transactions_total", nil},
		{"dialsync_row_changes_total", []string{`table="users"`}},
		{"dialsync_notices_published_total", nil},
		{"dialsync_keys_deleted_total", nil},
		{"dialsync_stage_duration_seconds_count", []string{`stage="postgres"`}},
		{"dialsync_checkpoint_timestamp_seconds", nil},
	} {
		if v := m.get(t, c.name, c.labels...); v <= 0 {
			t.Errorf("%s%v = %v, want > 0", c.name, c.labels, v)
		}
	}
	if v := m.get(t, "dialsync_leader"); v != 1 {
		t.Errorf("dialsync_leader = %v, want 1", v)
	}
	if v := m.get(t, "dialsync_epoch"); v < 1 {
		t.Errorf("dialsync_epoch = %v, want >= 1", v)
	}
	if ts := m.get(t, "dialsync_checkpoint_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("dialsync_checkpoint_timestamp_seconds = %v: not recent", ts)
	}

	// Lag: freeze dialsync while the source keeps committing, so it really
	// falls behind, then let it go and watch the gauges while it catches up
	// (writes continue, so there is a backlog for a while).
	pid := p.pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		runSteps(t, w, 5)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false

	var (
		wg              sync.WaitGroup
		done            = make(chan struct{})
		werr            error
		maxLag, maxBack float64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := w.Step(context.Background()); err != nil {
				werr = err
				return
			}
		}
	}()
	observeEnd := time.Now().Add(4 * time.Second)
	for time.Now().Before(observeEnd) {
		m := scrape(t, base)
		maxLag = max(maxLag, m.get(t, "dialsync_lag_seconds"))
		maxBack = max(maxBack, m.get(t, "dialsync_behind_bytes"))
		time.Sleep(100 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	if werr != nil {
		t.Fatalf("workload: %v", werr)
	}
	t.Logf("while behind: max lag %.3fs, max behind bytes %.0f", maxLag, maxBack)
	if maxLag <= 0 && maxBack <= 0 {
		t.Errorf("dialsync was frozen for 3s under writes but neither dialsync_lag_seconds nor dialsync_behind_bytes went above 0")
	}

	p.waitCaughtUp(30 * time.Second)
	// The lag gauge is refreshed every second and bytes behind every five
	// (monitor.poll), so allow a couple of refreshes.
	waitFor(t, 15*time.Second, "dialsync_lag_seconds back to 0 once caught up", func() bool {
		return scrape(t, base).get(t, "dialsync_lag_seconds") == 0
	})
	p.assertNoDrift()
}

// redisProc is a private redis-server the test can kill and restart on the
// same port.
type redisProc struct {
	t    testing.TB
	port int
	args []string
	p    *proc.Proc // nil while down
	out  *proc.Buffer
}

// startRedis runs /usr/bin/redis-server with no persistence on a free port.
// An argument containing "{port}" receives the port instead of --port
// (e.g. "--port", "0", "--tls-port", "{port}" for TLS only).
func startRedis(t testing.TB, extra ...string) *redisProc {
	t.Helper()
	r := &redisProc{t: t, port: freeTCPPort(t), out: &proc.Buffer{}}
	r.args = append([]string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, extra...)
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisProc) start() {
	r.t.Helper()
	args := slicesReplace(r.args, "{port}", strconv.Itoa(r.port))
	if !containsArg(r.args, "{port}") {
		args = append([]string{"--port", strconv.Itoa(r.port)}, args...)
	}
	var err error
	if r.p, err = proc.Start("/usr/bin/redis-server", proc.Options{Args: args, Stdout: r.out, Stderr: r.out}); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", r.addr(), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("redis-server on %s not listening:\n%s", r.addr(), r.out.String())
}

func (r *redisProc) kill() {
	if r.p == nil {
		return
	}
	r.p.Kill()
	r.p = nil
}

func slicesReplace(in []string, old, new string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ReplaceAll(s, old, new)
	}
	return out
}

func containsArg(in []string, sub string) bool {
	for _, s := range in {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// waitReadyz polls /readyz until it returns want and the body contains
// every fragment.
func waitReadyz(t testing.TB, p *pipe, base string, within time.Duration, want int, fragments ...string) string {
	t.Helper()
	var code int
	var body string
	var err error
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("dialsync exited while waiting for /readyz %d:\n%s", want, p.logTail(40))
		}
		code, body, err = httpGet(base, "/readyz")
		if err == nil && code == want {
			ok := true
			for _, f := range fragments {
				if !strings.Contains(body, f) {
					ok = false
				}
			}
			if ok {
				return body
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("/readyz: want %d containing %q within %s; last %d %q (%v)", want, fragments, within, code, body, err)
	return ""
}

func TestReadyzFollowsServers(t *testing.T) {
	base := enableHTTP(t)
	rs := startRedis(t)
	t.Setenv("DIALSYNC_REDIS_ADDR", rs.addr())
	ns := natstest.Start(t)
	// A private MariaDB: the test kills its binlog dump connection.
	p := newPipe(t, pipeOpt{natsURL: ns.URL, my: testenv.StartMariaDB(t, testenv.MariaDBOptions{})})
	p.start()

	body := waitReadyz(t, p, base, 30*time.Second, http.StatusOK, `"redis"`, `"nats"`, `"mysql"`, `"postgres"`)
	if !strings.HasPrefix(strings.TrimSpace(body), "{") {
		t.Errorf("/readyz body is not JSON: %q", body)
	}
	p.exec("UPDATE users SET status = 'inactive' WHERE id = 1")
	p.waitCaughtUp(30 * time.Second)

	rs.kill()
	body = waitReadyz(t, p, base, 15*time.Second, http.StatusServiceUnavailable, `"redis"`)
	t.Logf("redis down: %s", body)
	if strings.Contains(body, `"redis":{"ok":true`) {
		t.Errorf("redis reported ok while down: %s", body)
	}
	rs.start()
	waitReadyz(t, p, base, 20*time.Second, http.StatusOK)

	ns.Stop()
	body = waitReadyz(t, p, base, 15*time.Second, http.StatusServiceUnavailable, `"nats"`)
	t.Logf("nats down: %s", body)
	ns.Restart()
	waitReadyz(t, p, base, 30*time.Second, http.StatusOK)
	if n, _ := scrape(t, base).sum("dialsync_reconnects_total", `server="nats"`); n < 1 {
		t.Errorf("dialsync_reconnects_total{server=\"nats\"} = %v after a NATS restart; want >= 1", n)
	}

	// The source drops the binlog connection: the stream restarts from the
	// last applied transaction and the restart is counted.
	dump := p.my.QueryString(t, "SELECT id FROM information_schema.PROCESSLIST WHERE command LIKE 'Binlog Dump%' LIMIT 1")
	p.my.Exec(t, "KILL "+dump)
	waitFor(t, 30*time.Second, "a counted binlog stream restart", func() bool {
		n, _ := scrape(t, base).sum("dialsync_reconnects_total", `server="mysql"`)
		return n >= 1
	})

	// Still streaming after both outages.
	p.exec("UPDATE users SET status = 'active' WHERE id = 1")
	p.waitCaughtUp(30 * time.Second)
	if code := p.stop(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func randomSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "S3cr3t" + hex.EncodeToString(b)
}

// rawNotices returns the raw payload of every message in the pipe's stream.
func (p *pipe) rawNotices() []string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		p.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		p.t.Fatal(err)
	}
	var out []string
	for uint64(len(out)) < info.State.Msgs {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			p.t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			var hdr strings.Builder
			for k, v := range m.Headers() {
				fmt.Fprintf(&hdr, "%s: %s\n", k, strings.Join(v, ","))
			}
			out = append(out, m.Subject()+"\n"+hdr.String()+string(m.Data()))
			got++
		}
		if got == 0 {
			break
		}
	}
	if uint64(len(out)) != info.State.Msgs {
		p.t.Fatalf("read %d of %d notices", len(out), info.State.Msgs)
	}
	return out
}

// TestNoSecretsOrPIIInOutput runs a full pipeline with a MySQL password and
// a Redis password and scans every byte dialsync wrote (debug logs, the
// check command) and every notice for the secrets and for personal data.
func TestNoSecretsOrPIIInOutput(t *testing.T) {
	ctx := context.Background()
	mysqlSecret, redisSecret := randomSecret(t), randomSecret(t)
	base := enableHTTP(t)
	rs := startRedis(t, "--requirepass", redisSecret)
	p := newPipe(t, pipeOpt{})

	user := "ds_" + hex.EncodeToString([]byte(p.name))[:12] + strconv.Itoa(freeTCPPort(t))
	p.my.Exec(t,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, mysqlSecret),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", user),
		fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", p.name, user),
	)
	t.Cleanup(func() { p.my.Exec(t, fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	t.Setenv("DIALSYNC_SOURCE_USER", user)
	t.Setenv("DIALSYNC_SOURCE_PASSWORD", mysqlSecret)
	t.Setenv("DIALSYNC_REDIS_ADDR", rs.addr())
	t.Setenv("DIALSYNC_REDIS_PASSWORD", redisSecret)

	pii, err := demo.SamplePII(ctx, p.src, 50)
	if err != nil {
		t.Fatal(err)
	}
	p.start()
	waitReadyz(t, p, base, 30*time.Second, http.StatusOK, `"binlog":{"ok":true`)
	w := demo.NewWorkload(p.src, 33)
	runSteps(t, w, 300)
	p.waitCaughtUp(45 * time.Second)
	after, err := demo.SamplePII(ctx, p.src, 50)
	if err != nil {
		t.Fatal(err)
	}
	pii = append(pii, after...)

	// A failing connection is where secrets usually leak (DSNs in errors):
	// run check once with a wrong Redis password as well as a good run.
	var extra strings.Builder
	for _, env := range [][]string{nil, {"DIALSYNC_REDIS_PASSWORD=wrong-" + redisSecret}} {
		stdout, stderr, _ := runCLI(t, 0, env, "check", "--config", p.cfgPath)
		if stdout+stderr == "" {
			t.Fatalf("dialsync check %v printed nothing: nothing to scan", env)
		}
		extra.WriteString(stdout + stderr)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit code %d", code)
	}

	logs := p.allLogs() + "\n" + extra.String()
	notices := p.rawNotices()
	if len(notices) == 0 {
		t.Fatal("no notices published: nothing to scan")
	}
	all := logs + "\n" + strings.Join(notices, "\n")
	for _, s := range []string{mysqlSecret, redisSecret} {
		if strings.Contains(all, s) {
			t.Errorf("secret %q appears in dialsync output/notices", s)
		}
	}
	leaks := 0
	for _, v := range pii {
		if len(v) < 6 {
			continue // too short to be a meaningful match
		}
		if strings.Contains(all, v) {
			leaks++
			if leaks <= 5 {
				t.Errorf("PII value %q appears in dialsync output/notices", v)
			}
		}
	}
	if leaks > 0 {
		t.Errorf("%d of %d PII values leaked", leaks, len(pii))
	}
	t.Logf("scanned %d bytes of logs and %d notices for 2 secrets and %d PII values", len(logs), len(notices), len(pii))
}

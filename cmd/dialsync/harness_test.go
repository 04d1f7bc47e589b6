package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/proc"
	"dialsync/internal/dev/testenv"
	"dialsync/notice"
)

// The end-to-end tests run the real binary as a separate process against
// real servers: a private binlog-enabled MariaDB (testenv), the machine's
// PostgreSQL, Redis and NATS. Each test has its own source database,
// PostgreSQL database, Redis prefix, stream and subjects.

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dialsync-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "dialsync")
	if err := dstest.BuildDialsync(binPath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	testenv.Main(m)
}

var nextServerID atomic.Uint32

func init() { nextServerID.Store(uint32(time.Now().UnixNano()%1_000_000) + 10_000) }

// pipe is one dialsync pipeline under test and everything around it.
type pipe struct {
	t        testing.TB
	name     string
	my       *testenv.MariaDB
	src      *sql.DB
	pgDSN    string
	pg       *pgxpool.Pool
	rdb      *redis.Client
	prefix   string // Redis key prefix
	stream   string
	subjects string         // subject prefix
	cfg      *config.Config // what cfgPath holds: change it with editConfig
	cfgPath  string
	js       jetstream.JetStream
	natsURL  string

	logs proc.Buffer // the output of every run
	mu   sync.Mutex
	proc *proc.Proc // the running process, nil when none
	last *proc.Proc // the latest process, running or not
	runs int
}

type pipeOpt struct {
	my      *testenv.MariaDB       // default: the shared server
	natsURL string                 // default: the machine's NATS
	size    demo.Size              // default: a small data set
	config  func(c *config.Config) // edits the config before it is written
}

func newPipe(t testing.TB, o pipeOpt) *pipe {
	t.Helper()
	ctx := context.Background()
	name := testenv.Name(t)
	p := &pipe{t: t, name: name, my: o.my, natsURL: o.natsURL}
	if p.my == nil {
		p.my = testenv.SharedMariaDB(t)
	}
	if p.natsURL == "" {
		p.natsURL = dstest.MachineNATS
	}
	p.my.CreateDatabase(t, name)
	var err error
	p.src, err = sql.Open("mysql", p.my.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.src.Close() })
	if err := demo.CreateSchema(ctx, p.src); err != nil {
		t.Fatal(err)
	}
	size := o.size
	if size.Users == 0 {
		size = demo.Size{Users: 300, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 7}
	}
	if err := demo.Seed(ctx, p.src, size); err != nil {
		t.Fatal(err)
	}
	p.pgDSN = testenv.PostgresDB(t)
	p.pg, err = pgxpool.New(ctx, p.pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.pg.Close)
	p.prefix = name + ":"
	p.rdb = dstest.Redis(t, p.prefix)
	p.stream = strings.ToUpper("DS_" + name)
	p.subjects = "ds_" + name
	p.js = dstest.JetStream(t, p.natsURL, p.stream)
	p.cfgPath = filepath.Join(t.TempDir(), "config.toml")
	p.cfg = dstest.Config(dstest.Target{
		Pipeline: "p_" + name, SourceAddr: p.my.Addr(), Database: name, ServerID: nextServerID.Add(1),
		PostgresDSN: p.pgDSN, RedisPrefix: p.prefix, NATSURL: p.natsURL, Stream: p.stream, Subjects: p.subjects,
	})
	p.cfg.Apply.RetryInitial = config.Dur(20 * time.Millisecond)
	p.cfg.Apply.RetryMax = config.Dur(500 * time.Millisecond)
	p.cfg.Log.Level = "debug"
	if o.config != nil {
		o.config(p.cfg)
	}
	p.writeConfig()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("dialsync logs:\n%s", p.logTail(200))
		}
	})
	return p
}

// writeConfig writes p.cfg to the test's config file.
func (p *pipe) writeConfig() {
	p.t.Helper()
	if err := dstest.WriteConfig(p.cfgPath, p.cfg); err != nil {
		p.t.Fatal(err)
	}
}

// editConfig changes the test's config and writes it again; a running
// process sees the change at its next start.
func (p *pipe) editConfig(edit func(c *config.Config)) {
	p.t.Helper()
	edit(p.cfg)
	p.writeConfig()
}

// start runs `dialsync run` as a child process.
func (p *pipe) start() {
	p.t.Helper()
	p.startEnv()
}

// startEnv is start with extra environment variables (config overrides
// such as DIALSYNC_HTTP_LISTEN).
func (p *pipe) startEnv(env ...string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		p.t.Fatal("dialsync already running")
	}
	pr, err := proc.Start(binPath, proc.Options{Args: []string{"run", "--config", p.cfgPath}, Env: env, Stdout: &p.logs, Stderr: &p.logs})
	if err != nil {
		p.t.Fatal(err)
	}
	p.runs++
	p.proc, p.last = pr, pr
}

// stop sends SIGTERM and waits; it returns the exit code.
func (p *pipe) stop() int { return p.signal(syscall.SIGTERM) }

// kill sends SIGKILL (a real crash) and waits.
func (p *pipe) kill() { p.signal(syscall.SIGKILL) }

func (p *pipe) signal(sig syscall.Signal) int {
	p.mu.Lock()
	pr := p.proc
	p.mu.Unlock()
	if pr == nil {
		return -1
	}
	code, killed := pr.Stop(sig, 60*time.Second)
	if killed {
		p.t.Errorf("dialsync did not exit within 60s of %v", sig)
	}
	p.mu.Lock()
	p.proc = nil
	p.mu.Unlock()
	return code
}

// exited reports whether the process ended by itself.
func (p *pipe) exited() bool {
	p.mu.Lock()
	last := p.last
	p.mu.Unlock()
	return last != nil && last.Exited()
}

// logTail is the end of every run's output.
func (p *pipe) logTail(n int) string { return p.logs.Tail(n) }

func (p *pipe) allLogs() string { return p.logs.String() }

// runCLI runs the binary with args to its end, at most within (0: no
// limit; a process still running then is killed and reports exit code -1),
// with env added to the environment, and returns its output and exit code.
func runCLI(t testing.TB, within time.Duration, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	res, err := proc.Run(binPath, within, proc.Options{Args: args, Env: env})
	if err != nil && !errors.Is(err, proc.ErrTimeout) {
		t.Fatalf("dialsync %v: %v", args, err)
	}
	return res.Stdout, res.Stderr, res.Code
}

// exec runs statements on the source database.
func (p *pipe) exec(stmts ...string) {
	p.t.Helper()
	for _, s := range stmts {
		if _, err := p.src.Exec(s); err != nil {
			p.t.Fatalf("source: %s: %v", s, err)
		}
	}
}

// head is the source's current GTID position.
func (p *pipe) head() string {
	p.t.Helper()
	return p.my.QueryString(p.t, "SELECT @@gtid_binlog_pos")
}

// checkpointGTID reads the stored checkpoint ("" when none).
func (p *pipe) checkpointGTID() string {
	var g *string
	err := p.pg.QueryRow(context.Background(), `SELECT gtid_set FROM dialsync.checkpoints WHERE pipeline = $1`, "p_"+p.name).Scan(&g)
	if err != nil || g == nil {
		return ""
	}
	return *g
}

// waitCaughtUp waits until the stored checkpoint covers the source head.
func (p *pipe) waitCaughtUp(within time.Duration) {
	p.t.Helper()
	want := p.head()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if gtidCovers(p.checkpointGTID(), want) {
			return
		}
		if p.exited() {
			p.t.Fatalf("dialsync exited while waiting to catch up to %s:\n%s", want, p.logTail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("checkpoint %q did not reach source head %q within %s", p.checkpointGTID(), want, within)
}

// gtidCovers reports whether MariaDB GTID position have includes want
// (per domain, sequence at least as high).
func gtidCovers(have, want string) bool {
	if want == "" {
		return true
	}
	h := map[string]uint64{}
	for _, g := range strings.Split(have, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 {
			continue
		}
		seq, _ := strconv.ParseUint(parts[2], 10, 64)
		h[parts[0]] = max(h[parts[0]], seq)
	}
	for _, g := range strings.Split(want, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 {
			return false
		}
		seq, _ := strconv.ParseUint(parts[2], 10, 64)
		if h[parts[0]] < seq {
			return false
		}
	}
	return true
}

// notices reads every notice in the test's stream.
func (p *pipe) notices() []notice.Event {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		p.t.Fatalf("stream %s: %v", p.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	n := info.State.Msgs
	var out []notice.Event
	if n == 0 {
		return out
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		p.t.Fatal(err)
	}
	for uint64(len(out)) < n {
		batch, err := c.Fetch(int(min(n-uint64(len(out)), 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			p.t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			ev, err := notice.Decode(m.Data())
			if err != nil {
				p.t.Fatalf("undecodable notice: %v", err)
			}
			if id := m.Headers().Get("Nats-Msg-Id"); id != ev.ID {
				p.t.Fatalf("Nats-Msg-Id %q != id %q", id, ev.ID)
			}
			out = append(out, ev)
			got++
		}
		if got == 0 {
			p.t.Fatalf("read %d of %d notices", len(out), n)
		}
	}
	return out
}

// userNotices groups user.changed notices by user, and fails on a
// duplicate (transaction, user) pair.
func (p *pipe) userNotices(evs []notice.Event) map[uint64][]notice.UserChanged {
	p.t.Helper()
	by := map[uint64][]notice.UserChanged{}
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev.Type != notice.TypeUserChanged {
			continue
		}
		uc, err := ev.UserChanged()
		if err != nil {
			p.t.Fatal(err)
		}
		k := uc.Source.Txn + "/" + strconv.FormatUint(uc.UserID, 10)
		if seen[k] {
			p.t.Errorf("duplicate notice for (transaction, user) %s", k)
		}
		seen[k] = true
		by[uc.UserID] = append(by[uc.UserID], uc)
	}
	return by
}

// queueNotices returns the queue notices by user, in stream order, and
// fails when one (type, transaction, user) appears twice: a replay must not
// announce a queue change a second time under the same transaction, not
// even with other values (the transaction that made those values does).
func (p *pipe) queueNotices(evs []notice.Event) map[uint64][]notice.QueueChanged {
	p.t.Helper()
	by := map[uint64][]notice.QueueChanged{}
	seen := map[string]bool{}
	for _, ev := range evs {
		if !ev.IsQueue() {
			continue
		}
		qc, err := ev.QueueChanged()
		if err != nil {
			p.t.Fatal(err)
		}
		txn, _, _ := strings.Cut(qc.Source.Txn, "#")
		k := ev.Type + "/" + txn + "/" + strconv.FormatUint(qc.UserID, 10)
		if seen[k] {
			p.t.Errorf("two %s notices for transaction %s, user %d", ev.Type, txn, qc.UserID)
		}
		seen[k] = true
		by[qc.UserID] = append(by[qc.UserID], qc)
	}
	return by
}

type qrow struct {
	open, pending int64
	oldest        string
}

// expectedQueue evaluates the default rule directly on the source with SQL
// written here, independently of the lookup package.
func (p *pipe) expectedQueue() map[uint64]qrow {
	p.t.Helper()
	rows, err := p.src.Query(`
SELECT u.id, COUNT(DISTINCT c.id), COUNT(r.id), DATE_FORMAT(MIN(r.created_at), '%Y-%m-%d %H:%i:%s')
FROM users u
JOIN claims c ON c.user_id = u.id
JOIN claim_requirements r ON r.claim_id = c.id
WHERE u.deleted_at IS NULL AND u.is_enabled = 1 AND u.status = 'active'
  AND u.phone_number IS NOT NULL AND u.phone_number <> ''
  AND c.deleted_at IS NULL AND c.status NOT IN ('closed', 'rejected', 'paid')
  AND r.status = 'PENDING'
GROUP BY u.id`)
	if err != nil {
		p.t.Fatal(err)
	}
	defer rows.Close()
	m := map[uint64]qrow{}
	for rows.Next() {
		var id uint64
		var r qrow
		var oldest sql.NullString
		if err := rows.Scan(&id, &r.open, &r.pending, &oldest); err != nil {
			p.t.Fatal(err)
		}
		r.oldest = oldest.String
		m[id] = r
	}
	return m
}

// actualQueue reads call_queue.
func (p *pipe) actualQueue() map[uint64]qrow {
	p.t.Helper()
	rows, err := p.pg.Query(context.Background(), `SELECT user_id, open_claims, pending_requirements,
		COALESCE(to_char(oldest_pending_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '') FROM dialsync.call_queue`)
	if err != nil {
		p.t.Fatal(err)
	}
	defer rows.Close()
	m := map[uint64]qrow{}
	for rows.Next() {
		var id int64
		var r qrow
		if err := rows.Scan(&id, &r.open, &r.pending, &r.oldest); err != nil {
			p.t.Fatal(err)
		}
		m[uint64(id)] = r
	}
	return m
}

// queueDrift lists differences between the queue and the rule.
func (p *pipe) queueDrift() []string {
	p.t.Helper()
	want, got := p.expectedQueue(), p.actualQueue()
	var diffs []string
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("user %d missing from queue", id))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("user %d: queue %+v, rule %+v", id, g, w))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("user %d queued but the rule says no", id))
		}
	}
	slices.Sort(diffs)
	return diffs
}

func (p *pipe) assertNoDrift() {
	p.t.Helper()
	if d := p.queueDrift(); len(d) > 0 {
		p.t.Fatalf("queue drift (%d):\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}
}

// setKeys seeds the cache keys of users so a test can see them deleted.
func (p *pipe) setKeys(users ...uint64) {
	p.t.Helper()
	for _, u := range users {
		for _, k := range p.userKeys(u) {
			if err := p.rdb.Set(context.Background(), k, "cached", 0).Err(); err != nil {
				p.t.Fatal(err)
			}
		}
	}
}

func (p *pipe) userKeys(u uint64) []string {
	return []string{fmt.Sprintf("%suser:%d:context", p.prefix, u), fmt.Sprintf("%suser:%d:claims", p.prefix, u)}
}

func (p *pipe) keyExists(k string) bool {
	n, err := p.rdb.Exists(context.Background(), k).Result()
	if err != nil {
		p.t.Fatal(err)
	}
	return n == 1
}

// waitFor polls cond.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
}

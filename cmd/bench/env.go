package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/config"
	"dialsync/internal/dev/benchkit"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/proc"
	"dialsync/internal/dev/testenv"
)

// bench is the harness's own world: a private MariaDB with the seeded data,
// a PostgreSQL database, a Redis key prefix and NATS stream/subjects on the
// machine's servers, all named after one random run name.
type bench struct {
	o    options
	log  *slog.Logger
	name string // bench_<hex>: database names, key prefix, subjects

	my     *testenv.MariaDB
	src    *sql.DB // database/sql over the source database, for setup and reads
	pgDSN  string
	pg     *pgxpool.Pool
	rdb    *redis.Client
	nc     *nats.Conn
	js     jetstream.JetStream
	prefix string // Redis key prefix, "<name>:"

	dir      string // temp dir: configs and dialsync logs
	serverID uint32
	streams  []string

	cleanups []func()
}

const pipelineName = "bench"

func newBench(ctx context.Context, o options, log *slog.Logger) (b *bench, err error) {
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	b = &bench{o: o, log: log, name: "bench_" + hex.EncodeToString(suffix[:]), serverID: 90_000}
	b.prefix = b.name + ":"
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.dir, err = os.MkdirTemp("", "dialsync-bench-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	b.cleanups = append(b.cleanups, func() {
		if o.keep {
			log.Info("kept the dialsync logs and configs", "dir", b.dir)
			return
		}
		_ = os.RemoveAll(b.dir)
	})

	log.Info("starting a private binlog-enabled MariaDB")
	b.my, err = testenv.Launch(testenv.MariaDBOptions{
		ServerID: 77,
		// The seeded data (~150 MB with indexes) must fit in memory, and a
		// 1M-row backlog should not stall on redo log checkpoints: these
		// override testenv's small test sizes (the last option wins).
		// At 10x data (-users 500000, ~1.5 GB) the pool grows with it.
		Args: []string{fmt.Sprintf("--innodb-buffer-pool-size=%dM", bufferPoolMB(o.size.Users)), "--innodb-log-file-size=512M", "--max-connections=200"},
	})
	if err != nil {
		return nil, fmt.Errorf("start mariadb: %w", err)
	}
	b.cleanups = append(b.cleanups, b.my.Close)

	root, err := sql.Open("mysql", b.my.DSN(""))
	if err != nil {
		return nil, fmt.Errorf("open source: %w", err)
	}
	_, err = root.ExecContext(ctx, "CREATE DATABASE `"+b.name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
	root.Close()
	if err != nil {
		return nil, fmt.Errorf("create source database: %w", err)
	}
	if b.src, err = sql.Open("mysql", b.my.DSN(b.name)); err != nil {
		return nil, fmt.Errorf("open source database: %w", err)
	}
	b.src.SetMaxOpenConns(16)
	b.cleanups = append(b.cleanups, func() { b.src.Close() })
	if err := demo.CreateSchema(ctx, b.src); err != nil {
		return nil, err
	}
	c := o.size.Counts()
	log.Info("seeding the source", "users", c.Users, "claims", c.Claims, "requirements", c.Requirements)
	t0 := time.Now()
	if err := demo.Seed(ctx, b.src, o.size); err != nil {
		return nil, err
	}
	log.Info("seeded", "took", time.Since(t0).Round(time.Millisecond))

	if err := b.createPG(ctx); err != nil {
		return nil, err
	}

	b.rdb = redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 16})
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", o.redisAddr, err)
	}
	b.cleanups = append(b.cleanups, func() {
		b.deleteKeys(context.Background())
		b.rdb.Close()
	})

	if b.nc, err = nats.Connect(o.natsURL, nats.Name("dialsync-bench")); err != nil {
		return nil, fmt.Errorf("nats %s: %w", o.natsURL, err)
	}
	b.cleanups = append(b.cleanups, b.nc.Close)
	if b.js, err = jetstream.New(b.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.cleanups = append(b.cleanups, func() {
		for _, s := range b.streams {
			_ = b.js.DeleteStream(context.Background(), s)
		}
	})
	return b, nil
}

// bufferPoolMB sizes the private MariaDB's buffer pool for the seeded
// data: 1 GiB up to the reference size, about 4 KiB a user beyond it.
func bufferPoolMB(users int) int { return max(1024, users*4/1024) }

func (b *bench) createPG(ctx context.Context) error {
	admin, err := pgx.Connect(ctx, b.o.pgAdmin)
	if err != nil {
		return fmt.Errorf("postgres admin: %w", err)
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{b.name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("create postgres database: %w", err)
	}
	b.cleanups = append(b.cleanups, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, b.o.pgAdmin); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(b.o.pgAdmin)
	if err != nil {
		return fmt.Errorf("postgres admin DSN must be a postgres:// URL: %w", err)
	}
	u.Path = "/" + b.name
	b.pgDSN = u.String()
	if b.pg, err = pgxpool.New(ctx, b.pgDSN); err != nil {
		return fmt.Errorf("postgres pool: %w", err)
	}
	b.cleanups = append(b.cleanups, b.pg.Close)
	return nil
}

// deleteKeys removes the run's Redis keys.
func (b *bench) deleteKeys(ctx context.Context) {
	iter := b.rdb.Scan(ctx, 0, b.prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			b.rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		b.rdb.Unlink(ctx, batch...)
	}
}

func (b *bench) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

// pipeCfg names one dialsync pipeline's sinks.
type pipeCfg struct {
	schema   string // PostgreSQL schema
	stream   string // JetStream stream
	subjects string // subject prefix
	listen   string // dialsync's HTTP listen address ("" = off)
}

// mainPipe is the measured pipeline; its /metrics tell where the apply
// loop's time goes.
func (b *bench) mainPipe() (pipeCfg, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return pipeCfg{}, fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return pipeCfg{schema: "dialsync", stream: strings.ToUpper(b.name), subjects: b.name, listen: addr}, nil
}

// scrape reads the pipeline's /metrics; nil (logged) when it cannot, since
// the stage breakdown is a diagnosis, not a result.
func (b *bench) scrape(ctx context.Context, pc pipeCfg) benchkit.Metrics {
	if pc.listen == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := benchkit.Scrape(ctx, "http://"+pc.listen+"/metrics")
	if err != nil {
		b.log.Warn("could not scrape dialsync's metrics", "error", err)
		return nil
	}
	return m
}

// profileCPU fetches a CPU profile of dialsync over the next d into
// <profile folder>/<name>.pprof, in the background; wait for it with the
// returned func. A no-op without -profile. Failures are logged: a profile
// is a diagnosis, not a result.
func (b *bench) profileCPU(ctx context.Context, pc pipeCfg, name string, d time.Duration) (wait func()) {
	return b.fetchProfile(ctx, pc, name, fmt.Sprintf("profile?seconds=%d", max(1, int(d.Seconds()))))
}

// fetchProfile fetches /debug/pprof/<what> of dialsync into <profile
// folder>/<name>.pprof in the background (see profileCPU).
func (b *bench) fetchProfile(ctx context.Context, pc pipeCfg, name, what string) (wait func()) {
	if b.o.profile == "" || pc.listen == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/%s", pc.listen, what)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			b.log.Warn("profile", "error", err)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.log.Warn("profile", "error", err)
			return
		}
		defer resp.Body.Close()
		if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
			b.log.Warn("profile", "error", err)
			return
		}
		path := filepath.Join(b.o.profile, name+".pprof")
		f, err := os.Create(path)
		if err != nil {
			b.log.Warn("profile", "error", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			b.log.Warn("profile", "error", err)
			return
		}
		b.log.Info("profile written", "path", path)
	}()
	return func() { <-done }
}

// writeConfig writes a dialsync config for p (the shape of the end-to-end
// tests' configs, dstest.Config) and returns its path.
func (b *bench) writeConfig(p pipeCfg) (string, error) {
	b.serverID++
	c := b.pipeConfig(p)
	path := filepath.Join(b.dir, p.stream+".toml")
	if err := dstest.WriteConfig(path, c); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	for _, s := range b.streams {
		if s == p.stream {
			return path, nil
		}
	}
	b.streams = append(b.streams, p.stream)
	return path, nil
}

// pipeConfig is the dialsync config of p with the current server id.
func (b *bench) pipeConfig(p pipeCfg) *config.Config {
	c := dstest.Config(dstest.Target{
		Pipeline: pipelineName, SourceAddr: b.my.Addr(), Database: b.name, ServerID: b.serverID, PostgresDSN: b.pgDSN,
		RedisAddr: b.o.redisAddr, RedisPrefix: b.prefix, NATSURL: b.o.natsURL, Stream: p.stream, Subjects: p.subjects,
	})
	// The bench measures with the production source timings, not the
	// tests' quick heartbeat.
	d := config.Default()
	c.Source.HeartbeatPeriod, c.Source.ReadTimeout = d.Source.HeartbeatPeriod, d.Source.ReadTimeout
	c.Postgres.Schema = p.schema
	c.HTTP.Listen, c.HTTP.Pprof = p.listen, b.o.profile != ""
	return c
}

// sourceHead is the source's current GTID position.
func (b *bench) sourceHead(ctx context.Context) (string, error) {
	var g string
	if err := b.src.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&g); err != nil {
		return "", fmt.Errorf("read source head: %w", err)
	}
	return g, nil
}

// checkpoint reads the pipeline's stored GTID set ("" when none).
func (b *bench) checkpoint(ctx context.Context, schema string) (string, error) {
	var g string
	err := b.pg.QueryRow(ctx, `SELECT gtid_set FROM `+pgx.Identifier{schema, "checkpoints"}.Sanitize()+` WHERE pipeline = $1`, pipelineName).Scan(&g)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return "", nil // not migrated yet
	}
	if err != nil {
		return "", fmt.Errorf("read checkpoint: %w", err)
	}
	return g, nil
}

// waitCaughtUp waits until the checkpoint covers want (the source head when
// empty); it fails early when the process exits.
func (b *bench) waitCaughtUp(ctx context.Context, p *dsProc, schema, want string, within time.Duration) error {
	if want == "" {
		var err error
		if want, err = b.sourceHead(ctx); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(within)
	for {
		g, err := b.checkpoint(ctx, schema)
		if err != nil {
			return err
		}
		if benchkit.GTIDCovers(g, want) {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("dialsync exited while catching up to %s: %s", want, p.lastErrors())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("checkpoint %q did not reach %q within %s", g, want, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// dsProc is a running `dialsync run`.
type dsProc struct {
	p       *proc.Proc
	started time.Time
	done    chan struct{} // closed once the process ended and its log is closed
	watch   *logWatch
}

// startDialsync runs the binary with cfgPath; its log goes to logPath and
// through a watcher that remembers the lines the harness waits for.
func (b *bench) startDialsync(cfgPath, logPath string) (*dsProc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("dialsync log: %w", err)
	}
	w := newLogWatch()
	out := io.MultiWriter(f, w)
	dp := &dsProc{watch: w, done: make(chan struct{}), started: time.Now()}
	dp.p, err = proc.Start(b.o.bin, proc.Options{Args: []string{"run", "--config", cfgPath}, Stdout: out, Stderr: out})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (run `make build` first): %w", b.o.bin, err)
	}
	go func() { <-dp.p.Done(); w.Close(); f.Close(); close(dp.done) }()
	return dp, nil
}

func (p *dsProc) pid() int { return p.p.Pid() }

func (p *dsProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process with SIGTERM (SIGKILL after 60 s).
func (p *dsProc) stop() error {
	if p == nil || p.exited() {
		return nil
	}
	code, killed := p.p.Stop(syscall.SIGTERM, 60*time.Second)
	<-p.done
	if killed {
		return errors.New("dialsync did not stop within 60s of SIGTERM; killed")
	}
	if code != 0 {
		return fmt.Errorf("dialsync exited with code %d: %s", code, p.lastErrors())
	}
	return nil
}

func (p *dsProc) lastErrors() string { return p.watch.errors() }

// logLine is one JSON log line of interest.
type logLine struct {
	at     time.Time
	fields map[string]any
}

// logWatch parses dialsync's JSON log lines as they are written and keeps
// the ones with level ERROR/WARN and the "bootstrap reconcile done" line.
type logWatch struct {
	pw   *io.PipeWriter
	mu   sync.Mutex
	kept []logLine
	errs []string
}

func newLogWatch() *logWatch {
	pr, pw := io.Pipe()
	w := &logWatch{pw: pw}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			now := time.Now()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			lvl, _ := m["level"].(string)
			msg, _ := m["msg"].(string)
			w.mu.Lock()
			if lvl == "ERROR" || lvl == "WARN" {
				w.errs = append(w.errs, lvl+" "+msg+" "+fmt.Sprint(m["error"]))
				if len(w.errs) > 20 {
					w.errs = w.errs[1:]
				}
			}
			if msg == "bootstrap reconcile done" {
				w.kept = append(w.kept, logLine{at: now, fields: m})
			}
			w.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return w
}

func (w *logWatch) Write(b []byte) (int, error) { return w.pw.Write(b) }
func (w *logWatch) Close()                      { _ = w.pw.Close() }

func (w *logWatch) errors() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) == 0 {
		return "(no warnings or errors logged)"
	}
	return strings.Join(w.errs, "; ")
}

// waitFor waits for a kept line with msg.
func (p *dsProc) waitFor(ctx context.Context, msg string, within time.Duration) (logLine, error) {
	deadline := time.Now().Add(within)
	for {
		p.watch.mu.Lock()
		for _, l := range p.watch.kept {
			if l.fields["msg"] == msg {
				p.watch.mu.Unlock()
				return l, nil
			}
		}
		p.watch.mu.Unlock()
		if p.exited() {
			return logLine{}, fmt.Errorf("dialsync exited before logging %q: %s", msg, p.lastErrors())
		}
		if time.Now().After(deadline) {
			return logLine{}, fmt.Errorf("dialsync did not log %q within %s", msg, within)
		}
		select {
		case <-ctx.Done():
			return logLine{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// durationField reads a slog duration: the JSON handler writes nanoseconds
// as a number, the text handler a Go duration string.
func durationField(v any) (time.Duration, bool) {
	switch x := v.(type) {
	case float64:
		return time.Duration(x), true
	case string:
		d, err := time.ParseDuration(x)
		return d, err == nil
	}
	return 0, false
}

func intField(v any) int {
	if x, ok := v.(float64); ok {
		return int(x)
	}
	return 0
}

package pipeline_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/testenv"
	"dialsync/internal/pipeline"
)

// These tests run the pipeline in-process against real servers: a private
// binlog-enabled MariaDB (testenv), the machine's PostgreSQL, Redis and
// NATS with JetStream.

func TestMain(m *testing.M) { testenv.Main(m) }

var serverIDs atomic.Uint32

func init() { serverIDs.Store(uint32(time.Now().UnixNano()%1_000_000) + 500_000) }

// TestCloseJoinsEveryGoroutine stops a pipeline while one of its scheduled
// jobs is inside a PostgreSQL statement (held there by the pool's tracer)
// and proves that Close waits for it: the lease is released only after the
// statement ended, no goroutine of dialsync's is left when Close returns,
// and no statement reaches PostgreSQL afterwards.
func TestCloseJoinsEveryGoroutine(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	for _, tc := range []struct {
		name                    string
		reconcile, housekeeping time.Duration
	}{
		// Housekeeping queries PostgreSQL from its own goroutine.
		{"housekeeping", 0, 50 * time.Millisecond},
		// A scheduled reconcile queries it through the apply loop.
		{"scheduled reconcile", 50 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testCloseJoins(t, my, tc.reconcile, tc.housekeeping)
		})
	}
}

func testCloseJoins(t *testing.T, my *testenv.MariaDB, reconcileEvery, housekeepEvery time.Duration) {
	before := ourGoroutines()
	if len(before) > 0 {
		t.Fatalf("dialsync goroutines before the test:\n%s", strings.Join(before, "\n\n"))
	}
	cfg, appName := newConfig(t, my)
	cfg.Reconcile.Interval = config.Dur(reconcileEvery)
	cfg.Housekeeping.Interval = config.Dur(housekeepEvery)
	logs := &recorder{}
	log := slog.New(logs)
	tr := &holdTracer{held: make(chan struct{}), release: make(chan struct{})}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := pipeline.Open(ctx, cfg, log, pipeline.Options{Version: "test", PGTracer: tr})
	if err != nil {
		t.Fatalf("open: %v\n%s", err, logs)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(runCtx) }()
	closed := false
	defer func() {
		if !closed {
			tr.free()
			p.Close()
		}
	}()

	// The bootstrap is done once the binlog stream starts; from then on
	// the pool's statements come from the scheduled job only (the source
	// is idle).
	logs.wait(t, "binlog stream starting", 60*time.Second)
	tr.arm()
	select {
	case <-tr.held:
	case err := <-runDone:
		t.Fatalf("run ended before the scheduled job queried PostgreSQL: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("no scheduled statement reached PostgreSQL\n%s", logs)
	}

	// Stop as the first SIGTERM does, then Close while the job is still
	// inside its statement.
	stopRun()
	closeDone := make(chan error, 1)
	go func() { closeDone <- p.Close() }()
	select {
	case err := <-closeDone:
		t.Fatalf("Close returned (%v) while a scheduled job was inside a statement", err)
	case <-time.After(500 * time.Millisecond):
	}
	if at, ok := logs.at("lease released"); ok {
		t.Fatalf("lease released at %s while a scheduled job was inside a statement", at.Format(time.RFC3339Nano))
	}
	tr.free()
	select {
	case err := <-closeDone:
		closed = true
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Close did not return\n%s", logs)
	}
	closedAt := time.Now()
	// Libraries run their callbacks (ours) on their own goroutines for a
	// moment after their Close: a short grace.
	for deadline := closedAt.Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left := ourGoroutines()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("dialsync goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
			break
		}
	}
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	default:
		t.Error("Close returned before Run")
	}

	heldEnd := tr.heldEnd()
	released, ok := logs.at("lease released")
	switch {
	case heldEnd.IsZero():
		t.Error("the held statement never ended")
	case !ok:
		t.Errorf("the lease was not released\n%s", logs)
	case released.Before(heldEnd):
		t.Errorf("lease released at %s, before the held statement ended at %s", released.Format(time.RFC3339Nano), heldEnd.Format(time.RFC3339Nano))
	}

	// Nothing reaches PostgreSQL after Close: no statement on the pool,
	// no session of the pipeline's (pool or lease connection).
	time.Sleep(5 * max(reconcileEvery, housekeepEvery))
	if n := tr.startedAfter(closedAt); n > 0 {
		t.Errorf("%d statements started after Close returned", n)
	}
	admin := testPool(t, cfg.Postgres.DSN)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d PostgreSQL sessions of the pipeline left after Close", n)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newConfig is a valid configuration for a fresh pipeline with its own
// source database, PostgreSQL database, Redis prefix and stream. appName
// is the application_name of its PostgreSQL sessions.
func newConfig(t *testing.T, my *testenv.MariaDB) (cfg *config.Config, appName string) {
	t.Helper()
	ctx := context.Background()
	name := testenv.Name(t)
	my.CreateDatabase(t, name)
	src, err := sql.Open("mysql", my.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := demo.CreateSchema(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := demo.Seed(ctx, src, demo.Size{Users: 200, ClaimsPerUser: 2, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 3}); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(testenv.PostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	appName = "dialsync_" + name
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()

	stream := strings.ToUpper("DS_" + name)
	t.Cleanup(func() {
		nc, err := nats.Connect("nats://127.0.0.1:4222")
		if err != nil {
			return
		}
		defer nc.Close()
		if js, err := jetstream.New(nc); err == nil {
			_ = js.DeleteStream(context.Background(), stream)
		}
	})

	cfg = config.Default()
	cfg.Pipeline.Name = "p_" + name
	cfg.Source.Addr, cfg.Source.User, cfg.Source.Flavor = my.Addr(), "root", "mariadb"
	cfg.Source.ServerID, cfg.Source.Database = serverIDs.Add(1), name
	cfg.Source.HeartbeatPeriod, cfg.Source.ReadTimeout = config.Dur(time.Second), config.Dur(5*time.Second)
	cfg.Postgres.DSN = u.String()
	cfg.Redis.Addr, cfg.Redis.Prefix = "127.0.0.1:6379", name+":"
	cfg.NATS.URL, cfg.NATS.Stream, cfg.NATS.SubjectPrefix = "nats://127.0.0.1:4222", stream, "ds_"+name
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Apply.RetryInitial, cfg.Apply.RetryMax = config.Dur(20*time.Millisecond), config.Dur(500*time.Millisecond)
	cfg.Reconcile.ChunkSize = 50
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg, appName
}

func testPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "dialsync_test_admin"
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// ourGoroutines are the stacks of the goroutines running dialsync code,
// other than this test's and the test servers'.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var ours []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, line := range strings.Split(g, "\n") {
			if strings.HasPrefix(line, "dialsync/") && !strings.HasPrefix(line, "dialsync/internal/pipeline_test.") &&
				!strings.HasPrefix(line, "dialsync/internal/dev/") {
				ours = append(ours, g)
				break
			}
		}
	}
	return ours
}

// holdTracer is the pool's tracer (of queries, batches and copies): once
// armed, it holds the first statement that starts until free is called,
// and it records when every statement started.
type holdTracer struct {
	held, release chan struct{}
	freeOnce      sync.Once

	mu      sync.Mutex
	armed   bool
	holding bool
	ended   time.Time // when the held statement ended
	starts  []time.Time
}

type heldKey struct{}

func (tr *holdTracer) arm() {
	tr.mu.Lock()
	tr.armed = true
	tr.mu.Unlock()
}

func (tr *holdTracer) free() { tr.freeOnce.Do(func() { close(tr.release) }) }

func (tr *holdTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return tr.start(ctx)
}

func (tr *holdTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	tr.end(ctx)
}

// A batch (the queue's writes) is one round trip: traced as a whole.
func (tr *holdTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return tr.start(ctx)
}

func (tr *holdTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (tr *holdTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchEndData) {
	tr.end(ctx)
}

func (tr *holdTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	return tr.start(ctx)
}

func (tr *holdTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromEndData) {
	tr.end(ctx)
}

func (tr *holdTracer) start(ctx context.Context) context.Context {
	tr.mu.Lock()
	tr.starts = append(tr.starts, time.Now())
	hold := tr.armed && !tr.holding
	tr.holding = tr.holding || hold
	tr.mu.Unlock()
	if !hold {
		return ctx
	}
	close(tr.held)
	<-tr.release
	return context.WithValue(ctx, heldKey{}, true)
}

func (tr *holdTracer) end(ctx context.Context) {
	if ctx.Value(heldKey{}) != nil {
		tr.mu.Lock()
		tr.ended = time.Now()
		tr.mu.Unlock()
	}
}

func (tr *holdTracer) heldEnd() time.Time {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ended
}

func (tr *holdTracer) startedAfter(t time.Time) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, s := range tr.starts {
		if s.After(t) {
			n++
		}
	}
	return n
}

// recorder is a slog handler keeping every record's time and message.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}

// at is when msg was first logged.
func (r *recorder) at(msg string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Message == msg {
			return rec.Time, true
		}
	}
	return time.Time{}, false
}

func (r *recorder) wait(t *testing.T, msg string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, ok := r.at(msg); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log within %s\n%s", msg, within, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b bytes.Buffer
	for _, rec := range r.recs {
		fmt.Fprintf(&b, "%s %s %s", rec.Time.Format("15:04:05.000"), rec.Level, rec.Message)
		rec.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		b.WriteByte('\n')
	}
	return b.String()
}

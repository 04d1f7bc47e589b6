package chaos

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/testenv"
	"dialsync/internal/publish/natstest"
)

var (
	long        = flag.Bool("chaos.long", false, "run the long fault-injection suite (make chaos)")
	faulty      = flag.Bool("chaos.faults", true, "inject faults (false: the same workload and checks without faults, to tell fault-related findings apart)")
	only        = flag.String("chaos.only", "", "inject only these fault kinds (comma-separated: kill,mariadb,postgres,redis,nats)")
	txns        = flag.Int("chaos.txns", 0, "source transactions to reach (0: the mode's default; a smaller -chaos.long run is a medium run)")
	batchWindow = flag.String("chaos.batch_window", "", "apply.batch_window for dialsync (empty: its default)")
)

var binPath string

// TestMain builds the binary under test from this module's source, unless
// CHAOS_DIALSYNC_BIN names one already built (e.g. bin/dialsync).
func TestMain(m *testing.M) {
	flag.Parse()
	// go-redis logs every failed dial of the suite's own client while Redis
	// is down on purpose; that is noise here.
	redis.SetLogger(quietLogger{})
	if bin := os.Getenv("CHAOS_DIALSYNC_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binPath = abs
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "dialsync-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "dialsync")
	if err := dstest.BuildDialsync(binPath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// params size a run.
type params struct {
	users       int // seeded users
	writers     int // workload goroutines
	rate        int // source transactions per second, all writers together
	minTxns     int // keep going (and injecting faults) until this many
	kills       int // kill -9 of dialsync, at least
	restarts    int // restarts of each dependency, at least
	gap         [2]time.Duration
	down        [2]time.Duration
	cacheSample int
	cachePeriod time.Duration
}

func shortParams() params {
	return params{users: 2000, writers: 4, rate: 80, minTxns: 3000, kills: 5, restarts: 1,
		gap:  [2]time.Duration{300 * time.Millisecond, 1500 * time.Millisecond},
		down: [2]time.Duration{200 * time.Millisecond, 2 * time.Second}, cacheSample: 20, cachePeriod: 50 * time.Millisecond}
}

func longParams() params {
	return params{users: 20000, writers: 6, rate: 150, minTxns: 200_000, kills: 20, restarts: 3,
		gap:  [2]time.Duration{2 * time.Second, 20 * time.Second},
		down: [2]time.Duration{200 * time.Millisecond, 5 * time.Second}, cacheSample: 25, cachePeriod: 100 * time.Millisecond}
}

// Fault kinds.
const (
	kindKill     = "kill -9 dialsync"
	kindMariaDB  = "restart mariadb"
	kindPostgres = "restart postgres"
	kindRedis    = "restart redis"
	kindNATS     = "restart nats"
)

var kinds = []string{kindKill, kindMariaDB, kindPostgres, kindRedis, kindNATS}

var shortKind = map[string]string{kindKill: "kill", kindMariaDB: "mariadb", kindPostgres: "postgres", kindRedis: "redis", kindNATS: "nats"}

type faultStats struct {
	injected, survived int
	advance, caughtUp  []time.Duration // from fault end
	killsDuringOutage  int
}

// TestChaos runs the workload, injects faults into dialsync and each of its
// dependencies, then checks the result independently (see checker_test.go).
func TestChaos(t *testing.T) {
	p := shortParams()
	if *long {
		p = longParams()
	}
	if *txns > 0 {
		p.minTxns = *txns
	}
	if testing.Short() && !*long {
		t.Skip("chaos suite skipped in -short mode")
	}
	ctx := context.Background()
	start := time.Now()

	// Servers, all private: each is killed or restarted below.
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	const dbName = "chaos"
	my.CreateDatabase(t, dbName)
	src, err := sql.Open("mysql", my.DSN(dbName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if err := demo.CreateSchema(ctx, src); err != nil {
		t.Fatal(err)
	}
	size := demo.Size{Users: p.users, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 42}
	if err := demo.Seed(ctx, src, size); err != nil {
		t.Fatal(err)
	}
	pgs := testenv.StartPostgres(t, testenv.PostgresOptions{})
	rs := startRedis(t)
	ns := natstest.Start(t)
	t.Logf("servers: mariadb %s, postgres 127.0.0.1:%d, redis %s, nats %s (set up in %s)",
		my.Addr(), pgs.Port(), rs.Addr(), ns.URL, time.Since(start).Round(time.Millisecond))

	const pipeline, prefix, stream, subjects = "chaos", "chaos:", "CHAOS", "chaos"
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := dstest.Config(dstest.Target{
		Pipeline: pipeline, SourceAddr: my.Addr(), Database: dbName, ServerID: 4343, PostgresDSN: pgs.DSN(),
		RedisAddr: rs.Addr(), RedisPrefix: prefix, NATSURL: ns.URL, Stream: stream, Subjects: subjects,
	})
	cfg.NATS.AckTimeout = config.Dur(2 * time.Second)
	cfg.Apply.RetryInitial = config.Dur(20 * time.Millisecond)
	cfg.Apply.RetryMax = config.Dur(time.Second)
	if *batchWindow != "" {
		if err := cfg.Apply.BatchWindow.UnmarshalText([]byte(*batchWindow)); err != nil {
			t.Fatalf("-chaos.batch_window: %v", err)
		}
	}
	if err := dstest.WriteConfig(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	ds, err := newDialsync(binPath, cfgPath, filepath.Join(dir, "dialsync.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ds.kill()
		if t.Failed() {
			t.Logf("dialsync log tail:\n%s", ds.logTail(60))
		}
		ds.close()
	})

	watch := &ckptWatch{}
	wctx, stopWatch := context.WithCancel(ctx)
	var watchWG sync.WaitGroup
	watchWG.Go(func() { watch.run(wctx, pgs.DSN(), pipeline) })
	t.Cleanup(func() { stopWatch(); watchWG.Wait() })

	// waitCovers waits until the checkpoint covers the source head as read
	// now (retrying while MariaDB is down), and returns when it did.
	waitCovers := func(within time.Duration) (time.Time, bool) {
		deadline := time.Now().Add(within)
		var head uint64
		for {
			h, err := headSeq(ctx, src)
			if err == nil {
				head = h
				break
			}
			if time.Now().After(deadline) {
				return time.Time{}, false
			}
			time.Sleep(20 * time.Millisecond)
		}
		for time.Now().Before(deadline) {
			if seq, _ := watch.current(); seq >= head {
				return time.Now(), true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Time{}, false
	}

	ds.start()
	if _, ok := waitCovers(2 * time.Minute); !ok {
		t.Fatalf("dialsync did not bootstrap and catch up within 2m")
	}
	t.Logf("bootstrapped after %s", time.Since(start).Round(time.Millisecond))

	// The workload and the cache filler run through every fault.
	l := newLedger()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr(), MaxRetries: 1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	var maxUser atomic.Uint64
	maxUser.Store(uint64(p.users + p.users/20))
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loadWG sync.WaitGroup
	for i := range p.writers {
		interval := time.Duration(p.writers) * time.Second / time.Duration(p.rate)
		loadWG.Go(func() { writer(loadCtx, my.DSN(dbName), int64(1000+i), interval, l) })
	}
	loadWG.Go(func() { cacheFiller(loadCtx, src, rdb, prefix, &maxUser, p.cacheSample, p.cachePeriod, l) })
	t.Cleanup(func() { stopLoad(); loadWG.Wait() })

	// The fault schedule: the minimum of each kind in random order, then
	// more random faults until the workload has done enough.
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 99))
	var schedule []string
	for range p.kills {
		schedule = append(schedule, kindKill)
	}
	for _, k := range kinds[1:] {
		for range p.restarts {
			schedule = append(schedule, k)
		}
	}
	r.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
	between := func(d [2]time.Duration) time.Duration { return d[0] + time.Duration(r.Int64N(int64(d[1]-d[0]))) }

	stats := map[string]*faultStats{}
	for _, k := range kinds {
		stats[k] = &faultStats{}
	}
	var crash bool // whether the current outage kills its server (else a clean stop)
	how := ""      // the same, for the fault timeline
	// outage runs down(), keeps the dependency down for a random while (in
	// which dialsync is sometimes killed and restarted too, so it starts
	// while the dependency is missing), then up().
	outage := func(st *faultStats, down, up func()) {
		down()
		if crash {
			how = " (crash)"
		} else {
			how = " (clean stop)"
		}
		hold := between(p.down)
		if r.IntN(3) == 0 {
			time.Sleep(hold / 2)
			ds.kill()
			ds.start()
			st.killsDuringOutage++
			time.Sleep(hold / 2)
		} else {
			time.Sleep(hold)
		}
		up()
	}
	var timeline []string // "kind: source head before -> after"
	inject := func(kind string) {
		how = ""
		st := stats[kind]
		st.injected++
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		h0, _ := headSeq(hctx, src)
		hcancel()
		defer func() {
			hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
			h1, _ := headSeq(hctx, src)
			hcancel()
			timeline = append(timeline, fmt.Sprintf("%s %s%s: source head seq %d -> %d", time.Now().Format("15:04:05.000"), kind, how, h0, h1))
		}()
		switch kind {
		case kindKill:
			ds.kill()
			time.Sleep(time.Duration(r.Int64N(int64(time.Second))))
			ds.start()
		case kindMariaDB:
			crash = r.IntN(2) == 0
			outage(st, func() {
				if crash {
					my.Kill(t)
				} else {
					my.Stop(t)
				}
			}, func() { my.Start(t) })
		case kindPostgres:
			crash = r.IntN(2) == 0
			outage(st, func() {
				var err error
				if crash {
					err = pgs.Crash()
				} else {
					err = pgs.Stop()
				}
				if err != nil {
					t.Fatal(err)
				}
			}, func() {
				if err := pgs.Start(); err != nil {
					t.Fatal(err)
				}
			})
		case kindRedis:
			crash = true
			outage(st, func() { _ = rs.kill() }, func() {
				if err := rs.start(); err != nil {
					t.Fatal(err)
				}
			})
		case kindNATS:
			crash = r.IntN(2) == 0
			outage(st, func() {
				if crash {
					ns.Kill()
				} else {
					ns.Stop()
				}
			}, ns.Restart)
		}
		end := time.Now()
		// Recovery: the first checkpoint advance after the fault ended, and
		// the checkpoint covering the source head as of then.
		caught, ok := waitCovers(3 * time.Minute)
		if !ok {
			t.Errorf("%s: the checkpoint did not catch up within 3m of the fault's end", kind)
			return
		}
		_, adv := watch.current()
		for adv.Before(end) && time.Since(end) < time.Minute {
			time.Sleep(10 * time.Millisecond)
			_, adv = watch.current()
		}
		st.survived++
		st.caughtUp = append(st.caughtUp, caught.Sub(end))
		if !adv.Before(end) {
			st.advance = append(st.advance, adv.Sub(end))
		}
	}
	faults := 0
	for i := 0; i < len(schedule) || l.count() < p.minTxns; i++ {
		if t.Failed() {
			break
		}
		if dl, ok := t.Deadline(); ok && time.Until(dl) < 6*time.Minute {
			t.Errorf("stopping the faults early: the test deadline is near (%d transactions so far)", l.count())
			break
		}
		kind := kinds[r.IntN(len(kinds))]
		if i < len(schedule) {
			kind = schedule[i]
		}
		time.Sleep(between(p.gap))
		if !*faulty || (*only != "" && !slices.Contains(strings.Split(*only, ","), shortKind[kind])) {
			continue
		}
		inject(kind)
		faults++
		if faults%10 == 0 || !*long {
			l.mu.Lock()
			t.Logf("%s: %d faults (last: %s), %d transactions, %d failed steps (last error: %s)",
				time.Since(start).Round(time.Second), faults, kind, len(l.txns), l.stepErrs, l.lastErr)
			l.mu.Unlock()
		}
	}
	stopLoad()
	loadWG.Wait()

	// Drain: dialsync catches up with the source's final head.
	if _, ok := waitCovers(5 * time.Minute); !ok {
		t.Fatalf("dialsync did not catch up after the workload stopped")
	}
	time.Sleep(200 * time.Millisecond) // a last poll of the checkpoint
	stopWatch()
	watchWG.Wait()

	// The independent check.
	l.mu.Lock()
	txns := slices.Clone(l.txns)
	sets := make(map[string]keySet, len(l.keySets))
	for k, v := range l.keySets {
		sets[k] = v
	}
	stepErrs, noGTID := l.stepErrs, l.noGTID
	l.mu.Unlock()
	f := &figures{}
	js := dstest.JetStream(t, ns.URL, "")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	msgs, err := readStream(cctx, js, stream)
	if err != nil {
		t.Fatal(err)
	}
	checkNotices(f, txns, msgs)
	if err := checkKeys(cctx, f, rdb, prefix, txns, sets); err != nil {
		t.Fatal(err)
	}
	pgc, err := pgx.Connect(cctx, pgs.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pgc.Close(ctx)
	if err := checkQueue(cctx, f, src, pgc); err != nil {
		t.Fatal(err)
	}
	runs, selfExits, startErrs := ds.stats()
	code := ds.stop()

	// Figures.
	var b strings.Builder
	fmt.Fprintf(&b, "\n=== chaos: %s mode, %s ===\n", map[bool]string{true: "long", false: "short"}[*long], time.Since(start).Round(time.Second))
	fmt.Fprintf(&b, "source transactions: %d recorded with GTID (%d touching users, %d (transaction, user) pairs); %d with unknown outcome (failed mid-fault), %d committed but GTID unreadable\n",
		f.Txns, f.TxnsTouchingUsers, f.Pairs, stepErrs, noGTID)
	fmt.Fprintf(&b, "notices in stream: %d %v\n", f.Notices, f.NoticesByType)
	fmt.Fprintf(&b, "faults (injected/survived; recovery = fault end -> first checkpoint advance | -> checkpoint covers the head; min/median/max):\n")
	for _, k := range kinds {
		st := stats[k]
		extra := ""
		if st.killsDuringOutage > 0 {
			extra = fmt.Sprintf(" (+%d dialsync kills during the outage)", st.killsDuringOutage)
		}
		fmt.Fprintf(&b, "  %-18s %3d/%-3d advance %s | caught up %s%s\n", k, st.injected, st.survived, spread(st.advance), spread(st.caughtUp), extra)
	}
	fmt.Fprintf(&b, "dialsync: %d runs, %d exits on its own (restarted by the supervisor), %d failed starts; final SIGTERM exit code %d\n", runs, len(selfExits), startErrs, code)
	if len(selfExits) > 0 {
		fmt.Fprintf(&b, "  own exits: %s\n", summarize(selfExits))
	}
	watch.mu.Lock()
	regressions := slices.Clone(watch.regressions)
	fmt.Fprintf(&b, "checkpoint polls: %d (%d failed: PostgreSQL down, or no checkpoint yet)\n", watch.polls, watch.errs)
	watch.mu.Unlock()
	fmt.Fprintf(&b, "cache: %d keys set, %d present at the end, %d ambiguous (touched only while the SET was in flight)\n", f.KeysSet, f.KeysPresent, f.AmbiguousKeys)
	fmt.Fprintf(&b, "queue: %d rows expected by the rule, %d in call_queue\n", f.ExpectedQueue, f.ActualQueue)
	fmt.Fprintf(&b, "user.changed notices for a recorded transaction but a user it did not list (informational): %d\n", f.Unattributed)
	fmt.Fprintf(&b, "RESULT: changes lost %d | duplicate ids %d | duplicate (transaction, user) %d | id/header mismatch %d | stale cache keys %d (unknown values %d) | queue drift %d | stale queue notices %d | checkpoint regressions %d\n",
		f.Lost, f.DupIDs, f.DupPairs, f.IDMismatch, f.StaleKeys, f.UnknownTokens, f.Drift, f.StaleQueueNotices, len(regressions))
	for _, e := range f.Examples {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	if f.bad() > 0 || len(regressions) > 0 {
		fmt.Fprintf(&b, "fault timeline:\n  %s\n", strings.Join(timeline, "\n  "))
		for _, u := range f.DriftUsers {
			var hist []string
			for _, tx := range txns {
				if slices.Contains(tx.users, u) {
					hist = append(hist, fmt.Sprintf("%d:%s", tx.seq, tx.kind))
				}
			}
			fmt.Fprintf(&b, "  drift user %d was touched by: %s\n", u, strings.Join(hist, " "))
		}
	}
	for _, rg := range regressions {
		fmt.Fprintf(&b, "  checkpoint regression %s\n", rg)
	}
	t.Log(b.String())

	if f.bad() > 0 || len(regressions) > 0 {
		t.Errorf("invariants broken: see RESULT above")
	}
	if code != 0 {
		t.Errorf("dialsync exit code after SIGTERM = %d, want 0", code)
	}
	if f.Txns < p.minTxns {
		t.Errorf("only %d transactions recorded, want at least %d", f.Txns, p.minTxns)
	}
	for _, k := range kinds {
		if stats[k].survived < stats[k].injected {
			t.Errorf("%s: %d of %d faults not survived", k, stats[k].injected-stats[k].survived, stats[k].injected)
		}
	}
}

// spread formats min/median/max.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("%s/%s/%s", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

// summarize counts equal strings after dropping durations ("exit code 1").
func summarize(xs []string) string {
	m := map[string]int{}
	for _, x := range xs {
		k := x[:strings.LastIndex(x, " after ")]
		m[k]++
	}
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s x%d", k, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

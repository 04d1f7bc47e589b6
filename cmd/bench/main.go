// Command bench measures dialsync against its performance targets
// (docs/design.md) on this machine, every scenario in one run, and writes
// the results as JSON and a Markdown table (printed at the end).
//
// It builds its own world: a private binlog-enabled MariaDB with the demo
// data (50k users, 150k claims, 300k requirements), its own PostgreSQL
// database, Redis key prefix and NATS stream on the machine's servers, and
// runs the real binary (bin/dialsync, `make build`) as a child process so
// its memory and CPU can be read from /proc.
//
// Scenarios (each figure the median of -runs runs, with min..max):
//   - reconcile: bootstrap reconcile of the seeded data into an empty queue;
//   - latency: commit -> notice received and commit -> cache key deleted at
//     200/s, 1,000/s and as fast as the source goes, with lag trend;
//   - catch-up: a backlog drained by dialsync vs a no-op canal reader;
//   - resources: peak/steady RSS and CPU of dialsync in each.
//
// `make bench` runs it in full (about 10 minutes); `make bench-short`
// (-short) runs small sizes without judging the targets, so the harness
// keeps working in CI; `make bench-10x` (-users 500000 -scenarios
// reconcile,catchup) runs at 10x the data against the 10x targets
// (targets.go) and writes bench/results/10x.{json,md}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"dialsync/internal/dev/benchkit"
	"dialsync/internal/dev/demo"
)

type options struct {
	short         bool
	runs          int
	catchUpRuns   int
	reconcileRuns int
	window        time.Duration
	backlog       int
	writers       int
	rates         []int
	scenarios     map[string]bool
	baseline      string // a 1x report to compare a scaled run's catch-up with
	jsonPath      string
	mdPath        string
	bin           string
	keep          bool
	profile       string
	pgAdmin       string
	redisAddr     string
	natsURL       string
	size          demo.Size
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.BoolVar(&o.short, "short", false, "small sizes and windows, targets not judged (for CI)")
	fs.IntVar(&o.runs, "runs", 3, "runs per latency and catch-up figure (the median is reported)")
	fs.IntVar(&o.catchUpRuns, "catchup-runs", 3, "catch-up runs (each writes and drains the whole backlog: a few minutes at 1M rows)")
	fs.IntVar(&o.reconcileRuns, "reconcile-runs", 5, "reconcile runs")
	fs.DurationVar(&o.window, "window", 10*time.Second, "latency window per run")
	fs.IntVar(&o.backlog, "backlog", 1_000_000, "catch-up backlog in row changes")
	fs.IntVar(&o.writers, "writers", 8, "latency writer connections")
	rates := fs.String("rates", "200,1000,0", "latency offered rates in tx/s (0 = as fast as the source goes)")
	scen := fs.String("scenarios", "reconcile,latency,catchup", "scenarios to run")
	users := fs.Int("users", demo.DefaultSize.Users, "seeded users (claims x3, requirements x2 per claim)")
	fs.StringVar(&o.jsonPath, "json", "", "JSON output (default bench/results/latest.json; short.json with -short, 10x.json with -users 500000, users-N.json with other -users)")
	fs.StringVar(&o.mdPath, "md", "", "Markdown output (default bench/results/latest.md, named like -json)")
	fs.StringVar(&o.baseline, "baseline", filepath.Join("bench", "results", "latest.json"), "with -users other than the reference 50000: a full reference-size report whose catch-up rate this run's is compared with")
	fs.StringVar(&o.bin, "bin", "bin/dialsync", "the dialsync binary")
	fs.BoolVar(&o.keep, "keep", false, "keep dialsync's logs and configs (their folder is logged)")
	fs.StringVar(&o.profile, "profile", "", "write CPU profiles of dialsync (first latency run of each rate, first catch-up drain) and a heap profile (end of the first reconcile) into this folder")
	fs.StringVar(&o.pgAdmin, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL superuser URL (a database is created)")
	fs.StringVar(&o.redisAddr, "redis", "127.0.0.1:6379", "Redis address")
	fs.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL (JetStream on)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.short {
		// Small enough for a CI minute; explicit flags still win.
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("runs", func() { o.runs = 1 })
		def("reconcile-runs", func() { o.reconcileRuns = 1 })
		def("catchup-runs", func() { o.catchUpRuns = 1 })
		def("window", func() { o.window = time.Second })
		def("backlog", func() { o.backlog = 20_000 })
		def("users", func() { *users = 2000 })
	}
	for _, r := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 0 {
			return o, fmt.Errorf("-rates: %q is not a rate", r)
		}
		o.rates = append(o.rates, n)
	}
	o.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		switch s = strings.TrimSpace(s); s {
		case "reconcile", "latency", "catchup":
			o.scenarios[s] = true
		default:
			return o, fmt.Errorf("-scenarios: unknown scenario %q", s)
		}
	}
	if o.runs < 1 || o.catchUpRuns < 1 || o.reconcileRuns < 1 || o.writers < 1 || *users < o.writers || o.window <= 0 || o.backlog < 100 {
		return o, errors.New("runs, reconcile-runs, writers, window and backlog must be positive (users >= writers, backlog >= 100)")
	}
	o.size = demo.DefaultSize
	o.size.Users = *users
	// A scaled run must not overwrite the reference-size results.
	base := "latest"
	switch {
	case o.short:
		base = "short"
	case o.size.Users == 10*demo.DefaultSize.Users:
		base = "10x"
	case o.size.Users != demo.DefaultSize.Users:
		base = fmt.Sprintf("users-%d", o.size.Users)
	}
	if o.jsonPath == "" {
		o.jsonPath = filepath.Join("bench", "results", base+".json")
	}
	if o.mdPath == "" {
		o.mdPath = filepath.Join("bench", "results", base+".md")
	}
	return o, nil
}

// run is the whole benchmark; main and the test call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("dialsync binary %s: %w (run `make build` first)", o.bin, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	started := time.Now()
	rep := &benchkit.Report{
		Date:    started.UTC().Format(time.RFC3339),
		Command: command(args),
		Short:   o.short,
		Runs:    o.runs,
		Machine: benchkit.ReadMachine(),
	}
	c := o.size.Counts()
	rep.Data = benchkit.DataSize{Users: c.Users, Addresses: c.Addresses, Claims: c.Claims, Requirements: c.Requirements, VehiclePackages: c.VehiclePackages}

	b, err := newBench(ctx, o, log)
	if err != nil {
		return err
	}
	defer b.close()
	rep.Versions = b.versions(ctx)

	if o.scenarios["reconcile"] {
		log.Info("scenario: reconcile", "runs", o.reconcileRuns)
		if rep.Reconcile, err = b.reconcileScenario(ctx); err != nil {
			return err
		}
	}
	if o.scenarios["latency"] || o.scenarios["catchup"] {
		pc, err := b.mainPipe()
		if err != nil {
			return err
		}
		cfgPath, err := b.writeConfig(pc)
		if err != nil {
			return err
		}
		log.Info("starting the measured dialsync (bootstrap, then streaming)")
		p, err := b.startDialsync(cfgPath, filepath.Join(b.dir, "main.log"))
		if err != nil {
			return err
		}
		defer func() { _ = p.stop() }()
		if _, err := p.waitFor(ctx, "bootstrap reconcile done", 5*time.Minute); err != nil {
			return err
		}
		if err := b.waitCaughtUp(ctx, p, pc.schema, "", 2*time.Minute); err != nil {
			return err
		}
		if o.scenarios["latency"] {
			log.Info("scenario: latency", "rates", o.rates, "runs", o.runs, "window", o.window)
			if rep.Latency, err = b.latencyScenario(ctx, p, pc); err != nil {
				return err
			}
		}
		if o.scenarios["catchup"] {
			log.Info("scenario: catch-up", "backlog", o.backlog, "runs", o.catchUpRuns)
			rep.CatchUp, p, err = b.catchUpScenario(ctx, p, pc, cfgPath)
			if err != nil {
				return err
			}
		}
		if err := p.stop(); err != nil {
			return err
		}
	}
	rep.ElapsedSec = time.Since(started).Round(time.Second).Seconds()
	rep.Machine.LoadEnd = benchkit.LoadAvg()
	rep.Targets = targets(rep, b.loadBaseline())
	rep.Notes = notes(o)
	if rep.Machine.Busy(rep.Machine.LoadStart) || rep.Machine.Busy(rep.Machine.LoadEnd) {
		rep.Notes = append([]string{fmt.Sprintf("WARNING: the machine was busy with other work (load average %s at the start, %s at the end, on %d CPUs): every figure is pessimistic; rerun on a quiet machine before judging the targets.",
			rep.Machine.LoadStart, rep.Machine.LoadEnd, rep.Machine.NProc)}, rep.Notes...)
	}

	md := rep.Markdown()
	if err := writeOutputs(o, rep, md); err != nil {
		return err
	}
	fmt.Fprint(stdout, md)
	fmt.Fprintf(stdout, "\n(written to %s and %s)\n", o.jsonPath, o.mdPath)
	return nil
}

// command is how this run was started, for the report.
func command(args []string) string {
	c := strings.TrimSpace("go run ./cmd/bench " + strings.Join(args, " "))
	if os.Getenv("MAKELEVEL") != "" { // make exports it to its recipes
		target := "make bench"
		if slices.Contains(args, "-short") {
			target = "make bench-short"
		}
		c = target + " (" + c + ")"
	}
	return c
}

func writeOutputs(o options, rep *benchkit.Report, md string) error {
	for _, p := range []string{o.jsonPath, o.mdPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("results folder: %w", err)
		}
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(o.jsonPath, append(j, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(o.mdPath, []byte(md), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func notes(o options) []string {
	n := []string{
		"Everything runs on this one machine: the private MariaDB (innodb_flush_log_at_trx_commit=2, sync_binlog=0, as testenv starts it), PostgreSQL, Redis, NATS, dialsync and the harness's writers and subscribers share its CPUs.",
		"Latency: each writer owns a disjoint range of user ids and commits single-row autocommit UPDATEs (status toggle) with a prepared statement; the commit time is when the COMMIT returned. Notices are received on a NATS core subscription of <subjects>.user.>, cache deletions through Redis keyevent notifications (__keyevent@0__:del); both matched per user in order.",
		"Lag is flat when no notice is missing and the median latency of the last 20% of a window is within 10 ms of the first 20%'s, or grew by at most 50 ms per second of window (dialsync kept up with ~95% of the offered rate).",
		"Catch-up: dialsync's time runs from its process start (including connecting and loading the claim map) until its checkpoint covers the source head; the no-op reader runs in the harness process before it, from the same checkpoint to the same head.",
		"Sink limit: after each drain the harness reads back the notices dialsync published for that backlog (its stream, after the stopped pipeline's last sequence) and sends them again, same count, order, sizes and ids, through internal/publish's Publisher (at most 4,096 unacknowledged, every ack awaited) in one call to a fresh stream made from the same [nats] config on the same server; only that publish is timed. Subjects keep their length with another prefix (two streams cannot capture the same subjects). Ratio to the sink limit = dialsync rows/s / (backlog rows / reference publish time).",
		"Resources: steady RSS is the median VmRSS sampled during the scenario, peak is VmHWM (reset per scenario via /proc/<pid>/clear_refs); CPU is utime+stime of dialsync.",
	}
	if o.short {
		n = append(n, "SHORT mode: small data and windows; the figures only prove the harness works.")
	}
	return n
}

// versions collects the components' versions (best effort).
func (b *bench) versions(ctx context.Context) []benchkit.Version {
	v := []benchkit.Version{{Name: "go", Version: runtime.Version()}}
	var s string
	if err := b.src.QueryRowContext(ctx, "SELECT VERSION()").Scan(&s); err == nil {
		v = append(v, benchkit.Version{Name: "mariadb", Version: s})
	}
	if err := b.pg.QueryRow(ctx, "SHOW server_version").Scan(&s); err == nil {
		v = append(v, benchkit.Version{Name: "postgres", Version: s})
	}
	if info, err := b.rdb.Info(ctx, "server").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if k, val, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && k == "redis_version" {
				v = append(v, benchkit.Version{Name: "redis", Version: val})
			}
		}
	}
	v = append(v, benchkit.Version{Name: "nats-server", Version: b.nc.ConnectedServerVersion()})
	dv := "unknown"
	if out, err := exec.CommandContext(ctx, b.o.bin, "version", "--json").Output(); err == nil {
		var bv struct{ Version, Go, Platform string }
		if json.Unmarshal(out, &bv) == nil && bv.Version != "" {
			dv = bv.Version + " " + bv.Go + " " + bv.Platform
		}
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		rev := strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			rev += "-dirty"
		}
		dv += " (git " + rev + ")"
	}
	return append(v, benchkit.Version{Name: "dialsync", Version: dv})
}

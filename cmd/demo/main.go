// Command demo shows dialsync working end to end on this machine: a private
// binlog-enabled MariaDB (scripts/demo-mariadb.sh, 127.0.0.1:3307) with the
// demo data (50k users, 150k claims, ~300k requirements), dialsync running
// with config.toml against it and the machine's PostgreSQL, Redis and NATS,
// a stream of realistic source transactions, and every notice as it arrives
// with its commit-to-notice latency, then `dialsync status`. `make demo`
// runs it. It stops the MariaDB it started when it ends (-keep: leave it
// running); one already answering on the port is reused and left alone.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/go-mysql-org/go-mysql/driver"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/notice"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	changes := flag.Int("changes", 2000, "source transactions to write")
	rate := flag.Int("rate", 200, "transactions per second")
	show := flag.Int("show", 25, "print the first N notices (then one line per second)")
	port := flag.Int("mysql-port", 3307, "port of the demo MariaDB")
	keep := flag.Bool("keep", false, "leave the demo MariaDB running after the demo (make clean stops it)")
	cfgPath := flag.String("config", "config.toml", "dialsync configuration the demo runs with")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(*cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}

	step("starting the private binlog-enabled MariaDB")
	my := &demoMariaDB{port: *port, state: ".state"}
	if err := my.start(); err != nil {
		return err
	}
	defer func() {
		step("stopping")
		if err := my.stop(*keep); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
	}()
	root, err := sql.Open("mysql", fmt.Sprintf("root@127.0.0.1:%d/mysql", *port))
	if err != nil {
		return err
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS dialsync_demo"); err != nil {
		return fmt.Errorf("create demo database: %w", err)
	}
	db, err := sql.Open("mysql", fmt.Sprintf("root@127.0.0.1:%d/dialsync_demo", *port))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(4)
	var users int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM users").Scan(&users); err != nil {
		step("loading the demo schema and data (50k users, 150k claims, 300k requirements)")
		t0 := time.Now()
		if err := demo.CreateSchema(ctx, db); err != nil {
			return err
		}
		if err := demo.Seed(ctx, db, demo.DefaultSize); err != nil {
			return err
		}
		fmt.Printf("   seeded in %s\n", time.Since(t0).Round(time.Millisecond))
	} else {
		fmt.Printf("   demo data present (%d users)\n", users)
	}

	step("preparing PostgreSQL database dialsync_demo")
	if err := ensurePG(ctx); err != nil {
		return err
	}

	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.Name("dialsync-demo"))
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()

	var mu sync.Mutex
	pending := map[uint64][]time.Time{} // user -> commit times not yet noticed
	var lat []time.Duration
	var noticed, bootstrapDone int
	probing := true // the readiness probe's notices are not printed
	ready := make(chan struct{}, 1)
	lastPrint := time.Now()
	_, err = nc.Subscribe("dialsync.>", func(m *nats.Msg) {
		now := time.Now()
		ev, err := notice.Decode(m.Data)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch ev.Type {
		case notice.TypeReconcileCompleted:
			rc, _ := ev.ReconcileCompleted()
			fmt.Printf("   reconcile completed: %d users, %d queued, %d entered, %d left, %d updated in %s\n",
				rc.Users, rc.Queued, rc.Entered, rc.Left, rc.Updated, rc.FinishedAt.Sub(rc.StartedAt).Round(time.Millisecond))
			bootstrapDone++
			select {
			case ready <- struct{}{}:
			default:
			}
			return
		case notice.TypeUserChanged:
		default:
			return
		}
		uc, err := ev.UserChanged()
		if err != nil {
			return
		}
		q := pending[uc.UserID]
		if len(q) == 0 {
			return // a change not written by this demo run
		}
		d := now.Sub(q[0])
		pending[uc.UserID] = q[1:]
		lat = append(lat, d)
		noticed++
		if !probing && (noticed <= *show || time.Since(lastPrint) > time.Second) {
			lastPrint = time.Now()
			fmt.Printf("   %-8s user %-6d %-40s cols=%-40s %6.1f ms\n", "notice", uc.UserID,
				strings.Join(uc.Tables, ","), trunc(strings.Join(uc.Columns, ","), 40), float64(d.Microseconds())/1000)
		}
	})
	if err != nil {
		return err
	}

	step("starting dialsync (bin/dialsync run --config config.toml; log in .state/dialsync.log)")
	logf, err := os.Create(".state/dialsync.log")
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("bin/dialsync", "run", "--config", *cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dialsync (run `make build` first): %w", err)
	}
	// exited is closed when dialsync ends, waitErr then says how.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()

	// The first run bootstraps: a full reconcile builds the queue before the
	// binlog is read, so changes written meanwhile wait for it (up to a
	// couple of seconds on the demo data). Wait for /readyz (leader,
	// streaming, every server answering) so the latencies below are the
	// steady state's, not the bootstrap's.
	if err := waitReady(ctx, cfg.HTTP.Listen, exited); err != nil {
		if waitErr != nil {
			err = fmt.Errorf("%w: %v", err, waitErr)
		}
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	// Then until a probe change comes back as a notice (without /readyz
	// this is the only sign that dialsync streams).
	probe := demo.NewWorkload(db, time.Now().UnixNano())
	deadline := time.After(90 * time.Second)
	for caught := false; !caught; {
		op, err := probe.Step(ctx)
		if err != nil {
			return fmt.Errorf("workload: %w", err)
		}
		mu.Lock()
		now := time.Now()
		for _, u := range op.Users {
			pending[u] = append(pending[u], now)
		}
		mu.Unlock()
		select {
		case <-exited:
			return fmt.Errorf("dialsync exited early (%v); see .state/dialsync.log", waitErr)
		case <-deadline:
			return errors.New("dialsync did not start streaming within 90s; see .state/dialsync.log")
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
		mu.Lock()
		caught = noticed > 0
		mu.Unlock()
	}
	mu.Lock()
	lat, noticed, pending, probing = nil, 0, map[uint64][]time.Time{}, false
	mu.Unlock()

	step(fmt.Sprintf("writing %d realistic source transactions at %d/s", *changes, *rate))
	w := demo.NewWorkload(db, 42)
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	expected := 0
	for i := 0; i < *changes; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-exited:
			return fmt.Errorf("dialsync exited (%v); see .state/dialsync.log", waitErr)
		case <-tick.C:
		}
		// Times are recorded under the lock right after COMMIT returns.
		op, err := w.Step(ctx)
		now := time.Now()
		if err != nil {
			return fmt.Errorf("workload: %w", err)
		}
		mu.Lock()
		for _, u := range op.Users {
			pending[u] = append(pending[u], now)
			expected++
		}
		mu.Unlock()
	}
	for wait := time.Now(); time.Since(wait) < 10*time.Second; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := noticed
		mu.Unlock()
		if n >= expected {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	step("bin/dialsync status --config " + *cfgPath)
	st := exec.Command("bin/dialsync", "status", "--config", *cfgPath)
	st.Stdout, st.Stderr = os.Stdout, os.Stderr
	_ = st.Run() // its exit code (0/1/3) is in its own output
	step("result")
	slices.Sort(lat)
	fmt.Printf("   %d source transactions, %d (transaction, user) notices expected, %d received\n", *changes, expected, len(lat))
	if len(lat) > 0 {
		fmt.Printf("   commit -> notice latency: p50 %s  p95 %s  p99 %s  max %s\n",
			ms(pct(lat, 50)), ms(pct(lat, 95)), ms(pct(lat, 99)), ms(lat[len(lat)-1]))
	}
	if len(lat) < expected {
		return fmt.Errorf("%d notices missing", expected-len(lat))
	}
	return nil
}

func pct(s []time.Duration, p int) time.Duration { return s[(len(s)-1)*p/100] }

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func step(s string) { fmt.Printf("==> %s\n", s) }

// waitReady polls dialsync's /readyz on listen until it answers 200.
// Without an HTTP server (listen empty) it returns at once.
// ctx ending returns nil (the caller sees ctx.Err()).
func waitReady(ctx context.Context, listen string, exited <-chan struct{}) error {
	if listen == "" {
		fmt.Println("   http.listen is empty: cannot wait for /readyz; the first notices may include the bootstrap's wait")
		return nil
	}
	step("waiting for dialsync to be ready (a first run bootstraps: a full reconcile builds the queue before the binlog is read)")
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("http.listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	hc := &http.Client{Timeout: 2 * time.Second}
	t0 := time.Now()
	deadline := time.After(120 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("   ready after %s\n", time.Since(t0).Round(time.Millisecond))
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("dialsync exited early; see .state/dialsync.log")
		case <-deadline:
			return errors.New("dialsync was not ready within 120s (GET " + url + "); see .state/dialsync.log")
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ensurePG(ctx context.Context) error {
	c, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'dialsync_demo')").Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := c.Exec(ctx, "CREATE DATABASE dialsync_demo"); err != nil {
			return err
		}
	}
	return nil
}

// Command demo shows dialsync working end to end on this machine: a private
// binlog-enabled MariaDB (scripts/demo-mariadb.sh, 127.0.0.1:3307) with the
// demo data (50k users, 150k claims, ~300k requirements), dialsync running
// with config.toml against it and the machine's PostgreSQL, Redis and NATS,
// a stream of realistic source transactions, and every notice as it arrives
// with its commit-to-notice latency. `make demo` runs it.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
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
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step("starting the private binlog-enabled MariaDB")
	if err := sh("bash", "scripts/demo-mariadb.sh"); err != nil {
		return err
	}
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
		if noticed <= *show || time.Since(lastPrint) > time.Second {
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
	cmd := exec.Command("bin/dialsync", "run", "--config", "config.toml")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dialsync (run `make build` first): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()

	// Wait until dialsync streams: a probe change must come back as a notice.
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
		case err := <-exited:
			return fmt.Errorf("dialsync exited early (%v); see .state/dialsync.log", err)
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
	lat, noticed, pending = nil, 0, map[uint64][]time.Time{}
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
		case err := <-exited:
			return fmt.Errorf("dialsync exited (%v); see .state/dialsync.log", err)
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

func sh(name string, args ...string) error {
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	return c.Run()
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

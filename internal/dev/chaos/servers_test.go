package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// The private PostgreSQL and Redis servers the suite restarts. (MariaDB
// comes from testenv, NATS from internal/publish/natstest.)

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pgServer is a private PostgreSQL cluster run as the postgres user (the
// server refuses to run as root) from a data folder of its own.
type pgServer struct {
	dir  string // owned by postgres; holds data/, the socket and the log
	port int
}

func startPostgres(tb testing.TB) *pgServer {
	tb.Helper()
	if _, err := exec.LookPath("pg_ctl"); err != nil {
		tb.Skipf("pg_ctl not on PATH: %v", err)
	}
	// Not t.TempDir: its parents are root-only, and postgres must reach it.
	dir, err := os.MkdirTemp("", "dialsync-chaos-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	s := &pgServer{dir: dir, port: freePort(tb)}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("postgres log tail:\n%s", tail(filepath.Join(dir, "server.log"), 3000))
		}
		_ = s.pgctl("stop", "-m", "immediate")
		_ = os.RemoveAll(dir)
	})
	u, err := user.Lookup("postgres")
	if err != nil {
		tb.Skipf("no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		tb.Fatal(err)
	}
	if out, err := asPostgres("initdb", "-D", s.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
	return s
}

func asPostgres(name string, args ...string) *exec.Cmd {
	return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
}

func (s *pgServer) data() string { return filepath.Join(s.dir, "data") }

// DSN of the cluster's postgres database (trust auth).
func (s *pgServer) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", s.port)
}

func (s *pgServer) pgctl(args ...string) error {
	a := append([]string{"-D", s.data(), "-w", "-t", "60"}, args...)
	out, err := asPostgres("pg_ctl", a...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %w\n%s", args, err, out)
	}
	return nil
}

// start starts the server; fsync is off because only process crashes are
// injected (the kernel keeps the writes), never power cuts.
func (s *pgServer) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", s.port, s.dir)
	return s.pgctl("-l", filepath.Join(s.dir, "server.log"), "-o", opts, "start")
}

// crash stops the server the way a crash would: "immediate" mode makes the
// postmaster quit without a checkpoint, and the next start runs recovery.
func (s *pgServer) crash() error { return s.pgctl("stop", "-m", "immediate") }

// stop shuts down cleanly ("fast": clients disconnected).
func (s *pgServer) stop() error { return s.pgctl("stop", "-m", "fast") }

// ping checks the server answers a query.
func (s *pgServer) ping(ctx context.Context) error {
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// redisServer is a private redis-server. Keys are a cache, so nothing is
// persisted: a restart starts empty, as a real cache restart would.
type redisServer struct {
	port int
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *bytes.Buffer
}

func startRedis(tb testing.TB) *redisServer {
	tb.Helper()
	if _, err := os.Stat("/usr/bin/redis-server"); err != nil {
		tb.Skipf("redis-server not available: %v", err)
	}
	s := &redisServer{port: freePort(tb)}
	tb.Cleanup(func() { _ = s.kill() })
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *redisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("redis already running")
	}
	out := &bytes.Buffer{}
	cmd := exec.Command("/usr/bin/redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.out = cmd, done, out
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("redis-server exited during start-up: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready: %w", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the server with SIGKILL; a no-op when it is not running.
func (s *redisServer) kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
	return nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

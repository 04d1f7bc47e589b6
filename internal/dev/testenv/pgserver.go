package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions tunes a private PostgreSQL cluster.
type PostgresOptions struct {
	// Settings are server parameters (postgresql.conf names), passed as
	// -c name=value at every start, e.g. {"ssl": "on"}.
	Settings map[string]string
	// Setup runs after initdb, before the first start, with the cluster's
	// folder (owned by postgres; files placed there are readable by the
	// server once given to it with Own).
	Setup func(s *Postgres) error
}

// Postgres is a private PostgreSQL cluster on 127.0.0.1, run as the
// postgres OS user (the server refuses to run as root) from a data folder
// of its own, with trust authentication for the postgres role.
type Postgres struct {
	opt  PostgresOptions
	dir  string // owned by postgres; holds data/, the socket and the log
	port int
	uid  int
	gid  int
}

// StartPostgres initialises and starts a private cluster; the cleanup stops
// it ("immediate") and removes its folder. It fails the test when the
// server cannot be started (initdb and pg_ctl must be on PATH, and the
// postgres OS user must exist).
func StartPostgres(tb testing.TB, opt PostgresOptions) *Postgres {
	tb.Helper()
	for _, tool := range []string{"initdb", "pg_ctl", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("testenv: start postgres: %s not on PATH: %v", tool, err)
		}
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		tb.Fatalf("testenv: start postgres: no postgres OS user: %v", err)
	}
	// Not t.TempDir: its parents are root-only, and postgres must reach it.
	dir, err := os.MkdirTemp("", "dialsync-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Postgres{opt: opt, dir: dir}
	s.uid, _ = strconv.Atoi(u.Uid)
	s.gid, _ = strconv.Atoi(u.Gid)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("testenv: postgres log tail:\n%s", s.LogTail(3000))
		}
		_ = s.pgctl("stop", "-m", "immediate")
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := s.Own(dir); err != nil {
		tb.Fatal(err)
	}
	if out, err := asPostgres("initdb", "-D", s.DataDir(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		tb.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	if opt.Setup != nil {
		if err := opt.Setup(s); err != nil {
			tb.Fatalf("testenv: postgres setup: %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	return s
}

func asPostgres(name string, args ...string) *exec.Cmd {
	return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
}

// Dir is the cluster's folder (owned by postgres).
func (s *Postgres) Dir() string { return s.dir }

// DataDir is the data folder.
func (s *Postgres) DataDir() string { return filepath.Join(s.dir, "data") }

// Port is the server's TCP port.
func (s *Postgres) Port() int { return s.port }

// DSN of the postgres database as the postgres role, without TLS.
func (s *Postgres) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", s.port)
}

// Own gives path to the postgres OS user (a server key must be owned by
// the server's user, mode 0600).
func (s *Postgres) Own(path string) error { return os.Chown(path, s.uid, s.gid) }

func (s *Postgres) pgctl(args ...string) error {
	a := append([]string{"-D", s.DataDir(), "-w", "-t", "60"}, args...)
	out, err := asPostgres("pg_ctl", a...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %w\n%s", args, err, out)
	}
	return nil
}

// Start starts the server; fsync is off because tests inject process
// crashes (the kernel keeps the writes), never power cuts.
func (s *Postgres) Start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", s.port, s.dir)
	names := make([]string, 0, len(s.opt.Settings))
	for k := range s.opt.Settings {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := s.opt.Settings[k]
		if strings.ContainsAny(k+v, " '\"\\") {
			return fmt.Errorf("postgres setting %s=%q: spaces and quotes are not supported", k, v)
		}
		opts += fmt.Sprintf(" -c %s=%s", k, v)
	}
	return s.pgctl("-l", filepath.Join(s.dir, "server.log"), "-o", opts, "start")
}

// Crash stops the server the way a crash would: "immediate" mode makes the
// postmaster quit without a checkpoint, and the next start runs recovery.
func (s *Postgres) Crash() error { return s.pgctl("stop", "-m", "immediate") }

// Stop shuts down cleanly ("fast": clients disconnected).
func (s *Postgres) Stop() error { return s.pgctl("stop", "-m", "fast") }

// Ping checks the server answers a query.
func (s *Postgres) Ping(ctx context.Context) error {
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// LogTail is the last n bytes of the server log.
func (s *Postgres) LogTail(n int) string {
	b, err := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

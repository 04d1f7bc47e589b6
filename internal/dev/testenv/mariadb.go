// Package testenv gives integration tests real servers: private MariaDB
// instances with the binlog on (started from a cached, pre-initialised data
// folder, so a fresh server is ready in a fraction of a second), a shared
// per-test-binary MariaDB, fresh PostgreSQL databases on the machine's server,
// and collision-free names for databases, Redis prefixes and NATS subjects.
//
// Typical use:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		db := testenv.SharedMariaDB(t)          // binlog ROW/FULL, GTIDs on
//		name := testenv.Name(t)
//		db.CreateDatabase(t, name)
//		db.Exec(t, "CREATE TABLE "+name+".t (id INT PRIMARY KEY)")
//		pg := testenv.PostgresDB(t)             // DSN of a fresh database
//		...
//	}
//
// Fault tests start their own server with StartMariaDB and Stop/Kill/Start it.
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// MariaDBBinary is the server binary the helpers start.
var MariaDBBinary = "/usr/sbin/mariadbd"

// installDBBinary initialises the template data folder.
var installDBBinary = "mariadb-install-db"

// Sizes are the smallest that keep a 50k-row transaction quick: the test
// servers hold little data and start often.
var baseArgs = []string{
	"--innodb-buffer-pool-size=32M",
	"--innodb-log-file-size=16M",
}

// MariaDBOptions tunes a private server. The zero value gives a server with
// the binlog on, ROW format, FULL row image and a process-unique server_id.
type MariaDBOptions struct {
	// ServerID is the server's server_id (and so the middle part of its
	// GTIDs). Zero picks the next id from a per-process counter (1, 2, ...).
	ServerID uint32
	// BinlogFormat is binlog_format; empty means "ROW".
	BinlogFormat string
	// BinlogRowImage is binlog_row_image; empty means "FULL".
	BinlogRowImage string
	// NoBinlog starts the server without --log-bin.
	NoBinlog bool
	// Args are extra mariadbd options, e.g. "--log-slave-updates".
	Args []string
}

// MariaDB is a private mariadbd process on 127.0.0.1 with its own data
// folder, port and socket. Root has an empty password over TCP.
type MariaDB struct {
	opt     MariaDBOptions
	dir     string // owns everything below; removed at cleanup
	dataDir string
	socket  string
	port    int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
}

var serverIDs atomic.Uint32

// StartMariaDB starts a private server for this test and registers a cleanup
// that kills it and removes its folder. It fails the test if the server does
// not become ready.
func StartMariaDB(tb testing.TB, opt MariaDBOptions) *MariaDB {
	tb.Helper()
	m, err := newMariaDB(opt)
	if err != nil {
		tb.Fatalf("testenv: start mariadb: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("testenv: mariadb %s error log tail:\n%s", m.Addr(), m.errorLogTail())
		}
		m.destroy()
	})
	return m
}

func newMariaDB(opt MariaDBOptions) (*MariaDB, error) {
	if opt.ServerID == 0 {
		opt.ServerID = serverIDs.Add(1)
	}
	if opt.BinlogFormat == "" {
		opt.BinlogFormat = "ROW"
	}
	if opt.BinlogRowImage == "" {
		opt.BinlogRowImage = "FULL"
	}
	tmpl, err := template()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dialsync-mariadb-")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	m := &MariaDB{opt: opt, dir: dir, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(dir, "mysqld.sock")}
	if err := copyDir(tmpl, m.dataDir); err != nil {
		m.destroy()
		return nil, fmt.Errorf("copy template data dir: %w", err)
	}
	// A free port can be taken by someone else between our probe and the
	// server's bind: retry with a new one when that happens.
	for attempt := 0; ; attempt++ {
		m.port, err = freePort()
		if err != nil {
			m.destroy()
			return nil, err
		}
		err = m.start()
		if err == nil {
			return m, nil
		}
		if attempt < 3 && strings.Contains(m.errorLogTail(), "Address already in use") {
			continue
		}
		tail := m.errorLogTail()
		m.destroy()
		return nil, fmt.Errorf("%w\nerror log tail:\n%s", err, tail)
	}
}

// Addr is "127.0.0.1:port".
func (m *MariaDB) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Port is the server's TCP port.
func (m *MariaDB) Port() int { return m.port }

// ServerID is the server's server_id.
func (m *MariaDB) ServerID() uint32 { return m.opt.ServerID }

// DataDir is the server's data folder (binlogs are mysql-bin.NNNNNN in it).
func (m *MariaDB) DataDir() string { return m.dataDir }

// DSN is a go-mysql driver DSN ("root@127.0.0.1:port/db") for database/sql
// with the driver "mysql" from github.com/go-mysql-org/go-mysql/driver. An
// empty db gives a DSN without a default database.
func (m *MariaDB) DSN(db string) string {
	if db == "" {
		return "root@" + m.Addr()
	}
	return "root@" + m.Addr() + "/" + db
}

// Conn opens a root connection (default database db, may be empty) that is
// closed when the test ends.
func (m *MariaDB) Conn(tb testing.TB, db string) *client.Conn {
	tb.Helper()
	c, err := m.connect(db)
	if err != nil {
		tb.Fatalf("testenv: connect %s: %v", m.Addr(), err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func (m *MariaDB) connect(db string) (*client.Conn, error) {
	return client.ConnectWithTimeout(m.Addr(), "root", "", db, 5*time.Second, func(c *client.Conn) error {
		return c.SetCapability(mysql.CLIENT_MULTI_STATEMENTS)
	})
}

// Exec runs each argument as root (no default database); an argument may
// hold several statements separated by ';'. It fails the test on the first
// error.
func (m *MariaDB) Exec(tb testing.TB, sql ...string) {
	tb.Helper()
	c, err := m.connect("")
	if err != nil {
		tb.Fatalf("testenv: connect %s: %v", m.Addr(), err)
	}
	defer c.Close()
	for _, q := range sql {
		var firstErr error
		if _, err := c.ExecuteMultiple(q, func(_ *mysql.Result, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}); err != nil && firstErr == nil {
			firstErr = err
		}
		if firstErr != nil {
			tb.Fatalf("testenv: exec %q on %s: %v", q, m.Addr(), firstErr)
		}
	}
}

// QueryString runs a query and returns the first column of the first row as
// a string ("" for NULL or no rows).
func (m *MariaDB) QueryString(tb testing.TB, query string) string {
	tb.Helper()
	c, err := m.connect("")
	if err != nil {
		tb.Fatalf("testenv: connect %s: %v", m.Addr(), err)
	}
	defer c.Close()
	r, err := c.Execute(query)
	if err != nil {
		tb.Fatalf("testenv: query %q on %s: %v", query, m.Addr(), err)
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return ""
	}
	s, err := r.GetString(0, 0)
	if err != nil {
		tb.Fatalf("testenv: query %q: read value: %v", query, err)
	}
	return s
}

// CreateDatabase creates database name (utf8mb4). It is not dropped at the
// end: private servers are thrown away, and the shared one lives as long as
// the test binary.
func (m *MariaDB) CreateDatabase(tb testing.TB, name string) {
	tb.Helper()
	m.Exec(tb, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it to exit.
func (m *MariaDB) Stop(tb testing.TB) {
	tb.Helper()
	if m.isShared() {
		tb.Fatal("testenv: Stop on the shared server: use StartMariaDB for fault tests")
	}
	if err := m.signalAndWait(syscall.SIGTERM, 60*time.Second); err != nil {
		tb.Fatalf("testenv: stop mariadb %s: %v", m.Addr(), err)
	}
}

// Kill ends the server with SIGKILL (a crash) and waits for it to exit.
func (m *MariaDB) Kill(tb testing.TB) {
	tb.Helper()
	if m.isShared() {
		tb.Fatal("testenv: Kill on the shared server: use StartMariaDB for fault tests")
	}
	if err := m.signalAndWait(syscall.SIGKILL, 10*time.Second); err != nil {
		tb.Fatalf("testenv: kill mariadb %s: %v", m.Addr(), err)
	}
}

// Start starts a stopped or killed server again on the same data folder and
// port, and waits until it accepts connections.
func (m *MariaDB) Start(tb testing.TB) {
	tb.Helper()
	if m.isShared() {
		tb.Fatal("testenv: Start on the shared server: use StartMariaDB for fault tests")
	}
	if err := m.start(); err != nil {
		tb.Fatalf("testenv: restart mariadb %s: %v\nerror log tail:\n%s", m.Addr(), err, m.errorLogTail())
	}
}

func (m *MariaDB) args() []string {
	a := []string{
		"--no-defaults", // must be first: ignore /etc/mysql
		"--user=root",
		"--datadir=" + m.dataDir,
		"--port=" + strconv.Itoa(m.port),
		"--bind-address=127.0.0.1",
		"--socket=" + m.socket,
		"--pid-file=" + filepath.Join(m.dir, "mysqld.pid"),
		"--log-error=" + filepath.Join(m.dir, "error.log"),
		"--server-id=" + strconv.FormatUint(uint64(m.opt.ServerID), 10),
		"--skip-name-resolve",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_unicode_ci",
		"--default-time-zone=+00:00",
		"--performance-schema=OFF",
		"--max-connections=500",
		// Durable against a killed process (the OS keeps the writes), not
		// against a power cut: enough for tests, and much faster.
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
		"--innodb-doublewrite=0",
	}
	a = append(a, baseArgs...)
	if !m.opt.NoBinlog {
		a = append(a,
			"--log-bin=mysql-bin",
			"--binlog-format="+m.opt.BinlogFormat,
			"--binlog-row-image="+m.opt.BinlogRowImage,
		)
	}
	return append(a, m.opt.Args...)
}

func (m *MariaDB) start() error {
	m.mu.Lock()
	if m.done != nil {
		select {
		case <-m.done:
		default:
			m.mu.Unlock()
			return errors.New("server is already running")
		}
	}
	cmd := exec.Command(MariaDBBinary, m.args()...)
	cmd.SysProcAttr = sysProcAttr()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("start %s: %w", MariaDBBinary, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("mariadbd exited during start-up: %s", strings.TrimSpace(out.String()))
		default:
		}
		c, err := client.ConnectWithTimeout(m.Addr(), "root", "", "", time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = m.signalAndWait(syscall.SIGKILL, 10*time.Second)
			return fmt.Errorf("mariadbd on %s not ready after 60s: %w", m.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *MariaDB) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return errors.New("server was never started")
	}
	select {
	case <-done:
		return errors.New("server is not running")
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("server did not exit within %s after %v; killed", timeout, sig)
	}
}

// destroy kills the server if it runs and removes its folder.
func (m *MariaDB) destroy() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd != nil {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}
	_ = os.RemoveAll(m.dir)
}

func (m *MariaDB) errorLogTail() string {
	b, err := os.ReadFile(filepath.Join(m.dir, "error.log"))
	if err != nil {
		return "(no error log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// template returns a data folder initialised by mariadb-install-db, shared
// by every server (each copies it). It is cached across processes under the
// temp dir, keyed by the server binary and the init options, and published
// with an atomic rename so concurrent test binaries never see half of it.
func template() (string, error) {
	templateOnce.Do(func() { templateDir, templateErr = makeTemplate() })
	return templateDir, templateErr
}

func makeTemplate() (string, error) {
	st, err := os.Stat(MariaDBBinary)
	if err != nil {
		return "", fmt.Errorf("mariadb binary: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s|%d|%d|%s|v1", MariaDBBinary, st.Size(), st.ModTime().UnixNano(), strings.Join(baseArgs, " "))
	final := filepath.Join(os.TempDir(), "dialsync-testenv", "mariadb-template-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(final, "mysql", "user.frm")); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("make template parent: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(final), "building-")
	if err != nil {
		return "", fmt.Errorf("make template build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	data := filepath.Join(tmp, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{
		"--no-defaults",
		"--datadir=" + data,
		"--user=root",
		// root@localhost and root@127.0.0.1 with an empty password (not
		// unix_socket auth): tests connect over TCP.
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--skip-name-resolve",
	}, baseArgs...)
	out, err := exec.CommandContext(ctx, installDBBinary, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", installDBBinary, err, out)
	}
	if err := os.Rename(data, final); err != nil {
		// Another process won the race: use its template.
		if _, statErr := os.Stat(filepath.Join(final, "mysql", "user.frm")); statErr == nil {
			return final, nil
		}
		return "", fmt.Errorf("publish template: %w", err)
	}
	return final, nil
}

// copyDir copies a tree of directories and regular files.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o660)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

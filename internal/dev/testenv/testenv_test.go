package testenv

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"TestFoo/sub_case#01":   "testfoo_sub_case_01",
		"123":                   "t_123",
		"/__/":                  "t_",
		strings.Repeat("A", 80): strings.Repeat("a", maxNameBase),
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestName(t *testing.T) {
	n := Name(t)
	if !regexp.MustCompile(`^testname_[0-9a-f]{8}$`).MatchString(n) {
		t.Fatalf("Name = %q", n)
	}
	if again := Name(t); again != n {
		t.Fatalf("second Name = %q, want %q", again, n)
	}
	t.Run("sub", func(t *testing.T) {
		if s := Name(t); s == n || !strings.HasPrefix(s, "testname_sub_") {
			t.Fatalf("subtest Name = %q", s)
		}
	})
}

// Two private servers, writes, a clean restart and a crash restart: data and
// binlog survive, and the servers are independent.
func TestMariaDBLifecycle(t *testing.T) {
	start := time.Now()
	a := StartMariaDB(t, MariaDBOptions{})
	b := StartMariaDB(t, MariaDBOptions{ServerID: 77, Args: []string{"--log-slave-updates"}})
	t.Logf("two servers ready in %s", time.Since(start))
	if a.Addr() == b.Addr() || a.DataDir() == b.DataDir() {
		t.Fatalf("servers share addr or data dir: %s %s", a.Addr(), b.Addr())
	}
	for _, q := range []struct{ q, want string }{
		{"SELECT @@log_bin", "1"},
		{"SELECT @@binlog_format", "ROW"},
		{"SELECT @@binlog_row_image", "FULL"},
		{"SELECT @@server_id", "77"},
		{"SELECT @@log_slave_updates", "1"},
		{"SELECT @@time_zone", "+00:00"},
	} {
		if got := b.QueryString(t, q.q); got != q.want {
			t.Errorf("%s = %q, want %q", q.q, got, q.want)
		}
	}

	name := Name(t)
	a.CreateDatabase(t, name)
	a.Exec(t, "CREATE TABLE "+name+".t (id INT PRIMARY KEY); INSERT INTO "+name+".t VALUES (1),(2)")
	if got := b.QueryString(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '"+name+"'"); got != "0" {
		t.Fatalf("database leaked to the other server: %s", got)
	}
	gtid := a.QueryString(t, "SELECT @@gtid_binlog_pos")
	if !strings.HasPrefix(gtid, "0-"+strconv.Itoa(int(a.ServerID()))+"-") {
		t.Fatalf("gtid_binlog_pos = %q, want domain 0 and server %d", gtid, a.ServerID())
	}

	a.Stop(t)
	if _, err := a.connect(""); err == nil {
		t.Fatal("stopped server still accepts connections")
	}
	a.Start(t)
	a.Exec(t, "INSERT INTO "+name+".t VALUES (3)")
	a.Kill(t)
	a.Start(t)
	if got := a.QueryString(t, "SELECT COUNT(*) FROM "+name+".t"); got != "3" {
		t.Fatalf("rows after restarts = %s, want 3", got)
	}
	if got := a.QueryString(t, "SELECT @@gtid_binlog_pos"); got == gtid || got == "" {
		t.Fatalf("gtid_binlog_pos after restarts = %q (before %q)", got, gtid)
	}
	// Root with an empty password over TCP, and the DSN form.
	if want := "root@" + a.Addr() + "/" + name; a.DSN(name) != want {
		t.Fatalf("DSN = %q, want %q", a.DSN(name), want)
	}
}

func TestSharedMariaDB(t *testing.T) {
	s1 := SharedMariaDB(t)
	s2 := SharedMariaDB(t)
	if s1 != s2 {
		t.Fatal("SharedMariaDB returned two servers")
	}
	if got := s1.QueryString(t, "SELECT @@binlog_format"); got != "ROW" {
		t.Fatalf("shared binlog_format = %q", got)
	}
}

func TestPostgresDB(t *testing.T) {
	var name string
	t.Run("create", func(t *testing.T) {
		dsn := PostgresDB(t)
		name = Name(t)
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect %s: %v", dsn, err)
		}
		// Left open on purpose: the cleanup must drop the database anyway.
		var db string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != name {
			t.Fatalf("current_database = %q, %v; want %q", db, err, name)
		}
	})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, PostgresAdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil || n != 0 {
		t.Fatalf("database %s still exists after cleanup (count %d, err %v)", name, n, err)
	}
}

// A private PostgreSQL: settings reach the server, a crash and a start
// keep the data.
func TestPrivatePostgres(t *testing.T) {
	s := StartPostgres(t, PostgresOptions{Settings: map[string]string{"work_mem": "5MB"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	var v string
	if err := conn.QueryRow(ctx, "SELECT current_setting('work_mem') || ' ' || current_setting('port')").Scan(&v); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if want := "5MB " + strconv.Itoa(s.Port()); v != want {
		t.Fatalf("settings %q, want %q", v, want)
	}
	conn, err = pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := s.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("the server answers after a crash")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT id FROM kept").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after crash and start: %d, %v", n, err)
	}
}

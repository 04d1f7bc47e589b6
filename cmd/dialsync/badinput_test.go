package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/proc"
	"dialsync/internal/dev/testenv"
)

// The bad-input table: every way an operator can get the set-up wrong, run
// through the real binary. Each case must end with ONE clear line on stderr
// naming the problem and its fix, the documented exit code (2 for the
// command line and the configuration, 1 for servers and data), no secret in
// the output, and nothing lost: a checkpoint that was there is unchanged,
// and a bootstrap that cannot stream never stores one. docs/troubleshooting.md
// lists these cases; keep the two in step.

// badEnv is one case's world: a source database with the demo schema and a
// few rows, a fresh PostgreSQL database, and a config pointing at them.
type badEnv struct {
	t     *testing.T
	name  string
	my    *testenv.MariaDB
	src   *sql.DB
	pgDSN string
	dir   string
	js    jetstream.JetStream // the machine's NATS
	cfg   *config.Config      // the configuration under test
	// bad sets raw TOML keys over cfg ("ha.enabeld": true), for what no
	// config.Config can hold: an unknown key, a value of the wrong type.
	bad  map[string]any
	args []string // default: run --config <file>
	raw  *string  // written instead of cfg when set
}

// newBadEnv prepares a working configuration; cases then break one thing.
// my nil means the shared MariaDB.
func newBadEnv(t *testing.T, my *testenv.MariaDB) *badEnv {
	t.Helper()
	ctx := context.Background()
	name := testenv.Name(t)
	if my == nil {
		my = testenv.SharedMariaDB(t)
	}
	e := &badEnv{t: t, name: name, my: my, dir: t.TempDir()}
	my.CreateDatabase(t, name)
	var err error
	if e.src, err = sql.Open("mysql", my.DSN(name)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.src.Close() })
	if err := demo.CreateSchema(ctx, e.src); err != nil {
		t.Fatal(err)
	}
	if err := demo.Seed(ctx, e.src, demo.Size{Users: 20, ClaimsPerUser: 2, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 3}); err != nil {
		t.Fatal(err)
	}
	e.pgDSN = testenv.PostgresDB(t)
	stream := strings.ToUpper("DS_" + name)
	e.cfg = dstest.Config(dstest.Target{
		Pipeline: "p_" + name, SourceAddr: my.Addr(), Database: name, ServerID: nextServerID.Add(1),
		PostgresDSN: e.pgDSN, RedisPrefix: "p_" + name + ":", Stream: stream, Subjects: "ds_" + name,
	})
	e.cfg.Apply.RetryInitial = config.Dur(20 * time.Millisecond)
	e.cfg.Apply.RetryMax = config.Dur(200 * time.Millisecond)
	// A case that wrongly got as far as creating its stream must not leave
	// it behind: the cleanup deletes it.
	e.js = dstest.JetStream(t, "", stream)
	return e
}

func (e *badEnv) exec(stmts ...string) {
	e.t.Helper()
	for _, s := range stmts {
		if _, err := e.src.Exec(s); err != nil {
			e.t.Fatalf("source: %s: %v", s, err)
		}
	}
}

// pool opens the case's PostgreSQL database.
func (e *badEnv) pool() *pgxpool.Pool {
	e.t.Helper()
	p, err := pgxpool.New(context.Background(), e.pgDSN)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(p.Close)
	return p
}

// setCheckpoint migrates the PostgreSQL schema and writes a checkpoint row
// directly, as a damaged or stale checkpoint would be found.
func (e *badEnv) setCheckpoint(gtid, file string, pos int64) {
	e.t.Helper()
	ctx := context.Background()
	p := e.pool()
	if err := dbschema.Migrate(ctx, p, "dialsync"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := p.Exec(ctx, `INSERT INTO dialsync.checkpoints (pipeline, gtid_set, file, pos) VALUES ($1, $2, $3, $4)`,
		e.cfg.Pipeline.Name, gtid, file, pos); err != nil {
		e.t.Fatal(err)
	}
}

// checkpointRow is the stored checkpoint as text; "" when there is none
// (or no schema yet).
func (e *badEnv) checkpointRow() string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.pgDSN)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('dialsync.checkpoints') IS NOT NULL`).Scan(&exists); err != nil {
		e.t.Fatal(err)
	}
	if !exists {
		return ""
	}
	var row string
	err = conn.QueryRow(ctx, `SELECT concat_ws('|', gtid_set, file, pos, epoch, updated_at) FROM dialsync.checkpoints WHERE pipeline = $1`, e.cfg.Pipeline.Name).Scan(&row)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return row
}

// purgeBinlogs rotates the binlog and purges every older file. MariaDB
// skips (with only a warning) files whose transactions InnoDB has not yet
// checkpointed, so it retries until the oldest file is the current one.
func (e *badEnv) purgeBinlogs() {
	e.t.Helper()
	e.my.Exec(e.t, "FLUSH BINARY LOGS")
	var cur string
	if err := e.src.QueryRow("SHOW MASTER STATUS").Scan(&cur, new(int64), new(sql.NullString), new(sql.NullString)); err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, 30*time.Second, "binlogs before "+cur+" purged", func() bool {
		e.my.Exec(e.t, "PURGE BINARY LOGS TO '"+cur+"'")
		var oldest string
		if err := e.src.QueryRow("SHOW BINARY LOGS").Scan(&oldest, new(int64)); err != nil {
			e.t.Fatal(err)
		}
		if oldest == cur {
			return true
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
}

// closedPort is a local TCP port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// privateRedis starts redis-server with a password on a free port.
func privateRedis(t *testing.T, password string) string {
	t.Helper()
	return startRedis(t, "--requirepass", password).addr()
}

// runResult is one finished run of the binary.
type runResult struct {
	code   int
	stderr string
	stdout string
}

// runBinary runs the binary with the case's arguments, bounded in time,
// with no DIALSYNC_* variables inherited.
func (e *badEnv) runBinary() runResult {
	e.t.Helper()
	cfgPath := filepath.Join(e.dir, "config.toml")
	var text []byte
	var err error
	switch {
	case e.raw != nil:
		text = []byte(*e.raw)
	case e.bad != nil:
		text, err = dstest.MarshalBad(e.cfg, e.bad)
	default:
		text, err = dstest.Marshal(e.cfg)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, text, 0o600); err != nil {
		e.t.Fatal(err)
	}
	args := e.args
	if args == nil {
		args = []string{"run", "--config", cfgPath}
	}
	environ := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DIALSYNC_") {
			environ = append(environ, kv)
		}
	}
	res, err := proc.Run(binPath, 60*time.Second, proc.Options{Args: args, Environ: environ, Dir: e.dir})
	if errors.Is(err, proc.ErrTimeout) {
		e.t.Fatalf("dialsync did not exit within 60s (it should fail at start):\n%s", res.Stderr)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return runResult{code: res.Code, stderr: res.Stderr, stdout: res.Stdout}
}

// errorLine returns the final "dialsync: " line and checks that everything
// else on stderr is a structured log line (no stack trace, no dump).
func errorLine(t *testing.T, stderr string, allowUsage bool) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "dialsync: ") {
		t.Fatalf("last stderr line is not a dialsync error:\n%s", stderr)
	}
	for _, l := range lines[:len(lines)-1] {
		if strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}") {
			continue // a JSON log record
		}
		if allowUsage {
			continue // the flag package's usage listing
		}
		t.Errorf("stderr has a line that is neither a log record nor the error: %q", l)
	}
	// No stack trace anywhere, not even escaped inside a log record.
	for _, bad := range []string{"panic:", "goroutine ", `\n\t`} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr looks like a stack trace (%q):\n%s", bad, stderr)
		}
	}
	if goFrame.MatchString(last) {
		t.Errorf("the error line quotes source locations: %s", last)
	}
	return last
}

var goFrame = regexp.MustCompile(`\.go:\d+`)

const secretPassword = "Pa55-s3cret-XYZ"

type badCase struct {
	name string
	my   func(t *testing.T) *testenv.MariaDB // nil: the shared server
	// setup breaks one thing.
	setup func(e *badEnv)
	code  int
	// want are key words the error line must contain (case-insensitive):
	// the problem and the fix.
	want []string
	// ckpt: "none" (no checkpoint may be stored), "same" (the one set up is
	// unchanged), or "" (the failure comes before PostgreSQL is touched).
	ckpt       string
	allowUsage bool
}

func privateMariaDB(o testenv.MariaDBOptions) func(t *testing.T) *testenv.MariaDB {
	return func(t *testing.T) *testenv.MariaDB { return testenv.StartMariaDB(t, o) }
}

func rawConfig(s string) func(e *badEnv) { return func(e *badEnv) { e.raw = &s } }

var badCases = []badCase{
	// ---- command line and configuration: exit 2 ----
	{name: "malformed TOML", setup: rawConfig("[source\naddr = \"x\"\n"), code: 2,
		want: []string{"config", "invalid toml", "line 1"}},
	{name: "unknown key", setup: func(e *badEnv) { e.bad = map[string]any{"ha.enabeld": true} }, code: 2,
		want: []string{"unknown key", "ha.enabeld", "spelling"}},
	{name: "wrong type", setup: func(e *badEnv) { e.bad = map[string]any{"ha.enabled": "yes"} }, code: 2,
		want: []string{"ha.enabled", "expected", "got a toml string"}},
	{name: "missing required field", setup: func(e *badEnv) { e.cfg.Source.Database = "" }, code: 2,
		want: []string{"source.database", "is required"}},
	{name: "server_id 0", setup: func(e *badEnv) { e.cfg.Source.ServerID = 0 }, code: 2,
		want: []string{"source.server_id is 0", "not a valid replica server_id", "1..4294967295", "unique"}},
	{name: "invalid postgres dsn", setup: func(e *badEnv) { e.cfg.Postgres.DSN = "postgres://u:" + secretPassword + "@host:notaport/db" }, code: 2,
		want: []string{"postgres.dsn", "not a valid"}},
	{name: "config file missing", setup: func(e *badEnv) { e.args = []string{"run", "--config", filepath.Join(e.dir, "nope.toml")} }, code: 2,
		want: []string{"nope.toml", "not found", "--config"}},
	{name: "unknown command", setup: func(e *badEnv) { e.args = []string{"frobnicate"} }, code: 2,
		want: []string{"unknown command", "frobnicate", "dialsync help"}},
	{name: "unknown flag", setup: func(e *badEnv) { e.args = []string{"run", "--no-such-flag"} }, code: 2,
		want: []string{"flag provided but not defined", "no-such-flag"}, allowUsage: true},

	// ---- servers unreachable or refusing us at start: exit 1 ----
	{name: "mysql unreachable", setup: func(e *badEnv) { e.cfg.Source.Addr = closedPort(e.t) }, code: 1,
		want: []string{"connect", "refused", e2ePortPlaceholder, "source.addr"}, ckpt: "none"},
	{name: "postgres unreachable", setup: func(e *badEnv) {
		e.cfg.Postgres.DSN = "postgres://postgres@" + closedPort(e.t) + "/x?sslmode=disable"
	}, code: 1, want: []string{"postgres", "refused", "postgres.dsn"}},
	{name: "redis unreachable", setup: func(e *badEnv) { e.cfg.Redis.Addr = closedPort(e.t) }, code: 1,
		want: []string{"redis", "refused", e2ePortPlaceholder}, ckpt: "none"},
	{name: "nats unreachable", setup: func(e *badEnv) { e.cfg.NATS.URL = "nats://" + closedPort(e.t) }, code: 1,
		want: []string{"nats", "no servers available", e2ePortPlaceholder, "nats.url"}, ckpt: "none"},
	{name: "wrong mysql password", setup: func(e *badEnv) { e.cfg.Source.Password = secretPassword }, code: 1,
		want: []string{"access denied", "root", "source.addr/user/password"}, ckpt: "none"},
	{name: "wrong redis password", setup: func(e *badEnv) {
		e.cfg.Redis.Addr = privateRedis(e.t, "the-right-one")
		e.cfg.Redis.Password = secretPassword
	}, code: 1, want: []string{"redis", "wrongpass", "password"}, ckpt: "none"},
	{name: "missing grants", setup: func(e *badEnv) {
		user := "ro_" + e.name[len(e.name)-8:]
		e.my.Exec(e.t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'pw'", user),
			fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", e.name, user))
		e.cfg.Source.User, e.cfg.Source.Password = user, "pw"
	}, code: 1, want: []string{"lacks a privilege", "binlog monitor", "grant replication slave"}, ckpt: "none"},

	// ---- source server settings: exit 1, nothing stored ----
	{name: "binlog off", my: privateMariaDB(testenv.MariaDBOptions{NoBinlog: true}), code: 1,
		want: []string{"log_bin is off", "log_bin enabled"}, ckpt: "none"},
	{name: "statement format", my: privateMariaDB(testenv.MariaDBOptions{BinlogFormat: "STATEMENT"}), code: 1,
		want: []string{"binlog_format is statement", "needs row", "set global binlog_format"}, ckpt: "none"},
	{name: "mixed format", my: privateMariaDB(testenv.MariaDBOptions{BinlogFormat: "MIXED"}), code: 1,
		want: []string{"binlog_format is mixed", "needs row"}, ckpt: "none"},
	{name: "minimal row image", my: privateMariaDB(testenv.MariaDBOptions{BinlogRowImage: "MINIMAL"}), code: 1,
		want: []string{"binlog_row_image is minimal", "needs full", "set global binlog_row_image"}, ckpt: "none"},
	{name: "noblob row image", my: privateMariaDB(testenv.MariaDBOptions{BinlogRowImage: "NOBLOB"}), code: 1,
		want: []string{"binlog_row_image is noblob", "needs full"}, ckpt: "none"},
	{name: "server_id collision", setup: func(e *badEnv) { e.cfg.Source.ServerID = e.my.ServerID() }, code: 1,
		want: []string{"server_id", "the same as our server_id", "unique"}, ckpt: "none"},

	// ---- checkpoints the source cannot serve: exit 1, checkpoint kept ----
	{name: "checkpoint past end of file", setup: func(e *badEnv) {
		var f string
		var pos int64
		if err := e.src.QueryRow("SHOW MASTER STATUS").Scan(&f, &pos, new(sql.NullString), new(sql.NullString)); err != nil {
			e.t.Fatal(err)
		}
		e.setCheckpoint("", f, pos+1_000_000)
	}, code: 1, want: []string{"past the end", "checkpoint reset --to-head --reason"}, ckpt: "same"},
	{name: "checkpoint in purged file", my: privateMariaDB(testenv.MariaDBOptions{}), setup: func(e *badEnv) {
		const first = "mysql-bin.000001"
		e.purgeBinlogs()
		e.setCheckpoint("", first, 4)
	}, code: 1, want: []string{"mysql-bin.000001", "cannot serve the checkpoint", "purged", "checkpoint reset --to-head --reason"}, ckpt: "same"},
	{name: "checkpoint gtid purged", my: privateMariaDB(testenv.MariaDBOptions{ServerID: 77}), setup: func(e *badEnv) {
		// GTID 0-77-1 was written while creating the database; purge it.
		e.purgeBinlogs()
		e.setCheckpoint("0-77-1", "", 0)
	}, code: 1, want: []string{"0-77-1", "purged", "checkpoint reset --to-head --reason"}, ckpt: "same"},
	{name: "garbage gtid in checkpoint", setup: func(e *badEnv) { e.setCheckpoint("garbage!", "", 0) }, code: 1,
		want: []string{"invalid mariadb gtid set", "garbage!", "checkpoint reset --to-head --reason"}, ckpt: "same"},

	// ---- the source's data and the rules: exit 1, nothing stored ----
	{name: "rule sql syntax error", setup: func(e *badEnv) {
		e.cfg.Rules.QueueSQL = "SELECT FROM WHERE\n  {users}\n"
	}, code: 1, want: []string{"rules.queue_sql", "does not run", "syntax"}, ckpt: "none"},
	{name: "rule sql wrong columns", setup: func(e *badEnv) {
		e.cfg.Rules.QueueSQL = "SELECT u.id AS user_id FROM users u WHERE {users}"
	}, code: 1, want: []string{"rules.queue_sql", "must return exactly the columns", "missing"}, ckpt: "none"},
	{name: "tracked table missing", setup: func(e *badEnv) { e.exec("DROP TABLE claim_vehicle_packages") }, code: 1,
		want: []string{"claim_vehicle_packages", "does not exist"}, ckpt: "none"},
	{name: "tracked table without primary key", setup: func(e *badEnv) {
		e.exec("ALTER TABLE user_addresses MODIFY id BIGINT UNSIGNED NOT NULL, DROP PRIMARY KEY")
	}, code: 1, want: []string{"user_addresses", "no primary key", "add primary key"}, ckpt: "none"},
	{name: "required column missing", setup: func(e *badEnv) { e.exec("ALTER TABLE claim_vehicle_packages DROP COLUMN claim_id") }, code: 1,
		want: []string{"claim_vehicle_packages", "no column", "claim_id"}, ckpt: "none"},

	// ---- PostgreSQL and NATS state from someone else: exit 1 ----
	{name: "postgres schema from a newer version", setup: func(e *badEnv) {
		ctx := context.Background()
		p := e.pool()
		if err := dbschema.Migrate(ctx, p, "dialsync"); err != nil {
			e.t.Fatal(err)
		}
		if _, err := p.Exec(ctx, `INSERT INTO dialsync.schema_migrations (version, name) VALUES (999, 'future')`); err != nil {
			e.t.Fatal(err)
		}
	}, code: 1, want: []string{"version 999", "upgrade dialsync"}, ckpt: "none"},
	{name: "stream subjects conflict", setup: func(e *badEnv) {
		other := "OTHER_" + strings.ToUpper(e.name)
		ctx := context.Background()
		if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: other, Subjects: []string{e.cfg.NATS.SubjectPrefix + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { _ = e.js.DeleteStream(context.Background(), other) })
	}, code: 1, want: []string{"stream", "subjects overlap", "nats.subject_prefix"}, ckpt: "none"},
}

// e2ePortPlaceholder in want is replaced by the port the case closed.
const e2ePortPlaceholder = "{port}"

func TestBadInput(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var my *testenv.MariaDB
			if tc.my != nil {
				my = tc.my(t)
			}
			e := newBadEnv(t, my)
			orig := *e.cfg
			if tc.setup != nil {
				tc.setup(e)
			}
			before := e.checkpointRow()
			res := e.runBinary()
			line := errorLine(t, res.stderr, tc.allowUsage)
			t.Logf("exit %d: %s", res.code, line)
			if res.code != tc.code {
				t.Errorf("exit code %d, want %d", res.code, tc.code)
			}
			low := strings.ToLower(line)
			for _, w := range tc.want {
				if w == e2ePortPlaceholder {
					w = changedPort(&orig, e.cfg)
				}
				if !strings.Contains(low, strings.ToLower(w)) {
					t.Errorf("error line does not mention %q", w)
				}
			}
			for _, s := range []string{secretPassword, "the-right-one"} {
				if strings.Contains(res.stderr, s) || strings.Contains(res.stdout, s) {
					t.Errorf("output contains the secret %q", s)
				}
			}
			switch tc.ckpt {
			case "none":
				if after := e.checkpointRow(); after != "" {
					t.Errorf("a checkpoint was stored (%s) although streaming could not start", after)
				}
			case "same":
				if before == "" {
					t.Fatal("case set no checkpoint")
				}
				if after := e.checkpointRow(); after != before {
					t.Errorf("checkpoint changed from %s to %s", before, after)
				}
			}
		})
	}
}

// changedPort finds the port of whichever address a case replaced.
func changedPort(orig, now *config.Config) string {
	for _, p := range [][2]string{{orig.Source.Addr, now.Source.Addr}, {orig.Redis.Addr, now.Redis.Addr}, {orig.NATS.URL, now.NATS.URL}} {
		if p[0] != p[1] {
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(p[1], "nats://"))
			if _, err := strconv.Atoi(port); err == nil {
				return ":" + port
			}
		}
	}
	return "{no changed address}"
}

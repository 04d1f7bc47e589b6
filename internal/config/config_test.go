package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/handlers"
)

// minimal is the smallest valid document: the required keys only.
const minimal = `
[source]
addr = "127.0.0.1:3307"
user = "root"
server_id = 4242
database = "dialsync_demo"

[postgres]
dsn = "postgres://postgres@127.0.0.1:5432/dialsync_demo?sslmode=disable"
`

// envMap returns an env lookup backed by m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func mustParse(t testing.TB, doc string, env map[string]string) *Config {
	t.Helper()
	c, err := Parse(strings.NewReader(doc), envMap(env))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func parseErr(t testing.TB, doc string, env map[string]string) string {
	t.Helper()
	_, err := Parse(strings.NewReader(doc), envMap(env))
	if err == nil {
		t.Fatalf("Parse succeeded, want an error")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "config: ") || strings.Contains(msg, "\n") {
		t.Fatalf("error is not one line starting with \"config: \": %q", msg)
	}
	return msg
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal, nil)
	checks := []struct {
		key  string
		got  any
		want any
	}{
		{"pipeline.name", c.Pipeline.Name, "main"},
		{"source.flavor", c.Source.Flavor, "mysql"},
		{"source.heartbeat_period", c.Source.HeartbeatPeriod.Duration(), 10 * time.Second},
		{"source.read_timeout", c.Source.ReadTimeout.Duration(), 90 * time.Second},
		{"source.tls_mode", c.Source.Mode, TLSDisabled},
		{"postgres.schema", c.Postgres.Schema, "dialsync"},
		{"postgres.max_conns", c.Postgres.MaxConns, 4},
		{"redis.addr", c.Redis.Addr, "127.0.0.1:6379"},
		{"redis.prefix", c.Redis.Prefix, ""},
		{"nats.url", c.NATS.URL, "nats://127.0.0.1:4222"},
		{"nats.stream", c.NATS.Stream, "DIALSYNC"},
		{"nats.subject_prefix", c.NATS.SubjectPrefix, "dialsync"},
		{"nats.manage_stream", c.NATS.ManageStream, true},
		{"nats.duplicate_window", c.NATS.DuplicateWindow.Duration(), 2 * time.Minute},
		{"nats.max_age", c.NATS.MaxAge.Duration(), 72 * time.Hour},
		{"nats.max_bytes", c.NATS.MaxBytes, ByteSize(0)},
		{"nats.replicas", c.NATS.Replicas, 1},
		{"nats.storage", c.NATS.Storage, "file"},
		{"nats.ack_timeout", c.NATS.AckTimeout.Duration(), 5 * time.Second},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:9120"},
		{"apply.max_batch_txns", c.Apply.MaxBatchTxns, 2000},
		{"apply.max_batch_bytes", c.Apply.MaxBatchBytes, 2 * MiB},
		{"apply.batch_window", c.Apply.BatchWindow.Duration(), time.Duration(0)},
		{"apply.max_txn_bytes", c.Apply.MaxTxnBytes, 2 * MiB},
		{"apply.retry_initial", c.Apply.RetryInitial.Duration(), 100 * time.Millisecond},
		{"apply.retry_max", c.Apply.RetryMax.Duration(), 10 * time.Second},
		{"rules.queue_sql", c.Rules.QueueSQL, ""},
		{"cache.user_keys", c.Cache.UserKeys, []string{"user:{id}:context", "user:{id}:claims"}},
		{"cache.queue_keys", c.Cache.QueueKeys, []string{"eligible_users", "queue:queued"}},
		{"notices.include_values", c.Notices.IncludeValues, []string{}},
		{"reconcile.interval", c.Reconcile.Interval.Duration(), time.Hour},
		{"reconcile.chunk_size", c.Reconcile.ChunkSize, 5000},
		{"reconcile.on_start", c.Reconcile.OnStart, "if-no-checkpoint"},
		{"recovery.on_purged", c.Recovery.OnPurged, "fail"},
		{"tables.on_error", c.Tables.OnError, "halt"},
		{"tables.dead_letter_row_images", c.Tables.DeadLetterRowImages, false},
		{"housekeeping.retain", c.Housekeeping.Retain.Duration(), 720 * time.Hour},
		{"housekeeping.interval", c.Housekeeping.Interval.Duration(), time.Hour},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "auto"},
		{"ha.enabled", c.HA.Enabled, true},
		{"ha.lease_check", c.HA.LeaseCheck.Duration(), time.Second},
		{"health.max_lag", c.Health.MaxLag.Duration(), 30 * time.Second},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.key, ch.got, ch.want)
		}
	}
	for _, table := range handlers.Tables() {
		if got := c.Tables.OnErrorFor(table); got != OnErrorHalt {
			t.Errorf("OnErrorFor(%s) = %q, want halt", table, got)
		}
	}
}

func TestDefaultAloneNamesEveryRequiredKey(t *testing.T) {
	err := Default().Validate()
	if err == nil {
		t.Fatal("Default() validated without the required keys")
	}
	for _, key := range []string{"source.addr", "source.user", "source.server_id", "source.database", "postgres.dsn"} {
		if !strings.Contains(err.Error(), key+" is required") {
			t.Errorf("error does not say %s is required: %v", key, err)
		}
	}
	if !strings.Contains(err.Error(), "unique among all replicas") {
		t.Errorf("server_id error does not say why it must be set: %v", err)
	}
}

func TestOverridesAndHelpers(t *testing.T) {
	c := mustParse(t, minimal+`
[lookup]
user = "reader"
[tables]
on_error = "dead_letter"
[tables.claims]
on_error = "halt"
[apply]
max_batch_bytes = 1048576
max_txn_bytes = "1.5MiB"
batch_window = "0"
[reconcile]
interval = "off"
[notices]
include_values = ["claims.status", "users.is_enabled"]
`, nil)
	if got := c.Tables.OnErrorFor("claims"); got != OnErrorHalt {
		t.Errorf("claims policy = %q, want the override halt", got)
	}
	if got := c.Tables.OnErrorFor("users"); got != OnErrorDeadLetter {
		t.Errorf("users policy = %q, want the default dead_letter", got)
	}
	if c.Apply.MaxBatchBytes != MiB || c.Apply.MaxTxnBytes != MiB*3/2 {
		t.Errorf("sizes = %v, %v", c.Apply.MaxBatchBytes, c.Apply.MaxTxnBytes)
	}
	if c.Apply.BatchWindow.Duration() != 0 || c.Reconcile.Interval.Duration() != 0 {
		t.Errorf("zero/off durations not read as 0")
	}
	l := c.EffectiveLookup()
	if l.Addr != c.Source.Addr || l.Database != c.Source.Database || l.User != "reader" {
		t.Errorf("EffectiveLookup = %+v", l)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		key  string // must appear in the error
		hint string // and so must this
	}{
		{"pipeline name", func(c *Config) { c.Pipeline.Name = "Main Pipeline" }, "pipeline.name", "a-z"},
		{"source addr missing", func(c *Config) { c.Source.Addr = "" }, "source.addr", "required"},
		{"source addr no port", func(c *Config) { c.Source.Addr = "db" }, "source.addr", "host:port"},
		{"source addr bad port", func(c *Config) { c.Source.Addr = "db:99999" }, "source.addr", "port"},
		{"source user", func(c *Config) { c.Source.User = "" }, "source.user", "REPLICATION"},
		{"source flavor", func(c *Config) { c.Source.Flavor = "oracle" }, "source.flavor", `"mariadb"`},
		{"server_id unset", func(c *Config) { c.Source.ServerID = 0 }, "source.server_id", "unique"},
		{"database", func(c *Config) { c.Source.Database = "" }, "source.database", "required"},
		{"heartbeat zero", func(c *Config) { c.Source.HeartbeatPeriod = Dur(0) }, "source.heartbeat_period", "greater than 0"},
		{"heartbeat >= read timeout", func(c *Config) { c.Source.ReadTimeout = Dur(10 * time.Second) }, "source.read_timeout", "source.heartbeat_period"},
		{"source tls mode", func(c *Config) { c.Source.Mode = "on" }, "source.tls_mode", `"skip-verify"`},
		{"tls cert without key", func(c *Config) { c.Source.Mode, c.Source.CertFile = TLSRequired, "c.pem" }, "source.tls_cert_file", "source.tls_key_file"},
		{"tls files while disabled", func(c *Config) { c.Redis.CAFile = "ca.pem" }, "redis.tls_mode", "required"},
		{"lookup addr", func(c *Config) { c.Lookup.Addr = "nohost" }, "lookup.addr", "host:port"},
		{"postgres dsn", func(c *Config) { c.Postgres.DSN = "" }, "postgres.dsn", "required"},
		{"postgres schema", func(c *Config) { c.Postgres.Schema = "bad-schema" }, "postgres.schema", "identifier"},
		{"postgres max_conns", func(c *Config) { c.Postgres.MaxConns = 0 }, "postgres.max_conns", "at least 1"},
		{"redis addr empty", func(c *Config) { c.Redis.Addr = "" }, "redis.addr", "required"},
		{"redis addr bad url", func(c *Config) { c.Redis.Addr = "http://x:1" }, "redis.addr", "rediss://"},
		{"redis addr bad list", func(c *Config) { c.Redis.Addr = "a:1,b" }, "redis.addr", "host:port"},
		{"redis db", func(c *Config) { c.Redis.DB = -1 }, "redis.db", "0 or more"},
		{"redis tls", func(c *Config) { c.Redis.Mode = "yes" }, "redis.tls_mode", "disabled"},
		{"nats url", func(c *Config) { c.NATS.URL = "http://x:4222" }, "nats.url", "nats://"},
		{"nats url empty", func(c *Config) { c.NATS.URL = "" }, "nats.url", "required"},
		{"nats stream", func(c *Config) { c.NATS.Stream = "a.b" }, "nats.stream", "'.'"},
		{"nats subject prefix", func(c *Config) { c.NATS.SubjectPrefix = "a.>" }, "nats.subject_prefix", "wildcards"},
		{"nats subject prefix empty token", func(c *Config) { c.NATS.SubjectPrefix = "a..b" }, "nats.subject_prefix", "tokens"},
		{"nats duplicate window", func(c *Config) { c.NATS.DuplicateWindow = Dur(0) }, "nats.duplicate_window", "replayed"},
		{"nats duplicate window > max age", func(c *Config) { c.NATS.MaxAge = Dur(time.Minute) }, "nats.duplicate_window", "nats.max_age"},
		{"nats max_bytes", func(c *Config) { c.NATS.MaxBytes = -1 }, "nats.max_bytes", "unlimited"},
		{"nats replicas", func(c *Config) { c.NATS.Replicas = 7 }, "nats.replicas", "1..5"},
		{"nats storage", func(c *Config) { c.NATS.Storage = "disk" }, "nats.storage", `"memory"`},
		{"nats two auth methods", func(c *Config) { c.NATS.CredsFile, c.NATS.Token = "x.creds", "tok" }, "nats.creds_file", "nats.token"},
		{"nats user without password", func(c *Config) { c.NATS.User = "u" }, "nats.password", "nats.user"},
		{"nats password without user", func(c *Config) { c.NATS.Password = "p" }, "nats.user", "nats.password"},
		{"nats ack timeout", func(c *Config) { c.NATS.AckTimeout = Dur(0) }, "nats.ack_timeout", "greater than 0"},
		{"nats tls", func(c *Config) { c.NATS.Mode = "strict" }, "nats.tls_mode", "required"},
		{"http listen", func(c *Config) { c.HTTP.Listen = "9120" }, "http.listen", "host:port"},
		{"max_batch_txns", func(c *Config) { c.Apply.MaxBatchTxns = 0 }, "apply.max_batch_txns", "at least 1"},
		{"max_batch_bytes", func(c *Config) { c.Apply.MaxBatchBytes = 10 }, "apply.max_batch_bytes", "1KiB"},
		{"batch_window", func(c *Config) { c.Apply.BatchWindow = Dur(-time.Second) }, "apply.batch_window", "0 or more"},
		{"max_txn_bytes", func(c *Config) { c.Apply.MaxTxnBytes = 0 }, "apply.max_txn_bytes", "1KiB"},
		{"retry_initial", func(c *Config) { c.Apply.RetryInitial = Dur(0) }, "apply.retry_initial", "greater than 0"},
		{"retry_max", func(c *Config) { c.Apply.RetryMax = Dur(time.Millisecond) }, "apply.retry_max", "apply.retry_initial"},
		{"queue_sql token", func(c *Config) { c.Rules.QueueSQL = "SELECT 1" }, "rules.queue_sql", UsersToken},
		{"user key without id", func(c *Config) { c.Cache.UserKeys = []string{"user:context"} }, "cache.user_keys", handlers.IDPlaceholder},
		{"empty queue key", func(c *Config) { c.Cache.QueueKeys = []string{" "} }, "cache.queue_keys", "empty"},
		{"include_values form", func(c *Config) { c.Notices.IncludeValues = []string{"status"} }, "notices.include_values", "table.column"},
		{"include_values table", func(c *Config) { c.Notices.IncludeValues = []string{"orders.total"} }, "notices.include_values", "not tracked"},
		{"reconcile interval", func(c *Config) { c.Reconcile.Interval = Dur(-1) }, "reconcile.interval", "off"},
		{"chunk size", func(c *Config) { c.Reconcile.ChunkSize = 0 }, "reconcile.chunk_size", "1..1000000"},
		{"on_start", func(c *Config) { c.Reconcile.OnStart = "sometimes" }, "reconcile.on_start", `"if-no-checkpoint"`},
		{"on_purged", func(c *Config) { c.Recovery.OnPurged = "skip" }, "recovery.on_purged", `"reconcile"`},
		{"tables on_error", func(c *Config) { c.Tables.OnError = "ignore" }, "tables.on_error", `"dead_letter"`},
		{"per-table on_error", func(c *Config) { c.Tables.ClaimVehiclePackages.OnError = "skip" }, "tables.claim_vehicle_packages.on_error", `"halt"`},
		{"retain", func(c *Config) { c.Housekeeping.Retain = Dur(0) }, "housekeeping.retain", "greater than 0"},
		{"housekeeping interval", func(c *Config) { c.Housekeeping.Interval = Dur(-1) }, "housekeeping.interval", "off"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level", `"debug"`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format", `"json"`},
		{"lease check", func(c *Config) { c.HA.LeaseCheck = Dur(0) }, "ha.lease_check", "greater than 0"},
		{"max lag", func(c *Config) { c.Health.MaxLag = Dur(0) }, "health.max_lag", "greater than 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, minimal, nil)
			tc.mod(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config: ") || strings.Contains(msg, "\n") {
				t.Errorf("not one config: line: %q", msg)
			}
			if !strings.Contains(msg, tc.key) || !strings.Contains(msg, tc.hint) {
				t.Errorf("error %q does not name %q with hint %q", msg, tc.key, tc.hint)
			}
		})
	}
}

func TestValidAlternatives(t *testing.T) {
	// Values that must be accepted, so validation is not over-strict.
	c := mustParse(t, minimal, nil)
	c.Redis.Addr = "rediss://user:pw@cache.example:6380/2"
	c.NATS.URL = "nats://a:4222, tls://b:4222"
	c.NATS.User, c.NATS.Password = "u", "p"
	c.NATS.MaxAge = Dur(0)
	c.HTTP.Listen = ""
	c.Lookup.Addr = "[::1]:3306"
	c.Source.Mode, c.Source.CertFile, c.Source.KeyFile = TLSRequired, "c.pem", "k.pem"
	c.Rules.QueueSQL = "SELECT u.id FROM users u WHERE {users}"
	c.Notices.IncludeValues = []string{"claim_vehicle_packages.monthly_payment"}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c.Redis.Addr = "10.0.0.1:6379,10.0.0.2:6379"
	c.Redis.MasterName = "mymaster"
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate with a redis address list: %v", err)
	}
}

func TestUnknownKey(t *testing.T) {
	msg := parseErr(t, "[source]\naddr = \"h:1\"\npasword = \"hunter2-secret\"\n", nil)
	for _, want := range []string{`unknown key "source.pasword"`, "(line 3)", "check the spelling", "config.toml"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error quotes the value: %q", msg)
	}
	msg = parseErr(t, "[sourcee]\nx = 1\n[tables.claimz]\non_error = \"halt\"\n", nil)
	if !strings.Contains(msg, `"sourcee" (line 1)`) || !strings.Contains(msg, `"tables.claimz" (line 3)`) {
		t.Errorf("error %q does not name every unknown key with its line", msg)
	}
}

func TestWrongType(t *testing.T) {
	cases := []struct{ doc, key, want string }{
		{"[source]\nserver_id = \"4242\"\n", "source.server_id", "expected an integer"},
		{"[source]\nserver_id = 5000000000\n", "source.server_id", "out of range"},
		{"[apply]\nmax_batch_txns = \"many\"\n", "apply.max_batch_txns", "expected an integer, got a TOML string"},
		{"[source]\nheartbeat_period = 10\n", "source.heartbeat_period", `expected a duration string such as "10s"`},
		{"[source]\nheartbeat_period = \"10 seconds\"\n", "source.heartbeat_period", `"10 seconds"`},
		{"source = { read_timeout = true }\n", "source.read_timeout", "got a TOML boolean"},
		{"[apply]\nmax_batch_bytes = \"8 parsecs\"\n", "apply.max_batch_bytes", `"8MiB"`},
		{"[apply]\nmax_txn_bytes = 1.5\n", "apply.max_txn_bytes", "got a TOML float"},
		{"[cache]\nuser_keys = \"user:{id}\"\n", "cache.user_keys", "list of strings"},
		{"[nats]\nmanage_stream = \"yes\"\n", "nats.manage_stream", "true or false"},
		{"[tables]\nclaims = \"halt\"\n", "tables.claims", "expected a table"},
		{"[http]\nlisten = 9120\n", "http.listen", "expected a string"},
	}
	for _, tc := range cases {
		msg := parseErr(t, "\n"+tc.doc, nil)
		if !strings.Contains(msg, tc.key) || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "(line ") {
			t.Errorf("%q: error %q lacks key %q, %q or the line", tc.doc, msg, tc.key, tc.want)
		}
	}
}

func TestMalformedTOML(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		line string
	}{
		{"[source]\naddr = \"h:1\"\nuser = \"unterminated\n", "line 3"},
		{"[source\n", "line 1"},
		{"[source]\n\n\nuser = \n", "line 4"},
		{"[source]\nuser = \"a\"\nuser = \"b\"\n", "line 3"},
	} {
		msg := parseErr(t, tc.doc, nil)
		if !strings.Contains(msg, tc.line) {
			t.Errorf("%q: error %q does not name %s", tc.doc, msg, tc.line)
		}
	}
}

func TestLoad(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(missing, nil)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("missing file error = %v, want the path and --config", err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, envMap(map[string]string{"DIALSYNC_PIPELINE_NAME": "second"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Source.ServerID != 4242 || c.Pipeline.Name != "second" {
		t.Errorf("Load: server_id %d, pipeline %q", c.Source.ServerID, c.Pipeline.Name)
	}
}

// TestSample parses the repository's config.toml (the demo setup), checks it
// lists exactly the keys of Config, and that every value it shows is the
// default except the demo connection settings, so its documentation of the
// defaults cannot rot.
func TestSample(t *testing.T) {
	doc, err := os.ReadFile("../../config.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, string(doc), nil)
	if c.Source.Addr != "127.0.0.1:3307" || c.Source.User != "root" || c.Source.Database != "dialsync_demo" ||
		c.Source.Flavor != "mariadb" || c.Source.ServerID != 4242 ||
		c.Postgres.DSN != "postgres://postgres@127.0.0.1:5432/dialsync_demo?sslmode=disable" {
		t.Errorf("sample demo settings changed: %+v %+v", c.Source, c.Postgres)
	}

	inSample := c.set // every key the sample sets, recorded while decoding it

	demo := map[string]bool{"source.addr": true, "source.user": true, "source.flavor": true,
		"source.server_id": true, "source.database": true, "postgres.dsn": true}
	def := Default()
	defByKey := map[string]field{}
	for _, f := range def.fields() {
		defByKey[f.Key] = f
	}
	for _, f := range c.fields() {
		if !inSample[f.Key] {
			t.Errorf("config.toml lacks key %s", f.Key)
		}
		delete(inSample, f.Key)
		if !demo[f.Key] && !reflect.DeepEqual(f.Value.Interface(), defByKey[f.Key].Value.Interface()) {
			t.Errorf("config.toml shows %s = %v, but the default is %v", f.Key, f.Value.Interface(), defByKey[f.Key].Value.Interface())
		}
	}
	for k := range inSample {
		t.Errorf("config.toml has key %s that Config does not", k)
	}
}

// testValue returns an env string for f and the value it must produce: not
// the default, so a no-op override cannot pass.
func testValue(t *testing.T, f field) (string, any) {
	t.Helper()
	v := f.Value
	switch v.Interface().(type) {
	case Duration:
		return "17s", Dur(17 * time.Second)
	case ByteSize:
		return "3MiB", 3 * MiB
	}
	switch v.Kind() {
	case reflect.String:
		s := "env-" + f.Key
		return s, s
	case reflect.Bool:
		b := !v.Bool()
		if b {
			return "true", true
		}
		return "false", false
	case reflect.Int:
		return "77", 77
	case reflect.Uint32:
		return "99", uint32(99)
	case reflect.Slice:
		return "a, b,c", []string{"a", "b", "c"}
	}
	t.Fatalf("%s: no test value for type %s; add one", f.Key, v.Type())
	return "", nil
}

// TestEnvOverridesEveryKey iterates every leaf key of Config and proves its
// DIALSYNC_<SECTION>_<KEY> variable sets it, so no key can be forgotten.
func TestEnvOverridesEveryKey(t *testing.T) {
	names := map[string]string{}
	keys := Default().fields()
	if len(keys) < 80 {
		t.Fatalf("only %d keys found by reflection; the walk is broken", len(keys))
	}
	for _, f := range keys {
		if other, dup := names[f.Env]; dup {
			t.Fatalf("%s and %s share the variable %s", other, f.Key, f.Env)
		}
		names[f.Env] = f.Key
		t.Run(f.Key, func(t *testing.T) {
			s, want := testValue(t, f)
			c := Default()
			if err := c.applyEnv(envMap(map[string]string{f.Env: s})); err != nil {
				t.Fatalf("applyEnv(%s=%q): %v", f.Env, s, err)
			}
			var got any
			for _, g := range c.fields() {
				if g.Key == f.Key {
					got = g.Value.Interface()
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s=%q: %s = %#v, want %#v", f.Env, s, f.Key, got, want)
			}
			if !strings.Contains(c.name(f.Key), f.Env) {
				t.Errorf("origin of %s not recorded: %q", f.Key, c.name(f.Key))
			}
		})
	}
	for env, key := range map[string]string{
		"DIALSYNC_SOURCE_PASSWORD":        "source.password",
		"DIALSYNC_SOURCE_PASSWORD_FILE":   "source.password_file",
		"DIALSYNC_NATS_DUPLICATE_WINDOW":  "nats.duplicate_window",
		"DIALSYNC_APPLY_MAX_BATCH_BYTES":  "apply.max_batch_bytes",
		"DIALSYNC_TABLES_CLAIMS_ON_ERROR": "tables.claims.on_error",
		"DIALSYNC_TABLES_ON_ERROR":        "tables.on_error",
		"DIALSYNC_REDIS_TLS_CA_FILE":      "redis.tls_ca_file",
	} {
		if names[env] != key {
			t.Errorf("%s maps to %q, want %s", env, names[env], key)
		}
	}
}

func TestEnvEndToEnd(t *testing.T) {
	c := mustParse(t, minimal, map[string]string{
		"DIALSYNC_SOURCE_SERVER_ID":       "7",
		"DIALSYNC_APPLY_MAX_BATCH_BYTES":  "1048576",
		"DIALSYNC_CACHE_QUEUE_KEYS":       "",
		"DIALSYNC_HTTP_LISTEN":            "",
		"DIALSYNC_NATS_MANAGE_STREAM":     "false",
		"DIALSYNC_TABLES_CLAIMS_ON_ERROR": "dead_letter",
	})
	if c.Source.ServerID != 7 || c.Apply.MaxBatchBytes != MiB || len(c.Cache.QueueKeys) != 0 ||
		c.HTTP.Listen != "" || c.NATS.ManageStream || c.Tables.OnErrorFor("claims") != OnErrorDeadLetter {
		t.Errorf("env not applied: %+v %+v %+v %+v", c.Source, c.Apply, c.Cache, c.HTTP)
	}

	// A bad typed value names the variable and the key.
	msg := parseErr(t, minimal, map[string]string{"DIALSYNC_SOURCE_SERVER_ID": "abc"})
	if !strings.Contains(msg, "source.server_id") || !strings.Contains(msg, "DIALSYNC_SOURCE_SERVER_ID") {
		t.Errorf("error %q does not name the key and variable", msg)
	}
	msg = parseErr(t, minimal, map[string]string{"DIALSYNC_NATS_ACK_TIMEOUT": "5"})
	if !strings.Contains(msg, "nats.ack_timeout (from DIALSYNC_NATS_ACK_TIMEOUT)") || !strings.Contains(msg, `"10s"`) {
		t.Errorf("error %q does not name the key, variable and the expected form", msg)
	}
	// A validation error on an env value names the variable too.
	msg = parseErr(t, minimal, map[string]string{"DIALSYNC_SOURCE_FLAVOR": "oracle"})
	if !strings.Contains(msg, "source.flavor (from DIALSYNC_SOURCE_FLAVOR)") {
		t.Errorf("error %q does not name the variable", msg)
	}
}

// secretKeys are the keys the brief marks secret; the struct tags must agree.
var secretKeys = []string{"source.password", "lookup.password", "postgres.dsn", "redis.password", "nats.token", "nats.password"}

func TestSecretTags(t *testing.T) {
	var tagged []string
	for _, f := range Default().fields() {
		if f.Secret {
			tagged = append(tagged, f.Key)
		}
	}
	if !slices.Equal(tagged, secretKeys) {
		t.Errorf("secret keys = %v, want %v", tagged, secretKeys)
	}
}

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withKey adds "key = value" under the TOML table of a dotted key, in the
// existing table when doc has one (a table may not be defined twice).
func withKey(doc, key, value string) string {
	section, name, _ := strings.Cut(key, ".")
	header := "[" + section + "]\n"
	line := name + " = " + value + "\n"
	if strings.Contains(doc, header) {
		return strings.Replace(doc, header, header+line, 1)
	}
	return doc + "\n" + header + line
}

func secretValue(c *Config, key string) string {
	for _, f := range c.fields() {
		if f.Key == key {
			return f.Value.String()
		}
	}
	return ""
}

func TestSecretFiles(t *testing.T) {
	base := strings.Replace(minimal, "dsn = ", "# dsn = ", 1) // postgres.dsn comes from a file below
	base = strings.Replace(base, "[postgres]", "", 1)
	for _, key := range secretKeys {
		t.Run(key, func(t *testing.T) {
			secret := "s3cr3t-" + strings.ReplaceAll(key, ".", "-")
			env := map[string]string{}
			if key != "postgres.dsn" {
				env["DIALSYNC_POSTGRES_DSN"] = "postgres://x@h/db"
			}
			if key == "nats.password" {
				env["DIALSYNC_NATS_USER"] = "u"
			}
			// From the TOML key.
			path := writeSecret(t, secret+"\n")
			c := mustParse(t, withKey(base, key+"_file", `"`+path+`"`), env)
			if got := secretValue(c, key); got != secret {
				t.Errorf("%s_file: value %q, want %q (trailing newline trimmed)", key, got, secret)
			}
			// From the environment.
			envVar := "DIALSYNC_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")) + "_FILE"
			env2 := map[string]string{envVar: path}
			for k, v := range env {
				env2[k] = v
			}
			c = mustParse(t, base, env2)
			if got := secretValue(c, key); got != secret {
				t.Errorf("%s: value %q, want %q", envVar, got, secret)
			}
			// Both in the file: an error naming both, without the value.
			msg := parseErr(t, withKey(withKey(base, key, `"`+secret+`"`), key+"_file", `"`+path+`"`), env)
			if !strings.Contains(msg, key+" and "+key+"_file") || strings.Contains(msg, secret) {
				t.Errorf("both-set error %q: want both keys named and no secret", msg)
			}
		})
	}
}

func TestSecretFileRules(t *testing.T) {
	path := writeSecret(t, "from-file\n")
	// Both in the environment: error naming both variables.
	msg := parseErr(t, minimal, map[string]string{
		"DIALSYNC_SOURCE_PASSWORD": "env-pw-1234", "DIALSYNC_SOURCE_PASSWORD_FILE": path,
	})
	if !strings.Contains(msg, "DIALSYNC_SOURCE_PASSWORD)") || !strings.Contains(msg, "DIALSYNC_SOURCE_PASSWORD_FILE") || strings.Contains(msg, "env-pw-1234") {
		t.Errorf("error %q", msg)
	}
	// The environment replaces the other form from the file.
	c := mustParse(t, minimal+"\n[lookup]\npassword = \"toml-pw\"\n", map[string]string{"DIALSYNC_LOOKUP_PASSWORD_FILE": path})
	if c.Lookup.Password != "from-file" {
		t.Errorf("env _file did not replace the TOML value: %q", c.Lookup.Password)
	}
	c = mustParse(t, withKey(minimal, "redis.password_file", `"`+path+`"`), map[string]string{"DIALSYNC_REDIS_PASSWORD": "env-pw"})
	if c.Redis.Password != "env-pw" || c.Redis.PasswordFile != "" {
		t.Errorf("env value did not replace the TOML _file: %q %q", c.Redis.Password, c.Redis.PasswordFile)
	}
	// Only one trailing newline is trimmed; CRLF too.
	c = mustParse(t, minimal, map[string]string{"DIALSYNC_SOURCE_PASSWORD_FILE": writeSecret(t, " pw with spaces \r\n")})
	if c.Source.Password != " pw with spaces " {
		t.Errorf("password = %q", c.Source.Password)
	}
	// Missing and empty files.
	msg = parseErr(t, minimal, map[string]string{"DIALSYNC_SOURCE_PASSWORD_FILE": "/nonexistent/pw"})
	if !strings.Contains(msg, "source.password_file (from DIALSYNC_SOURCE_PASSWORD_FILE)") || !strings.Contains(msg, "/nonexistent/pw") {
		t.Errorf("missing file error %q", msg)
	}
	msg = parseErr(t, minimal, map[string]string{"DIALSYNC_SOURCE_PASSWORD_FILE": writeSecret(t, "\n")})
	if !strings.Contains(msg, "empty") {
		t.Errorf("empty file error %q", msg)
	}
}

// TestSecretsNeverInErrors sets every secret to a marker and provokes errors
// in every stage; no error may contain a marker.
func TestSecretsNeverInErrors(t *testing.T) {
	secrets := map[string]string{}
	env := map[string]string{}
	for _, key := range secretKeys {
		v := "MARK-" + strings.ReplaceAll(key, ".", "-") + "-9f8e"
		secrets[key] = v
		env["DIALSYNC_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = v
	}
	env["DIALSYNC_REDIS_ADDR"] = "redis://:" + "MARK-url-pw-9f8e" + "@bad host:6379"
	env["DIALSYNC_NATS_URL"] = "nats://MARK-url-token-9f8e@:bad"
	provocations := []struct {
		doc string
		env map[string]string
	}{
		{minimal, nil}, // redis/nats URL and nats auth errors
		{minimal + "\n[source]\nflavor = 1\n", nil},                         // duplicate table
		{"[source]\npassword = 3\n", nil},                                   // type error on a secret key
		{minimal, map[string]string{"DIALSYNC_SOURCE_PASSWORD_FILE": "/x"}}, // both set
		{minimal, map[string]string{"DIALSYNC_SOURCE_SERVER_ID": "x"}},
		{"[source]\npassword = \"MARK-toml-9f8e\"\nflavor = \"x\"\nuser = \"MARK-toml-9f8e\n", nil},
		{"[source]\npassword = \"MARK-toml-9f8e\"\npasword = \"MARK-toml2-9f8e\"\n", nil},
	}
	for i, p := range provocations {
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		for k, v := range p.env {
			e[k] = v
		}
		_, err := Parse(strings.NewReader(p.doc), envMap(e))
		if err == nil {
			t.Fatalf("provocation %d: no error", i)
		}
		t.Logf("provocation %d: %v", i, err)
		if strings.Contains(err.Error(), "MARK") || strings.Contains(err.Error(), "9f8e") {
			t.Errorf("provocation %d: error leaks a secret: %v", i, err)
		}
	}
}

func TestRedacted(t *testing.T) {
	path := writeSecret(t, "file-secret-4711\n")
	c := mustParse(t, minimal, map[string]string{
		"DIALSYNC_SOURCE_PASSWORD":    "src-secret-4711",
		"DIALSYNC_LOOKUP_PASSWORD":    "lookup-secret-4711",
		"DIALSYNC_POSTGRES_DSN":       "postgres://u:pg-secret-4711@h/db",
		"DIALSYNC_REDIS_PASSWORD":     "redis-secret-4711",
		"DIALSYNC_REDIS_ADDR":         "rediss://user:redis-url-secret-4711@cache:6380/0",
		"DIALSYNC_NATS_PASSWORD_FILE": path,
		"DIALSYNC_NATS_USER":          "natsuser",
		"DIALSYNC_NATS_URL":           "nats://a:4222,nats://tok-secret-4711@b:4222",
	})
	c.NATS.Token = "tok-direct-4711" // Redacted must cover a value set in code too
	out := c.Redacted()
	if strings.Contains(out, "secret-4711") || strings.Contains(out, "direct-4711") {
		t.Fatalf("Redacted leaks a secret:\n%s", out)
	}
	for _, want := range []string{`password = 'REDACTED'`, `dsn = 'REDACTED'`, "user:REDACTED@cache:6380", "REDACTED@b:4222",
		"password_file = '" + path + "'", "server_id = 4242"} {
		if !strings.Contains(out, want) {
			t.Errorf("Redacted lacks %q:\n%s", want, out)
		}
	}
	// The original is untouched, and the output parses back.
	if c.Source.Password != "src-secret-4711" || c.NATS.Password != "file-secret-4711" {
		t.Errorf("Redacted modified the config")
	}
	c.NATS.Token = ""
	back, err := Parse(strings.NewReader(c.Redacted()), nil)
	if err != nil {
		t.Fatalf("Redacted output does not parse: %v", err)
	}
	if back.Source.ServerID != 4242 || back.NATS.Password != "file-secret-4711" {
		t.Errorf("round trip lost values")
	}
}

func TestByteSizeAndDuration(t *testing.T) {
	for in, want := range map[string]ByteSize{
		"0": 0, "512": 512, "512B": 512, "512KiB": 512 * KiB, "8MiB": 8 * MiB, "8mib": 8 * MiB,
		"1GB": 1_000_000_000, "1 GiB": GiB, "1.5KiB": 1536, "2TB": 2_000_000_000_000,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "8 parsecs", "1e3", "99999999999TiB", "1.2.3MB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
		}
	}
	for b, want := range map[ByteSize]string{0: "0B", 512: "512B", 8 * MiB: "8MiB", 1536: "1536B", 3 * GiB: "3GiB"} {
		if b.String() != want {
			t.Errorf("%d.String() = %q, want %q", b, b.String(), want)
		}
	}
	for d, want := range map[time.Duration]string{72 * time.Hour: "72h", 2 * time.Minute: "2m", 90 * time.Minute: "1h30m", 2 * time.Millisecond: "2ms", 0: "0s"} {
		if got := Dur(d).String(); got != want {
			t.Errorf("Dur(%v) = %q, want %q", d, got, want)
		}
		var back Duration
		if err := back.UnmarshalText([]byte(Dur(d).String())); err != nil || back.Duration() != d {
			t.Errorf("round trip of %v: %v %v", d, back, err)
		}
	}
}

func TestClientTLS(t *testing.T) {
	if tc, err := (TLSConfig{Mode: TLSDisabled}).ClientTLS("source", "h"); tc != nil || err != nil {
		t.Errorf("disabled: %v %v", tc, err)
	}
	tc, err := (TLSConfig{Mode: TLSSkipVerify}).ClientTLS("source", "db.example")
	if err != nil || !tc.InsecureSkipVerify || tc.ServerName != "db.example" {
		t.Errorf("skip-verify: %+v %v", tc, err)
	}
	tc, err = (TLSConfig{Mode: TLSRequired, ServerName: "override"}).ClientTLS("source", "db.example")
	if err != nil || tc.InsecureSkipVerify || tc.ServerName != "override" {
		t.Errorf("required: %+v %v", tc, err)
	}
	if _, err := (TLSConfig{Mode: TLSRequired, CAFile: writeSecret(t, "not pem")}).ClientTLS("source", "h"); err == nil {
		t.Error("a CA file without PEM was accepted")
	}
	ca := selfSignedPEM(t)
	tc, err = (TLSConfig{Mode: TLSRequired, CAFile: writeSecret(t, string(ca))}).ClientTLS("source", "h")
	if err != nil || tc.RootCAs == nil {
		t.Errorf("CA file: %v", err)
	}
}

func TestRedactedIsDeterministic(t *testing.T) {
	c := mustParse(t, minimal, nil)
	if !bytes.Equal([]byte(c.Redacted()), []byte(c.Redacted())) {
		t.Error("Redacted output differs between calls")
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"DIALSYNC_SOURCE_PASSWORD=x", "DIALSYNC_SOURCE_PASWORD=secret", "HOME=/root", "DIALSYNC_TABLES_CLAIMS_ON_ERROR=halt"})
	if !slices.Equal(got, []string{"DIALSYNC_SOURCE_PASWORD"}) {
		t.Errorf("UnknownEnv = %v", got)
	}
}

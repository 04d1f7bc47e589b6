package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"dialsync/handlers"
)

var (
	pipelineNameRe = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	identRe        = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	columnRe       = regexp.MustCompile(`^[A-Za-z0-9_$]{1,64}$`)
)

// problems collects validation failures; each names its key.
type problems struct {
	c    *Config
	list []string
}

func (p *problems) add(key, format string, args ...any) {
	p.list = append(p.list, p.c.name(key)+" "+fmt.Sprintf(format, args...))
}

// Validate checks every key and returns one line listing every problem, or
// nil. Secret values are never quoted.
func (c *Config) Validate() error {
	p := &problems{c: c}

	if !pipelineNameRe.MatchString(c.Pipeline.Name) {
		p.add("pipeline.name", "%q is invalid: use 1 to 64 characters of a-z, 0-9, _ or -", c.Pipeline.Name)
	}

	// [source]
	s := c.Source
	p.hostPort("source.addr", s.Addr, true, "the binlog source, e.g. \"db-replica:3306\"")
	if s.User == "" {
		p.add("source.user", "is required: a MySQL user with REPLICATION SLAVE, REPLICATION CLIENT and SELECT on the tracked tables")
	}
	p.oneOf("source.flavor", s.Flavor, "mysql", "mariadb")
	if s.ServerID == 0 {
		const why = "pick a number 1..4294967295 unique among all replicas of the source (dialsync connects as a replica, and the source disconnects a replica whose server_id another one also uses)"
		if c.isSet("source.server_id") {
			p.add("source.server_id", "is 0, which is not a valid replica server_id: "+why)
		} else {
			p.add("source.server_id", "is required: "+why+"; it is not defaulted so two instances never share one by accident")
		}
	}
	if s.Database == "" {
		p.add("source.database", "is required: the schema holding the tracked tables")
	}
	if s.HeartbeatPeriod.Duration() <= 0 {
		p.add("source.heartbeat_period", "must be greater than 0, e.g. \"10s\"")
	}
	if s.ReadTimeout.Duration() <= s.HeartbeatPeriod.Duration() {
		p.add("source.read_timeout", "(%s) must be greater than source.heartbeat_period (%s), or an idle source looks dead: raise it to at least twice the heartbeat", s.ReadTimeout, s.HeartbeatPeriod)
	}
	p.tls("source", s.TLSConfig)

	// [lookup]: empty fields inherit [source].
	p.hostPort("lookup.addr", c.Lookup.Addr, false, "")

	// [postgres]
	if c.Postgres.DSN == "" {
		p.add("postgres.dsn", "is required: e.g. \"postgres://user@host:5432/db?sslmode=verify-full\" (or set postgres.dsn_file / DIALSYNC_POSTGRES_DSN)")
	}
	if !identRe.MatchString(c.Postgres.Schema) {
		p.add("postgres.schema", "%q is invalid: use a plain identifier (letters, digits, _; not starting with a digit)", c.Postgres.Schema)
	}
	if c.Postgres.MaxConns < 1 {
		p.add("postgres.max_conns", "must be at least 1 (default 4)")
	}

	// [redis]
	r := c.Redis
	if len(r.Addrs()) == 0 {
		p.add("redis.addr", "is required: \"host:port\", a comma-separated list, or a redis:// or rediss:// URL")
	}
	for _, a := range r.Addrs() {
		if strings.Contains(a, "://") {
			// Never quote a URL: it may carry a password.
			u, err := url.Parse(a)
			if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
				p.add("redis.addr", "has an invalid URL: use redis://host:port/db or rediss://host:port/db")
			} else if len(r.Addrs()) > 1 {
				p.add("redis.addr", "mixes a URL with other addresses: use one URL, or host:port entries only")
			}
			continue
		}
		p.hostPort("redis.addr", a, true, "")
	}
	if r.DB < 0 {
		p.add("redis.db", "must be 0 or more")
	}
	p.tls("redis", r.TLSConfig)

	// [nats]
	n := c.NATS
	urls := splitList(n.URL)
	if len(urls) == 0 {
		p.add("nats.url", "is required, e.g. \"nats://127.0.0.1:4222\"")
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) {
			p.add("nats.url", "has an invalid entry: use comma-separated nats://host:port (or tls://, ws://, wss://) URLs")
			break
		}
	}
	if n.Stream == "" || strings.ContainsAny(n.Stream, " \t\r\n.*>/\\") {
		p.add("nats.stream", "%q is invalid: a JetStream stream name may not be empty or contain spaces, '.', '*', '>', '/' or '\\'", n.Stream)
	}
	if !validSubjectPrefix(n.SubjectPrefix) {
		p.add("nats.subject_prefix", "%q is invalid: use dot-separated tokens without spaces or wildcards, e.g. \"dialsync\"", n.SubjectPrefix)
	}
	if n.DuplicateWindow.Duration() <= 0 {
		p.add("nats.duplicate_window", "must be greater than 0: it is what drops notices replayed after a crash")
	}
	if n.MaxAge.Duration() < 0 {
		p.add("nats.max_age", "must be 0 (unlimited) or more")
	} else if n.MaxAge.Duration() > 0 && n.DuplicateWindow.Duration() > n.MaxAge.Duration() {
		p.add("nats.duplicate_window", "(%s) must not exceed nats.max_age (%s); JetStream rejects such a stream", n.DuplicateWindow, n.MaxAge)
	}
	if n.MaxBytes < 0 {
		p.add("nats.max_bytes", "must be 0 (unlimited) or more")
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		p.add("nats.replicas", "must be 1..5 (JetStream's limit)")
	}
	p.oneOf("nats.storage", n.Storage, "file", "memory")
	var auth []string
	for _, a := range []struct{ key, v string }{
		{"nats.creds_file", n.CredsFile}, {"nats.nkey_file", n.NKeyFile}, {"nats.token", n.Token}, {"nats.user", n.User},
	} {
		if a.v != "" {
			auth = append(auth, a.key)
		}
	}
	if len(auth) > 1 {
		p.add(auth[0], "conflicts with %s: choose one NATS authentication method", strings.Join(auth[1:], ", "))
	}
	if n.User != "" && n.Password == "" {
		p.add("nats.password", "is required when nats.user is set (or use nats.password_file / DIALSYNC_NATS_PASSWORD)")
	}
	if n.User == "" && n.Password != "" {
		p.add("nats.user", "is required when nats.password is set")
	}
	if n.AckTimeout.Duration() <= 0 {
		p.add("nats.ack_timeout", "must be greater than 0, e.g. \"5s\"")
	}
	p.tls("nats", n.TLSConfig)

	// [http]
	p.hostPort("http.listen", c.HTTP.Listen, false, "")

	// [apply]
	a := c.Apply
	if a.MaxBatchTxns < 1 {
		p.add("apply.max_batch_txns", "must be at least 1 (default 2000)")
	}
	if a.MaxBatchBytes < KiB {
		p.add("apply.max_batch_bytes", "must be at least 1KiB (default \"8MiB\")")
	}
	if a.BatchWindow.Duration() < 0 {
		p.add("apply.batch_window", "must be 0 or more")
	}
	if a.MaxTxnBytes < KiB {
		p.add("apply.max_txn_bytes", "must be at least 1KiB (default \"8MiB\")")
	}
	if a.RetryInitial.Duration() <= 0 {
		p.add("apply.retry_initial", "must be greater than 0, e.g. \"100ms\"")
	}
	if a.RetryMax.Duration() < a.RetryInitial.Duration() {
		p.add("apply.retry_max", "(%s) must be at least apply.retry_initial (%s)", a.RetryMax, a.RetryInitial)
	}

	// [rules]
	if q := strings.TrimSpace(c.Rules.QueueSQL); q != "" && !strings.Contains(q, UsersToken) {
		p.add("rules.queue_sql", "must contain %s, which dialsync replaces with a predicate on the user id of the users being recomputed (leave it empty for the built-in rule)", UsersToken)
	}

	// [cache]
	for i, k := range c.Cache.UserKeys {
		if !strings.Contains(k, handlers.IDPlaceholder) {
			p.add("cache.user_keys", "entry %d (%q) must contain %s, replaced by the user id", i+1, k, handlers.IDPlaceholder)
		}
	}
	for i, k := range c.Cache.QueueKeys {
		if strings.TrimSpace(k) == "" {
			p.add("cache.queue_keys", "entry %d is empty", i+1)
		}
	}

	// [notices]
	for _, tc := range c.Notices.IncludeValues {
		table, col, ok := strings.Cut(tc, ".")
		switch {
		case !ok || !columnRe.MatchString(col):
			p.add("notices.include_values", "entry %q is invalid: write \"table.column\", e.g. \"claims.status\"", tc)
		case !handlers.IsTracked(table):
			p.add("notices.include_values", "entry %q names table %q, which is not tracked: use one of %s", tc, table, strings.Join(handlers.Tables(), ", "))
		}
	}

	// [reconcile], [recovery], [tables]
	if c.Reconcile.Interval.Duration() < 0 {
		p.add("reconcile.interval", "must be 0 or \"off\" (disabled) or a positive duration")
	}
	if c.Reconcile.ChunkSize < 1 || c.Reconcile.ChunkSize > 1_000_000 {
		p.add("reconcile.chunk_size", "must be 1..1000000 (default 5000)")
	}
	p.oneOf("reconcile.on_start", c.Reconcile.OnStart, "if-no-checkpoint", "always", "never")
	p.oneOf("recovery.on_purged", c.Recovery.OnPurged, "fail", "reconcile")
	p.oneOf("tables.on_error", c.Tables.OnError, OnErrorHalt, OnErrorDeadLetter)
	for _, table := range handlers.Tables() {
		if v := c.Tables.policy(table).OnError; v != "" {
			p.oneOf("tables."+table+".on_error", v, OnErrorHalt, OnErrorDeadLetter)
		}
	}

	// [housekeeping], [log], [ha], [health]
	if c.Housekeeping.Retain.Duration() <= 0 {
		p.add("housekeeping.retain", "must be greater than 0, e.g. \"720h\"")
	}
	if c.Housekeeping.Interval.Duration() < 0 {
		p.add("housekeeping.interval", "must be 0 or \"off\" (disabled) or a positive duration")
	}
	p.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	p.oneOf("log.format", c.Log.Format, "auto", "json", "text")
	if c.HA.LeaseTTL.Duration() <= c.HA.LeaseCheck.Duration() {
		p.add("ha.lease_ttl", "must be greater than ha.lease_check, e.g. \"3s\"")
	}
	if c.HA.LeaseCheck.Duration() <= 0 {
		p.add("ha.lease_check", "must be greater than 0, e.g. \"1s\"")
	}
	if c.Health.MaxLag.Duration() <= 0 {
		p.add("health.max_lag", "must be greater than 0, e.g. \"30s\"")
	}

	if len(p.list) == 0 {
		return nil
	}
	return errors.New("config: " + strings.Join(p.list, "; "))
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		p.add(key, "%q is invalid: use %s", v, quoteJoin(allowed))
	}
}

// hostPort checks a host:port value; empty is an error only when required.
func (p *problems) hostPort(key, v string, required bool, example string) {
	if v == "" {
		if required {
			p.add(key, "is required: host:port, %s", example)
		}
		return
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, "%q is invalid: use host:port (IPv6 as [::1]:port)", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || (required && n == 0) {
		p.add(key, "%q has an invalid port: use 1..65535", v)
	}
}

func (p *problems) tls(section string, t TLSConfig) {
	p.oneOf(section+".tls_mode", t.Mode, TLSDisabled, TLSRequired, TLSSkipVerify)
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.add(section+".tls_cert_file", "and %s.tls_key_file must be set together (a client certificate needs its key)", section)
	}
	if t.Mode == TLSDisabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "") {
		p.add(section+".tls_mode", "is \"disabled\" but other %s.tls_* keys are set: set tls_mode = \"required\" (or remove them)", section)
	}
}

func validSubjectPrefix(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n*>") {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
	}
	return true
}

func quoteJoin(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

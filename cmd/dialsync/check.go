package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/checkpoint"
	"dialsync/internal/cache"
	"dialsync/internal/clients"
	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/preflight"
	"dialsync/internal/publish"
)

func init() {
	register(command{20, "check", "preflight: check the source, the lookup server and the sinks, with a fix for each problem", runCheck})
}

// checkTimeout bounds one check (a connection attempt or a few statements).
const checkTimeout = 5 * time.Second

// checkExit carries check's exit code (1 warnings, 2 failures) after the
// report was printed.
type checkExit struct {
	code     int
	failures int
	warnings int
}

func (e checkExit) Error() string {
	return fmt.Sprintf("check: %d failure(s), %d warning(s)", e.failures, e.warnings)
}
func (e checkExit) ExitCode() int { return e.code }

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	cfgPath := fs.String("config", "config.toml", "configuration file")
	asJSON := fs.Bool("json", false, "print a JSON array of {name, status, detail, fix}")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dialsync check [--config PATH] [--json]\n\nConnects to every server and prints one line per check (OK, WARN or FAIL) with the fix for each problem.\nChanges nothing. Exit status: 0 all OK, 1 warnings, 2 failures or a bad command line or configuration.")
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	// The report is the output; the log carries warnings (the rest at
	// debug level).
	log := newLogger(cfg, stderr, oneShotLog)
	report := runChecks(ctx, cfg, log)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return fmt.Errorf("check: write json: %w", err)
		}
	} else {
		report.Print(stdout)
	}
	if report.ExitCode() == 0 {
		return nil
	}
	e := checkExit{code: report.ExitCode()}
	for _, r := range report {
		switch r.Status {
		case preflight.Fail:
			e.failures++
		case preflight.Warn:
			e.warnings++
		}
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "\n%d failure(s), %d warning(s)\n", e.failures, e.warnings)
	}
	return e
}

// runChecks connects to everything the configuration names and runs every
// check. A server that cannot be reached gives a FAIL line and the other
// checks still run.
func runChecks(ctx context.Context, cfg *config.Config, log *slog.Logger) preflight.Report {
	var report preflight.Report
	add := func(r ...preflight.Result) { report = append(report, r...) }
	step := func(f func(ctx context.Context)) {
		ctx, cancel := context.WithTimeout(ctx, 3*checkTimeout)
		defer cancel()
		f(ctx)
	}

	// PostgreSQL first: the source checks need the stored checkpoint.
	in := preflight.SourceInput{
		Flavor: cfg.Source.Flavor, ServerID: cfg.Source.ServerID, Database: cfg.Source.Database,
		Tables: clients.Specs(cfg),
	}
	pcfg, err := clients.PostgresConfig(cfg)
	if err != nil {
		add(preflight.Result{Name: "postgres", Status: preflight.Fail,
			Detail: "postgres.dsn is not a valid PostgreSQL connection string", Fix: "fix postgres.dsn (a postgres:// URL or key=value pairs)"})
		in.CheckpointErr = errors.New("postgres.dsn is invalid")
	} else {
		pcfg.ConnConfig.ConnectTimeout = checkTimeout
		pcfg.MaxConns = 2
		where := fmt.Sprintf("%s:%d/%s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database)
		step(func(ctx context.Context) {
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				add(preflight.Result{Name: "postgres", Status: preflight.Fail, Detail: fmt.Sprintf("%s: %v", where, clients.Redact(err, cfg)),
					Fix: "check postgres.dsn (DIALSYNC_POSTGRES_DSN)"})
				in.CheckpointErr = errors.New("PostgreSQL is not usable (see the postgres check)")
				return
			}
			defer pool.Close()
			r := preflight.CheckPostgres(ctx, pool, cfg.Postgres.Schema, where)
			r.Detail = clients.Redact(errors.New(r.Detail), cfg).Error()
			add(r)
			in.Checkpoint, in.CheckpointErr = loadCheckpointForCheck(ctx, pool, cfg, r)
		})
		add(preflight.CheckTLS("postgres", pcfg.ConnConfig.Host, pcfg.ConnConfig.TLSConfig != nil))
	}

	srcTLS, err := clients.SourceTLS(cfg, cfg.Source.Addr, log)
	if err != nil {
		add(preflight.Result{Name: "tls.source", Status: preflight.Fail, Detail: err.Error(), Fix: "fix the source.tls_* keys"})
	}
	src := &preflight.Source{Addr: cfg.Source.Addr, User: cfg.Source.User, Password: cfg.Source.Password, TLS: srcTLS, Timeout: checkTimeout}
	defer src.Close()
	srcReport := preflight.CheckSource(ctx, src, in)
	add(srcReport...)
	if err == nil {
		add(preflight.CheckTLS("source", clients.HostOf(cfg.Source.Addr), srcTLS != nil))
	}
	if srcReport[0].Status == preflight.OK {
		step(func(ctx context.Context) { add(checkLookupServer(ctx, cfg, src)) })
	}
	step(func(ctx context.Context) { add(checkLookupSession(ctx, cfg, srcTLS, log)) })

	step(func(ctx context.Context) {
		cc, err := clients.CacheConfig(cfg, log)
		where := redisWhere(cfg.Redis.Addr)
		if err == nil {
			var c *cache.Cache
			c, err = cache.Open(ctx, cc, log)
			if err == nil {
				c.Close()
			}
		}
		if err != nil {
			err = clients.Redact(err, cfg)
		}
		add(preflight.CheckRedis(where, err))
		add(preflight.CheckTLS("redis", clients.HostOf(strings.TrimPrefix(strings.TrimPrefix(where, "rediss://"), "redis://")),
			cc.TLS != nil || strings.HasPrefix(cfg.Redis.Addr, "rediss://")))
	})

	step(func(ctx context.Context) {
		where := natsWhere(cfg.NATS.URL)
		opts, pc, err := clients.NATSOptions(cfg, log)
		var nc *nats.Conn
		if err == nil {
			// A short-lived connection: no reconnects.
			nc, err = publish.Connect(ctx, cfg.NATS.URL, checkTimeout, append(opts, nats.Name("dialsync-check"), nats.NoReconnect())...)
		}
		if err != nil {
			add(preflight.NATSUnreachable(where, clients.Redact(err, cfg)))
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			add(preflight.NATSUnreachable(where, err))
			return
		}
		add(preflight.CheckStream(ctx, js, pc))
		u, _ := url.Parse(nc.ConnectedUrlRedacted())
		host := ""
		if u != nil {
			host = u.Hostname()
		}
		add(preflight.CheckTLS("nats", host, nc.TLSRequired() || pc.TLS != nil || strings.HasPrefix(cfg.NATS.URL, "tls://")))
	})
	add(preflight.CheckHTTPListen(cfg.HTTP.Listen, cfg.HTTP.Pprof))
	return report
}

// loadCheckpointForCheck reads the stored checkpoint when the schema is
// there (nil, nil when none is stored or the schema does not exist yet).
func loadCheckpointForCheck(ctx context.Context, pool *pgxpool.Pool, cfg *config.Config, pg preflight.Result) (*checkpoint.Checkpoint, error) {
	if pg.Status == preflight.Fail {
		return nil, errors.New("PostgreSQL is not usable (see the postgres check)")
	}
	v, err := dbschema.Version(ctx, pool, cfg.Postgres.Schema)
	if err != nil || v == 0 {
		return nil, err
	}
	cp, found, err := checkpoint.NewStore(pool, cfg.Postgres.Schema, cfg.Pipeline.Name).Load(ctx)
	if err != nil || !found {
		return nil, err
	}
	return &cp, nil
}

// checkLookupServer proves the lookup connection reaches the binlog server.
func checkLookupServer(ctx context.Context, cfg *config.Config, src *preflight.Source) preflight.Result {
	lk := cfg.EffectiveLookup()
	srcID, err := src.Identity(ctx)
	if err != nil {
		return preflight.Result{Name: "lookup_server", Status: preflight.Fail, Detail: err.Error(), Fix: "check that source.user may run SHOW GLOBAL VARIABLES"}
	}
	l := &preflight.Source{Addr: lk.Addr, User: lk.User, Password: lk.Password, TLS: src.TLS, Timeout: checkTimeout}
	defer l.Close()
	lkID, err := l.Identity(ctx)
	if err != nil {
		return preflight.Result{Name: "lookup_server", Status: preflight.Fail,
			Detail: fmt.Sprintf("cannot query the lookup server %s: %v", lk.Addr, clients.Redact(err, cfg)),
			Fix:    "check lookup.addr, lookup.user and lookup.password (empty keys inherit [source])"}
	}
	return preflight.CheckLookupSame(srcID, lkID)
}

// checkLookupSession opens the lookup session exactly as `dialsync run`
// does (lookup.Open: the session settings, then rules.queue_sql on an
// always-empty user set, with its column types checked), so a rule or a
// session setting run would refuse fails here with run's own message.
func checkLookupSession(ctx context.Context, cfg *config.Config, tc *tls.Config, log *slog.Logger) preflight.Result {
	const name = "lookup_session"
	lk := cfg.EffectiveLookup()
	l, err := clients.Lookup(ctx, cfg, 1, log)
	if err != nil {
		return preflight.Result{Name: name, Status: preflight.Fail, Detail: clients.Redact(err, cfg).Error(),
			Fix: "the same error stops `dialsync run`: fix what it names (rules.queue_sql, or [lookup] / [source] addr, user, password)"}
	}
	defer l.Close()
	rule := "the default queue rule"
	if strings.TrimSpace(cfg.Rules.QueueSQL) != "" {
		rule = "rules.queue_sql"
	}
	return preflight.Result{Name: name, Status: preflight.OK,
		Detail: fmt.Sprintf("session on %s set up; %s runs and returns the right columns and types", lk.Addr, rule)}
}

// natsWhere names the NATS servers without credentials.
func natsWhere(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.Host != "" {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// redisWhere names the Redis server without credentials.
func redisWhere(addr string) string {
	if strings.Contains(addr, "://") {
		if u, err := url.Parse(addr); err == nil {
			return u.Scheme + "://" + u.Host
		}
		return "(redis.addr URL)"
	}
	return addr
}

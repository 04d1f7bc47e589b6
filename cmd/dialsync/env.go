package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/handlers"
	"dialsync/internal/apply"
	"dialsync/internal/cache"
	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/errclass"
	"dialsync/internal/lookup"
	"dialsync/internal/pgstore"
	"dialsync/internal/publish"
	"dialsync/internal/reconcile"
)

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

// newLogger makes the process logger: text on a terminal, JSON otherwise
// (or as [log] format says). Row values and secrets are never logged.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	format := cfg.Log.Format
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	l := slog.New(h).With("pipeline", cfg.Pipeline.Name)
	cache.SetLibraryLogger(l) // else go-redis prints its own plain-text lines to stderr
	return l
}

// tlsFor builds a client TLS config from a section's tls_* keys; nil when
// TLS is disabled. Verification is on unless the operator explicitly chose
// skip-verify, which is logged loudly.
func tlsFor(section string, t config.TLSConfig, host string, log *slog.Logger) (*tls.Config, error) {
	switch t.Mode {
	case "", config.TLSDisabled:
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if t.Mode == config.TLSSkipVerify {
		log.Warn("TLS certificate verification is OFF: the connection is encrypted but not authenticated", "section", section)
		c.InsecureSkipVerify = true
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, usagef("%s.tls_ca_file: %v", section, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("%s.tls_ca_file %s: no PEM certificates found", section, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, usagef("%s.tls_cert_file/tls_key_file: %v", section, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// env holds the connections a command needs. Close closes what was opened.
type env struct {
	cfg      *config.Config
	log      *slog.Logger
	pgDSN    string
	pool     *pgxpool.Pool
	ckpt     *checkpoint.Store
	queue    *pgstore.Queue
	lookup   *lookup.Lookup
	cache    *cache.Cache
	pub      *publish.Publisher
	keys     *handlers.Keys
	canalCfg canal.Config
	// orderedCommits: the source's binlog_order_commits is ON (read by
	// connectLookup).
	orderedCommits bool
	// reconnected counts a re-established connection to server (set by
	// run for its metrics; nil elsewhere).
	reconnected func(server string)
}

// openEnv connects to PostgreSQL (and migrates) and prepares the source
// configuration; sinks are connected by connectSinks once leadership is held.
func openEnv(ctx context.Context, cfg *config.Config, log *slog.Logger) (*env, error) {
	e := &env{cfg: cfg, log: log, pgDSN: cfg.Postgres.DSN}
	keys, err := handlers.NewKeys(cfg.Redis.Prefix, cfg.Cache.UserKeys, cfg.Cache.QueueKeys)
	if err != nil {
		return nil, usagef("cache: %v", err)
	}
	e.keys = keys

	srcTLS, err := tlsFor("source", cfg.Source.TLSConfig, hostOf(cfg.Source.Addr), log)
	if err != nil {
		return nil, err
	}
	var specs []change.TableSpec
	if extra := includeValues(cfg.Notices.IncludeValues); len(extra) > 0 {
		specs = handlers.SpecsWith(extra)
	} else {
		specs = handlers.Specs()
	}
	e.canalCfg = canal.Config{
		Addr: cfg.Source.Addr, User: cfg.Source.User, Password: cfg.Source.Password,
		Flavor: cfg.Source.Flavor, ServerID: cfg.Source.ServerID, Database: cfg.Source.Database,
		Tables:          specs,
		HeartbeatPeriod: cfg.Source.HeartbeatPeriod.Duration(),
		ReadTimeout:     cfg.Source.ReadTimeout.Duration(),
		MaxTxnBytes:     int(cfg.Apply.MaxTxnBytes),
		TLS:             srcTLS,
		Logger:          log,
	}

	pcfg, err := pgxpool.ParseConfig(cfg.Postgres.DSN)
	if err != nil {
		// pgx's parse errors can quote the DSN (and its password): do not wrap.
		return nil, usagef("postgres.dsn: not a valid PostgreSQL connection string (URL or key=value)")
	}
	pcfg.MaxConns = int32(cfg.Postgres.MaxConns)
	e.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err == nil {
		err = e.pool.Ping(ctx)
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("postgres at %s:%d: %w: check postgres.dsn and that the server is up", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, redactErr(err, cfg))
	}
	if err := dbschema.Migrate(ctx, e.pool, cfg.Postgres.Schema); err != nil {
		e.Close()
		return nil, fmt.Errorf("postgres: migrate schema %s: %w", cfg.Postgres.Schema, err)
	}
	e.ckpt = checkpoint.NewStore(e.pool, cfg.Postgres.Schema, cfg.Pipeline.Name)
	e.queue = pgstore.NewQueue(e.pool, cfg.Postgres.Schema, cfg.Pipeline.Name)
	e.queue.SetFence(e.ckpt)
	e.ckpt.SetOnMove(e.queue.DropMark)
	return e, nil
}

// connectSinks connects the lookup server, Redis and NATS.
func (e *env) connectSinks(ctx context.Context) error {
	cfg, log := e.cfg, e.log
	if err := e.connectLookup(ctx); err != nil {
		return err
	}
	redisTLS, err := tlsFor("redis", cfg.Redis.TLSConfig, hostOf(cfg.Redis.Addr), log)
	if err != nil {
		return err
	}
	e.cache, err = cache.Open(ctx, cache.Config{
		Addr: cfg.Redis.Addr, Username: cfg.Redis.Username, Password: cfg.Redis.Password,
		DB: cfg.Redis.DB, TLS: redisTLS,
	}, log)
	if err != nil {
		return err
	}
	natsTLS, err := tlsFor("nats", cfg.NATS.TLSConfig, "", log)
	if err != nil {
		return err
	}
	pc := streamConfig(cfg)
	pc.Name, pc.TLS = "dialsync-"+cfg.Pipeline.Name, natsTLS
	pc.CredsFile, pc.NKeyFile, pc.Token = cfg.NATS.CredsFile, cfg.NATS.NKeyFile, cfg.NATS.Token
	pc.User, pc.Password, pc.AckTimeout = cfg.NATS.User, cfg.NATS.Password, cfg.NATS.AckTimeout.Duration()
	pc.OnReconnect = func() {
		if e.reconnected != nil {
			e.reconnected("nats")
		}
	}
	e.pub, err = publish.Open(ctx, pc, log)
	return err
}

// connectLookup connects only the lookup server (read-only commands such
// as reconcile --dry-run need nothing else).
func (e *env) connectLookup(ctx context.Context) error {
	lk := e.cfg.EffectiveLookup()
	var err error
	e.lookup, err = lookup.Open(ctx, lookup.Config{
		Addr: lk.Addr, User: lk.User, Password: lk.Password, Database: lk.Database,
		TLS: e.canalCfg.TLS, QueueSQL: e.cfg.Rules.QueueSQL,
	}, e.log)
	if err != nil {
		return err
	}
	// binlog_order_commits (default ON on MySQL and MariaDB) lets the commit
	// barrier wait on one row per batch instead of one per transaction.
	// https://mariadb.com/kb/en/replication-and-binary-log-system-variables/#binlog_order_commits
	vars, err := e.lookup.GlobalVars(ctx, "binlog_order_commits")
	if err != nil {
		e.log.Warn("cannot read binlog_order_commits; the commit barrier locks one row per transaction", "err", err)
		return nil
	}
	e.orderedCommits = strings.EqualFold(vars["binlog_order_commits"], "ON")
	if !e.orderedCommits {
		e.log.Info("binlog_order_commits is not ON; the commit barrier locks one row per transaction")
	}
	return nil
}

// newLoop builds the apply loop; mon (may be nil) receives its hooks.
func (e *env) newLoop(log *slog.Logger, mon *monitor) *apply.Loop {
	a := e.cfg.Apply
	var onApplied func(apply.BatchStats)
	var onRetry func(apply.Stage, string, error)
	var onSaved func(change.Position, time.Duration)
	if mon != nil {
		onApplied, onRetry, onSaved = mon.onApplied, mon.onRetry, mon.onSaved
	}
	return apply.New(apply.Config{
		OnApplied: onApplied,
		OnRetry:   onRetry,
		OnSaved:   onSaved,
		// A fenced checkpoint write means another instance leads now:
		// retrying cannot help, the deposed process must stop. So must a
		// permanent server error (a missing privilege, a rule that cannot
		// run, a value PostgreSQL rejects): see internal/errclass.
		Fatal: func(err error) bool {
			permanent, _ := errclass.IsPermanent(err)
			return permanent || errors.Is(err, checkpoint.ErrFenced)
		},
		DeadLetter: func(table string) bool {
			return e.cfg.Tables.OnErrorFor(table) == config.OnErrorDeadLetter
		},
		Pipeline:       e.cfg.Pipeline.Name,
		SubjectPrefix:  e.cfg.NATS.SubjectPrefix,
		MaxBatchTxns:   a.MaxBatchTxns,
		MaxBatchBytes:  int(a.MaxBatchBytes),
		BatchWindow:    a.BatchWindow.Duration(),
		RetryInitial:   a.RetryInitial.Duration(),
		RetryMax:       a.RetryMax.Duration(),
		Keys:           e.keys,
		OrderedCommits: e.orderedCommits,
	}, apply.Deps{
		Lookup: e.lookup, Queue: e.queue, Cache: e.cache, Publisher: e.pub, Checkpoint: e.ckpt,
		DeadLetters: deadLetters{e.queue},
	}, log.With("component", "apply"))
}

func (e *env) newReconciler(loop *apply.Loop, log *slog.Logger) *reconcile.Reconciler {
	return &reconcile.Reconciler{
		Loop: loop, Lookup: e.lookup, Queue: e.queue, Cache: e.cache, Publisher: e.pub, Keys: e.keys,
		Pipeline: e.cfg.Pipeline.Name, SubjectPrefix: e.cfg.NATS.SubjectPrefix,
		ChunkSize: e.cfg.Reconcile.ChunkSize, Log: log.With("component", "reconcile"),
	}
}

func (e *env) Close() {
	if e.pub != nil {
		e.pub.Close()
	}
	if e.cache != nil {
		e.cache.Close()
	}
	if e.lookup != nil {
		e.lookup.Close()
	}
	if e.pool != nil {
		e.pool.Close()
	}
}

// includeValues turns ["users.status", ...] into {"users": ["status"]}.
func includeValues(list []string) map[string][]string {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string][]string)
	for _, tc := range list {
		t, c, _ := strings.Cut(tc, ".")
		m[t] = append(m[t], c)
	}
	return m
}

// redactErr strips configured secrets from an error's text (drivers may
// quote a DSN).
func redactErr(err error, cfg *config.Config) error {
	msg := err.Error()
	for _, s := range []string{cfg.Postgres.DSN, cfg.Source.Password, cfg.Redis.Password, cfg.NATS.Password, cfg.NATS.Token} {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "REDACTED")
		}
	}
	return errors.New(msg)
}

// deadLetters stores the apply loop's dead letters in PostgreSQL.
type deadLetters struct{ q *pgstore.Queue }

func (d deadLetters) AddDeadLetter(ctx context.Context, dl apply.DeadLetter) error {
	return d.q.AddDeadLetter(ctx, pgstore.DeadLetter{
		File: dl.End.File, Pos: dl.End.Pos, GTID: dl.GTID, Table: dl.Table,
		PrimaryKey: dl.PrimaryKey, Seq: dl.Seq, Error: dl.Op.String() + ": " + dl.Err,
	})
}

// startLoop is how one-shot commands (reconcile, deadletters retry) write:
// under lease (its epoch fences every write), with the same apply loop as
// run (which first publishes what a crashed run left in the outbox). ctx
// is cancelled with lost as the cause if the lease is lost; stop ends the
// loop and must be called before the lease is released.
func (e *env) startLoop(ctx context.Context, lease *checkpoint.Lease, log *slog.Logger, lost string) (context.Context, *reconcile.Reconciler, func(), error) {
	e.ckpt.SetEpoch(lease.Epoch())
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-lease.Lost():
			cancel(errors.New(lost))
		case <-ctx.Done():
		}
	}()
	if err := e.connectSinks(ctx); err != nil {
		cancel(nil)
		return ctx, nil, nil, err
	}
	loop := e.newLoop(log, nil)
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopErr := make(chan error, 1)
	go func() { loopErr <- loop.Run(loopCtx) }()
	stop := func() {
		stopLoop()
		<-loopErr
		cancel(nil)
	}
	return ctx, e.newReconciler(loop, log), stop, nil
}

// takeLease holds the pipeline's lease for a one-shot writing command, so a
// `run` started meanwhile waits instead of writing the queue out of order
// with it. A short wait only: whoever took the lease after the caller's
// Holder check is running, and refuse names it.
func (e *env) takeLease(ctx context.Context, what string, log *slog.Logger, refuse func(holder string, epoch int64) error) (*checkpoint.Lease, error) {
	cfg := e.cfg
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	lease, err := checkpoint.AcquireLease(lctx, e.pgDSN, cfg.Postgres.Schema, cfg.Pipeline.Name, leaseHolderName()+"/"+what, log)
	cancel()
	if err == nil {
		return lease, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if h, ep, held, herr := checkpoint.Holder(ctx, e.pool, cfg.Postgres.Schema, cfg.Pipeline.Name); herr == nil && held {
		return nil, refuse(h, ep)
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

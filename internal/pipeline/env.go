package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/handlers"
	"dialsync/internal/apply"
	"dialsync/internal/cache"
	"dialsync/internal/clients"
	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/errclass"
	"dialsync/internal/lookup"
	"dialsync/internal/pgstore"
	"dialsync/internal/publish"
	"dialsync/internal/reconcile"
)

// Env holds the connections and stores a command works with: PostgreSQL
// (migrated) with the checkpoint and queue stores, and, once connected, the
// lookup server, Redis and NATS. The pipeline runs on one; the one-shot
// writing commands (reconcile, deadletters retry, checkpoint) open their
// own. Close closes what was opened.
type Env struct {
	Cfg    *config.Config
	Log    *slog.Logger
	Pool   *pgxpool.Pool
	Ckpt   *checkpoint.Store
	Queue  *pgstore.Queue
	Lookup *lookup.Lookup     // ConnectLookup
	Cache  *cache.Cache       // ConnectSinks
	Pub    *publish.Publisher // ConnectSinks
	Keys   *handlers.Keys
	Canal  canal.Config
	// orderedCommits: the source's binlog_order_commits is ON (read by
	// ConnectLookup).
	orderedCommits bool
	// reconnected counts a re-established connection to server (set by the
	// pipeline for its metrics; nil elsewhere).
	reconnected func(server string)
}

// OpenEnv connects to PostgreSQL (and migrates) and prepares the source
// configuration; the lookup server, Redis and NATS are connected by
// ConnectSinks once leadership is held.
func OpenEnv(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Env, error) {
	return openEnv(ctx, cfg, log, nil)
}

// OpenEnvReadOnly is OpenEnv for the commands that only read (checkpoint
// show and history, deadletters list, reconcile --dry-run): it never
// migrates, so it works for a PostgreSQL user that may not create
// anything, and refuses a schema that is missing or not at this binary's
// version with the command that fixes it (dbschema.CheckVersion).
func OpenEnvReadOnly(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Env, error) {
	return open(ctx, cfg, log, nil, false)
}

// openEnv is OpenEnv with a tracer of every statement on the pool (nil:
// none).
func openEnv(ctx context.Context, cfg *config.Config, log *slog.Logger, tracer pgx.QueryTracer) (*Env, error) {
	return open(ctx, cfg, log, tracer, true)
}

func open(ctx context.Context, cfg *config.Config, log *slog.Logger, tracer pgx.QueryTracer, migrate bool) (*Env, error) {
	e := &Env{Cfg: cfg, Log: log}
	var err error
	if e.Keys, err = clients.Keys(cfg); err != nil {
		return nil, err
	}
	if e.Canal, err = clients.Canal(cfg, log); err != nil {
		return nil, err
	}
	pcfg, err := clients.PostgresConfig(cfg)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	pcfg.ConnConfig.Tracer = tracer
	if e.Pool, err = clients.Postgres(ctx, cfg, pcfg); err != nil {
		return nil, err // names the server and the fix
	}
	if migrate {
		if err := dbschema.Migrate(ctx, e.Pool, cfg.Postgres.Schema); err != nil {
			e.Close()
			return nil, fmt.Errorf("postgres: migrate schema %s: %w", cfg.Postgres.Schema, err)
		}
	} else if err := dbschema.CheckVersion(ctx, e.Pool, cfg.Postgres.Schema); err != nil {
		e.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	e.Ckpt = checkpoint.NewStore(e.Pool, cfg.Postgres.Schema, cfg.Pipeline.Name)
	e.Queue = pgstore.NewQueue(e.Pool, cfg.Postgres.Schema, cfg.Pipeline.Name)
	e.Queue.SetFence(e.Ckpt)
	// Moving the checkpoint drops the queue mark, in the same transaction
	// (the queue store owns the mark's table).
	e.Ckpt.SetOnMove(e.Queue.DropMark)
	return e, nil
}

// ConnectSinks connects the lookup server, Redis and NATS.
func (e *Env) ConnectSinks(ctx context.Context) error {
	if err := e.ConnectLookup(ctx); err != nil {
		return err
	}
	var err error
	if e.Cache, err = clients.Cache(ctx, e.Cfg, e.Log); err != nil {
		return err
	}
	e.Pub, err = clients.Publisher(ctx, e.Cfg, func() {
		if e.reconnected != nil {
			e.reconnected("nats")
		}
	}, e.Log)
	return err
}

// ConnectLookup connects only the lookup server (read-only commands such
// as reconcile --dry-run need nothing else).
func (e *Env) ConnectLookup(ctx context.Context) error {
	var err error
	if e.Lookup, err = clients.Lookup(ctx, e.Cfg, 0, e.Log); err != nil {
		return err
	}
	// Commits in binlog order let the commit barrier wait on one row per
	// batch instead of one per transaction (docs/design.md, the commit
	// barrier). MySQL: binlog_order_commits (default ON),
	// https://dev.mysql.com/doc/refman/8.0/en/replication-options-binary-log.html#sysvar_binlog_order_commits.
	// MariaDB has no such variable: its binlog group commit always calls
	// the engines' commit_ordered() in binlog order, and InnoDB makes a
	// transaction visible there (sql/handler.h, handlerton::commit_ordered;
	// https://mariadb.com/kb/en/enhancements-for-start-transaction-with-consistent-snapshot/),
	// checked against the real server by TestMariaDBCommitsInBinlogOrder
	// (internal/lookup).
	vars, err := e.Lookup.GlobalVars(ctx, "binlog_order_commits", "version")
	if err != nil {
		e.Log.Warn("cannot read binlog_order_commits; the commit barrier locks one row per transaction", "err", err)
		return nil
	}
	v, known := vars["binlog_order_commits"]
	var mariadb bool
	e.orderedCommits, mariadb = commitOrder(vars)
	switch {
	case mariadb:
		e.Log.Info("MariaDB commits in binlog order (it has no binlog_order_commits variable); the commit barrier locks one row per batch")
	case !known:
		e.Log.Info("binlog_order_commits: no such variable on this server; the commit barrier locks one row per transaction")
	case !e.orderedCommits:
		e.Log.Info("binlog_order_commits = "+v+"; the commit barrier locks one row per transaction", "value", v)
	default:
		e.Log.Debug("binlog_order_commits = ON; the commit barrier locks one row per batch")
	}
	return nil
}

// commitOrder says, from the source's binlog_order_commits and version
// global variables, whether it commits in binlog order, and whether it
// does so as a MariaDB without the variable (see ConnectLookup).
func commitOrder(vars map[string]string) (ordered, mariadb bool) {
	v, mysqlVar := vars["binlog_order_commits"]
	mariadb = !mysqlVar && strings.Contains(strings.ToLower(vars["version"]), "mariadb")
	return strings.EqualFold(v, "ON") || mariadb, mariadb
}

// NewLoop builds the apply loop; mon (may be nil) receives its hooks.
func (e *Env) NewLoop(log *slog.Logger, mon *Monitor) *apply.Loop {
	a := e.Cfg.Apply
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
			return e.Cfg.Tables.OnErrorFor(table) == config.OnErrorDeadLetter
		},
		Pipeline:       e.Cfg.Pipeline.Name,
		SubjectPrefix:  e.Cfg.NATS.SubjectPrefix,
		MaxBatchTxns:   a.MaxBatchTxns,
		MaxBatchBytes:  int(a.MaxBatchBytes),
		BatchWindow:    a.BatchWindow.Duration(),
		RetryInitial:   a.RetryInitial.Duration(),
		RetryMax:       a.RetryMax.Duration(),
		Keys:           e.Keys,
		OrderedCommits: e.orderedCommits,
	}, apply.Deps{
		Lookup: e.Lookup, Queue: e.Queue, Cache: e.Cache, Publisher: e.Pub, Checkpoint: e.Ckpt,
		DeadLetters: deadLetters{e.Queue},
	}, log.With("component", "apply"))
}

// NewReconciler builds a reconciler writing through loop.
func (e *Env) NewReconciler(loop *apply.Loop, log *slog.Logger) *reconcile.Reconciler {
	return &reconcile.Reconciler{
		Loop: loop, Lookup: e.Lookup, Queue: e.Queue, Cache: e.Cache, Publisher: e.Pub, Keys: e.Keys,
		Pipeline: e.Cfg.Pipeline.Name, SubjectPrefix: e.Cfg.NATS.SubjectPrefix,
		ChunkSize: e.Cfg.Reconcile.ChunkSize, Log: log.With("component", "reconcile"),
	}
}

// Close closes every connection that was opened.
func (e *Env) Close() {
	if e.Pub != nil {
		e.Pub.Close()
	}
	if e.Cache != nil {
		e.Cache.Close()
	}
	if e.Lookup != nil {
		e.Lookup.Close()
	}
	if e.Pool != nil {
		e.Pool.Close()
	}
}

// deadLetters stores the apply loop's dead letters in PostgreSQL.
type deadLetters struct{ q *pgstore.Queue }

func (d deadLetters) AddDeadLetter(ctx context.Context, dl apply.DeadLetter) error {
	return d.q.AddDeadLetter(ctx, pgstore.DeadLetter{
		File: dl.End.File, Pos: dl.End.Pos, GTID: dl.GTID, Table: dl.Table,
		PrimaryKey: dl.PrimaryKey, Seq: dl.Seq, Error: dl.Op.String() + ": " + dl.Err,
	})
}

// StartLoop is how one-shot commands (reconcile, deadletters retry) write:
// under lease (its epoch fences every write), with the same apply loop as
// run (which first publishes what a crashed run left in the outbox). ctx
// is cancelled with lost as the cause if the lease is lost; stop ends the
// loop (and the lease watcher) and must be called before the lease is
// released.
func (e *Env) StartLoop(ctx context.Context, lease *checkpoint.Lease, log *slog.Logger, lost string) (context.Context, *reconcile.Reconciler, func(), error) {
	e.Ckpt.SetEpoch(lease.Epoch())
	ctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-lease.Lost():
			cancel(errors.New(lost))
		case <-ctx.Done():
		}
	}()
	if err := e.ConnectSinks(ctx); err != nil {
		cancel(nil)
		<-watched
		return ctx, nil, nil, err
	}
	loop := e.NewLoop(log, nil)
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopErr := make(chan error, 1)
	go func() { loopErr <- loop.Run(loopCtx) }()
	stop := func() {
		stopLoop()
		<-loopErr
		cancel(nil)
		<-watched
	}
	return ctx, e.NewReconciler(loop, log), stop, nil
}

// TakeLease holds the pipeline's lease for a one-shot writing command, so a
// `run` started meanwhile waits instead of writing the queue out of order
// with it. A short wait only: whoever took the lease after the caller's
// Holder check is running, and refuse names it.
func (e *Env) TakeLease(ctx context.Context, what string, log *slog.Logger, refuse func(holder string, epoch int64) error) (*checkpoint.Lease, error) {
	cfg := e.Cfg
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	lease, err := checkpoint.AcquireLease(lctx, cfg.Postgres.DSN, cfg.Postgres.Schema, cfg.Pipeline.Name, HolderName()+"/"+what, log)
	cancel()
	if err == nil {
		return lease, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if h, ep, held, herr := e.Holder(ctx); herr == nil && held {
		return nil, refuse(h, ep)
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// Holder tells whether an instance holds the pipeline's lease now, and who
// last did (see checkpoint.Holder).
func (e *Env) Holder(ctx context.Context) (holder string, epoch int64, held bool, err error) {
	return checkpoint.Holder(ctx, e.Pool, e.Cfg.Postgres.Schema, e.Cfg.Pipeline.Name)
}

// HolderName names this process in the lease: host and pid.
func HolderName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/pid-%d", h, os.Getpid())
}

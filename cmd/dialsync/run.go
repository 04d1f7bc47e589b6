package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/internal/config"
	"dialsync/internal/httpserver"
	"dialsync/internal/lookup"
	"dialsync/internal/metrics"
	"dialsync/internal/reconcile"
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := fs.String("config", "config.toml", "configuration file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Info("starting", "version", buildVersion())
	for _, name := range config.UnknownEnv(os.Environ()) {
		log.Warn("environment variable matches no config key: check its spelling", "name", name)
	}

	env, err := openEnv(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer env.Close()

	mon := newMonitor(env, metrics.New(), log)
	if cfg.HTTP.Listen != "" {
		srv := httpserver.New(cfg.HTTP.Listen, mon.m, mon.ready, cfg.HTTP.Pprof)
		if err := srv.Start(); err != nil {
			return usagef("http.listen: %v", err)
		}
		defer srv.Close(context.WithoutCancel(ctx))
		log.Info("http listening", "addr", srv.Addr().String())
	}

	// Leadership: only the holder of the pipeline's lease streams. A standby
	// waits here until the leader dies. With ha.enabled = false the lease
	// is still taken (so recovery commands see this instance and refuse),
	// but a held lease is an error instead of a wait.
	holder := leaseHolderName()
	if !cfg.HA.Enabled {
		other, epoch, held, err := checkpoint.Holder(ctx, env.pool, cfg.Postgres.Schema, cfg.Pipeline.Name)
		if err != nil {
			return err
		}
		if held {
			return fmt.Errorf("instance %s holds the lease for pipeline %s (epoch %d) and ha.enabled = false: not waiting; stop it or set ha.enabled = true to run as its standby", other, cfg.Pipeline.Name, epoch)
		}
	} else {
		log.Info("standby: waiting for the pipeline lease", "holder", holder)
	}
	lease, err := checkpoint.AcquireLeaseWith(ctx, env.pgDSN, cfg.Postgres.Schema, cfg.Pipeline.Name, holder,
		checkpoint.LeaseOptions{CheckInterval: cfg.HA.LeaseCheck.Duration(), TTL: cfg.HA.LeaseTTL.Duration()}, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("acquire lease: %w", err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	env.ckpt.SetEpoch(lease.Epoch())
	mon.setLeader(lease.Epoch())
	log.Info("leader", "epoch", lease.Epoch())

	env.reconnected = func(server string) { mon.m.Reconnects.WithLabelValues(server).Inc() }
	env.canalCfg.OnRestart = func(error) { env.reconnected("mysql") }
	if err := env.connectSinks(ctx); err != nil {
		return err
	}
	if err := env.checkSameServer(ctx); err != nil {
		return err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-lease.Lost():
			cancel(fmt.Errorf("lost the pipeline lease (another instance may have taken over): stopping without writing: %w", lease.Err()))
		case <-ctx.Done():
		}
	}()
	go mon.poll(ctx)

	cp, found, err := env.ckpt.Load(ctx)
	if err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	if found {
		if err := env.checkPositionOnServer(ctx, cp.Pos); err != nil {
			if cfg.Recovery.OnPurged != "reconcile" {
				return err
			}
			// Safe because the queue is recomputable: jump to the head and
			// reconcile everything (BRIEF section 6).
			log.Error("AUTOMATIC RECOVERY: the binlog at the checkpoint is gone; jumping to the source head and running a full reconcile (recovery.on_purged = \"reconcile\")", "checkpoint", cp.Pos.String(), "err", err)
			mon.m.PurgedRecoveries.Inc()
			if err := env.ckpt.Reset(ctx, "dialsync", "binlog purged past the checkpoint: automatic recovery (recovery.on_purged = reconcile)"); err != nil {
				return err
			}
			found = false
		}
	}

	loop := env.newLoop(log, mon)
	mon.loop.Store(loop)
	// The claim -> user and user -> address maps as of the checkpoint (see
	// internal/apply). A bootstrap reads them below with its start position;
	// a checkpoint an operator moved starts from the lookup server's current
	// rows, stored with the next checkpoint.
	var owners, pointers map[uint64]uint64
	if found {
		if owners, err = env.ckpt.Owners(ctx); err != nil {
			return err
		}
		if pointers, err = env.ckpt.Pointers(ctx); err != nil {
			return err
		}
		stale := len(owners) == 0 && len(pointers) == 0
		if stale {
			if owners, err = env.lookup.AllClaimOwners(ctx); err != nil {
				return err
			}
			if pointers, err = env.lookup.AllUserPointers(ctx); err != nil {
				return err
			}
		}
		loop.SetOwners(owners, stale)
		loop.SetPointers(pointers, stale)
		mark, ok, err := env.queue.Mark(ctx)
		if err != nil {
			return err
		}
		if ok {
			loop.SetMark(mark, canal.Includes)
		}
	}

	loopErr := make(chan error, 1)
	go func() { loopErr <- loop.Run(ctx) }()

	rec := env.newReconciler(loop, log)
	from := cp.Pos
	if !found {
		// Bootstrap (BRIEF section 5): record the source position FIRST,
		// then reconcile the whole queue through the apply loop, then stream
		// from the recorded position. Everything that changes during the
		// reconcile is in the binlog after `from` and recomputed again.
		if from, owners, pointers, err = env.bootstrapStart(ctx); err != nil {
			return err
		}
		loop.SetOwners(owners, false)
		loop.SetPointers(pointers, false)
		log.Info("no checkpoint: bootstrapping", "from", from.String())
		sum, err := rec.Run(ctx, reconcile.Options{Trigger: metrics.TriggerBootstrap})
		if err != nil {
			if ctx.Err() != nil && context.Cause(ctx) == context.Canceled {
				return nil // stopped during the bootstrap: the next run starts it again
			}
			return fmt.Errorf("bootstrap reconcile: %w", err)
		}
		mon.onReconcile(metrics.TriggerBootstrap, sum)
		log.Info("bootstrap reconcile done", "users", sum.Users, "entered", sum.Entered, "left", sum.Left, "changed", sum.Changed, "took", sum.Took.Round(time.Millisecond))
		if err := loop.Do(ctx, func(ctx context.Context) error { return env.ckpt.Save(ctx, from, owners, pointers) }); err != nil {
			if ctx.Err() != nil && context.Cause(ctx) == context.Canceled {
				return nil
			}
			return fmt.Errorf("bootstrap: store start position: %w", err)
		}
	} else if cfg.Reconcile.OnStart == "always" {
		go runReconcile(ctx, rec, mon, log, metrics.TriggerSchedule)
	}

	go scheduled(ctx, cfg.Reconcile.Interval.Duration(), func() { runReconcile(ctx, rec, mon, log, metrics.TriggerSchedule) })
	go scheduled(ctx, cfg.Housekeeping.Interval.Duration(), func() { housekeep(ctx, env, log) })

	streamErr := make(chan error, 1)
	go func() {
		mon.streaming.Store(true)
		defer mon.streaming.Store(false)
		streamErr <- canal.Run(ctx, env.canalCfg, from, loop.Submit)
	}()

	var runErr error
	select {
	case err := <-streamErr:
		if err != nil {
			runErr = env.explainStreamError(err)
		}
		cancel(runErr)
		if err := <-loopErr; err != nil && runErr == nil {
			runErr = err
		}
	case err := <-loopErr:
		runErr = err
		cancel(err)
		<-streamErr
	}
	// A lost lease cancels everything; the errors that follow (a retry
	// stopped, a closed stream) are its consequences: name the cause first.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(runErr, cause) {
		if runErr == nil {
			runErr = cause
		} else {
			runErr = fmt.Errorf("%w (then: %v)", cause, runErr)
		}
	}
	if runErr != nil {
		return runErr
	}
	log.Info("stopped cleanly")
	return nil
}

// bootstrapStart records where a bootstrap starts streaming and the maps as
// of that position: on MariaDB exactly, from one consistent snapshot; on
// MySQL the head first and the maps right after (a change in between is
// replayed with the newer map).
func (e *env) bootstrapStart(ctx context.Context) (from change.Position, owners, pointers map[uint64]uint64, err error) {
	// Head also runs the source checks (binlog format, row image, tables).
	if from, err = canal.Head(ctx, e.canalCfg); err != nil {
		return from, nil, nil, fmt.Errorf("bootstrap: read source head: %w", err)
	}
	snap, ok, err := e.lookup.ConsistentSnapshot(ctx)
	if err != nil {
		return from, nil, nil, fmt.Errorf("bootstrap: %w", err)
	}
	if ok && snap.GTIDSet != "" {
		return change.Position{File: snap.File, Pos: snap.Pos, GTIDSet: snap.GTIDSet}, snap.Owners, snap.Pointers, nil
	}
	if owners, err = e.lookup.AllClaimOwners(ctx); err != nil {
		return from, nil, nil, err
	}
	if pointers, err = e.lookup.AllUserPointers(ctx); err != nil {
		return from, nil, nil, err
	}
	return from, owners, pointers, nil
}

// scheduled calls fn every interval (never when interval is 0).
func scheduled(ctx context.Context, interval time.Duration, fn func()) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// runReconcile runs a full reconcile through the apply loop. Its chunks
// interleave with streamed batches, so streaming goes on meanwhile.
func runReconcile(ctx context.Context, rec *reconcile.Reconciler, mon *monitor, log *slog.Logger, trigger string) {
	sum, err := rec.Run(ctx, reconcile.Options{Trigger: trigger})
	if err != nil {
		if ctx.Err() == nil {
			log.Error("scheduled reconcile failed; the next one will retry", "err", err)
		}
		return
	}
	mon.onReconcile(trigger, sum)
}

// housekeep prunes old checkpoint history and dead letters.
func housekeep(ctx context.Context, e *env, log *slog.Logger) {
	h, d, err := e.queue.Prune(ctx, e.cfg.Housekeeping.Retain.Duration(), e.ckpt.PruneHistory)
	if err != nil {
		log.Warn("housekeeping failed; will retry", "err", err)
		return
	}
	if h+d > 0 {
		log.Info("housekeeping", "history_pruned", h, "dead_letters_pruned", d)
	}
}

// checkSameServer refuses a lookup server that is not the binlog server:
// only the server whose binlog we read guarantees a row is visible when its
// event arrives (BRIEF invariant 3).
func (e *env) checkSameServer(ctx context.Context) error {
	lk := e.cfg.EffectiveLookup()
	id, err := e.lookup.ServerUUID(ctx)
	if err != nil {
		return err
	}
	e.ckpt.SetServerUUID(id)
	if lk.Addr == e.cfg.Source.Addr {
		return nil
	}
	src, err := lookup.Open(ctx, lookup.Config{
		Addr: e.cfg.Source.Addr, User: e.cfg.Source.User, Password: e.cfg.Source.Password,
		Database: e.cfg.Source.Database, TLS: e.canalCfg.TLS,
	}, e.log)
	if err != nil {
		return err
	}
	defer src.Close()
	srcID, err := src.ServerUUID(ctx)
	if err != nil {
		return err
	}
	if srcID != id {
		return usagef("lookup.addr %s is not the binlog server source.addr %s (%s vs %s): lookups must run on the server whose binlog is read; remove [lookup] addr or point it at the same server",
			lk.Addr, e.cfg.Source.Addr, id, srcID)
	}
	return nil
}

// checkPositionOnServer fails when the checkpoint's binlog file is gone
// from the server (purged), with the recovery command. It only judges
// checkpoints taken on this server: after a failover the file names differ
// and the GTID set decides (the server refuses a purged GTID, see
// explainStreamError).
func (e *env) checkPositionOnServer(ctx context.Context, pos change.Position) error {
	if pos.File == "" {
		return nil
	}
	logs, err := e.lookup.BinaryLogs(ctx)
	if err != nil || len(logs) == 0 {
		return nil // check reports missing grants; the stream will fail loudly if need be
	}
	if _, ok := lookup.BytesBehind(logs, pos.File, pos.Pos); ok {
		return nil
	}
	if pos.File > logs[len(logs)-1].Name {
		return nil // a newer file than this server has: another server's name space
	}
	return positionGone(pos, fmt.Sprintf("%s:4 (oldest binlog on the server)", logs[0].Name))
}

func positionGone(pos change.Position, oldest string) error {
	return fmt.Errorf("the source cannot serve the checkpoint's position (binlog purged, or past the end of its file): checkpoint %s; oldest available: %s. "+
		"Recover with `dialsync checkpoint reset --to-head --reason \"binlog purged\"` (jumps to the head and reconciles the queue), "+
		"or set recovery.on_purged = \"reconcile\" to do this automatically", pos, oldest)
}

// explainStreamError turns a binlog stream failure into an operator's
// message with the recovery command.
func (e *env) explainStreamError(err error) error {
	if errors.Is(err, canal.ErrPositionGone) {
		oldest := "unknown"
		if logs, lerr := e.lookup.BinaryLogs(context.Background()); lerr == nil && len(logs) > 0 {
			oldest = logs[0].Name + ":4"
		}
		return fmt.Errorf("%w (%v)", positionGone(e.lastPosition(), oldest), err)
	}
	return fmt.Errorf("binlog: %w", err)
}

func (e *env) lastPosition() change.Position {
	cp, _, err := e.ckpt.Load(context.Background())
	if err != nil {
		return change.Position{}
	}
	return cp.Pos
}

func leaseHolderName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/pid-%d", h, os.Getpid())
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/internal/clients"
	"dialsync/internal/config"
	"dialsync/internal/idmap"
	"dialsync/internal/metrics"
	"dialsync/internal/preflight"
	"dialsync/internal/reconcile"
)

// checkCheckpoint judges the stored checkpoint against the source before
// streaming, the same way `dialsync check` does (preflight.JudgePosition):
// another server's checkpoint is refused unless that server's GTID history
// is here (a failover: accepted, logged, and the new identity is stored
// with the next checkpoint); a position the source cannot serve stops with
// its real cause. Only a provably purged binlog may be recovered from by
// itself: with recovery.on_purged = "reconcile" the checkpoint is removed
// and Run bootstraps; every other cause is an error, whatever on_purged
// says (docs/troubleshooting.md).
func (p *Pipeline) checkCheckpoint(ctx context.Context) error {
	v, err := p.diagnose(ctx, p.cp)
	if err != nil {
		return fmt.Errorf("checkpoint %s: cannot check it on the source: a query failed: %w", p.cp.Pos, err)
	}
	if v.Failover {
		p.log.Warn("the checkpoint was taken on another server whose GTID history this server has (failover): resuming by GTID; the next checkpoint is stored with this server's identity",
			"checkpoint", p.cp.Pos.String(), "checkpoint_server", p.cp.ServerUUID, "server", v.Identity)
	}
	if v.OK() {
		return nil
	}
	if !v.Purged() || p.cfg.Recovery.OnPurged != "reconcile" {
		return fmt.Errorf("checkpoint %s of pipeline %s: %w", p.cp.Pos, p.cfg.Pipeline.Name, v.Err())
	}
	// Safe because the queue is recomputable: jump to the head and
	// reconcile everything (docs/design.md, bootstrap).
	p.log.Error("AUTOMATIC RECOVERY: the binlog at the checkpoint is gone; jumping to the source head and running a full reconcile (recovery.on_purged = \"reconcile\")", "checkpoint", p.cp.Pos.String(), "cause", v.Detail)
	p.mon.m.PurgedRecoveries.Inc()
	if err := p.env.Ckpt.Reset(ctx, "dialsync", "binlog purged past the checkpoint: automatic recovery (recovery.on_purged = reconcile)"); err != nil {
		return err
	}
	p.found = false
	return nil
}

// diagnose asks the binlog server (with the binlog user) about cp.
func (p *Pipeline) diagnose(ctx context.Context, cp checkpoint.Checkpoint) (preflight.Verdict, error) {
	cc := p.env.Canal
	src := &preflight.Source{Addr: cc.Addr, User: cc.User, Password: cc.Password, TLS: cc.TLS, Timeout: 10 * time.Second}
	defer src.Close()
	v, err := src.DiagnosePosition(ctx, p.cfg.Source.Flavor, cp)
	if err != nil {
		return v, clients.Redact(err, p.cfg)
	}
	return v, nil
}

// seed gives the apply loop the claim -> user and user -> address maps as
// of the checkpoint, and the queue mark (docs/design.md, maps as of the
// binlog position; queue mark). A checkpoint an operator moved has no maps:
// the loop starts from the lookup server's current rows, stored with the
// next checkpoint.
func (p *Pipeline) seed(ctx context.Context) error {
	env, loop := p.env, p.loop
	owners, pointers, err := env.Ckpt.LoadMaps(ctx)
	if err != nil {
		return err
	}
	stale := owners.Len() == 0 && pointers.Len() == 0
	if stale {
		if owners, pointers, err = env.Lookup.AllMaps(ctx); err != nil {
			return err
		}
	}
	loop.SeedOwners(owners, stale)
	loop.SeedPointers(pointers, stale)
	mark, ok, err := env.Queue.Mark(ctx)
	if err != nil {
		return err
	}
	if ok {
		loop.SetMark(mark, canal.Includes)
	}
	return nil
}

// bootstrap (docs/design.md, bootstrap): record the source position FIRST,
// then reconcile the whole queue through the apply loop (running), then
// store the position, from which Run streams. Everything that changes
// during the reconcile is in the binlog after it and recomputed again.
// stopped reports a stop during the bootstrap (ctx ended without another
// cause): the next run starts it again.
func (p *Pipeline) bootstrap(ctx context.Context) (from change.Position, stopped bool, err error) {
	env, loop, log := p.env, p.loop, p.log
	from, owners, pointers, err := p.bootstrapStart(ctx)
	if err != nil {
		return from, false, err
	}
	// The maps are shared with the loop: nothing changes them before the
	// start position is stored with them (a job on the loop, before any
	// streamed batch), so that write needs no copy.
	loop.SeedOwners(owners, false)
	loop.SeedPointers(pointers, false)
	log.Info("no checkpoint: bootstrapping", "from", from.String())
	sum, err := p.rec.Run(ctx, reconcile.Options{Trigger: metrics.TriggerBootstrap})
	if err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return from, true, nil // stopped during the bootstrap: the next run starts it again
		}
		return from, false, fmt.Errorf("bootstrap reconcile: %w", err)
	}
	p.mon.onReconcile(metrics.TriggerBootstrap, sum)
	log.Info("bootstrap reconcile done", "users", sum.Users, "entered", sum.Entered, "left", sum.Left, "changed", sum.Changed, "took", sum.Took.Round(time.Millisecond))
	if err := loop.Do(ctx, func(ctx context.Context) error { return env.Ckpt.SaveWhole(ctx, from, owners, pointers) }); err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return from, true, nil
		}
		return from, false, fmt.Errorf("bootstrap: store start position: %w", err)
	}
	return from, false, nil
}

// bootstrapStart records where a bootstrap starts streaming and the maps as
// of that position: on MariaDB exactly, from one consistent snapshot; on
// MySQL the head first and the maps right after (a change in between is
// replayed with the newer map).
func (p *Pipeline) bootstrapStart(ctx context.Context) (from change.Position, owners, pointers *idmap.Map, err error) {
	e := p.env
	// Head also runs the source checks (binlog format, row image, tables).
	if from, err = canal.Head(ctx, e.Canal); err != nil {
		return from, nil, nil, fmt.Errorf("bootstrap: read source head: %w", err)
	}
	snap, ok, err := e.Lookup.ConsistentSnapshot(ctx)
	if err != nil {
		return from, nil, nil, fmt.Errorf("bootstrap: %w", err)
	}
	if ok && snap.GTIDSet != "" {
		return change.Position{File: snap.File, Pos: snap.Pos, GTIDSet: snap.GTIDSet}, snap.Owners, snap.Pointers, nil
	}
	if owners, pointers, err = e.Lookup.AllMaps(ctx); err != nil {
		return from, nil, nil, err
	}
	return from, owners, pointers, nil
}

// scheduled calls fn every interval (never when interval is 0) until ctx
// ends.
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

// reconcile runs a full reconcile through the apply loop. Its chunks
// interleave with streamed batches, so streaming goes on meanwhile.
func (p *Pipeline) reconcile(ctx context.Context, trigger string) {
	sum, err := p.rec.Run(ctx, reconcile.Options{Trigger: trigger})
	if err != nil {
		if ctx.Err() == nil {
			p.log.Error("scheduled reconcile failed; the next one will retry", "err", err)
		}
		return
	}
	p.mon.onReconcile(trigger, sum)
}

// housekeep prunes old checkpoint history and dead letters.
func (p *Pipeline) housekeep(ctx context.Context) {
	h, d, err := p.env.Queue.Prune(ctx, p.cfg.Housekeeping.Retain.Duration(), p.env.Ckpt.PruneHistory)
	if err != nil {
		p.log.Warn("housekeeping failed; will retry", "err", err)
		return
	}
	if h+d > 0 {
		p.log.Info("housekeeping", "history_pruned", h, "dead_letters_pruned", d)
	}
}

// checkSameServer refuses a lookup server that is not the binlog server:
// only the server whose binlog we read guarantees a row is visible when its
// event arrives (docs/design.md, invariant 3).
func (p *Pipeline) checkSameServer(ctx context.Context) error {
	e, cfg := p.env, p.cfg
	lk := cfg.EffectiveLookup()
	id, err := e.Lookup.ServerUUID(ctx)
	if err != nil {
		return err
	}
	e.Ckpt.SetServerUUID(id)
	if lk.Addr == cfg.Source.Addr {
		return nil
	}
	src, err := clients.SourceLookup(ctx, cfg, p.log)
	if err != nil {
		return err
	}
	defer src.Close()
	srcID, err := src.ServerUUID(ctx)
	if err != nil {
		return err
	}
	if srcID != id {
		return config.Usagef("lookup.addr %s is not the binlog server source.addr %s (%s vs %s): lookups must run on the server whose binlog is read; remove [lookup] addr or point it at the same server",
			lk.Addr, cfg.Source.Addr, id, srcID)
	}
	return nil
}

// explainStreamError turns a binlog stream failure into an operator's
// message with the recovery command: a position the server refused is
// judged again (preflight.JudgePosition) to name its real cause.
func (p *Pipeline) explainStreamError(err error) error {
	if errors.Is(err, canal.ErrPositionGone) {
		cp, found, lerr := p.env.Ckpt.Load(context.Background())
		if lerr == nil && found {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if v, derr := p.diagnose(ctx, cp); derr == nil && !v.OK() {
				return fmt.Errorf("checkpoint %s of pipeline %s: %w (%v)", cp.Pos, p.cfg.Pipeline.Name, v.Err(), err)
			}
		}
		return fmt.Errorf("the source cannot serve the checkpoint's position %s: %w; if the binlog was purged: %s", cp.Pos, err, preflight.ResetFix)
	}
	return fmt.Errorf("binlog: %w", err)
}

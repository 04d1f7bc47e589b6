package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/internal/clients"
	"dialsync/internal/config"
	"dialsync/internal/idmap"
	"dialsync/internal/lookup"
	"dialsync/internal/metrics"
	"dialsync/internal/reconcile"
)

// recoverPurged checks that the source still has the checkpoint's binlog.
// When it does not, recovery.on_purged = "reconcile" jumps to the head:
// the checkpoint is removed and Run bootstraps; otherwise it is an error
// naming the recovery command.
func (p *Pipeline) recoverPurged(ctx context.Context) error {
	err := p.checkPositionOnServer(ctx, p.cp.Pos)
	if err == nil {
		return nil
	}
	if p.cfg.Recovery.OnPurged != "reconcile" {
		return err
	}
	// Safe because the queue is recomputable: jump to the head and
	// reconcile everything (docs/design.md, bootstrap).
	p.log.Error("AUTOMATIC RECOVERY: the binlog at the checkpoint is gone; jumping to the source head and running a full reconcile (recovery.on_purged = \"reconcile\")", "checkpoint", p.cp.Pos.String(), "err", err)
	p.mon.m.PurgedRecoveries.Inc()
	if err := p.env.Ckpt.Reset(ctx, "dialsync", "binlog purged past the checkpoint: automatic recovery (recovery.on_purged = reconcile)"); err != nil {
		return err
	}
	p.found = false
	return nil
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
		if ctx.Err() != nil && context.Cause(ctx) == context.Canceled {
			return from, true, nil // stopped during the bootstrap: the next run starts it again
		}
		return from, false, fmt.Errorf("bootstrap reconcile: %w", err)
	}
	p.mon.onReconcile(metrics.TriggerBootstrap, sum)
	log.Info("bootstrap reconcile done", "users", sum.Users, "entered", sum.Entered, "left", sum.Left, "changed", sum.Changed, "took", sum.Took.Round(time.Millisecond))
	if err := loop.Do(ctx, func(ctx context.Context) error { return env.Ckpt.SaveWhole(ctx, from, owners, pointers) }); err != nil {
		if ctx.Err() != nil && context.Cause(ctx) == context.Canceled {
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
	src, err := clients.SourceLookup(ctx, cfg, e.Canal.TLS, p.log)
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

// checkPositionOnServer fails when the checkpoint's binlog file is gone
// from the server (purged), with the recovery command. It only judges
// checkpoints taken on this server: after a failover the file names differ
// and the GTID set decides (the server refuses a purged GTID, see
// explainStreamError).
func (p *Pipeline) checkPositionOnServer(ctx context.Context, pos change.Position) error {
	if pos.File == "" {
		return nil
	}
	logs, err := p.env.Lookup.BinaryLogs(ctx)
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
func (p *Pipeline) explainStreamError(err error) error {
	if errors.Is(err, canal.ErrPositionGone) {
		oldest := "unknown"
		if logs, lerr := p.env.Lookup.BinaryLogs(context.Background()); lerr == nil && len(logs) > 0 {
			oldest = logs[0].Name + ":4"
		}
		return fmt.Errorf("%w (%v)", positionGone(p.lastPosition(), oldest), err)
	}
	return fmt.Errorf("binlog: %w", err)
}

func (p *Pipeline) lastPosition() change.Position {
	cp, _, err := p.env.Ckpt.Load(context.Background())
	if err != nil {
		return change.Position{}
	}
	return cp.Pos
}

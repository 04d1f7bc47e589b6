package main

// The checkpoint subcommands that change it: set, reset, rollback (and
// history, which lists the changes). Each runs under the pipeline's lease
// (ckptCmd.exclusive) and is recorded in the history.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/internal/clients"
	"dialsync/internal/preflight"
	"dialsync/internal/reconcile"
)

// --- set ---

func (c *ckptCmd) set(ctx context.Context) error {
	flavor := c.env.Cfg.Source.Flavor
	pos := change.Position{File: c.file, Pos: c.pos}
	if c.gtid != "" {
		set, err := mysql.ParseGTIDSet(flavor, c.gtid)
		if err != nil {
			return usagef("checkpoint set: --gtid %q is not a valid %s GTID set: %v", c.gtid, flavor, err)
		}
		if set.IsEmpty() {
			return usagef("checkpoint set: --gtid is empty; to start over use `dialsync checkpoint reset`")
		}
		pos.GTIDSet = set.String()
	}
	return c.exclusive(ctx, !c.force, func(ctx context.Context) error {
		if !c.force {
			if err := c.validateOnServer(ctx, pos); err != nil {
				return err
			}
		}
		return c.change(ctx, "set", func(ctx context.Context) error {
			return c.store().Set(ctx, pos, actor(), c.reason)
		})
	})
}

// validateOnServer checks pos against the source: the file is listed and
// pos is a transaction boundary in it; a GTID set is neither purged nor
// beyond what the server has.
func (c *ckptCmd) validateOnServer(ctx context.Context, pos change.Position) error {
	src := c.source()
	defer src.Close()
	const hint = " (--force stores it anyway)"
	logs, err := src.BinaryLogs(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint set: cannot check the position on the source: %w%s", clients.Redact(err, c.env.Cfg), hint)
	}
	if pos.File != "" {
		i := preflight.FindLog(logs, pos.File)
		if i < 0 {
			names := make([]string, len(logs))
			for j, l := range logs {
				names[j] = l.Name
			}
			return usagef("checkpoint set: binlog %s is not on the source (it has %s)%s", pos.File, strings.Join(names, ", "), hint)
		}
		if uint64(pos.Pos) > logs[i].Size {
			return usagef("checkpoint set: --pos %d is past the end of %s (%d bytes)%s", pos.Pos, pos.File, logs[i].Size, hint)
		}
		b, err := src.TxnBoundary(ctx, pos.File, pos.Pos)
		if err != nil {
			return fmt.Errorf("checkpoint set: read the events of %s: %w%s", pos.File, err, hint)
		}
		if !b.OK {
			near := fmt.Sprintf("%d", b.Before)
			if b.After != 0 {
				near += fmt.Sprintf(" and %d", b.After)
			}
			return usagef("checkpoint set: %s:%d is not a transaction boundary (resuming there would split a transaction); the nearest boundaries are %s%s",
				pos.File, pos.Pos, near, hint)
		}
		return nil
	}
	// No server identity: the position is judged on this server only (the
	// identity stored with it is this server's, see exclusive).
	v, err := src.DiagnosePosition(ctx, c.env.Cfg.Source.Flavor, checkpoint.Checkpoint{Pos: pos})
	if err != nil {
		return fmt.Errorf("checkpoint set: cannot check the GTID set on the source: a query failed: %w%s", clients.Redact(err, c.env.Cfg), hint)
	}
	if !v.OK() {
		return usagef("checkpoint set: --gtid %s: %s%s", pos.GTIDSet, v.Detail, hint)
	}
	return nil
}

// change runs a checkpoint change and reports old -> new with its history
// entry.
func (c *ckptCmd) change(ctx context.Context, what string, fn func(context.Context) error) error {
	if err := fn(ctx); err != nil {
		return err
	}
	h, err := c.store().History(ctx, 1)
	if err != nil || len(h) == 0 {
		return err
	}
	e := h[0]
	fmt.Fprintf(c.stdout, "checkpoint %s: %s -> %s (history entry %d, by %s: %s)\n",
		what, posText(e.Old), posText(e.New), e.ID, e.Actor, e.Reason)
	return nil
}

func posText(p change.Position) string {
	if p.IsZero() {
		return "(none)"
	}
	return p.String()
}

// --- reset ---

func (c *ckptCmd) reset(ctx context.Context) error {
	return c.exclusive(ctx, true, func(ctx context.Context) error {
		if !c.toHead {
			if err := c.change(ctx, "reset", func(ctx context.Context) error {
				return c.store().Reset(ctx, actor(), c.reason)
			}); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, "the next `dialsync run` bootstraps: records the source head, reconciles the whole queue, then streams")
			return nil
		}
		// The same order as a bootstrap (docs/design.md, bootstrap): record
		// the head FIRST, then reconcile. Changes made during the reconcile
		// are in the binlog after the head, so the next run recomputes them
		// again.
		head, err := canal.Head(ctx, c.env.Canal)
		if err != nil {
			return fmt.Errorf("checkpoint reset: read the source head: %w", err)
		}
		if err := c.change(ctx, "reset to head", func(ctx context.Context) error {
			return c.store().Set(ctx, head, actor(), c.reason)
		}); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, "reconciling the whole queue (the binlog before the head was skipped)...")
		sum, err := c.reconcile(ctx)
		if err != nil {
			// A checkpoint at the head with an unreconciled queue would
			// stream on from wrong state. Removing it makes the next run
			// bootstrap, which records the head and reconciles itself.
			why := "automatic: the reconcile after reset --to-head failed, so the next run bootstraps"
			if rerr := c.store().Reset(context.WithoutCancel(ctx), actor(), why); rerr != nil {
				return fmt.Errorf("checkpoint reset: the reconcile failed (%w) and removing the checkpoint failed too (%v): do NOT start dialsync; run `dialsync checkpoint reset --reason ...` once PostgreSQL answers", err, rerr)
			}
			return fmt.Errorf("checkpoint reset: the reconcile failed: %w; the checkpoint was removed instead, so the next run bootstraps (records the head and reconciles)", err)
		}
		fmt.Fprintf(c.stdout, "reconcile done: %d users, %d queued, %d entered, %d left, %d changed, in %s\n",
			sum.Users, sum.Queued, sum.Entered, sum.Left, sum.Changed, sum.Took.Round(time.Millisecond))
		return nil
	})
}

// reconcile runs a full reconcile through an apply loop, as run's
// bootstrap does, then stops the loop.
func (c *ckptCmd) reconcile(ctx context.Context) (reconcile.Summary, error) {
	if err := c.env.ConnectSinks(ctx); err != nil {
		return reconcile.Summary{}, err
	}
	loop := c.env.NewLoop(c.log, nil)
	lctx, cancel := context.WithCancel(ctx)
	loopErr := make(chan error, 1)
	go func() { loopErr <- loop.Run(lctx) }()
	sum, err := c.env.NewReconciler(loop, c.log).Run(lctx, reconcile.Options{Trigger: "manual"})
	cancel()
	if lerr := <-loopErr; err == nil && lerr != nil {
		err = lerr
	}
	return sum, err
}

// --- history ---

func (c *ckptCmd) history(ctx context.Context) error {
	hs, err := c.store().History(ctx, c.limit)
	if err != nil {
		return err
	}
	if c.json {
		type entry struct {
			ID     int64     `json:"id"`
			At     time.Time `json:"at"`
			Actor  string    `json:"actor"`
			Reason string    `json:"reason"`
			Old    *posJSON  `json:"old"`
			New    *posJSON  `json:"new"`
			Epoch  int64     `json:"epoch"`
		}
		out := make([]entry, len(hs))
		for i, h := range hs {
			out[i] = entry{h.ID, h.At, h.Actor, h.Reason, toPosJSON(h.Old), toPosJSON(h.New), h.Epoch}
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(hs) == 0 {
		fmt.Fprintf(c.stdout, "no checkpoint changes recorded for pipeline %s\n", c.env.Cfg.Pipeline.Name)
		return nil
	}
	w := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tAT\tACTOR\tOLD\tNEW\tREASON")
	for _, h := range hs {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.At.Format(time.RFC3339), h.Actor, posText(h.Old), posText(h.New), h.Reason)
	}
	return w.Flush()
}

// --- rollback ---

func (c *ckptCmd) rollback(ctx context.Context) error {
	return c.exclusive(ctx, false, func(ctx context.Context) error {
		hs, err := c.store().History(ctx, 0)
		if err != nil {
			return err
		}
		var target *checkpoint.HistoryEntry
		for i := range hs {
			if hs[i].ID == c.to {
				target = &hs[i]
			}
		}
		if target == nil {
			return usagef("checkpoint rollback: no history entry %d for pipeline %s (see dialsync checkpoint history)", c.to, c.env.Cfg.Pipeline.Name)
		}
		if !c.force && !target.New.IsZero() {
			src := c.source()
			defer src.Close()
			v, err := src.DiagnosePosition(ctx, c.env.Cfg.Source.Flavor, checkpoint.Checkpoint{Pos: target.New})
			if err != nil {
				return fmt.Errorf("checkpoint rollback: cannot check the position on the source: a query failed: %w (--force skips the check)", clients.Redact(err, c.env.Cfg))
			}
			if !v.OK() {
				return usagef("checkpoint rollback: entry %d's position %s is no longer usable: %s (--force stores it anyway)", c.to, target.New, v.Detail)
			}
		}
		return c.change(ctx, "rollback", func(ctx context.Context) error {
			err := c.store().Rollback(ctx, c.to, actor(), c.reason)
			if errors.Is(err, checkpoint.ErrNoHistoryEntry) {
				return usagef("checkpoint rollback: no history entry %d for pipeline %s", c.to, c.env.Cfg.Pipeline.Name)
			}
			return err
		})
	})
}

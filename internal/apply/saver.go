package apply

import (
	"context"
	"maps"
	"time"

	"dialsync/change"
)

// The checkpoint saver: the newest durable position is written off the
// critical path while later batches proceed.

// saveReq is a checkpoint write waiting for the saver: the newest durable
// position, the claim owners learned up to it, and the outbox messages
// published up to it (deleted with it).
type saveReq struct {
	pos              change.Position
	owners, pointers map[uint64]uint64
	outbox           []string
}

// queueSave hands the saver a newer position, merging with one it has not
// taken yet (later owners win).
func (l *Loop) queueSave(r saveReq) {
	l.saveMu.Lock()
	if n := l.saveNext; n != nil {
		if !r.pos.IsZero() {
			n.pos = r.pos
		}
		maps.Copy(n.owners, r.owners)
		maps.Copy(n.pointers, r.pointers)
		n.outbox = append(n.outbox, r.outbox...)
	} else {
		l.saveNext = &r
	}
	l.saveMu.Unlock()
	select {
	case l.saveKick <- struct{}{}:
	default:
	}
}

// saver writes checkpoints off the loop's critical path: a batch's notices
// are out as soon as its effects are durable, and the checkpoint write (and
// the outbox cleanup) overlaps the next batch. It writes positions in the
// order the loop hands them over, only ever after their effects are
// durable, so invariant 1 holds. When ctx ends it writes what is pending
// and returns.
func (l *Loop) saver(ctx, work context.Context) {
	for {
		l.saveMu.Lock()
		req := l.saveNext
		l.saveNext = nil
		l.saving = req != nil
		l.saveMu.Unlock()
		if req == nil {
			select {
			case <-l.saveKick:
				continue
			case <-ctx.Done():
				l.saveMu.Lock()
				pending := l.saveNext != nil
				l.saveMu.Unlock()
				if !pending {
					return
				}
				continue
			}
		}
		t0 := time.Now()
		// Retries end with the stop grace period (work is not cancelled by a
		// stop signal at once): a clean stop must store its checkpoint, but a
		// PostgreSQL that refuses every write must not hold it forever.
		err := l.retry(work, StagePostgres, "clear outbox", func() error { return l.deps.Queue.DeleteOutbox(work, req.outbox) })
		if err == nil && !req.pos.IsZero() {
			err = l.retry(work, StageCheckpoint, "save checkpoint", func() error { return l.deps.Checkpoint.Save(work, req.pos, req.owners, req.pointers) })
		}
		l.saveMu.Lock()
		l.saving = false
		l.saveMu.Unlock()
		select {
		case l.saveIdle <- struct{}{}:
		default:
		}
		if err != nil {
			select {
			case l.saveErr <- err:
			default:
			}
			return
		}
		if l.cfg.OnSaved != nil && !req.pos.IsZero() {
			l.cfg.OnSaved(req.pos, time.Since(t0))
		}
	}
}

// waitSaved blocks until the saver has written everything handed to it.
func (l *Loop) waitSaved(ctx context.Context) error {
	for {
		l.saveMu.Lock()
		busy := l.saveNext != nil || l.saving
		l.saveMu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-l.saveIdle:
		case err := <-l.saveErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

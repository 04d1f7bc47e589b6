package apply

import (
	"context"
	"maps"
	"time"

	"dialsync/change"
	"dialsync/internal/idmap"
)

// The checkpoint saver: the newest durable position is written off the
// critical path while later batches proceed.

// saveReq is a checkpoint write waiting for the saver: the newest durable
// position, the claim owners learned up to it, and the outbox messages
// published up to it (deleted with it).
type saveReq struct {
	pos              change.Position
	owners, pointers map[uint64]uint64
	// A whole map due with this checkpoint (seeded from the lookup server),
	// which then includes what owners/pointers would hold.
	wholeOwners, wholePointers *idmap.Map
	outbox                     []string
}

// WholeSaver is a Checkpointer that stores whole compact maps without
// copying them into Go maps (checkpoint.Store.SaveWhole); with one that is
// not, the whole maps are passed to Save as Go maps.
type WholeSaver interface {
	SaveWhole(ctx context.Context, pos change.Position, owners, pointers *idmap.Map) error
}

// mergeMap folds a newer request's map entries into a pending one's
// (later entries win) and returns the pending delta map.
func mergeMap(whole **idmap.Map, delta map[uint64]uint64, newer map[uint64]uint64, newerWhole *idmap.Map) map[uint64]uint64 {
	if newerWhole != nil {
		*whole = newerWhole // it includes every earlier entry
		return map[uint64]uint64{}
	}
	if *whole != nil {
		for k, v := range newer {
			(*whole).Set(k, v)
		}
		return delta
	}
	maps.Copy(delta, newer)
	return delta
}

// save stores req's position with its map entries.
func (l *Loop) save(ctx context.Context, req *saveReq) error {
	if req.wholeOwners == nil && req.wholePointers == nil {
		return l.deps.Checkpoint.Save(ctx, req.pos, req.owners, req.pointers)
	}
	owners, pointers := req.wholeOwners, req.wholePointers
	if owners == nil {
		owners = idmap.FromMap(req.owners)
	}
	if pointers == nil {
		pointers = idmap.FromMap(req.pointers)
	}
	if w, ok := l.deps.Checkpoint.(WholeSaver); ok {
		return w.SaveWhole(ctx, req.pos, owners, pointers)
	}
	plain := func(m *idmap.Map) map[uint64]uint64 {
		out := make(map[uint64]uint64, m.Len())
		m.Range(func(k, v uint64) bool { out[k] = v; return true })
		return out
	}
	return l.deps.Checkpoint.Save(ctx, req.pos, plain(owners), plain(pointers))
}

// queueSave hands the saver a newer position, merging with one it has not
// taken yet (later owners win).
func (l *Loop) queueSave(r saveReq) {
	l.saveMu.Lock()
	if n := l.saveNext; n != nil {
		if !r.pos.IsZero() {
			n.pos = r.pos
		}
		n.owners = mergeMap(&n.wholeOwners, n.owners, r.owners, r.wholeOwners)
		n.pointers = mergeMap(&n.wholePointers, n.pointers, r.pointers, r.wholePointers)
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
			err = l.retry(work, StageCheckpoint, "save checkpoint", func() error { return l.save(work, req) })
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

package apply

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/idmap"
)

// Resolution: which users each change of a batch touches. Claims resolve
// through the claim -> user map and addresses through the user ->
// current_user_address_id map, both kept AS OF the change's place in the
// binlog (updated in binlog order as claims and users rows go by), because
// the lookup server may already show a claim moved or deleted, or a user
// moved, by a later transaction. What the maps do not know is looked up once
// for the whole batch.

// SetOwners seeds the claim -> user map (from the map stored with the
// checkpoint, or at a bootstrap from the lookup server). With dirty set,
// the whole map is stored with the next checkpoint. Call before Run.
func (l *Loop) SetOwners(m map[uint64]uint64, dirty bool) { l.SeedOwners(idmap.FromMap(m), dirty) }

// SeedOwners is SetOwners with a compact map, which the loop then owns.
func (l *Loop) SeedOwners(m *idmap.Map, dirty bool) { l.owners.seed(m, dirty) }

// SetPointers seeds the user -> current_user_address_id map like
// SetOwners. Until it is called, address changes resolve on the lookup
// server instead (which may already show later pointer changes).
func (l *Loop) SetPointers(m map[uint64]uint64, dirty bool) { l.SeedPointers(idmap.FromMap(m), dirty) }

// SeedPointers is SetPointers with a compact map, which the loop then owns.
func (l *Loop) SeedPointers(m *idmap.Map, dirty bool) {
	l.pointers.seed(m, dirty)
	l.pointed = &idmap.Pairs{}
	l.pointed.Rebuild(m)
}

// setPointer records that user points at addr (0: nowhere). The reverse
// index only gains entries: it yields candidates that resolveRefs checks
// against the pointers map, so the user's old address needs no removal.
func (l *Loop) setPointer(user, addr uint64, partial bool) {
	l.pointers.set(user, addr, partial)
	l.pointed.Add(addr, user, l.pointers.m)
}

// tracked is a map kept as of the binlog position being applied, with the
// entries changed since the last checkpoint (stored with it, so the stored
// map always matches the stored position). The map itself is compact
// (internal/idmap: it holds one entry per claim or user); the changes
// since the last checkpoint are a Go map, bounded by what a batch teaches.
type tracked struct {
	m     *idmap.Map
	dirty map[uint64]uint64
	// whole: the whole map goes with the next checkpoint (seeded from the
	// lookup server, not from the stored maps).
	whole bool
	// Entries changed by the pieces of a large transaction not yet ended:
	// they join dirty at its last piece, so the map stored with a
	// checkpoint never runs ahead of that checkpoint.
	dirtyPartial map[uint64]uint64
	// While whole: each key's value before the unfinished large
	// transaction's pieces first set it.
	undo map[uint64]undo
}

type undo struct {
	v   uint64
	had bool
}

func newTracked() *tracked {
	return &tracked{m: idmap.New(0), dirty: map[uint64]uint64{}, dirtyPartial: map[uint64]uint64{}}
}

func (t *tracked) seed(m *idmap.Map, whole bool) {
	t.m = m
	t.whole = t.whole || whole
}

func (t *tracked) set(k, v uint64, partial bool) {
	if partial && t.whole {
		if _, seen := t.undo[k]; !seen {
			if t.undo == nil {
				t.undo = map[uint64]undo{}
			}
			old, had := t.m.Get(k)
			t.undo[k] = undo{v: old, had: had}
		}
	}
	t.m.Set(k, v)
	if partial {
		t.dirtyPartial[k] = v
	} else {
		t.dirty[k] = v
	}
}

// endTxn is called at the last piece of a large transaction.
func (t *tracked) endTxn() {
	for k, v := range t.dirtyPartial {
		if _, ok := t.dirty[k]; !ok {
			t.dirty[k] = v
		}
	}
	clear(t.dirtyPartial)
	t.undo = nil
}

// take hands over the dirty entries (for a checkpoint save), or, when the
// whole map is due, a copy of it as of the checkpoint: without what the
// pieces of an unfinished large transaction set (they join at its last
// piece, as dirty entries).
func (t *tracked) take() (map[uint64]uint64, *idmap.Map) {
	if !t.whole {
		d := t.dirty
		t.dirty = map[uint64]uint64{}
		return d, nil
	}
	w := t.m.Clone()
	for k, u := range t.undo {
		if u.had {
			w.Set(k, u.v)
		} else {
			w.Delete(k)
		}
	}
	t.whole, t.undo = false, nil
	t.dirty = map[uint64]uint64{}
	return t.dirty, w
}

// touch is one (transaction, user) pair of a batch.
type touch struct {
	txn  int // index into the batch
	user uint64
	agg  *handlers.UserChanges
}

// pendingRef is a reference the maps could not resolve.
type pendingRef struct {
	ref handlers.Ref
	txn int
	c   *change.Change
}

// resolution is what resolving a batch found.
type resolution struct {
	touches map[[2]uint64]*handlers.UserChanges // {txn index, user}
	order   []touch                             // in the order first touched
	users   []uint64                            // every touched user (repeats until deduped)
	later   []pendingRef                        // left for the lookup server
}

// touch records that change c of transaction txn touches user.
func (r *resolution) touch(txn int, user uint64, c *change.Change) {
	k := [2]uint64{uint64(txn), user}
	a := r.touches[k]
	if a == nil {
		a = &handlers.UserChanges{}
		r.touches[k] = a
		r.order = append(r.order, touch{txn: txn, user: user, agg: a})
		r.users = append(r.users, user)
	}
	a.Add(c)
}

// resolveFromMaps runs the handlers over every change of batch, resolves
// what the maps know and keeps the maps up to date with what the changes
// teach. A change the handlers reject is a dead letter (by table policy)
// or halts the batch with ErrPoison. It also counts the batch into st.
func (l *Loop) resolveFromMaps(batch []*change.Txn, st *BatchStats) (*resolution, error) {
	r := &resolution{touches: make(map[[2]uint64]*handlers.UserChanges)}
	for i, t := range batch {
		for j := range t.Changes {
			c := &t.Changes[j]
			st.Changes++
			st.Rows[RowKey{c.Table, c.Op}]++
			l.res.Reset()
			if err := handlers.Handle(c, &l.res); err != nil {
				if l.cfg.DeadLetter == nil || !l.cfg.DeadLetter(c.Table) {
					return nil, fmt.Errorf("handle %s %s at %s (txn %s): %w: %w", c.Op, c.Table, t.End, t.ID(), ErrPoison, err)
				}
				st.DeadLetters = append(st.DeadLetters, DeadLetter{End: t.End, GTID: t.GTID, Txn: t.ID(),
					Table: c.Table, Op: c.Op, Seq: j, PrimaryKey: primaryKey(c), Err: err.Error()})
				l.log.Warn("row set aside as a dead letter (tables.on_error = dead_letter)",
					"table", c.Table, "op", c.Op.String(), "pos", t.End.String(), "txn", t.ID(), "err", err)
				continue
			}
			l.resolveRefs(r, i, c)
			l.learn(t.Partial)
		}
		if !t.Partial && t.Piece > 0 {
			l.owners.endTxn()
			l.pointers.endTxn()
		}
		if !t.Partial && !t.CommitTime.IsZero() {
			st.NewestCommit = t.CommitTime
		}
	}
	return r, nil
}

// resolveRefs resolves the refs the handlers found for change c of
// transaction txn (in l.res) through the maps, or leaves them for the
// lookup server.
func (l *Loop) resolveRefs(r *resolution, txn int, c *change.Change) {
	for _, ref := range l.res.Refs {
		switch ref.Kind {
		case handlers.User:
			r.touch(txn, ref.ID, c)
		case handlers.Claim:
			if u, ok := l.owners.m.Get(ref.ID); ok {
				r.touch(txn, u, c)
			} else {
				r.later = append(r.later, pendingRef{ref: ref, txn: txn, c: c})
			}
		case handlers.Address:
			if l.pointed == nil {
				r.later = append(r.later, pendingRef{ref: ref, txn: txn, c: c})
				continue
			}
			for _, u := range l.pointed.Keys(ref.ID, l.pointers.m) {
				r.touch(txn, u, c)
			}
		}
	}
}

// learn updates the maps with the owners and pointers the handlers found
// (in l.res). It runs after resolveRefs: a claim's own change already names
// both its old and new user.
func (l *Loop) learn(partial bool) {
	for _, o := range l.res.Learned {
		l.owners.set(o.Claim, o.User, partial)
	}
	if l.pointed != nil {
		for _, p := range l.res.Pointers {
			l.setPointer(p.User, p.Address, partial)
		}
	}
}

// resolveFromLookup resolves the refs the maps did not know on the lookup
// server: one lookup for the batch's claims and one for its addresses. A
// claim unknown there too is counted and logged, never dropped silently.
func (l *Loop) resolveFromLookup(work, stop context.Context, batch []*change.Txn, st *BatchStats, r *resolution) error {
	var claims, addrs []uint64
	for _, p := range r.later {
		if p.ref.Kind == handlers.Claim {
			claims = append(claims, p.ref.ID)
		} else {
			addrs = append(addrs, p.ref.ID)
		}
	}
	claims = dedupe(claims)
	addrs = dedupe(addrs)
	var claimOwners map[uint64]uint64
	var addrUsers map[uint64][]uint64
	if len(claims) > 0 {
		if err := l.retry(stop, StageLookup, "lookup claims", func() (err error) {
			claimOwners, err = l.deps.Lookup.ClaimOwners(work, claims)
			return err
		}); err != nil {
			return err
		}
	}
	if len(addrs) > 0 {
		if err := l.retry(stop, StageLookup, "lookup addresses", func() (err error) {
			addrUsers, err = l.deps.Lookup.AddressUsers(work, addrs)
			return err
		}); err != nil {
			return err
		}
	}
	for _, p := range r.later {
		switch p.ref.Kind {
		case handlers.Claim:
			u, ok := claimOwners[p.ref.ID]
			if !ok {
				st.Unresolved++
				l.log.Warn("change not resolved to a user: claim unknown to the claim map and the lookup server",
					"table", p.c.Table, "claim_id", p.ref.ID, "txn", batch[p.txn].ID(), "pos", batch[p.txn].End.String())
				continue
			}
			r.touch(p.txn, u, p.c)
		case handlers.Address:
			for _, u := range addrUsers[p.ref.ID] {
				r.touch(p.txn, u, p.c)
			}
		}
	}
	return nil
}

// primaryKey is rowID as text ("" when unknown); ids are not row values
// worth hiding.
func primaryKey(c *change.Change) string {
	if id, ok := rowID(c); ok {
		return strconv.FormatUint(id, 10)
	}
	return ""
}

func dedupe(ids []uint64) []uint64 {
	if len(ids) < 2 {
		return ids
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

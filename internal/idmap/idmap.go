// Package idmap holds the apply loop's id -> id maps (claim -> user, user ->
// current_user_address_id) compactly: they hold one entry per claim or user
// of the source, so they grow with the data (docs/design.md, invariant 7).
//
// A Map is a base of two sorted []uint32 (8 bytes an entry, searched by
// binary search) plus a small Go map of the entries the base cannot hold:
// keys inserted since the last merge, and ids above 2^32-1. Ids are
// BIGINT UNSIGNED, so every operation keeps uint64 semantics; an entry
// whose key or value does not fit 32 bits simply stays in the Go map (at
// the Go map's ~40 bytes an entry, as before this package). Updating a key
// the base holds is done in place; new keys are merged into the base once
// they are more than a sixteenth of it, in place when the slices' spare
// capacity allows. So a map loaded in key order (Append) costs 8 bytes an
// entry, about a third of a map[uint64]uint64.
package idmap

import (
	"cmp"
	"math"
	"slices"
)

// Map is a compact map[uint64]uint64. The zero value is empty and ready.
// It is not safe for concurrent use.
type Map struct {
	keys, vals []uint32          // the base, sorted by key
	extra      map[uint64]uint64 // overrides and extends the base
	wide       int               // entries of extra that can never join the base
}

// New returns an empty Map with room for n entries in its base.
func New(n int) *Map {
	return &Map{keys: make([]uint32, 0, n), vals: make([]uint32, 0, n)}
}

// FromMap copies a Go map.
func FromMap(m map[uint64]uint64) *Map {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := New(len(keys))
	for _, k := range keys {
		out.Append(k, m[k])
	}
	return out
}

func narrow(k, v uint64) bool { return k <= math.MaxUint32 && v <= math.MaxUint32 }

// Len is the number of entries.
func (m *Map) Len() int {
	n := len(m.keys) + len(m.extra)
	for k := range m.extra {
		if k <= math.MaxUint32 {
			if _, ok := m.search(uint32(k)); ok {
				n-- // an override of a base entry
			}
		}
	}
	return n
}

func (m *Map) search(k uint32) (int, bool) { return slices.BinarySearch(m.keys, k) }

// Get returns k's value.
func (m *Map) Get(k uint64) (uint64, bool) {
	if v, ok := m.extra[k]; ok {
		return v, true
	}
	if k > math.MaxUint32 {
		return 0, false
	}
	if i, ok := m.search(uint32(k)); ok {
		return uint64(m.vals[i]), true
	}
	return 0, false
}

// Append adds k -> v; in key order (every k above the last) it goes
// straight into the base, otherwise it is Set.
func (m *Map) Append(k, v uint64) {
	if narrow(k, v) && len(m.extra) == m.wide && (len(m.keys) == 0 || uint32(k) > m.keys[len(m.keys)-1]) {
		m.keys = append(m.keys, uint32(k))
		m.vals = append(m.vals, uint32(v))
		return
	}
	m.Set(k, v)
}

// Set sets k -> v.
func (m *Map) Set(k, v uint64) {
	if k <= math.MaxUint32 {
		if i, ok := m.search(uint32(k)); ok {
			if v <= math.MaxUint32 {
				m.vals[i] = uint32(v)
				if old, over := m.extra[k]; over {
					if !narrow(k, old) {
						m.wide--
					}
					delete(m.extra, k)
				}
				return
			}
		}
	}
	if m.extra == nil {
		m.extra = map[uint64]uint64{}
	}
	old, had := m.extra[k]
	switch {
	case had && !narrow(k, old) && narrow(k, v):
		m.wide--
	case (!had || narrow(k, old)) && !narrow(k, v):
		m.wide++
	}
	m.extra[k] = v
	if n := len(m.extra) - m.wide; n > 1024 && n > len(m.keys)/16 {
		m.merge()
	}
}

// Delete removes k (from the base by shifting it: O(n), for rare use).
func (m *Map) Delete(k uint64) {
	if old, ok := m.extra[k]; ok {
		if !narrow(k, old) {
			m.wide--
		}
		delete(m.extra, k)
	}
	if k <= math.MaxUint32 {
		if i, ok := m.search(uint32(k)); ok {
			m.keys = slices.Delete(m.keys, i, i+1)
			m.vals = slices.Delete(m.vals, i, i+1)
		}
	}
}

// merge moves the narrow new keys of extra into the base.
func (m *Map) merge() {
	var add []uint64
	for k, v := range m.extra {
		if narrow(k, v) {
			add = append(add, k)
		}
	}
	slices.Sort(add)
	n, a := len(m.keys), len(add)
	if cap(m.keys) < n+a || cap(m.vals) < n+a {
		c := (n + a) + (n+a)/8 // room for the next merges in place
		m.keys = append(make([]uint32, 0, c), m.keys...)
		m.vals = append(make([]uint32, 0, c), m.vals...)
	}
	m.keys, m.vals = m.keys[:n+a], m.vals[:n+a]
	// Merge from the back, so the base is rewritten in place.
	i, j := n-1, a-1
	for w := n + a - 1; j >= 0; w-- {
		if i >= 0 && m.keys[i] > uint32(add[j]) {
			m.keys[w], m.vals[w] = m.keys[i], m.vals[i]
			i--
		} else {
			m.keys[w], m.vals[w] = uint32(add[j]), uint32(m.extra[add[j]])
			delete(m.extra, add[j])
			j--
		}
	}
	if len(m.extra) == 0 {
		m.extra = nil // let a burst of inserts' map go
	}
}

// Range calls fn for every entry (the base in key order, then the rest)
// until fn returns false.
func (m *Map) Range(fn func(k, v uint64) bool) {
	for i, k := range m.keys {
		v := uint64(m.vals[i])
		if o, ok := m.extra[uint64(k)]; ok {
			v = o
		}
		if !fn(uint64(k), v) {
			return
		}
	}
	for k, v := range m.extra {
		if k <= math.MaxUint32 {
			if _, ok := m.search(uint32(k)); ok {
				continue // ranged with the base
			}
		}
		if !fn(k, v) {
			return
		}
	}
}

// Clone returns an independent copy (the base at its length).
func (m *Map) Clone() *Map {
	c := &Map{keys: slices.Clone(m.keys), vals: slices.Clone(m.vals), wide: m.wide}
	if len(m.extra) > 0 {
		c.extra = make(map[uint64]uint64, len(m.extra))
		for k, v := range m.extra {
			c.extra[k] = v
		}
	}
	return c
}

// Bytes is the memory the map holds, approximately (the Go map at 40 bytes
// an entry).
func (m *Map) Bytes() int { return 4*(cap(m.keys)+cap(m.vals)) + 40*len(m.extra) }

// Pairs is a compact multimap (value -> keys) of a Map, reversed: the
// users pointing at each address. It is an index, not the truth: every
// candidate it yields must be checked against the forward Map, so moving a
// key to another value only adds (Add) and never has to remove.
type Pairs struct {
	base  []uint64            // value<<32 | key, sorted, when both fit 32 bits
	extra map[uint64][]uint64 // value -> keys added since the last Rebuild, or too wide
	added int
}

// Rebuild indexes every entry of fwd with a non-zero value, dropping what
// was added since.
func (p *Pairs) Rebuild(fwd *Map) {
	n := 0
	fwd.Range(func(k, v uint64) bool {
		if v != 0 && narrow(k, v) {
			n++
		}
		return true
	})
	base := p.base[:0]
	if cap(base) < n {
		base = make([]uint64, 0, n)
	}
	p.extra, p.added = nil, 0
	fwd.Range(func(k, v uint64) bool {
		switch {
		case v == 0:
		case narrow(k, v):
			base = append(base, v<<32|k)
		default:
			p.add(v, k) // too wide for the base: not counted as added
		}
		return true
	})
	slices.Sort(base)
	p.base = base
}

func (p *Pairs) add(v, k uint64) {
	if p.extra == nil {
		p.extra = map[uint64][]uint64{}
	}
	p.extra[v] = append(p.extra[v], k)
}

// Add records that k now maps to v (v != 0). When what was added since the
// last Rebuild outgrows a sixteenth of the base, the index is rebuilt from
// fwd (which must already hold k -> v).
func (p *Pairs) Add(v, k uint64, fwd *Map) {
	if v == 0 {
		return
	}
	p.add(v, k)
	if !narrow(k, v) {
		return
	}
	if p.added++; p.added > 1024 && p.added > len(p.base)/16 {
		p.Rebuild(fwd)
	}
}

// Keys returns the keys that map to v in fwd, sorted, without repeats.
func (p *Pairs) Keys(v uint64, fwd *Map) []uint64 {
	var out []uint64
	check := func(k uint64) {
		if cur, ok := fwd.Get(k); ok && cur == v {
			out = append(out, k)
		}
	}
	if v <= math.MaxUint32 && v != 0 {
		lo := v << 32
		i, _ := slices.BinarySearchFunc(p.base, lo, cmp.Compare[uint64])
		for ; i < len(p.base) && p.base[i]>>32 == v; i++ {
			check(p.base[i] & math.MaxUint32)
		}
	}
	for _, k := range p.extra[v] {
		check(k)
	}
	if len(p.extra[v]) > 0 {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}

// Bytes is the memory the index holds, approximately.
func (p *Pairs) Bytes() int { return 8*cap(p.base) + 48*len(p.extra) + 8*p.added }

package idmap

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMapMatchesGoMap drives a Map and a map[uint64]uint64 with the same
// random loads, inserts and updates (ids near 2^32 included, so entries
// move between the base and the overflow) and compares them after each step.
func TestMapMatchesGoMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	id := func() uint64 {
		switch r.IntN(10) {
		case 0:
			return math.MaxUint32 - 2 + uint64(r.IntN(5)) // straddles 2^32
		case 1:
			return math.MaxUint64 - uint64(r.IntN(3))
		}
		return uint64(r.IntN(20_000))
	}
	m, want := New(0), map[uint64]uint64{}
	// A sorted load first, as from ORDER BY id.
	for k := uint64(1); k <= 5000; k += 2 {
		m.Append(k, k*3)
		want[k] = k * 3
	}
	check := func(step int) {
		t.Helper()
		if m.Len() != len(want) {
			t.Fatalf("step %d: Len %d, want %d", step, m.Len(), len(want))
		}
		seen := map[uint64]bool{}
		m.Range(func(k, v uint64) bool {
			if seen[k] {
				t.Fatalf("step %d: Range repeated %d", step, k)
			}
			seen[k] = true
			if w, ok := want[k]; !ok || w != v {
				t.Fatalf("step %d: Range %d -> %d, want %d (%v)", step, k, v, w, ok)
			}
			return true
		})
		if len(seen) != len(want) {
			t.Fatalf("step %d: Range gave %d entries, want %d", step, len(seen), len(want))
		}
	}
	check(0)
	for step := 1; step <= 60_000; step++ {
		k, v := id(), id()
		if r.IntN(4) == 0 {
			v = uint64(r.IntN(3)) // zero values are values
		}
		if r.IntN(200) == 0 {
			m.Delete(k)
			delete(want, k)
		} else {
			m.Set(k, v)
			want[k] = v
		}
		q := id()
		got, ok := m.Get(q)
		if w, wok := want[q]; ok != wok || got != w {
			t.Fatalf("step %d: Get(%d) = %d, %v; want %d, %v", step, q, got, ok, w, wok)
		}
		if step%5000 == 0 {
			check(step)
		}
	}
	check(-1)
	c := m.Clone()
	c.Set(7, 8)
	if v, _ := m.Get(7); v == 8 && want[7] != 8 {
		t.Fatal("Clone shares storage")
	}
	// Mostly narrow ids end in the base, not the Go map.
	if len(m.keys) < len(want)*9/10 {
		t.Errorf("%d of %d entries in the base", len(m.keys), len(want))
	}
}

func TestAppendOutOfOrderAndFromMap(t *testing.T) {
	src := map[uint64]uint64{5: 1, 3: 2, 1 << 40: 3, 9: 1 << 33, 4: 0}
	for _, m := range []*Map{FromMap(src), func() *Map {
		m := New(2)
		for _, k := range []uint64{5, 3, 1 << 40, 9, 4} {
			m.Append(k, src[k])
		}
		return m
	}()} {
		for k, v := range src {
			if got, ok := m.Get(k); !ok || got != v {
				t.Errorf("Get(%d) = %d, %v; want %d", k, got, ok, v)
			}
		}
		if _, ok := m.Get(6); ok || m.Len() != len(src) {
			t.Errorf("Len %d, Get(6) found %v", m.Len(), ok)
		}
	}
}

// TestPairsMatchesBruteForce: the reverse index yields exactly the keys
// the forward map sends to a value, through moves, rebuilds and wide ids.
func TestPairsMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	fwd := New(0)
	for u := uint64(1); u <= 3000; u++ {
		fwd.Append(u, uint64(r.IntN(2000)))
	}
	var p Pairs
	p.Rebuild(fwd)
	for step := 0; step < 10_000; step++ {
		u := uint64(1 + r.IntN(4000))
		if r.IntN(20) == 0 {
			u = 1<<40 + uint64(r.IntN(3))
		}
		a := uint64(r.IntN(2000))
		if r.IntN(30) == 0 {
			a = 1<<35 + uint64(r.IntN(2))
		}
		fwd.Set(u, a)
		p.Add(a, u, fwd)
		q := uint64(r.IntN(2000))
		if r.IntN(10) == 0 {
			q = a
		}
		var want []uint64
		fwd.Range(func(k, v uint64) bool {
			if v == q && q != 0 {
				want = append(want, k)
			}
			return true
		})
		slices.Sort(want)
		if got := p.Keys(q, fwd); !slices.Equal(got, want) {
			t.Fatalf("step %d: Keys(%d) = %v, want %v", step, q, got, want)
		}
	}
}

// TestCompactSize pins the point of the package: a loaded map of 1.5M
// narrow entries costs about 8 bytes an entry.
func TestCompactSize(t *testing.T) {
	m := New(0)
	for k := uint64(1); k <= 1_500_000; k++ {
		m.Append(k, k/3)
	}
	if b := m.Bytes(); b > 16*1_500_000 {
		t.Errorf("%d bytes for 1.5M entries", b)
	}
	var p Pairs
	p.Rebuild(m)
	if b := p.Bytes(); b > 8*1_500_000+1024 {
		t.Errorf("index: %d bytes for 1.5M entries", b)
	}
}

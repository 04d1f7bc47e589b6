package lookup

import (
	"context"
	"database/sql"
	"testing"
)

// TestMapsReadInPages: AllMaps reads the claim and pointer maps in pages of
// mapPage rows (readMaps, which ConsistentSnapshot shares); every row
// arrives once, across page boundaries, whatever the page size.
func TestMapsReadInPages(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	want := map[string]map[uint64]uint64{"owners": {}, "pointers": {}}
	query(t, db, "SELECT id, user_id FROM claims", func(r *sql.Rows) error {
		var a, b uint64
		err := r.Scan(&a, &b)
		want["owners"][a] = b
		return err
	})
	query(t, db, "SELECT id, current_user_address_id FROM users WHERE current_user_address_id IS NOT NULL", func(r *sql.Rows) error {
		var a, b uint64
		err := r.Scan(&a, &b)
		want["pointers"][a] = b
		return err
	})
	if len(want["owners"]) < 1000 || len(want["pointers"]) < 300 {
		t.Fatalf("seed too small: %d claims, %d pointers", len(want["owners"]), len(want["pointers"]))
	}
	defer func(p int) { mapPage = p }(mapPage)
	for _, page := range []int{7, 1000, 20_000} {
		mapPage = page
		owners, pointers, err := l.AllMaps(context.Background())
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		for what, got := range map[string][]interface {
			Len() int
			Get(uint64) (uint64, bool)
		}{"owners": {owners}, "pointers": {pointers}} {
			for _, m := range got {
				if m.Len() != len(want[what]) {
					t.Errorf("page %d: %s has %d entries, want %d", page, what, m.Len(), len(want[what]))
				}
				for k, v := range want[what] {
					if g, ok := m.Get(k); !ok || g != v {
						t.Fatalf("page %d: %s[%d] = %d, %v; want %d", page, what, k, g, ok, v)
					}
				}
			}
		}
	}
}

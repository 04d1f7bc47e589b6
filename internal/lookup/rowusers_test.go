package lookup

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
)

// RowUsers maps a row of every tracked table to the users it concerns now,
// checked against the relations read directly (and AddressUsers); rows that
// do not exist map to no one.
func TestRowUsers(t *testing.T) {
	name, db := sourceDB(t, small)
	l := openLookup(t, name, "")
	ctx := context.Background()
	check := func(table string, id uint64, want []uint64) {
		t.Helper()
		got, err := l.RowUsers(ctx, table, id)
		if err != nil {
			t.Fatalf("RowUsers(%s, %d): %v", table, id, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("RowUsers(%s, %d) = %v, want %v", table, id, got, want)
		}
	}
	pair := func(q string) (a, b uint64) {
		t.Helper()
		if err := db.QueryRow(q).Scan(&a, &b); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return a, b
	}
	// users: the id itself, even once the row is gone (its queue row may
	// need removing).
	check("users", 7, []uint64{7})
	check("users", 888_888_888, []uint64{888_888_888})
	claim, owner := pair("SELECT id, user_id FROM claims ORDER BY id LIMIT 1")
	check("claims", claim, []uint64{owner})
	req, reqOwner := pair("SELECT r.id, c.user_id FROM claim_requirements r JOIN claims c ON c.id = r.claim_id ORDER BY r.id DESC LIMIT 1")
	check("claim_requirements", req, []uint64{reqOwner})
	pkg, pkgOwner := pair("SELECT v.id, c.user_id FROM claim_vehicle_packages v JOIN claims c ON c.id = v.claim_id ORDER BY v.id LIMIT 1")
	check("claim_vehicle_packages", pkg, []uint64{pkgOwner})
	// A shared address: its own user plus every resident pointing at it.
	var shared uint64
	if err := db.QueryRow(`SELECT current_user_address_id FROM users WHERE current_user_address_id IS NOT NULL
		GROUP BY current_user_address_id HAVING COUNT(*) > 1 LIMIT 1`).Scan(&shared); err != nil {
		t.Fatalf("seed has no shared address: %v", err)
	}
	want, err := l.AddressUsers(ctx, []uint64{shared})
	if err != nil {
		t.Fatal(err)
	}
	if len(want[shared]) < 2 {
		t.Fatalf("address %d: AddressUsers %v, want at least two users", shared, want[shared])
	}
	check("user_addresses", shared, want[shared])
	// Gone rows (and a requirement whose claim is gone) touch no one.
	for _, table := range []string{"claims", "claim_requirements", "claim_vehicle_packages", "user_addresses"} {
		check(table, 888_888_888, nil)
	}
	mustExec(t, db, "DELETE FROM claims WHERE id = (SELECT claim_id FROM claim_requirements WHERE id = ?)", req)
	check("claim_requirements", req, nil)
	if _, err := l.RowUsers(ctx, "audit_log", 1); !errors.Is(err, ErrUntrackedTable) {
		t.Fatalf("untracked table: err %v, want ErrUntrackedTable", err)
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

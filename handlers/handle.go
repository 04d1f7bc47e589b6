package handlers

import (
	"dialsync/change"
	"fmt"
	"strconv"
)

// RowError reports a row image Handle cannot use: a NULL or negative id, a
// value of a type that is not an integer, a missing image or a row shorter
// than the spec. Such a row is "poison": retrying cannot fix it, so the apply
// side halts at its position or sends it to dead letters, by table policy.
//
// The message names the table, the column, the image and the problem, and
// never the value: row values are customer data (docs/design.md: no row
// values in logs), and errors end up in logs.
type RowError struct {
	Table string
	// Column is the column at fault; empty when the problem is the change
	// as a whole (missing image, unknown operation, short row).
	Column string
	// Image is "before" or "after"; empty when the problem is not in one
	// image (unknown operation).
	Image string
	// Problem says what is wrong, without the value.
	Problem string
}

func (e *RowError) Error() string {
	s := "handlers: " + e.Table
	if e.Column != "" {
		s += "." + e.Column
	}
	if e.Image != "" {
		s += " (" + e.Image + " image)"
	}
	return s + ": " + e.Problem
}

type tableKind uint8

const (
	kindUsers tableKind = iota
	kindAddresses
	kindClaims
	kindRequirements
	kindVehiclePackages
)

// kindOf maps a table name to its handler; ok is false for untracked tables.
// A switch on constant strings compiles to length + compare checks: cheap
// enough for every row of every ignored table.
func kindOf(table string) (tableKind, bool) {
	switch table {
	case TableUsers:
		return kindUsers, true
	case TableUserAddresses:
		return kindAddresses, true
	case TableClaims:
		return kindClaims, true
	case TableClaimRequirements:
		return kindRequirements, true
	case TableClaimVehiclePackages:
		return kindVehiclePackages, true
	}
	return 0, false
}

// Handle appends to r the Refs that change c touches (each at most once per
// call) and, for claims, the claim -> user owner its image shows. Changes of
// untracked tables append nothing and return nil.
//
// Rules (the source tables of docs/design.md):
//   - users: User(id).
//   - claims: User(user_id) of the before AND after images, since an update
//     can move a claim between users; Learned{id, user_id} from the after
//     image, or from the before image on delete, so that a later change of
//     one of the claim's requirements still resolves after a hard delete.
//   - claim_requirements, claim_vehicle_packages: Claim(claim_id) of before
//     and after.
//   - user_addresses: User(user_id) and Address(id) of before and after; the
//     apply side resolves Address to the users whose current_user_address_id
//     points at it.
//
// Soft deletes (deleted_at set) are ordinary updates: the user is
// recomputed. Inserts read only the after image, deletes only the before.
//
// On error (a *RowError) r is left exactly as it was. Handle does not
// allocate unless r must grow or it returns an error.
func Handle(c *change.Change, r *Result) error {
	kind, ok := kindOf(c.Table)
	if !ok {
		return nil
	}
	var before, after change.Row
	switch c.Op {
	case change.Insert:
		after = c.After
	case change.Update:
		before, after = c.Before, c.After
	case change.Delete:
		before = c.Before
	default:
		return &RowError{Table: c.Table, Problem: "unknown operation " + strconv.Itoa(int(c.Op))}
	}
	// An update without one of its images, or an insert/delete without its
	// only image, would silently miss a user: treat it as poison.
	if c.Op != change.Insert && before == nil {
		return &RowError{Table: c.Table, Image: "before", Problem: "missing for " + c.Op.String()}
	}
	if c.Op != change.Delete && after == nil {
		return &RowError{Table: c.Table, Image: "after", Problem: "missing for " + c.Op.String()}
	}

	refs, learned, pointers := len(r.Refs), len(r.Learned), len(r.Pointers)
	var owner, beforeOwner Owner
	var err error
	if before != nil {
		owner, err = handleRow(kind, c.Table, "before", before, r, refs)
		beforeOwner = owner
	}
	if err == nil && after != nil {
		owner, err = handleRow(kind, c.Table, "after", after, r, refs)
	}
	if err != nil {
		// Leave r as it was: the caller decides what to do with the
		// whole change, and must not act on half of it.
		r.Refs, r.Learned, r.Pointers = r.Refs[:refs], r.Learned[:learned], r.Pointers[:pointers]
		return err
	}
	if kind == kindClaims {
		// owner is the after image's when there is one, else the
		// before image's (delete).
		r.Learned = append(r.Learned, owner)
	}
	if kind == kindUsers {
		// A deleted user points nowhere; otherwise the after image says.
		if before != nil && after != nil && beforeOwner.User != owner.User {
			r.Pointers = append(r.Pointers, Pointer{User: beforeOwner.User}) // id changed
		}
		p := Pointer{User: owner.User}
		if after != nil {
			p.Address = owner.Claim
		}
		r.Pointers = append(r.Pointers, p)
	}
	return nil
}

// handleRow appends the refs of one row image; refs appended since index
// start are not repeated. For claims it returns the owner the image shows.
func handleRow(kind tableKind, table, image string, row change.Row, r *Result, start int) (Owner, error) {
	cols := ownColumns[kind].cols
	if len(row) < len(cols) {
		return Owner{}, &RowError{Table: table, Image: image,
			Problem: fmt.Sprintf("row has %d columns, want at least %d", len(row), len(cols))}
	}
	switch kind {
	case kindUsers:
		id, err := idAt(table, image, cols, row, colID)
		if err != nil {
			return Owner{}, err
		}
		addRef(r, start, Ref{Kind: User, ID: id})
		// current_user_address_id is nullable: NULL points nowhere. The
		// pair is returned in an Owner (Claim: address, User: user) to
		// keep one return type.
		var addr uint64
		if row[colParent] != nil {
			if addr, err = idAt(table, image, cols, row, colParent); err != nil {
				return Owner{}, err
			}
		}
		return Owner{Claim: addr, User: id}, nil
	case kindAddresses:
		id, err := idAt(table, image, cols, row, colID)
		if err != nil {
			return Owner{}, err
		}
		user, err := idAt(table, image, cols, row, colParent)
		if err != nil {
			return Owner{}, err
		}
		addRef(r, start, Ref{Kind: User, ID: user})
		addRef(r, start, Ref{Kind: Address, ID: id})
	case kindClaims:
		id, err := idAt(table, image, cols, row, colID)
		if err != nil {
			return Owner{}, err
		}
		user, err := idAt(table, image, cols, row, colParent)
		if err != nil {
			return Owner{}, err
		}
		addRef(r, start, Ref{Kind: User, ID: user})
		return Owner{Claim: id, User: user}, nil
	case kindRequirements, kindVehiclePackages:
		// The row's own id is delivered (the contract keeps id at index
		// 0 for every table) but not needed to find the user.
		claim, err := idAt(table, image, cols, row, colParent)
		if err != nil {
			return Owner{}, err
		}
		addRef(r, start, Ref{Kind: Claim, ID: claim})
	}
	return Owner{}, nil
}

// addRef appends ref unless it is among the refs appended since start. A
// change adds at most four refs, so a linear scan beats any map.
func addRef(r *Result, start int, ref Ref) {
	for _, x := range r.Refs[start:] {
		if x == ref {
			return
		}
	}
	r.Refs = append(r.Refs, ref)
}

// idAt reads the id in row[i]. Ids are BIGINT UNSIGNED in the source schema;
// canal (go-mysql) delivers them as int64, or uint64 when the value does not
// fit int64 or the table map carries signedness, and the canal adapter
// normalises to those two; the narrower kinds are accepted so that a source
// using INT ids also works. NULL is an error, not "no user": the schema
// declares these columns NOT NULL, so a NULL means a row image that is not
// FULL (MINIMAL images leave unlogged columns nil) or a schema we do not
// understand, and guessing would lose a user in silence.
func idAt(table, image string, cols []string, row change.Row, i int) (uint64, error) {
	switch v := row[i].(type) {
	case int64:
		if v >= 0 {
			return uint64(v), nil
		}
	case uint64:
		return v, nil
	case int:
		if v >= 0 {
			return uint64(v), nil
		}
	case int32:
		if v >= 0 {
			return uint64(v), nil
		}
	case int16:
		if v >= 0 {
			return uint64(v), nil
		}
	case int8:
		if v >= 0 {
			return uint64(v), nil
		}
	case uint:
		return uint64(v), nil
	case uint32:
		return uint64(v), nil
	case uint16:
		return uint64(v), nil
	case uint8:
		return uint64(v), nil
	case nil:
		return 0, &RowError{Table: table, Column: cols[i], Image: image, Problem: "is NULL"}
	default:
		// %T prints the Go type only (e.g. "string"), never the value.
		return 0, &RowError{Table: table, Column: cols[i], Image: image,
			Problem: fmt.Sprintf("has type %T, want an integer id", v)}
	}
	// Only negative signed values get here.
	return 0, &RowError{Table: table, Column: cols[i], Image: image, Problem: "is negative"}
}

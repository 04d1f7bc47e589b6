// Package handlers decides, for each row change of a tracked table, which
// users it touches, and what the notices about it say (notices.go). Both are
// pure: no I/O, and no module outside the standard library. When a change
// names a user only indirectly (a requirement's claim, an address), the
// handler returns a reference that the apply side resolves in one batched
// lookup.
package handlers

// RefKind says how a Ref names its user(s).
type RefKind uint8

const (
	// User: ID is the user id.
	User RefKind = iota + 1
	// Claim: ID is a claim id; its owner must be looked up.
	Claim
	// Address: ID is a user_addresses id; the users whose
	// current_user_address_id points at it must be looked up.
	Address
)

// Ref is a reference to the user(s) a change touches.
type Ref struct {
	Kind RefKind
	ID   uint64
}

// Owner is a claim -> user mapping learned from a claims row image, so that a
// later lookup still resolves after the claim moved or was hard-deleted.
type Owner struct {
	Claim, User uint64
}

// Pointer is a user's current_user_address_id learned from a users row
// image (Address 0: none, or the user was deleted), so an address change
// resolves to the users pointing at it at that place in the binlog.
type Pointer struct {
	User, Address uint64
}

// Result collects what one or more changes touch. Handle appends to it, so
// one Result can be reused for a whole batch (call Reset between batches).
type Result struct {
	Refs []Ref
	// Learned claim owners, in binlog order (a later entry wins).
	Learned []Owner
	// Pointers learned from users rows, in binlog order.
	Pointers []Pointer
}

// Reset empties r, keeping its capacity.
func (r *Result) Reset() { r.Refs, r.Learned, r.Pointers = r.Refs[:0], r.Learned[:0], r.Pointers[:0] }

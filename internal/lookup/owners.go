package lookup

import (
	"context"
	"fmt"
)

// AllClaimOwners reads the owner of every claim (soft-deleted ones too): the
// claim -> user map the apply loop starts from at a bootstrap, or when no
// map was stored with the checkpoint. One pass over claims; about 16 bytes
// a claim in memory.
func (l *Lookup) AllClaimOwners(ctx context.Context) (map[uint64]uint64, error) {
	out := make(map[uint64]uint64)
	if err := l.pairs(ctx, "SELECT id, user_id FROM claims", func(claim, user uint64) {
		out[claim] = user
	}); err != nil {
		return nil, fmt.Errorf("lookup all claim owners: %w", err)
	}
	return out, nil
}

// AllUserPointers reads every user's current_user_address_id (users with
// none are absent): the user -> address map the apply loop starts from at a
// bootstrap, or when none was stored with the checkpoint.
func (l *Lookup) AllUserPointers(ctx context.Context) (map[uint64]uint64, error) {
	out := make(map[uint64]uint64)
	if err := l.pairs(ctx, "SELECT id, current_user_address_id FROM users WHERE current_user_address_id IS NOT NULL", func(user, addr uint64) {
		out[user] = addr
	}); err != nil {
		return nil, fmt.Errorf("lookup all user address pointers: %w", err)
	}
	return out, nil
}

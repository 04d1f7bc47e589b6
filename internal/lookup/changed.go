package lookup

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// changedSinceSQL selects the users whose queue inputs (the default rule's
// tables) carry an updated_at at or after the bound: the user row itself,
// one of its claims, or a requirement of one of its claims. Laravel sets
// updated_at on insert and update (soft deletes included), so this finds
// rows created or changed since then. It cannot see hard deletes, a claim
// moved AWAY from a user (the claim now names its new owner), or writes
// that bypass updated_at: `reconcile --since` documents that a full
// reconcile covers those.
// The bound is a literal this package formats (no user text), like the
// other lookups, which saves a prepare round trip.
const changedSinceSQL = `SELECT id FROM users WHERE updated_at >= '%[1]s'
UNION SELECT user_id FROM claims WHERE updated_at >= '%[1]s'
UNION SELECT c.user_id FROM claim_requirements AS r JOIN claims AS c ON c.id = r.claim_id WHERE r.updated_at >= '%[1]s'`

// UsersChangedSince lists (sorted, distinct) the users whose users, claims
// or claim_requirements rows have updated_at >= since. The session time
// zone is UTC, so since is compared in UTC.
func (l *Lookup) UsersChangedSince(ctx context.Context, since time.Time) ([]uint64, error) {
	t := since.UTC().Format("2006-01-02 15:04:05.999999")
	rows, err := l.db.QueryContext(ctx, fmt.Sprintf(changedSinceSQL, t))
	if err != nil {
		return nil, fmt.Errorf("lookup users changed since %s: %w", t, err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("lookup users changed since %s: %w", t, err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lookup users changed since %s: %w", t, err)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// MaxUserID is the highest users.id (0 for an empty table): the end of a
// full reconcile's pass, for its progress display.
func (l *Lookup) MaxUserID(ctx context.Context) (uint64, error) {
	var id uint64
	if err := l.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM users").Scan(&id); err != nil {
		return 0, fmt.Errorf("lookup max user id: %w", err)
	}
	return id, nil
}

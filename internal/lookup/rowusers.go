package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// ErrUntrackedTable is returned by RowUsers for a table whose rows it
// cannot map to users.
var ErrUntrackedTable = errors.New("not a tracked table")

// rowUsersSQL finds, per tracked table, the users a row with id %[1]s
// concerns as the source stands now. The id is an integer this package
// formats (no user text), like the other lookups.
var rowUsersSQL = map[string]string{
	"claims": `SELECT user_id FROM claims WHERE id = %[1]s AND user_id IS NOT NULL`,
	"claim_requirements": `SELECT c.user_id FROM claim_requirements AS r JOIN claims AS c ON c.id = r.claim_id
		WHERE r.id = %[1]s AND c.user_id IS NOT NULL`,
	"claim_vehicle_packages": `SELECT c.user_id FROM claim_vehicle_packages AS v JOIN claims AS c ON c.id = v.claim_id
		WHERE v.id = %[1]s AND c.user_id IS NOT NULL`,
	// The address's own user and every user whose current address it is
	// (the same relation as AddressUsers).
	"user_addresses": `SELECT user_id FROM user_addresses WHERE id = %[1]s AND user_id IS NOT NULL
		UNION SELECT id FROM users WHERE current_user_address_id = %[1]s`,
}

// RowUsers returns (sorted, distinct) the users whose queue rows a row of a
// tracked table may affect now: for users the id itself (whether or not the
// row still exists, so a deleted user's queue row can be removed); for
// claims its user_id; for claim_requirements and claim_vehicle_packages the
// user of their claim; for user_addresses its user_id plus the users whose
// current_user_address_id points at it. A row that no longer exists (or
// whose claim does not) maps to no one. An untracked table gives
// ErrUntrackedTable.
func (l *Lookup) RowUsers(ctx context.Context, table string, id uint64) ([]uint64, error) {
	if table == "users" {
		return []uint64{id}, nil
	}
	q, ok := rowUsersSQL[table]
	if !ok {
		return nil, fmt.Errorf("lookup users of %s row %d: %w", table, id, ErrUntrackedTable)
	}
	rows, err := l.db.QueryContext(ctx, fmt.Sprintf(q, strconv.FormatUint(id, 10)))
	if err != nil {
		return nil, fmt.Errorf("lookup users of %s row %d: %w", table, id, err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var u uint64
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("lookup users of %s row %d: %w", table, id, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lookup users of %s row %d: %w", table, id, err)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

package lookup

import (
	"context"
	"fmt"

	"dialsync/internal/idmap"
)

// AllMaps reads the owner of every claim (soft-deleted ones too) and every
// user's current_user_address_id (users with none are absent): the maps
// the apply loop starts from when no map was stored with the checkpoint,
// or at a bootstrap on a server without ConsistentSnapshot. Both come from
// one consistent-snapshot transaction, read in pages (see pagedMap); about
// 8 bytes an entry in memory (idmap).
func (l *Lookup) AllMaps(ctx context.Context) (owners, pointers *idmap.Map, err error) {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("lookup all claim owners and address pointers: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		return nil, nil, fmt.Errorf("lookup all claim owners and address pointers: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") //nolint:errcheck // read-only
	if owners, pointers, err = readMaps(ctx, conn); err != nil {
		return nil, nil, fmt.Errorf("lookup all %w", err)
	}
	return owners, pointers, nil
}

package checkpoint

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"dialsync/change"
	"dialsync/internal/idmap"
)

// The stored maps in their compact form (internal/idmap): the apply loop
// holds one entry per claim and per user, so loading and storing them
// whole must not hold them twice more in between (docs/design.md,
// invariant 7).

// mapChunk is how many map entries one statement writes when a whole map
// is stored: two int64 arrays of this length, about 1 MB.
const mapChunk = 50_000

// LoadMaps returns the claim -> user and user -> address maps stored with
// the checkpoint (empty when none were stored, or after an operator moved
// the checkpoint), read in key order straight into compact maps.
func (s *Store) LoadMaps(ctx context.Context) (owners, pointers *idmap.Map, err error) {
	if owners, err = s.loadCompact(ctx, `SELECT claim_id, user_id FROM `+s.owners+` WHERE pipeline = $1 ORDER BY claim_id`, "claim owners"); err != nil {
		return nil, nil, err
	}
	if pointers, err = s.loadCompact(ctx, `SELECT user_id, address_id FROM `+s.pointers+` WHERE pipeline = $1 ORDER BY user_id`, "user address pointers"); err != nil {
		return nil, nil, err
	}
	return owners, pointers, nil
}

func (s *Store) loadCompact(ctx context.Context, q, what string) (*idmap.Map, error) {
	rows, err := s.pool.Query(ctx, q, s.pipeline)
	if err != nil {
		return nil, fmt.Errorf("load %s %q: %w", what, s.pipeline, err)
	}
	defer rows.Close()
	m := idmap.New(0)
	var c, u int64
	// BIGINT holds the ids' bits; ORDER BY on it sorts ids above 2^63
	// first, which Append handles (out of order goes through Set).
	if _, err = pgx.ForEachRow(rows, []any{&c, &u}, func() error {
		m.Append(uint64(c), uint64(u))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load %s %q: %w", what, s.pipeline, err)
	}
	return m, nil
}

// SaveWhole is Save with whole maps (a bootstrap's, or ones read again from
// the lookup server): the same fenced transaction, the maps written
// mapChunk entries a statement so the write holds no copy of them.
func (s *Store) SaveWhole(ctx context.Context, pos change.Position, owners, pointers *idmap.Map) error {
	epoch := s.epoch.Load()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Fence first, as Save does.
		if err := s.Fence(ctx, tx); err != nil {
			return fmt.Errorf("save checkpoint %q @ %s: %w", s.pipeline, pos, err)
		}
		for _, m := range []struct {
			m     *idmap.Map
			write func(ctx context.Context, tx pgx.Tx, pos change.Position, k, v []int64) error
		}{{owners, s.upsertOwners}, {pointers, s.upsertPointers}} {
			if m.m == nil {
				continue
			}
			ks, vs := make([]int64, 0, mapChunk), make([]int64, 0, mapChunk)
			var err error
			m.m.Range(func(k, v uint64) bool {
				ks, vs = append(ks, int64(k)), append(vs, int64(v))
				if len(ks) == mapChunk {
					err = m.write(ctx, tx, pos, ks, vs)
					ks, vs = ks[:0], vs[:0]
				}
				return err == nil
			})
			if err == nil && len(ks) > 0 {
				err = m.write(ctx, tx, pos, ks, vs)
			}
			if err != nil {
				return err
			}
		}
		return s.saveRow(ctx, tx, pos, epoch)
	})
}

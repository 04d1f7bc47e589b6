// Package checkpoint stores each pipeline's binlog position in PostgreSQL
// and elects the one instance allowed to move it.
//
// Tables: checkpoints, checkpoint_history, claim_owners, user_pointers,
// leases and lease_heartbeats in the configured schema, created by this
// package's own migrations (Migrations), which must have run. The queue mark
// beside them belongs to the queue store: moving the checkpoint drops it
// through the hook given to Store.SetOnMove, in the same transaction.
//
// Fencing. An instance becomes leader by taking a session advisory lock
// (AcquireLease) and then incrementing the pipeline's epoch in leases; it
// hands that epoch to its Store with SetEpoch. Save writes only if, in the
// same statement, the epoch in leases still equals the store's epoch (the
// leases row is read FOR SHARE, so a concurrent takeover is either fully
// before the save, which then fails, or waits until the save committed, and
// the new leader loads the checkpoint after that). So a deposed leader that
// was paused (GC, SIGSTOP, a network partition) and wakes up after another
// instance took over gets ErrFenced and cannot move the checkpoint; no
// timing assumptions are involved.
package checkpoint

import (
	"context"
	"dialsync/change"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrFenced means another instance holds a newer epoch for the pipeline:
// this instance was deposed and must stop writing. It reports Fatal() ==
// true, the mark internal/apply's IsFatal looks for, so the apply loop stops
// at once instead of retrying a save that can never succeed.
var ErrFenced error = fencedError{}

type fencedError struct{}

func (fencedError) Error() string { return "checkpoint: fenced: another instance holds a newer epoch" }

// Fatal marks the error as one retrying cannot fix.
func (fencedError) Fatal() bool { return true }

// ErrNoHistoryEntry is returned by Rollback for an unknown history id.
var ErrNoHistoryEntry = errors.New("checkpoint: no such history entry")

// Checkpoint is a pipeline's stored position.
type Checkpoint struct {
	Pipeline string
	Pos      change.Position
	// ServerUUID identifies the source server the position belongs to
	// (server_uuid, or the MariaDB server_id as text); empty when unknown.
	ServerUUID string
	// Epoch is the leadership epoch of the last writer; 0 when written
	// without a lease (bootstrap tools, operator Set before any lease).
	Epoch     int64
	UpdatedAt time.Time // UTC
}

// HistoryEntry is one recorded change of a checkpoint.
type HistoryEntry struct {
	ID       int64
	Pipeline string
	At       time.Time // UTC
	Actor    string    // OS user of an operator, or "dialsync" for automatic changes
	Reason   string
	// Old is the checkpoint before the change; zero (IsZero) when there was
	// none. New is the checkpoint after it; zero when it was removed (Reset).
	Old, New change.Position
	Epoch    int64 // the checkpoint's epoch when the change was made
}

// Store reads and writes one pipeline's checkpoint. Safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	pipeline string

	epoch      atomic.Int64
	serverUUID atomic.Pointer[string]

	checkpoints, history, leases, owners, pointers string // quoted table names

	// onMove runs in the transaction of every operator move (SetOnMove).
	onMove func(context.Context, pgx.Tx) error
}

// NewStore returns the checkpoint store of pipeline in schema. Its epoch is
// 0 until SetEpoch: such a store can Save only while no lease was ever
// taken for the pipeline.
func NewStore(pool *pgxpool.Pool, schema, pipeline string) *Store {
	s := &Store{
		pool:        pool,
		pipeline:    pipeline,
		checkpoints: pgx.Identifier{schema, "checkpoints"}.Sanitize(),
		history:     pgx.Identifier{schema, "checkpoint_history"}.Sanitize(),
		leases:      pgx.Identifier{schema, "leases"}.Sanitize(),
		owners:      pgx.Identifier{schema, "claim_owners"}.Sanitize(),
		pointers:    pgx.Identifier{schema, "user_pointers"}.Sanitize(),
	}
	empty := ""
	s.serverUUID.Store(&empty)
	return s
}

// SetOnMove sets fn to run inside the transaction of every operator move
// of the checkpoint (Set, Reset, Rollback), after the stored maps are
// dropped and before the history entry is written; an error from fn rolls
// the whole move back. dialsync passes the queue store's DropMark: the queue
// mark belongs to the old position, and an operator who moves the checkpoint
// back wants those transactions applied again, queue rows included
// (internal/apply, Loop.SetMark). Nil (the default) runs nothing. Call
// before use.
func (s *Store) SetOnMove(fn func(ctx context.Context, tx pgx.Tx) error) { s.onMove = fn }

// SetEpoch sets the leadership term this process holds (Lease.Epoch).
func (s *Store) SetEpoch(epoch int64) { s.epoch.Store(epoch) }

// SetServerUUID sets the source server identity stored with every Save and
// Set, so a checkpoint taken on one server is recognisable on another.
func (s *Store) SetServerUUID(id string) { s.serverUUID.Store(&id) }

// Load returns the stored checkpoint; found is false when there is none.
func (s *Store) Load(ctx context.Context) (cp Checkpoint, found bool, err error) {
	var pos int64
	err = s.pool.QueryRow(ctx, `SELECT gtid_set, file, pos, server_uuid, epoch, updated_at
		FROM `+s.checkpoints+` WHERE pipeline = $1`, s.pipeline).
		Scan(&cp.Pos.GTIDSet, &cp.Pos.File, &pos, &cp.ServerUUID, &cp.Epoch, &cp.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("load checkpoint %q: %w", s.pipeline, err)
	}
	cp.Pipeline = s.pipeline
	cp.Pos.Pos = uint32(pos)
	cp.UpdatedAt = cp.UpdatedAt.UTC()
	return cp, true, nil
}

// Save stores pos as the pipeline's checkpoint in one statement (one round
// trip), fenced: it writes only while the epoch in leases equals this
// store's epoch (no leases row counts as epoch 0), and never over a
// checkpoint written with a newer epoch. Otherwise it writes nothing and
// returns ErrFenced. Save does not compare positions: GTID sets of
// different domains/servers have no general order, and the apply loop
// only ever saves commit boundaries in binlog order.
//
// owners are claim -> user mappings learned since the previous Save; they are
// written in the same transaction as the checkpoint, so the stored map is
// always the map as of the stored position (see Owners).
func (s *Store) Save(ctx context.Context, pos change.Position, owners, pointers map[uint64]uint64) error {
	epoch := s.epoch.Load()
	save := func(ctx context.Context, db execer) error { return s.saveRow(ctx, db, pos, epoch) }
	if len(owners) == 0 && len(pointers) == 0 {
		return save(ctx, s.pool)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Fence first: the share lock on the lease row, taken before any
		// row of the maps, lets a takeover terminate a paused writer here
		// instead of waiting on the map rows it holds.
		if err := s.Fence(ctx, tx); err != nil {
			return fmt.Errorf("save checkpoint %q @ %s: %w", s.pipeline, pos, err)
		}
		if len(owners) > 0 {
			claims, users := pairs(owners)
			if err := s.upsertOwners(ctx, tx, pos, claims, users); err != nil {
				return err
			}
		}
		if len(pointers) > 0 {
			users, addrs := pairs(pointers)
			if err := s.upsertPointers(ctx, tx, pos, users, addrs); err != nil {
				return err
			}
		}
		return save(ctx, tx)
	})
}

type execer interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}

// saveRow writes the checkpoint row, fenced (see Save).
func (s *Store) saveRow(ctx context.Context, db execer, pos change.Position, epoch int64) error {
	tag, err := db.Exec(ctx, `WITH lease AS (
			SELECT epoch FROM `+s.leases+` WHERE pipeline = $1 FOR SHARE
		)
		INSERT INTO `+s.checkpoints+` AS c (pipeline, gtid_set, file, pos, server_uuid, epoch, updated_at)
		SELECT $1::text, $2::text, $3::text, $4::bigint, $5::text, $6::bigint, now()
		WHERE COALESCE((SELECT epoch FROM lease), 0) = $6::bigint
		ON CONFLICT (pipeline) DO UPDATE SET
			gtid_set = excluded.gtid_set, file = excluded.file, pos = excluded.pos,
			server_uuid = excluded.server_uuid, epoch = excluded.epoch, updated_at = excluded.updated_at
		WHERE c.epoch <= excluded.epoch`,
		s.pipeline, pos.GTIDSet, pos.File, int64(pos.Pos), *s.serverUUID.Load(), epoch)
	if err != nil {
		return fmt.Errorf("save checkpoint %q @ %s: %w", s.pipeline, pos, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("save checkpoint %q @ %s with epoch %d: %w", s.pipeline, pos, epoch, ErrFenced)
	}
	return nil
}

// upsertOwners writes claim -> user entries (keys and values as int64:
// BIGINT holds every BIGINT UNSIGNED id bit for bit).
func (s *Store) upsertOwners(ctx context.Context, tx pgx.Tx, pos change.Position, claims, users []int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO `+s.owners+` (pipeline, claim_id, user_id)
		SELECT $1, c, u FROM unnest($2::bigint[], $3::bigint[]) AS t(c, u)
		ON CONFLICT (pipeline, claim_id) DO UPDATE SET user_id = excluded.user_id`,
		s.pipeline, claims, users); err != nil {
		return fmt.Errorf("save claim owners @ %s: %w", pos, err)
	}
	return nil
}

// upsertPointers writes user -> address entries; address 0 means the user
// points nowhere (or is gone): no row.
func (s *Store) upsertPointers(ctx context.Context, tx pgx.Tx, pos change.Position, users, addrs []int64) error {
	if _, err := tx.Exec(ctx, `WITH p AS (SELECT u, a FROM unnest($2::bigint[], $3::bigint[]) AS t(u, a)),
		del AS (DELETE FROM `+s.pointers+` WHERE pipeline = $1 AND user_id IN (SELECT u FROM p WHERE a = 0))
		INSERT INTO `+s.pointers+` (pipeline, user_id, address_id)
		SELECT $1, u, a FROM p WHERE a <> 0
		ON CONFLICT (pipeline, user_id) DO UPDATE SET address_id = excluded.address_id`,
		s.pipeline, users, addrs); err != nil {
		return fmt.Errorf("save user address pointers @ %s: %w", pos, err)
	}
	return nil
}

func pairs(m map[uint64]uint64) (keys, values []int64) {
	keys = make([]int64, 0, len(m))
	values = make([]int64, 0, len(m))
	for k, v := range m {
		keys = append(keys, int64(k))
		values = append(values, int64(v))
	}
	return keys, values
}

// Fence checks, inside the caller's transaction, that this store's epoch is
// still the pipeline's (no leases row counts as epoch 0), and returns
// ErrFenced otherwise. Like Save it reads the leases row FOR SHARE, so a
// takeover either commits before (and the caller's transaction fails) or
// waits until the caller committed. Run it first in a transaction whose
// writes a deposed leader must not make, such as a queue write computed
// before a pause (see Lease).
func (s *Store) Fence(ctx context.Context, tx pgx.Tx) error {
	q, args := s.FenceQuery()
	var ok bool
	if err := tx.QueryRow(ctx, q, args...).Scan(&ok); err != nil {
		return fmt.Errorf("fence %q: %w", s.pipeline, err)
	}
	if !ok {
		return s.FenceError()
	}
	return nil
}

// FenceQuery is Fence as a query for a caller that pipelines it with its
// own statements (pgstore.Queue): it yields one boolean, false when
// another instance took over; the caller then rolls back and fails with
// FenceError.
func (s *Store) FenceQuery() (string, []any) {
	return `SELECT COALESCE((SELECT epoch FROM ` + s.leases + ` WHERE pipeline = $1 FOR SHARE), 0) = $2`,
		[]any{s.pipeline, s.epoch.Load()}
}

// FenceError is the error a write refused by the fence fails with.
func (s *Store) FenceError() error {
	return fmt.Errorf("fence %q with epoch %d: %w", s.pipeline, s.epoch.Load(), ErrFenced)
}

// Owners returns the claim -> user map stored with the checkpoint (empty
// when none was stored, or after an operator moved the checkpoint).
func (s *Store) Owners(ctx context.Context) (map[uint64]uint64, error) {
	return s.loadMap(ctx, `SELECT claim_id, user_id FROM `+s.owners+` WHERE pipeline = $1`, "claim owners")
}

// Pointers returns the user -> current_user_address_id map stored with the
// checkpoint (empty when none was stored, or after an operator moved it).
func (s *Store) Pointers(ctx context.Context) (map[uint64]uint64, error) {
	return s.loadMap(ctx, `SELECT user_id, address_id FROM `+s.pointers+` WHERE pipeline = $1`, "user address pointers")
}

func (s *Store) loadMap(ctx context.Context, q, what string) (map[uint64]uint64, error) {
	rows, err := s.pool.Query(ctx, q, s.pipeline)
	if err != nil {
		return nil, fmt.Errorf("load %s %q: %w", what, s.pipeline, err)
	}
	defer rows.Close()
	m := make(map[uint64]uint64)
	var c, u int64
	_, err = pgx.ForEachRow(rows, []any{&c, &u}, func() error {
		m[uint64(c)] = uint64(u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s %q: %w", what, s.pipeline, err)
	}
	return m, nil
}

// Set is an operator's (or an automatic recovery's) change of the
// checkpoint: it writes pos and a history entry with the old and new
// values, actor and reason, in one transaction. It is not fenced (an
// operator overrides); callers refuse first while an instance holds the
// lease (see Holder). The stored epoch is kept, so the running leader's
// later saves are not blocked by it.
func (s *Store) Set(ctx context.Context, pos change.Position, actor, reason string) error {
	if pos.IsZero() {
		return fmt.Errorf("set checkpoint %q: empty position (use Reset to remove it)", s.pipeline)
	}
	if err := s.change(ctx, &pos, actor, reason); err != nil {
		return fmt.Errorf("set checkpoint %q @ %s: %w", s.pipeline, pos, err)
	}
	return nil
}

// Reset removes the checkpoint (the next run bootstraps: records the
// source's current position, reconciles, then streams) and records it in
// the history.
func (s *Store) Reset(ctx context.Context, actor, reason string) error {
	if err := s.change(ctx, nil, actor, reason); err != nil {
		return fmt.Errorf("reset checkpoint %q: %w", s.pipeline, err)
	}
	return nil
}

// change writes pos (nil: delete) and its history entry in one transaction.
func (s *Store) change(ctx context.Context, pos *change.Position, actor, reason string) error {
	if actor == "" {
		return errors.New("actor is required for the history")
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// FOR UPDATE: two operators changing at once get a consistent
		// old -> new chain in the history.
		var old struct {
			gtid, file *string
			pos        *int64
			epoch      int64
		}
		err := tx.QueryRow(ctx, `SELECT gtid_set, file, pos, epoch FROM `+s.checkpoints+`
			WHERE pipeline = $1 FOR UPDATE`, s.pipeline).Scan(&old.gtid, &old.file, &old.pos, &old.epoch)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read current: %w", err)
		}
		var newGTID, newFile *string
		var newPos *int64
		if pos == nil {
			if _, err := tx.Exec(ctx, `DELETE FROM `+s.checkpoints+` WHERE pipeline = $1`, s.pipeline); err != nil {
				return fmt.Errorf("delete: %w", err)
			}
		} else {
			p := int64(pos.Pos)
			newGTID, newFile, newPos = &pos.GTIDSet, &pos.File, &p
			// server_uuid: this store's when set, else keep the stored one.
			_, err := tx.Exec(ctx, `INSERT INTO `+s.checkpoints+` AS c (pipeline, gtid_set, file, pos, server_uuid, epoch, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, now())
				ON CONFLICT (pipeline) DO UPDATE SET
					gtid_set = excluded.gtid_set, file = excluded.file, pos = excluded.pos,
					server_uuid = COALESCE(NULLIF(excluded.server_uuid, ''), c.server_uuid),
					updated_at = excluded.updated_at`,
				s.pipeline, pos.GTIDSet, pos.File, p, *s.serverUUID.Load(), old.epoch)
			if err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		// The stored maps belong to the old position; drop them so the next
		// run rebuilds them from the lookup server. The queue mark goes too,
		// through its owner (SetOnMove): an operator who moves the
		// checkpoint back wants those transactions applied again, queue
		// rows included (internal/apply, Loop.SetMark).
		for _, tbl := range []string{s.owners, s.pointers} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+tbl+` WHERE pipeline = $1`, s.pipeline); err != nil {
				return fmt.Errorf("drop stored maps and queue mark: %w", err)
			}
		}
		if s.onMove != nil {
			if err := s.onMove(ctx, tx); err != nil {
				return fmt.Errorf("drop stored maps and queue mark: %w", err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+s.history+`
			(pipeline, actor, reason, old_gtid_set, old_file, old_pos, new_gtid_set, new_file, new_pos, epoch)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			s.pipeline, actor, reason, old.gtid, old.file, old.pos, newGTID, newFile, newPos, old.epoch)
		if err != nil {
			return fmt.Errorf("write history: %w", err)
		}
		return nil
	})
}

// History returns the pipeline's checkpoint changes, newest first, at most
// limit (all when limit <= 0).
func (s *Store) History(ctx context.Context, limit int) ([]HistoryEntry, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, reason, old_gtid_set, old_file, old_pos,
			new_gtid_set, new_file, new_pos, epoch
		FROM `+s.history+` WHERE pipeline = $1 ORDER BY id DESC LIMIT $2`, s.pipeline, limit)
	if err != nil {
		return nil, fmt.Errorf("checkpoint history %q: %w", s.pipeline, err)
	}
	out, err := pgx.CollectRows(rows, s.scanHistory)
	if err != nil {
		return nil, fmt.Errorf("checkpoint history %q: %w", s.pipeline, err)
	}
	return out, nil
}

func (s *Store) scanHistory(r pgx.CollectableRow) (HistoryEntry, error) {
	var h HistoryEntry
	var og, of, ng, nf *string
	var op, np *int64
	if err := r.Scan(&h.ID, &h.At, &h.Actor, &h.Reason, &og, &of, &op, &ng, &nf, &np, &h.Epoch); err != nil {
		return h, err
	}
	h.Pipeline = s.pipeline
	h.At = h.At.UTC()
	h.Old = position(og, of, op)
	h.New = position(ng, nf, np)
	return h, nil
}

func position(gtid, file *string, pos *int64) change.Position {
	var p change.Position
	if gtid != nil {
		p.GTIDSet = *gtid
	}
	if file != nil {
		p.File = *file
	}
	if pos != nil {
		p.Pos = uint32(*pos)
	}
	return p
}

// PruneHistory deletes, inside tx, this pipeline's checkpoint history
// entries recorded more than olderThan ago, and returns how many
// (housekeeping; the queue store's Prune runs it in the transaction that
// prunes its dead letters).
func (s *Store) PruneHistory(ctx context.Context, tx pgx.Tx, olderThan time.Duration) (int64, error) {
	if olderThan < 0 {
		return 0, fmt.Errorf("prune checkpoint history: negative age %s", olderThan)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM `+s.history+` WHERE pipeline = $1 AND at < now() - make_interval(secs => $2)`,
		s.pipeline, olderThan.Seconds())
	if err != nil {
		return 0, fmt.Errorf("checkpoint history: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Rollback sets the checkpoint to the NEW value recorded in history entry
// historyID, that is, back to where that change put it (when that change
// was a Reset, the checkpoint is removed again). To undo the latest change,
// roll back to the entry before it. The rollback itself is recorded in the
// history like any Set, with a reason naming the entry.
func (s *Store) Rollback(ctx context.Context, historyID int64, actor, reason string) error {
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, reason, old_gtid_set, old_file, old_pos,
			new_gtid_set, new_file, new_pos, epoch
		FROM `+s.history+` WHERE pipeline = $1 AND id = $2`, s.pipeline, historyID)
	if err != nil {
		return fmt.Errorf("rollback checkpoint %q to entry %d: %w", s.pipeline, historyID, err)
	}
	h, err := pgx.CollectExactlyOneRow(rows, s.scanHistory)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("rollback checkpoint %q to entry %d: %w", s.pipeline, historyID, ErrNoHistoryEntry)
	}
	if err != nil {
		return fmt.Errorf("rollback checkpoint %q to entry %d: %w", s.pipeline, historyID, err)
	}
	why := fmt.Sprintf("rollback to history entry %d", historyID)
	if reason != "" {
		why += ": " + reason
	}
	if h.New.IsZero() {
		err = s.change(ctx, nil, actor, why)
	} else {
		err = s.change(ctx, &h.New, actor, why)
	}
	if err != nil {
		return fmt.Errorf("rollback checkpoint %q to entry %d: %w", s.pipeline, historyID, err)
	}
	return nil
}

package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/queue"
	"dialsync/notice"
)

// Queue is one pipeline's PostgreSQL state: the call queue (shared by every
// pipeline of the schema), the pipeline's notice outbox and its dead
// letters. It implements apply.QueueStore. Safe for concurrent use, but the
// queue must have a single writer (the apply loop) for its change notices to
// be in order.
type Queue struct {
	pool     *pgxpool.Pool
	pipeline string

	callQueue, outbox, deadLetters, marks string // quoted table names

	fence Fence
}

// Fence is the leadership check (checkpoint.Store implements it).
type Fence interface {
	// FenceQuery returns a query yielding one boolean: true while this
	// writer's epoch is the pipeline's. It locks what a takeover must wait
	// for, so it runs first in the writing transaction.
	FenceQuery() (sql string, args []any)
	// FenceError is the error to fail with when FenceQuery says false.
	FenceError() error
}

// SetFence makes every queue write first run the fence query inside its
// transaction: a deposed leader that wakes up with rows it computed before
// a pause cannot write them over the new leader's. Call before use.
func (q *Queue) SetFence(f Fence) { q.fence = f }

// NewQueue returns the store for pipeline's state in schema. The migrations
// (Migrations, through dialsync/internal/dbschema) must have run.
func NewQueue(pool *pgxpool.Pool, schema, pipeline string) *Queue {
	return &Queue{
		pool:        pool,
		pipeline:    pipeline,
		callQueue:   pgx.Identifier{schema, "call_queue"}.Sanitize(),
		outbox:      pgx.Identifier{schema, "outbox"}.Sanitize(),
		deadLetters: pgx.Identifier{schema, "dead_letters"}.Sanitize(),
		marks:       pgx.Identifier{schema, "queue_marks"}.Sanitize(),
	}
}

// Apply makes the call_queue rows of users equal to rows in one transaction:
// a user in users (or in rows) without a row in rows leaves the queue.
// Exactly the real differences become changes: Entered for a new row,
// Updated when open_claims, pending_requirements or oldest_pending_at differ
// (entered_at is kept, updated_at moves), Left for a deleted row (with the
// old row). Unchanged rows are neither reported nor rewritten. build gets
// the changes (sorted by user id) and its messages are stored in the outbox
// in the same transaction; Apply returns them. mark, when not nil, is stored
// in the same transaction too (see Mark).
//
// Round trips: two, whatever the batch size (see inTx).
func (q *Queue) Apply(ctx context.Context, users []uint64, rows []queue.Row, mark *queue.Mark,
	build func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	in, err := prepareRows(rows)
	if err != nil {
		return nil, fmt.Errorf("queue apply: %w", err)
	}
	all := make([]int64, 0, len(users)+len(in.ids))
	for _, u := range users {
		if u > math.MaxInt64 {
			return nil, fmt.Errorf("queue apply: user id %d does not fit bigint", u)
		}
		all = append(all, int64(u))
	}
	all = append(all, in.ids...)
	if len(all) == 0 {
		return nil, nil
	}
	del := "DELETE FROM " + q.callQueue + ` WHERE user_id = ANY($1::bigint[]) AND NOT (user_id = ANY($2::bigint[]))
		RETURNING user_id, open_claims, pending_requirements, oldest_pending_at`
	msgs, err := q.apply(ctx, del, []any{all, in.ids}, in, mark, build)
	if err != nil {
		return nil, fmt.Errorf("queue apply (%d users): %w", len(all), err)
	}
	return msgs, nil
}

// ApplyRange is Apply over the user id range (fromUser, toUser]: every
// call_queue row in the range whose user has no row in rows is deleted
// (Left), which is how a reconcile chunk repairs rows written by anyone
// else. Every row must lie in the range.
func (q *Queue) ApplyRange(ctx context.Context, fromUser, toUser uint64, rows []queue.Row,
	build func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	in, err := prepareRange(fromUser, toUser, rows)
	if err != nil {
		return nil, fmt.Errorf("queue apply range (%d, %d]: %w", fromUser, toUser, err)
	}
	del := "DELETE FROM " + q.callQueue + ` WHERE user_id > $1 AND user_id <= $2 AND NOT (user_id = ANY($3::bigint[]))
		RETURNING user_id, open_claims, pending_requirements, oldest_pending_at`
	msgs, err := q.apply(ctx, del, []any{clampInt64(fromUser), clampInt64(toUser), in.ids}, in, nil, build)
	if err != nil {
		return nil, fmt.Errorf("queue apply range (%d, %d]: %w", fromUser, toUser, err)
	}
	return msgs, nil
}

// Diff reports what ApplyRange(fromUser, toUser, rows) would change, without
// changing anything (reconcile --dry-run and drift detection).
func (q *Queue) Diff(ctx context.Context, rows []queue.Row, fromUser, toUser uint64) ([]queue.Change, error) {
	in, err := prepareRange(fromUser, toUser, rows)
	if err != nil {
		return nil, fmt.Errorf("queue diff (%d, %d]: %w", fromUser, toUser, err)
	}
	dbRows, err := q.pool.Query(ctx, `SELECT user_id, open_claims, pending_requirements, oldest_pending_at
		FROM `+q.callQueue+` WHERE user_id > $1 AND user_id <= $2`, clampInt64(fromUser), clampInt64(toUser))
	if err != nil {
		return nil, fmt.Errorf("queue diff (%d, %d]: %w", fromUser, toUser, err)
	}
	current := make(map[uint64]queue.Row)
	var r queue.Row
	var oc, pr int32
	var at pgtype.Timestamptz
	_, err = pgx.ForEachRow(dbRows, []any{&r.UserID, &oc, &pr, &at}, func() error {
		current[r.UserID] = queue.Row{UserID: r.UserID, OpenClaims: int64(oc), PendingRequirements: int64(pr), OldestPendingAt: fromTimestamptz(at)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue diff (%d, %d]: %w", fromUser, toUser, err)
	}
	var changes []queue.Change
	for _, want := range in.rows {
		have, ok := current[want.UserID]
		switch {
		case !ok:
			changes = append(changes, queue.Change{Kind: queue.Entered, Row: want})
		case !sameRow(have, want):
			changes = append(changes, queue.Change{Kind: queue.Updated, Row: want})
		}
		delete(current, want.UserID)
	}
	for _, have := range current {
		changes = append(changes, queue.Change{Kind: queue.Left, Row: have})
	}
	sortChanges(changes)
	return changes, nil
}

// apply runs the shared transaction of Apply and ApplyRange: the given
// DELETE ... RETURNING (old rows of leavers) and the upsert of in, batched
// into one round trip, then the outbox insert.
func (q *Queue) apply(ctx context.Context, del string, delArgs []any, in preparedRows, mark *queue.Mark,
	build func([]queue.Change) []notice.Message) ([]notice.Message, error) {
	var msgs []notice.Message
	// The commit is synchronous (the server default) on purpose: this
	// transaction's notices are published next, and an asynchronous commit
	// lost in a PostgreSQL crash would leave notices announcing rows that
	// no longer exist, then a second notice for the same transaction when
	// the replay recomputes them from a source that moved on. The chaos
	// suite's duplicate-(transaction, user) count found this.
	//
	// One timestamp for the whole batch, microsecond precision like the
	// column, so entered_at/updated_at of one batch compare equal.
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := q.inTx(ctx, func(b *pgx.Batch) {
		b.Queue(del, delArgs...)
		// The LEFT JOIN filter drops unchanged rows before the upsert, so
		// they are neither rewritten nor even row-locked (ON CONFLICT DO
		// UPDATE locks a conflicting row even when its WHERE is false); it
		// halves the cost of a batch that changes nothing. The WHERE on DO
		// UPDATE stays as the authority in case another writer got there
		// between the two.
		// (xmax = 0) tells an inserted row from an updated one: an updated
		// row carries the updating transaction's id in xmax. This is a
		// widely used PostgreSQL implementation detail (see
		// https://stackoverflow.com/a/39204667).
		b.Queue(`INSERT INTO `+q.callQueue+` AS c
			(user_id, open_claims, pending_requirements, oldest_pending_at, entered_at, updated_at)
			SELECT x.u, x.o, x.p, x.t, $5, $5
			FROM unnest($1::bigint[], $2::integer[], $3::integer[], $4::timestamptz[]) AS x(u, o, p, t)
			LEFT JOIN `+q.callQueue+` AS cur ON cur.user_id = x.u
			WHERE (cur.open_claims, cur.pending_requirements, cur.oldest_pending_at) IS DISTINCT FROM (x.o, x.p, x.t)
				OR cur.user_id IS NULL
			ON CONFLICT (user_id) DO UPDATE SET
				open_claims = excluded.open_claims,
				pending_requirements = excluded.pending_requirements,
				oldest_pending_at = excluded.oldest_pending_at,
				updated_at = excluded.updated_at
			WHERE (c.open_claims, c.pending_requirements, c.oldest_pending_at)
				IS DISTINCT FROM (excluded.open_claims, excluded.pending_requirements, excluded.oldest_pending_at)
			RETURNING user_id, (xmax = 0), open_claims, pending_requirements, oldest_pending_at`,
			in.ids, in.open, in.pending, in.oldest, now)
		if mark != nil {
			b.Queue(`INSERT INTO `+q.marks+` (pipeline, file, pos, gtid_set, partial_txn, piece)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (pipeline) DO UPDATE SET file = excluded.file, pos = excluded.pos,
					gtid_set = excluded.gtid_set, partial_txn = excluded.partial_txn,
					piece = excluded.piece, updated_at = now()`,
				q.pipeline, mark.File, int64(mark.Pos), mark.GTIDSet, mark.PartialTxn, mark.Piece)
		}
	}, func(br pgx.BatchResults) error {
		var changes []queue.Change
		left, err := br.Query()
		if err != nil {
			return fmt.Errorf("delete leavers: %w", err)
		}
		var r queue.Row
		var oc, pr int32
		var at pgtype.Timestamptz
		_, err = pgx.ForEachRow(left, []any{&r.UserID, &oc, &pr, &at}, func() error {
			changes = append(changes, queue.Change{Kind: queue.Left, Row: queue.Row{
				UserID: r.UserID, OpenClaims: int64(oc), PendingRequirements: int64(pr), OldestPendingAt: fromTimestamptz(at)}})
			return nil
		})
		if err != nil {
			return fmt.Errorf("delete leavers: %w", err)
		}
		up, err := br.Query()
		if err != nil {
			return fmt.Errorf("upsert rows: %w", err)
		}
		var inserted bool
		_, err = pgx.ForEachRow(up, []any{&r.UserID, &inserted, &oc, &pr, &at}, func() error {
			kind := queue.Updated
			if inserted {
				kind = queue.Entered
			}
			changes = append(changes, queue.Change{Kind: kind, Row: queue.Row{
				UserID: r.UserID, OpenClaims: int64(oc), PendingRequirements: int64(pr), OldestPendingAt: fromTimestamptz(at)}})
			return nil
		})
		if err != nil {
			return fmt.Errorf("upsert rows: %w", err)
		}
		if mark != nil {
			if _, err := br.Exec(); err != nil {
				return fmt.Errorf("store queue mark: %w", err)
			}
		}
		sortChanges(changes)
		if build != nil && len(changes) > 0 {
			msgs = build(changes)
		}
		return nil
	}, func(b *pgx.Batch) {
		if len(msgs) > 0 {
			q.queueOutbox(b, msgs)
		}
	})
	if err != nil {
		return nil, err
	}
	return msgs, nil
}

// inTx runs one transaction on one connection in two round trips: BEGIN,
// the fence and first's statements as one pipelined batch (read by read;
// when the fence says no, the transaction is rolled back whatever the
// statements did), then second's statements and COMMIT. pgx.BeginFunc
// would take a round trip for BEGIN, one for the fence, one per batch and
// one for COMMIT; at a few hundred microseconds each, under load, they
// were most of the queue stage's time.
func (q *Queue) inTx(ctx context.Context, first func(*pgx.Batch), read func(pgx.BatchResults) error, second func(*pgx.Batch)) error {
	conn, err := q.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection released inside a transaction (an error path whose
	// ROLLBACK failed too) is closed by the pool, which ends the
	// transaction on the server.
	defer conn.Release()
	rollback := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(rctx, "ROLLBACK")
	}

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if q.fence != nil {
		sql, args := q.fence.FenceQuery()
		b.Queue(sql, args...)
	}
	first(b)
	br := conn.SendBatch(ctx, b)
	err = func() error {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if q.fence != nil {
			var ok bool
			if err := br.QueryRow().Scan(&ok); err != nil {
				return fmt.Errorf("fence: %w", err)
			}
			if !ok {
				return q.fence.FenceError()
			}
		}
		return read(br)
	}()
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		rollback()
		return err
	}

	b = &pgx.Batch{}
	if second != nil {
		second(b)
	}
	b.Queue("COMMIT")
	br = conn.SendBatch(ctx, b)
	for i := 0; i < b.Len() && err == nil; i++ {
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err != nil {
			err = fmt.Errorf("commit batch: %w", err)
		} else if i == b.Len()-1 && tag.String() != "COMMIT" {
			// COMMIT of a transaction that failed answers ROLLBACK, not
			// an error.
			err = fmt.Errorf("commit: the server answered %q", tag.String())
		}
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		rollback()
		return err
	}
	return nil
}

// Mark returns the stored queue mark; ok is false when there is none (a new
// pipeline, or after a command moved the checkpoint: checkpoint.Store
// drops the mark then, through DropMark).
func (q *Queue) Mark(ctx context.Context) (m queue.Mark, ok bool, err error) {
	var pos int64
	err = q.pool.QueryRow(ctx, `SELECT file, pos, gtid_set, partial_txn, piece FROM `+q.marks+` WHERE pipeline = $1`,
		q.pipeline).Scan(&m.File, &pos, &m.GTIDSet, &m.PartialTxn, &m.Piece)
	if errors.Is(err, pgx.ErrNoRows) {
		return queue.Mark{}, false, nil
	}
	if err != nil {
		return queue.Mark{}, false, fmt.Errorf("read queue mark: %w", err)
	}
	m.Pos = uint32(pos)
	return m, true, nil
}

// DropMark deletes this pipeline's queue mark inside tx, so the next run
// applies every transaction after the checkpoint again, queue rows
// included. checkpoint.Store runs it in the transaction that moves the
// checkpoint (give it to Store.SetOnMove): the mark belongs to the old
// position and must not outlive it.
func (q *Queue) DropMark(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `DELETE FROM `+q.marks+` WHERE pipeline = $1`, q.pipeline); err != nil {
		return fmt.Errorf("drop queue mark: %w", err)
	}
	return nil
}

// queueOutbox queues the insert of msgs into the outbox.
func (q *Queue) queueOutbox(b *pgx.Batch, msgs []notice.Message) {
	ids := make([]string, len(msgs))
	subjects := make([]string, len(msgs))
	data := make([][]byte, len(msgs))
	for i, m := range msgs {
		ids[i], subjects[i], data[i] = m.ID, m.Subject, m.Data
	}
	// ORDER BY ord: seq (bigserial) is drawn in the order rows are produced,
	// so the outbox keeps the order build returned.
	b.Queue(`INSERT INTO `+q.outbox+` (pipeline, msg_id, subject, data)
		SELECT $1, i, s, d FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS x(i, s, d, ord)
		ORDER BY ord`, q.pipeline, ids, subjects, data)
}

// Outbox returns this pipeline's stored messages in the order they were
// stored.
func (q *Queue) Outbox(ctx context.Context) ([]notice.Message, error) {
	rows, err := q.pool.Query(ctx, `SELECT msg_id, subject, data FROM `+q.outbox+` WHERE pipeline = $1 ORDER BY seq`, q.pipeline)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notice.Message, error) {
		var m notice.Message
		err := r.Scan(&m.ID, &m.Subject, &m.Data)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return msgs, nil
}

// DeleteOutbox deletes the given messages (by id) from this pipeline's
// outbox: the apply loop deletes exactly what it published, so rows a later
// batch stored meanwhile stay until they are published too.
func (q *Queue) DeleteOutbox(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := q.fenced(ctx, `DELETE FROM `+q.outbox+` WHERE pipeline = $1 AND msg_id = ANY($2::text[])`, q.pipeline, ids); err != nil {
		return fmt.Errorf("delete %d outbox messages: %w", len(ids), err)
	}
	return nil
}

// ClearOutbox deletes every message of this pipeline's outbox. The apply
// loop is the only writer, so calling it after the acks of what Outbox or
// Apply returned cannot drop an unpublished message.
// It is only safe while no message stored by Apply awaits publishing (at
// start, and inside reconcile chunks); the loop uses DeleteOutbox.
func (q *Queue) ClearOutbox(ctx context.Context) error {
	if err := q.fenced(ctx, `DELETE FROM `+q.outbox+` WHERE pipeline = $1`, q.pipeline); err != nil {
		return fmt.Errorf("clear outbox: %w", err)
	}
	return nil
}

// fenced runs one statement in a transaction that first checks the epoch
// (SetFence). Besides refusing a deposed writer, this makes a writer paused
// mid-statement hold the lease row's share lock, so the instance taking
// over terminates its session instead of waiting on the row locks it holds
// (see checkpoint.Lease).
func (q *Queue) fenced(ctx context.Context, sql string, args ...any) error {
	if q.fence == nil {
		_, err := q.pool.Exec(ctx, sql, args...)
		return err
	}
	return q.inTx(ctx, func(b *pgx.Batch) { b.Queue(sql, args...) },
		func(br pgx.BatchResults) error { _, err := br.Exec(); return err }, nil)
}

// preparedRows holds rows as column arrays for unnest, deduplicated (last
// row of a user wins: ON CONFLICT cannot touch a row twice in one
// statement) and normalised (UTC, microseconds).
type preparedRows struct {
	rows    []queue.Row
	ids     []int64
	open    []int32
	pending []int32
	oldest  []pgtype.Timestamptz
}

func prepareRows(rows []queue.Row) (preparedRows, error) {
	idx := make(map[uint64]int, len(rows))
	var p preparedRows
	for _, r := range rows {
		if r.UserID > math.MaxInt64 {
			return p, fmt.Errorf("user id %d does not fit bigint", r.UserID)
		}
		if r.OpenClaims < math.MinInt32 || r.OpenClaims > math.MaxInt32 ||
			r.PendingRequirements < math.MinInt32 || r.PendingRequirements > math.MaxInt32 {
			return p, fmt.Errorf("user %d: counts out of integer range", r.UserID)
		}
		r.OldestPendingAt = normTime(r.OldestPendingAt)
		if i, dup := idx[r.UserID]; dup {
			p.rows[i] = r
			continue
		}
		idx[r.UserID] = len(p.rows)
		p.rows = append(p.rows, r)
	}
	p.ids = make([]int64, len(p.rows))
	p.open = make([]int32, len(p.rows))
	p.pending = make([]int32, len(p.rows))
	p.oldest = make([]pgtype.Timestamptz, len(p.rows))
	for i, r := range p.rows {
		p.ids[i] = int64(r.UserID)
		p.open[i] = int32(r.OpenClaims)
		p.pending[i] = int32(r.PendingRequirements)
		if r.OldestPendingAt != nil {
			p.oldest[i] = pgtype.Timestamptz{Time: *r.OldestPendingAt, Valid: true}
		}
	}
	return p, nil
}

func prepareRange(fromUser, toUser uint64, rows []queue.Row) (preparedRows, error) {
	if fromUser > toUser {
		return preparedRows{}, fmt.Errorf("empty range")
	}
	for _, r := range rows {
		if r.UserID <= fromUser || r.UserID > toUser {
			return preparedRows{}, fmt.Errorf("row for user %d outside the range", r.UserID)
		}
	}
	return prepareRows(rows)
}

// clampInt64 maps a range bound onto bigint: no user id exceeds MaxInt64
// (prepareRows refuses them), so clamping keeps the range meaning.
func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// normTime is the form times are stored and compared in: UTC, truncated to
// PostgreSQL's microsecond precision, so a value read back compares equal to
// the one written.
func normTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC().Truncate(time.Microsecond)
	return &v
}

func fromTimestamptz(ts pgtype.Timestamptz) *time.Time {
	if !ts.Valid {
		return nil
	}
	t := ts.Time.UTC()
	return &t
}

func sameRow(a, b queue.Row) bool {
	if a.OpenClaims != b.OpenClaims || a.PendingRequirements != b.PendingRequirements {
		return false
	}
	if a.OldestPendingAt == nil || b.OldestPendingAt == nil {
		return a.OldestPendingAt == nil && b.OldestPendingAt == nil
	}
	return a.OldestPendingAt.Equal(*b.OldestPendingAt)
}

func sortChanges(cs []queue.Change) {
	slices.SortFunc(cs, func(a, b queue.Change) int {
		switch {
		case a.Row.UserID < b.Row.UserID:
			return -1
		case a.Row.UserID > b.Row.UserID:
			return 1
		}
		return 0
	})
}

package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// Op describes one committed source transaction, for an independent checker
// that compares it with what dialsync did.
type Op struct {
	// Kind names what the transaction did, e.g. "claim.move".
	Kind string
	// Tables lists the tables with at least one changed row, sorted.
	Tables []string
	// Users are the users dialsync's touch rules (docs/design.md) map this
	// transaction to (users -> id; claims -> old and new user_id;
	// requirements and packages -> their claim's user; addresses -> owner
	// plus users whose current_user_address_id points at it), as seen
	// inside the transaction; sorted, distinct. Empty for untracked-only transactions
	// and for rows whose claim no longer exists.
	Users []uint64
	// Rows is the number of rows changed (sum of affected rows).
	Rows int64
}

// Workload performs random, realistic source transactions over the demo
// schema. It is not safe for concurrent use: run one per writer goroutine,
// each with its own seed. Concurrent workloads lock the rows they read
// (SELECT ... FOR UPDATE), so every Op is exact even with many writers.
type Workload struct {
	db    *sql.DB
	r     *rand.Rand
	maxID map[string]uint64 // highest id known per table; nil until loaded
}

// NewWorkload returns a workload over db (which must hold the demo schema,
// usually seeded). The same seed on the same data gives the same sequence.
func NewWorkload(db *sql.DB, seed int64) *Workload {
	return &Workload{db: db, r: rand.New(rand.NewPCG(uint64(seed), 0x5eed))}
}

// errSkip: the chosen operation found nothing to act on (e.g. an empty
// table); Step picks another.
var errSkip = errors.New("nothing to do")

type opFunc func(t *txn) error

type weightedOp struct {
	kind   string
	weight int
	run    opFunc
}

var ops = []weightedOp{
	{"user.status", 10, opUserStatus},
	{"user.phone", 6, opUserPhone},
	{"user.enabled", 4, opUserEnabled},
	{"user.soft_delete", 3, opUserSoftDelete},
	{"user.insert", 4, opUserInsert},
	{"user.hard_delete", 1, opUserHardDelete},
	{"users.bulk_status", 2, opUsersBulkStatus},
	{"address.move", 5, opAddressMove},
	{"address.update", 4, opAddressUpdate},
	{"address.delete", 1, opAddressDelete},
	{"claim.insert", 8, opClaimInsert},
	{"claim.status", 10, opClaimStatus},
	{"claim.move", 3, opClaimMove},
	{"claim.soft_delete", 3, opClaimSoftDelete},
	{"claim.hard_delete", 1, opClaimHardDelete},
	{"requirement.flip", 15, opRequirementFlip},
	{"requirements.complete_claim", 4, opRequirementsCompleteClaim},
	{"requirement.insert", 5, opRequirementInsert},
	{"requirement.delete", 2, opRequirementDelete},
	{"package.insert", 3, opPackageInsert},
	{"package.update", 3, opPackageUpdate},
	{"package.delete", 1, opPackageDelete},
	{"audit.insert", 3, opAuditInsert},
}

var totalWeight = func() int {
	n := 0
	for _, o := range ops {
		n += o.weight
	}
	return n
}()

// Step performs one source transaction and returns what it did. Deadlocks
// and lock wait timeouts between concurrent workloads are retried.
func (w *Workload) Step(ctx context.Context) (Op, error) {
	if w.maxID == nil {
		if err := w.loadMaxIDs(ctx); err != nil {
			return Op{}, err
		}
	}
	for range 20 {
		o := w.choose()
		op, err := w.run(ctx, o)
		if errors.Is(err, errSkip) {
			continue
		}
		return op, err
	}
	return Op{}, errors.New("workload step: every operation found nothing to do (empty tables?)")
}

func (w *Workload) choose() weightedOp {
	n := w.r.IntN(totalWeight)
	for _, o := range ops {
		if n < o.weight {
			return o
		}
		n -= o.weight
	}
	return ops[len(ops)-1]
}

func (w *Workload) loadMaxIDs(ctx context.Context) error {
	m := map[string]uint64{}
	for _, t := range append(slices.Clone(Tables), UntrackedTable) {
		var id uint64
		if err := w.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM "+t).Scan(&id); err != nil {
			return fmt.Errorf("workload: max id of %s: %w", t, err)
		}
		m[t] = id
	}
	w.maxID = m
	return nil
}

// retryable reports MySQL errors that a fresh attempt can cure: deadlock
// (1213), lock wait timeout (1205), and a duplicate random email (1062).
func retryable(err error) bool {
	var me *mysql.MyError
	return errors.As(err, &me) && (me.Code == 1213 || me.Code == 1205 || me.Code == 1062)
}

func (w *Workload) run(ctx context.Context, o weightedOp) (Op, error) {
	var last error
	for range 10 {
		op, err := w.attempt(ctx, o)
		if err == nil || !retryable(err) {
			return op, err
		}
		last = err
	}
	return Op{}, fmt.Errorf("workload %s: retries exhausted: %w", o.kind, last)
}

func (w *Workload) attempt(ctx context.Context, o weightedOp) (Op, error) {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return Op{}, fmt.Errorf("workload %s: begin: %w", o.kind, err)
	}
	t := &txn{ctx: ctx, tx: tx, w: w, tables: map[string]bool{}, users: map[uint64]bool{}}
	if err := o.run(t); err != nil {
		_ = tx.Rollback()
		if errors.Is(err, errSkip) {
			return Op{}, err
		}
		return Op{}, fmt.Errorf("workload %s: %w", o.kind, err)
	}
	if t.rows == 0 {
		_ = tx.Rollback()
		return Op{}, errSkip
	}
	if err := tx.Commit(); err != nil {
		return Op{}, fmt.Errorf("workload %s: commit: %w", o.kind, err)
	}
	for table, id := range t.inserted {
		w.maxID[table] = max(w.maxID[table], id)
	}
	op := Op{Kind: o.kind, Rows: t.rows}
	for table := range t.tables {
		op.Tables = append(op.Tables, table)
	}
	for u := range t.users {
		op.Users = append(op.Users, u)
	}
	slices.Sort(op.Tables)
	slices.Sort(op.Users)
	return op, nil
}

// txn is one attempt's state. Queries are built with literal values (ids
// are integers, strings go through quote) so each statement is a single
// text-protocol round trip instead of prepare/execute/close.
type txn struct {
	ctx      context.Context
	tx       *sql.Tx
	w        *Workload
	tables   map[string]bool
	users    map[uint64]bool
	rows     int64
	inserted map[string]uint64
}

func (t *txn) touch(users ...uint64) {
	for _, u := range users {
		t.users[u] = true
	}
}

// exec runs a write on table and records it when it changed rows.
func (t *txn) exec(table, q string) (int64, error) {
	res, err := t.tx.ExecContext(t.ctx, q)
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", table, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("write %s: rows affected: %w", table, err)
	}
	if n > 0 {
		t.tables[table] = true
		t.rows += n
	}
	return n, nil
}

func (t *txn) insert(table, q string) (uint64, error) {
	res, err := t.tx.ExecContext(t.ctx, q)
	if err != nil {
		return 0, fmt.Errorf("insert %s: %w", table, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("insert %s: last insert id: %w", table, err)
	}
	t.tables[table] = true
	t.rows++
	if t.inserted == nil {
		t.inserted = map[string]uint64{}
	}
	t.inserted[table] = max(t.inserted[table], uint64(id))
	return uint64(id), nil
}

// row scans the first row of q into dest; false when there is none.
func (t *txn) row(q string, dest ...any) (bool, error) {
	err := t.tx.QueryRowContext(t.ctx, q).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read: %w", err)
	}
	return true, nil
}

func (t *txn) ids(q string) ([]uint64, error) {
	rows, err := t.tx.QueryContext(t.ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read ids: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	return out, nil
}

// pick locks a random existing row of table (the first id at or above a
// random point, else the last row) and scans cols into dest; errSkip when
// the table is empty.
func (t *txn) pick(table, cols string, dest ...any) error {
	start := 1 + t.w.r.Uint64N(max(t.w.maxID[table], 1))
	ok, err := t.row(fmt.Sprintf("SELECT %s FROM %s WHERE id >= %d ORDER BY id LIMIT 1 FOR UPDATE", cols, table, start), dest...)
	if err == nil && !ok {
		ok, err = t.row(fmt.Sprintf("SELECT %s FROM %s ORDER BY id DESC LIMIT 1 FOR UPDATE", cols, table), dest...)
	}
	if err != nil {
		return err
	}
	if !ok {
		return errSkip
	}
	return nil
}

// claimOwner locks claim c and returns its user; ok is false for a claim
// that no longer exists (an orphan child row touches no user).
func (t *txn) claimOwner(c uint64) (user uint64, ok bool, err error) {
	ok, err = t.row(fmt.Sprintf("SELECT user_id FROM claims WHERE id = %d FOR UPDATE", c), &user)
	return user, ok, err
}

// addressUsers returns the users an address change touches: its owner and
// every user whose current address it is (locked, so the answer holds
// until commit).
func (t *txn) addressUsers(addressID, owner uint64) ([]uint64, error) {
	ids, err := t.ids(fmt.Sprintf("SELECT id FROM users WHERE current_user_address_id = %d FOR UPDATE", addressID))
	return append(ids, owner), err
}

func (t *txn) randomPhone() string { return fmt.Sprintf("07%09d", t.w.r.IntN(1_000_000_000)) }

func (t *txn) randomAddress() (full, post string) {
	r := t.w.r
	full = fmt.Sprintf("Flat %d, %d %s, %s", 1+r.IntN(90), 1+r.IntN(200), pick(r, streets), pick(r, towns))
	post = fmt.Sprintf("%c%c%d %d%c%c", 'A'+r.IntN(26), 'A'+r.IntN(26), 1+r.IntN(20), r.IntN(10), 'A'+r.IntN(26), 'A'+r.IntN(26))
	return full, post
}

func otherThan(r *rand.Rand, choices []string, current string) string {
	for {
		if c := pick(r, choices); c != current {
			return c
		}
	}
}

func idList(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, ",")
}

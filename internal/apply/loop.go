// Package apply is the single goroutine that turns source transactions into
// effects. Per batch of many source transactions, strictly in this order:
//
//  1. PostgreSQL: recompute the queue rows of the touched users on the lookup
//     server and write the difference (plus the queue notices, in an outbox,
//     in the same transaction);
//  2. Redis: delete the touched users' keys in one pipeline;
//  3. NATS JetStream: publish the notices and wait for every ack;
//  4. PostgreSQL: advance the checkpoint.
//
// Every step is idempotent, so a crash anywhere replays from the stored
// checkpoint and redoes the rest (BRIEF invariants 1 and 2). One goroutine
// orders every write, so a stale recomputation can never overwrite a newer
// one (invariant 4); reconcile chunks run on the same goroutine via Do.
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// ErrPoison marks a change that cannot be processed (a handler rejected it).
// Streaming halts with the position and table; it is never skipped silently.
var ErrPoison = errors.New("poison row")

// Config tunes the loop. Zero values take the defaults noted.
type Config struct {
	Pipeline      string // CloudEvents source is "dialsync/<Pipeline>"
	SubjectPrefix string // default "dialsync"
	MaxBatchTxns  int    // default 2000
	MaxBatchBytes int    // default 2 MiB; also bounds memory queued ahead of the loop (x2)
	// BatchWindow is how long the loop waits for more transactions after the
	// first one when none are queued. Zero (the default) means no waiting:
	// batches still grow by themselves under load, because everything that
	// arrived while the previous batch was being applied goes into the next.
	BatchWindow  time.Duration
	RetryInitial time.Duration // default 100ms
	RetryMax     time.Duration // default 10s
	Keys         *handlers.Keys
	// OnApplied, when set, is called on the loop goroutine after each batch
	// is fully durable (for metrics and tests).
	OnApplied func(BatchStats)
	// OnSaved, when set, is called (on the saver goroutine) after each
	// checkpoint write with the position and how long the write took.
	OnSaved func(pos change.Position, took time.Duration)
	// OnRetry, when set, is called for every failed attempt of a stage.
	OnRetry func(op string, err error)
	// OrderedCommits says the source commits in binlog order
	// (binlog_order_commits = ON, the MySQL and MariaDB default): then the
	// commit barrier needs one row of a batch's last transaction, since its
	// commit being visible implies every earlier one is. Otherwise it locks
	// one row per transaction.
	OrderedCommits bool
	// DeadLetter says whether a table's rows that cannot be processed go to
	// dead letters (true) or halt the pipeline (false, and when nil).
	DeadLetter func(table string) bool
}

// BatchStats describes one applied batch.
type BatchStats struct {
	Txns, Changes, Users, Keys, Notices int
	QueueChanges                        []queue.Change
	Unresolved                          int
	DeadLetters                         []DeadLetter
	// Rows counts changes by table and operation.
	Rows         map[RowKey]int
	Checkpoint   change.Position // zero when the batch ended inside a large transaction
	NewestCommit time.Time
	Stages       [5]time.Duration // lookup, postgres, redis, nats, checkpoint
}

// RowKey is a (table, operation) pair of BatchStats.Rows.
type RowKey struct {
	Table string
	Op    change.Op
}

// Stage indexes of BatchStats.Stages.
const (
	StageLookup = iota
	StagePostgres
	StageRedis
	StageNATS
	StageCheckpoint
)

// StageNames names the stages for metrics and logs.
var StageNames = [5]string{"lookup", "postgres", "redis", "nats", "checkpoint"}

// Deps are the servers the loop writes to.
type Deps struct {
	Lookup     Lookup
	Queue      QueueStore
	Cache      Cache
	Publisher  Publisher
	Checkpoint Checkpointer
	// DeadLetters is required when Config.DeadLetter can say yes.
	DeadLetters DeadLetters
}

type item struct {
	txn *change.Txn
	job func(context.Context) error
	res chan error
}

// Loop is the apply loop. Create with New, feed with Submit (the canal
// handler) and Do, and run with Run.
type Loop struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	src  string

	in chan item

	mu      sync.Mutex
	pending int           // bytes submitted and not yet applied
	queued  atomic.Int64  // transactions submitted and not yet applied
	space   chan struct{} // signalled when pending shrinks

	// The checkpoint saver (see saver): the loop hands it the newest
	// durable position and carries on with the next batch.
	saveMu   sync.Mutex
	saveNext *saveReq
	saveKick chan struct{}
	saving   bool          // the saver is writing a request (under saveMu)
	saveIdle chan struct{} // signalled when the saver finishes a request
	saveErr  chan error

	// Loop-goroutine state.
	owners   *tracked                                // claim -> user, as of the binlog position
	pointers *tracked                                // user -> current_user_address_id
	pointed  map[uint64][]uint64                     // address -> users pointing at it (pointers reversed)
	partial  map[uint64]*agg                         // notices of a large transaction's earlier pieces
	replay   *queue.Mark                             // while replaying: the last transaction already in the queue
	includes func(change.Position, *change.Txn) bool // set with replay
	res      handlers.Result
}

// SetMark tells the loop which transactions' queue writes are already
// durable (the mark stored with them; see queue.Mark). Until the stream
// passes the mark, the queue rows of users touched only by such
// transactions are neither recomputed nor written: their effects are in
// the queue, and a recomputation now would read newer source rows and
// announce them a second time under an old transaction. Their cache keys
// are deleted and their user.changed notices published again as usual
// (both idempotent). includes says whether a transaction lies at or
// before a position (canal.Includes: GTID-set containment needs the
// binlog library, which this package does not import). Call before Run.
func (l *Loop) SetMark(m queue.Mark, includes func(change.Position, *change.Txn) bool) {
	l.replay, l.includes = &m, includes
}

// covered counts the leading transactions of batch whose queue writes are
// already durable (SetMark). At the first one that is not, replay is over.
func (l *Loop) covered(batch []*change.Txn) int {
	m := l.replay
	if m == nil {
		return 0
	}
	upTo := change.Position{File: m.File, Pos: m.Pos, GTIDSet: m.GTIDSet}
	for i, t := range batch {
		var done bool
		if t.Partial {
			// A piece's End is where its transaction starts; the transaction
			// is whole in the queue only if the mark lies beyond that.
			done = (m.PartialTxn != "" && m.PartialTxn == t.ID() && t.Piece <= m.Piece) ||
				(t.GTID != "" && l.includes(upTo, t)) ||
				(t.GTID == "" && l.includes(upTo, t) && (t.End.File != m.File || t.End.Pos != m.Pos))
		} else {
			done = l.includes(upTo, t)
		}
		if !done {
			l.replay = nil
			l.log.Info("replay passed the queue mark; queue rows are recomputed from here",
				"mark", upTo.String(), "txn", t.ID())
			return i
		}
	}
	return len(batch)
}

// markOf is the queue mark naming t as the last transaction written.
func markOf(t *change.Txn) *queue.Mark {
	m := &queue.Mark{File: t.End.File, Pos: t.End.Pos, GTIDSet: t.End.GTIDSet}
	if t.Partial {
		m.PartialTxn, m.Piece = t.ID(), t.Piece
	}
	return m
}

// SetOwners seeds the claim -> user map (from the map stored with the
// checkpoint, or at a bootstrap from the lookup server). With dirty set,
// the whole map is stored with the next checkpoint. Call before Run.
func (l *Loop) SetOwners(m map[uint64]uint64, dirty bool) { l.owners.seed(m, dirty) }

// SetPointers seeds the user -> current_user_address_id map like
// SetOwners. Until it is called, address changes resolve on the lookup
// server instead (which may already show later pointer changes).
func (l *Loop) SetPointers(m map[uint64]uint64, dirty bool) {
	l.pointed = make(map[uint64][]uint64, len(m))
	for u, a := range m {
		l.pointed[a] = append(l.pointed[a], u)
	}
	l.pointers.seed(m, dirty)
}

// setPointer records that user points at addr (0: nowhere).
func (l *Loop) setPointer(user, addr uint64, partial bool) {
	if old, ok := l.pointers.m[user]; ok && old != 0 {
		l.pointed[old] = slices.DeleteFunc(l.pointed[old], func(u uint64) bool { return u == user })
		if len(l.pointed[old]) == 0 {
			delete(l.pointed, old)
		}
	}
	if addr != 0 {
		l.pointed[addr] = append(l.pointed[addr], user)
	}
	l.pointers.set(user, addr, partial)
}

// tracked is a map kept as of the binlog position being applied, with the
// entries changed since the last checkpoint (stored with it, so the stored
// map always matches the stored position).
type tracked struct {
	m     map[uint64]uint64
	dirty map[uint64]uint64
	// Entries changed by the pieces of a large transaction not yet ended:
	// they join dirty at its last piece, so the map stored with a
	// checkpoint never runs ahead of that checkpoint.
	dirtyPartial map[uint64]uint64
}

func newTracked() *tracked {
	return &tracked{m: map[uint64]uint64{}, dirty: map[uint64]uint64{}, dirtyPartial: map[uint64]uint64{}}
}

func (t *tracked) seed(m map[uint64]uint64, dirty bool) {
	t.m = m
	if dirty {
		maps.Copy(t.dirty, m)
	}
}

func (t *tracked) set(k, v uint64, partial bool) {
	t.m[k] = v
	if partial {
		t.dirtyPartial[k] = v
	} else {
		t.dirty[k] = v
	}
}

// endTxn is called at the last piece of a large transaction.
func (t *tracked) endTxn() {
	for k, v := range t.dirtyPartial {
		if _, ok := t.dirty[k]; !ok {
			t.dirty[k] = v
		}
	}
	clear(t.dirtyPartial)
}

// take hands over the dirty entries (for a checkpoint save).
func (t *tracked) take() map[uint64]uint64 {
	d := t.dirty
	t.dirty = map[uint64]uint64{}
	return d
}

// New builds a loop.
func New(cfg Config, deps Deps, log *slog.Logger) *Loop {
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = "dialsync"
	}
	if cfg.MaxBatchTxns <= 0 {
		cfg.MaxBatchTxns = 2000
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 2 << 20
	}
	if cfg.RetryInitial <= 0 {
		cfg.RetryInitial = 100 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	return &Loop{
		cfg:      cfg,
		deps:     deps,
		log:      log,
		src:      "dialsync/" + cfg.Pipeline,
		in:       make(chan item, 4*cfg.MaxBatchTxns),
		space:    make(chan struct{}, 1),
		saveKick: make(chan struct{}, 1),
		saveIdle: make(chan struct{}, 1),
		saveErr:  make(chan error, 1),
		owners:   newTracked(),
		pointers: newTracked(),
		partial:  make(map[uint64]*agg),
	}
}

// Submit queues a transaction for the loop. It blocks while the transactions
// queued ahead of the loop hold more than 2*MaxBatchBytes (back-pressure onto
// the binlog reader, so memory stays bounded), or the queue is full.
func (l *Loop) Submit(ctx context.Context, t *change.Txn) error {
	for {
		l.mu.Lock()
		if l.pending == 0 || l.pending+t.Bytes <= 2*l.cfg.MaxBatchBytes {
			l.pending += t.Bytes
			l.mu.Unlock()
			break
		}
		l.mu.Unlock()
		select {
		case <-l.space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case l.in <- item{txn: t}:
		l.queued.Add(1)
		return nil
	case <-ctx.Done():
		l.release(t.Bytes)
		return ctx.Err()
	}
}

func (l *Loop) release(n int) {
	l.mu.Lock()
	l.pending -= n
	l.mu.Unlock()
	select {
	case l.space <- struct{}{}:
	default:
	}
}

// Pending is the number of transactions submitted and not yet applied.
func (l *Loop) Pending() int64 { return l.queued.Load() }

// Do runs fn on the loop goroutine, between batches, after every transaction
// submitted before it was applied; it returns fn's error. Reconcile chunks
// use it so their writes are ordered with streamed changes.
func (l *Loop) Do(ctx context.Context, fn func(context.Context) error) error {
	it := item{job: fn, res: make(chan error, 1)}
	select {
	case l.in <- it:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-it.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run applies batches until ctx is cancelled (returns nil once the batch in
// hand is durable) or a fatal error happens. Transient failures of any server
// are retried inside, with backoff and jitter; nothing is skipped.
func (l *Loop) Run(ctx context.Context) error {
	if err := l.flushOutbox(ctx); err != nil {
		return err
	}
	sctx, stopSaver := context.WithCancel(ctx)
	saverDone := make(chan struct{})
	go func() { defer close(saverDone); l.saver(sctx) }()
	// On the way out, the saver stores the newest durable position (a clean
	// stop keeps its checkpoint) before Run returns.
	defer func() { stopSaver(); <-saverDone }()

	// The stages run as a pipeline: while batch N is written to
	// PostgreSQL, batch N+1 is prepared; while N goes to Redis and NATS,
	// N+1 is written. Each stage is one goroutine taking batches in order,
	// so every store still sees every write in binlog order (invariant 4),
	// and each batch still goes through the four steps in order
	// (invariants 1 and 3). A stage that fails drops every later batch, so
	// nothing after a failed batch reaches the checkpoint.
	// The batches in hand are finished even when ctx is cancelled meanwhile
	// (a clean stop stores its checkpoint); only a second signal, which
	// kills the process, cuts them short.
	work := context.WithoutCancel(ctx)
	toQueue, toFinish := make(chan *batchWork, 1), make(chan *batchWork, 1)
	stageErr := make(chan error, 2)
	var pending sync.WaitGroup // batches handed to the stages and not done
	done := func(w *batchWork) {
		l.release(w.bytes)
		l.queued.Add(-int64(len(w.batch)))
		pending.Done()
	}
	stage := func(in <-chan *batchWork, out chan<- *batchWork, fn func(*batchWork) error) {
		failed := false
		for w := range in {
			if !failed {
				if err := fn(w); err != nil {
					failed = true
					stageErr <- err
				}
			}
			if failed || out == nil {
				done(w)
				continue
			}
			out <- w
		}
		if out != nil {
			close(out)
		}
	}
	finished := make(chan struct{})
	go stage(toQueue, toFinish, func(w *batchWork) error { return l.writeQueue(work, ctx, w) })
	go func() {
		defer close(finished)
		stage(toFinish, nil, func(w *batchWork) error { return l.finish(work, ctx, w) })
	}()
	defer func() { close(toQueue); <-finished }()
	// drain waits until every batch handed on is done.
	drain := func() error {
		idle := make(chan struct{})
		go func() { pending.Wait(); close(idle) }()
		select {
		case <-idle:
			return nil
		case err := <-stageErr:
			return err
		}
	}

	batch := make([]*change.Txn, 0, l.cfg.MaxBatchTxns)
	for {
		batch = batch[:0:0]
		var job *item
		select {
		case <-ctx.Done():
			return nil
		case err := <-l.saveErr:
			return err
		case err := <-stageErr:
			return err
		case it := <-l.in:
			if it.job != nil {
				job = &it
			} else {
				batch = append(batch, it.txn)
			}
		}
		if job == nil {
			job = l.fill(ctx, &batch)
		}
		if len(batch) > 0 {
			w, err := l.prepare(work, ctx, batch)
			if err != nil {
				return err
			}
			pending.Add(1)
			select {
			case toQueue <- w:
			case err := <-stageErr:
				done(w)
				return err
			}
		}
		if job != nil {
			// Jobs (reconcile chunks, the bootstrap's first save) run with
			// the stages idle and see every earlier checkpoint written.
			if err := drain(); err != nil {
				job.res <- err
				return err
			}
			if err := l.waitSaved(ctx); err != nil {
				job.res <- err
				return err
			}
			job.res <- job.job(ctx)
		}
	}
}

// saveReq is a checkpoint write waiting for the saver: the newest durable
// position, the claim owners learned up to it, and the outbox messages
// published up to it (deleted with it).
type saveReq struct {
	pos              change.Position
	owners, pointers map[uint64]uint64
	outbox           []string
}

// queueSave hands the saver a newer position, merging with one it has not
// taken yet (later owners win).
func (l *Loop) queueSave(r saveReq) {
	l.saveMu.Lock()
	if n := l.saveNext; n != nil {
		if !r.pos.IsZero() {
			n.pos = r.pos
		}
		maps.Copy(n.owners, r.owners)
		maps.Copy(n.pointers, r.pointers)
		n.outbox = append(n.outbox, r.outbox...)
	} else {
		l.saveNext = &r
	}
	l.saveMu.Unlock()
	select {
	case l.saveKick <- struct{}{}:
	default:
	}
}

// saver writes checkpoints off the loop's critical path: a batch's notices
// are out as soon as its effects are durable, and the checkpoint write (and
// the outbox cleanup) overlaps the next batch. It writes positions in the
// order the loop hands them over, only ever after their effects are
// durable, so invariant 1 holds. When ctx ends it writes what is pending
// and returns.
func (l *Loop) saver(ctx context.Context) {
	work := context.WithoutCancel(ctx)
	for {
		l.saveMu.Lock()
		req := l.saveNext
		l.saveNext = nil
		l.saving = req != nil
		l.saveMu.Unlock()
		if req == nil {
			select {
			case <-l.saveKick:
				continue
			case <-ctx.Done():
				l.saveMu.Lock()
				pending := l.saveNext != nil
				l.saveMu.Unlock()
				if !pending {
					return
				}
				continue
			}
		}
		t0 := time.Now()
		// Retries end only with the process (work is not cancelled by a stop
		// signal): a clean stop must store its checkpoint.
		err := l.retry(work, "clear outbox", func() error { return l.deps.Queue.DeleteOutbox(work, req.outbox) })
		if err == nil && !req.pos.IsZero() {
			err = l.retry(work, "save checkpoint", func() error { return l.deps.Checkpoint.Save(work, req.pos, req.owners, req.pointers) })
		}
		l.saveMu.Lock()
		l.saving = false
		l.saveMu.Unlock()
		select {
		case l.saveIdle <- struct{}{}:
		default:
		}
		if err != nil {
			select {
			case l.saveErr <- err:
			default:
			}
			return
		}
		if l.cfg.OnSaved != nil && !req.pos.IsZero() {
			l.cfg.OnSaved(req.pos, time.Since(t0))
		}
	}
}

// waitSaved blocks until the saver has written everything handed to it.
func (l *Loop) waitSaved(ctx context.Context) error {
	for {
		l.saveMu.Lock()
		busy := l.saveNext != nil || l.saving
		l.saveMu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-l.saveIdle:
		case err := <-l.saveErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fill adds queued transactions to batch without blocking (or waiting up to
// BatchWindow); it stops at a job, which it returns to run after the batch.
func (l *Loop) fill(ctx context.Context, batch *[]*change.Txn) *item {
	bytes := (*batch)[0].Bytes
	var deadline <-chan time.Time
	if l.cfg.BatchWindow > 0 {
		tm := time.NewTimer(l.cfg.BatchWindow)
		defer tm.Stop()
		deadline = tm.C
	}
	for len(*batch) < l.cfg.MaxBatchTxns && bytes < l.cfg.MaxBatchBytes {
		select {
		case it := <-l.in:
			if it.job != nil {
				return &it
			}
			*batch = append(*batch, it.txn)
			bytes += it.txn.Bytes
			continue
		default:
		}
		if deadline == nil {
			return nil
		}
		select {
		case it := <-l.in:
			if it.job != nil {
				return &it
			}
			*batch = append(*batch, it.txn)
			bytes += it.txn.Bytes
		case <-deadline:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// agg collects what one transaction did to one user, for its notice.
type agg struct {
	tables, ops, cols []string
}

func addUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func (a *agg) add(c *change.Change) {
	a.tables = addUnique(a.tables, c.Table)
	a.ops = addUnique(a.ops, c.Op.String())
	for _, col := range c.Changed {
		a.cols = addUnique(a.cols, col)
	}
}

func (a *agg) merge(b *agg) {
	for _, v := range b.tables {
		a.tables = addUnique(a.tables, v)
	}
	for _, v := range b.ops {
		a.ops = addUnique(a.ops, v)
	}
	for _, v := range b.cols {
		a.cols = addUnique(a.cols, v)
	}
}

// touch is one (transaction, user) pair of a batch.
type touch struct {
	txn  int // index into the batch
	user uint64
	agg  *agg
}

// apply runs the four steps for one batch. work is the context for server
// calls (not cancelled by a stop signal); stop ends retries of a batch whose
// servers stay down once the process is asked to stop.
// work is one batch on its way through the stages.
type batchWork struct {
	batch     []*change.Txn
	bytes     int
	st        BatchStats
	order     []touch
	users     []uint64 // every touched user: their cache keys go
	recompute []uint64 // the users whose queue rows are recomputed (users, less a replay's covered ones)
	rows      []queue.Row
	queueMsgs []notice.Message
	save      saveReq
}

// prepare is stage 1 (the loop goroutine): handlers, the claim and pointer
// maps, the commit barrier and every lookup, including the queue rule.
func (l *Loop) prepare(work, stop context.Context, batch []*change.Txn) (*batchWork, error) {
	st := BatchStats{Txns: len(batch), Rows: make(map[RowKey]int, 4)}

	// Handlers: which users each change touches. Claims resolve through the
	// claim -> user map AS OF the change's place in the binlog (the map is
	// updated in binlog order as claims rows go by), because the lookup
	// server may already show a claim moved or deleted by a later
	// transaction. Claims the map does not know, and addresses, are looked
	// up once for the whole batch.
	type pendingRef struct {
		ref handlers.Ref
		txn int
		c   *change.Change
	}
	touches := make(map[[2]uint64]*agg) // {txn index, user}
	var order []touch
	var users []uint64
	addTouch := func(txn int, user uint64, c *change.Change) {
		k := [2]uint64{uint64(txn), user}
		a := touches[k]
		if a == nil {
			a = &agg{}
			touches[k] = a
			order = append(order, touch{txn: txn, user: user, agg: a})
			users = append(users, user)
		}
		a.add(c)
	}
	var later []pendingRef
	for i, t := range batch {
		for j := range t.Changes {
			c := &t.Changes[j]
			st.Changes++
			st.Rows[RowKey{c.Table, c.Op}]++
			l.res.Reset()
			if err := handlers.Handle(c, &l.res); err != nil {
				if l.cfg.DeadLetter == nil || !l.cfg.DeadLetter(c.Table) {
					return nil, fmt.Errorf("handle %s %s at %s (txn %s): %w: %w", c.Op, c.Table, t.End, t.ID(), ErrPoison, err)
				}
				st.DeadLetters = append(st.DeadLetters, DeadLetter{End: t.End, GTID: t.GTID, Txn: t.ID(),
					Table: c.Table, Op: c.Op, Seq: j, PrimaryKey: primaryKey(c), Err: err.Error()})
				l.log.Warn("row set aside as a dead letter (tables.on_error = dead_letter)",
					"table", c.Table, "op", c.Op.String(), "pos", t.End.String(), "txn", t.ID(), "err", err)
				continue
			}
			for _, r := range l.res.Refs {
				switch r.Kind {
				case handlers.User:
					addTouch(i, r.ID, c)
				case handlers.Claim:
					if u, ok := l.owners.m[r.ID]; ok {
						addTouch(i, u, c)
					} else {
						later = append(later, pendingRef{ref: r, txn: i, c: c})
					}
				case handlers.Address:
					if l.pointed == nil {
						later = append(later, pendingRef{ref: r, txn: i, c: c})
						continue
					}
					for _, u := range l.pointed[r.ID] {
						addTouch(i, u, c)
					}
				}
			}
			// Learned after the refs: a claim's own change already names
			// both its old and new user.
			for _, o := range l.res.Learned {
				l.owners.set(o.Claim, o.User, t.Partial)
			}
			if l.pointed != nil {
				for _, p := range l.res.Pointers {
					l.setPointer(p.User, p.Address, t.Partial)
				}
			}
		}
		if !t.Partial && t.Piece > 0 {
			l.owners.endTxn()
			l.pointers.endTxn()
		}
		if !t.Partial && !t.CommitTime.IsZero() {
			st.NewestCommit = t.CommitTime
		}
	}

	t0 := time.Now()
	// Commit barrier: every lookup below must see the batch's transactions.
	// One row per transaction is enough: its rows commit atomically. With
	// commits in binlog order, the last transaction's row is enough.
	barrier := map[string][]uint64{}
	for i := len(batch) - 1; i >= 0; i-- {
		t := batch[i]
		found := false
		for j := range t.Changes {
			if id, ok := rowID(&t.Changes[j]); ok {
				barrier[t.Changes[j].Table] = append(barrier[t.Changes[j].Table], id)
				found = true
				break
			}
		}
		if found && l.cfg.OrderedCommits {
			break
		}
	}
	if len(barrier) > 0 {
		if err := l.retry(stop, "lookup: commit barrier", func() error { return l.deps.Lookup.CommitBarrier(work, barrier) }); err != nil {
			return nil, err
		}
	}
	var claims, addrs []uint64
	for _, r := range later {
		if r.ref.Kind == handlers.Claim {
			claims = append(claims, r.ref.ID)
		} else {
			addrs = append(addrs, r.ref.ID)
		}
	}
	claims = dedupe(claims)
	addrs = dedupe(addrs)
	var claimOwners map[uint64]uint64
	var addrUsers map[uint64][]uint64
	if len(claims) > 0 {
		if err := l.retry(stop, "lookup claims", func() (err error) {
			claimOwners, err = l.deps.Lookup.ClaimOwners(work, claims)
			return err
		}); err != nil {
			return nil, err
		}
	}
	if len(addrs) > 0 {
		if err := l.retry(stop, "lookup addresses", func() (err error) {
			addrUsers, err = l.deps.Lookup.AddressUsers(work, addrs)
			return err
		}); err != nil {
			return nil, err
		}
	}
	for _, r := range later {
		switch r.ref.Kind {
		case handlers.Claim:
			u, ok := claimOwners[r.ref.ID]
			if !ok {
				st.Unresolved++
				l.log.Warn("change not resolved to a user: claim unknown to the claim map and the lookup server",
					"table", r.c.Table, "claim_id", r.ref.ID, "txn", batch[r.txn].ID(), "pos", batch[r.txn].End.String())
				continue
			}
			addTouch(r.txn, u, r.c)
		case handlers.Address:
			for _, u := range addrUsers[r.ref.ID] {
				addTouch(r.txn, u, r.c)
			}
		}
	}
	users = dedupe(users)
	st.Users = len(users)
	// Users touched only by transactions whose queue writes are already
	// durable (a replay after a crash) keep their rows. Their cache keys
	// still go: the crash may have come between the queue write and the
	// deletion.
	recompute := users
	if k := l.covered(batch); k > 0 {
		last := make(map[uint64]int, len(users))
		for _, tc := range order {
			last[tc.user] = tc.txn
		}
		recompute = slices.DeleteFunc(slices.Clone(users), func(u uint64) bool { return last[u] < k })
	}

	// The queue rule, evaluated now for the users whose rows may change.
	var rows []queue.Row
	if len(recompute) > 0 {
		if err := l.retry(stop, "evaluate queue rule", func() (err error) {
			rows, err = l.deps.Lookup.QueueRows(work, recompute)
			return err
		}); err != nil {
			return nil, err
		}
	}
	st.Stages[StageLookup] = time.Since(t0)

	// The checkpoint this batch allows: the end of its last whole
	// transaction. The map entries learned up to it travel with it (the
	// maps go on changing as later batches are prepared).
	w := &batchWork{batch: batch, st: st, order: order, users: users, recompute: recompute, rows: rows}
	for i := len(batch) - 1; i >= 0; i-- {
		if !batch[i].Partial {
			w.save.pos = batch[i].End
			break
		}
	}
	w.save.owners, w.save.pointers = map[uint64]uint64{}, map[uint64]uint64{}
	if !w.save.pos.IsZero() {
		w.save.owners, w.save.pointers = l.owners.take(), l.pointers.take()
	}
	for _, t := range batch {
		w.bytes += t.Bytes
	}
	return w, nil
}

// writeQueue is stage 2: dead letters, then the queue rows in PostgreSQL.
func (l *Loop) writeQueue(work, stop context.Context, w *batchWork) error {
	st, batch, users, rows := &w.st, w.batch, w.recompute, w.rows
	// Dead letters are durable before anything moves past them.
	for _, d := range st.DeadLetters {
		if err := l.retry(stop, "record dead letter", func() error { return l.deps.DeadLetters.AddDeadLetter(work, d) }); err != nil {
			return err
		}
	}

	t0 := time.Now()
	lastTxn := make(map[uint64]int, len(users)) // user -> last txn touching it
	for _, tc := range w.order {
		lastTxn[tc.user] = tc.txn
	}
	if len(users) > 0 {
		build := func(chs []queue.Change) []notice.Message {
			st.QueueChanges = chs
			msgs := make([]notice.Message, 0, len(chs))
			for _, ch := range chs {
				t := batch[lastTxn[ch.Row.UserID]]
				msgs = append(msgs, QueueNotice(l.src, l.cfg.SubjectPrefix, t.ID(), t.GTID, t.End, t.CommitTime, ch))
			}
			return msgs
		}
		mark := markOf(batch[len(batch)-1])
		if err := l.retry(stop, "write queue", func() (err error) {
			w.queueMsgs, err = l.deps.Queue.Apply(work, users, rows, mark, build)
			return err
		}); err != nil {
			return err
		}
	}
	st.Stages[StagePostgres] = time.Since(t0)

	return nil
}

// finish is stage 3: Redis, then NATS, then the checkpoint goes to the
// saver.
func (l *Loop) finish(work, stop context.Context, w *batchWork) error {
	st, batch, users, order, queueMsgs := &w.st, w.batch, w.users, w.order, w.queueMsgs
	// 2. Redis: delete every touched user's keys, and the queue keys when
	// queue membership or a queued row changed.
	t0 := time.Now()
	keys := make([]string, 0, len(users)*2+2)
	for _, u := range users {
		keys = l.cfg.Keys.AppendUser(keys, u)
	}
	if len(queueMsgs) > 0 {
		keys = append(keys, l.cfg.Keys.Queue()...)
	}
	st.Keys = len(keys)
	if len(keys) > 0 {
		if err := l.retry(stop, "delete cache keys", func() error { return l.deps.Cache.Del(work, keys) }); err != nil {
			return err
		}
	}
	st.Stages[StageRedis] = time.Since(t0)

	// 3. NATS: one user.changed per (source transaction, user). A large
	// transaction's pieces accumulate until its last piece, so each user
	// gets exactly one notice per transaction.
	t0 = time.Now()
	msgs := queueMsgs
	for _, tc := range order {
		t := batch[tc.txn]
		if t.Partial || t.Piece > 0 {
			if a := l.partial[tc.user]; a != nil {
				a.merge(tc.agg)
			} else {
				l.partial[tc.user] = tc.agg
			}
			continue
		}
		msgs = append(msgs, l.userNotice(t, tc.user, tc.agg))
	}
	for _, t := range batch {
		if !t.Partial && t.Piece > 0 {
			for u, a := range l.partial {
				msgs = append(msgs, l.userNotice(t, u, a))
			}
			clear(l.partial)
		}
	}
	for _, d := range st.DeadLetters {
		t := batch[0]
		for _, bt := range batch {
			if bt.ID() == d.Txn {
				t = bt
			}
		}
		m, err := notice.NewDeadLetter(l.src, l.cfg.SubjectPrefix, t.CommitTime, notice.DeadLetter{
			Table: d.Table, Operation: d.Op.String(), Seq: d.Seq, Error: d.Err,
			Source: notice.SourcePosition{File: d.End.File, Pos: d.End.Pos, GTID: d.GTID, Txn: d.Txn},
		})
		if err != nil {
			return fmt.Errorf("encode dead letter notice: %w", err)
		}
		msgs = append(msgs, m)
	}
	msgs = dedupeMsgs(msgs)
	st.Notices = len(msgs)
	if len(msgs) > 0 {
		if err := l.retry(stop, "publish notices", func() error { return l.deps.Publisher.Publish(work, msgs) }); err != nil {
			return err
		}
	}
	st.Stages[StageNATS] = time.Since(t0)

	// 4. Checkpoint: written by the saver while later batches proceed.
	var published []string
	for _, m := range queueMsgs {
		published = append(published, m.ID)
	}
	if !w.save.pos.IsZero() || len(published) > 0 {
		w.save.outbox = published
		l.queueSave(w.save)
		st.Checkpoint = w.save.pos
	}
	if l.cfg.OnApplied != nil {
		l.cfg.OnApplied(*st)
	}
	return nil
}

// rowID is the row's id (column 0 of every tracked table's spec).
func rowID(c *change.Change) (uint64, bool) {
	row := c.After
	if row == nil {
		row = c.Before
	}
	if len(row) == 0 {
		return 0, false
	}
	switch v := row[0].(type) {
	case int64:
		return uint64(v), v >= 0
	case uint64:
		return v, true
	}
	return 0, false
}

// primaryKey is rowID as text ("" when unknown); ids are not row values
// worth hiding.
func primaryKey(c *change.Change) string {
	if id, ok := rowID(c); ok {
		return strconv.FormatUint(id, 10)
	}
	return ""
}

// userNotice makes the user.changed notice of (t, user). Sorting makes the
// payload identical on replay, whatever the batch boundaries.
func (l *Loop) userNotice(t *change.Txn, user uint64, a *agg) notice.Message {
	slices.Sort(a.tables)
	slices.Sort(a.ops)
	slices.Sort(a.cols)
	return notice.NewUserChanged(l.src, l.cfg.SubjectPrefix, t.CommitTime, notice.UserChanged{
		UserID:     user,
		Tables:     a.tables,
		Operations: a.ops,
		Columns:    a.cols,
		Source:     notice.SourcePosition{File: t.End.File, Pos: t.End.Pos, GTID: t.GTID, Txn: t.ID()},
	})
}

// QueueNotice makes the queue notice of a queue change attributed to a
// source transaction (or a reconcile run). The id carries a digest of the
// new values: a replay that recomputes different values (the source moved
// on meanwhile) is a different notice, while a replay of the same values is
// dropped by the stream's duplicate window.
func QueueNotice(src, prefix, txnID, gtid string, end change.Position, at time.Time, ch queue.Change) notice.Message {
	r := ch.Row
	d := notice.QueueChanged{
		UserID:              r.UserID,
		OpenClaims:          r.OpenClaims,
		PendingRequirements: r.PendingRequirements,
		OldestPendingAt:     r.OldestPendingAt,
		Source:              notice.SourcePosition{File: end.File, Pos: end.Pos, GTID: gtid, Txn: txnID + "#" + rowDigest(r)},
	}
	return notice.NewQueueChanged(src, prefix, ch.Kind.String(), at, d)
}

// rowDigest is a short, stable digest of a queue row's values (FNV-1a).
func rowDigest(r queue.Row) string {
	h := uint64(14695981039346656037)
	mix := func(v uint64) {
		for i := 0; i < 8; i++ {
			h ^= v & 0xff
			h *= 1099511628211
			v >>= 8
		}
	}
	mix(uint64(r.OpenClaims))
	mix(uint64(r.PendingRequirements))
	if r.OldestPendingAt != nil {
		mix(uint64(r.OldestPendingAt.UnixMicro()))
	}
	return strconv.FormatUint(h, 36)
}

// flushOutbox publishes queue notices a previous run stored but may not have
// published (it crashed between steps 1 and 3), before anything else.
func (l *Loop) flushOutbox(ctx context.Context) error {
	var msgs []notice.Message
	if err := l.retry(ctx, "read outbox", func() (err error) {
		msgs, err = l.deps.Queue.Outbox(ctx)
		return err
	}); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	l.log.Info("publishing queue notices left in the outbox by a previous run", "count", len(msgs))
	if err := l.retry(ctx, "publish outbox", func() error { return l.deps.Publisher.Publish(ctx, msgs) }); err != nil {
		return err
	}
	return l.retry(ctx, "clear outbox", func() error { return l.deps.Queue.ClearOutbox(ctx) })
}

// Fatal marks errors retrying cannot fix (fencing, for one).
type Fatal interface{ Fatal() bool }

// IsFatal is set by the wiring: it tells which errors must not be retried.
var IsFatal = func(err error) bool {
	var f Fatal
	return errors.As(err, &f) && f.Fatal()
}

// Retry is retry for jobs run through Do (reconcile chunks).
func (l *Loop) Retry(ctx context.Context, op string, fn func() error) error {
	return l.retry(ctx, op, fn)
}

// retry runs fn until it succeeds, backing off with full jitter between
// RetryInitial and RetryMax. It gives up only when stop is cancelled or the
// error is fatal.
func (l *Loop) retry(stop context.Context, op string, fn func() error) error {
	delay := l.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				l.log.Info("recovered", "op", op, "attempts", attempt)
			}
			return nil
		}
		if IsFatal(err) {
			return fmt.Errorf("%s: %w", op, err)
		}
		l.log.Warn("retrying", "op", op, "attempt", attempt, "err", err)
		if l.cfg.OnRetry != nil {
			l.cfg.OnRetry(op, err)
		}
		sleep := delay/2 + rand.N(delay/2+1)
		select {
		case <-time.After(sleep):
		case <-stop.Done():
			return fmt.Errorf("%s: stopped while retrying: %w", op, err)
		}
		delay = min(2*delay, l.cfg.RetryMax)
	}
}

func dedupe(ids []uint64) []uint64 {
	if len(ids) < 2 {
		return ids
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// dedupeMsgs drops repeated ids within one batch (the outbox can hold a
// queue notice that the same batch makes again after a crash).
func dedupeMsgs(msgs []notice.Message) []notice.Message {
	if len(msgs) < 2 {
		return msgs
	}
	seen := make(map[string]struct{}, len(msgs))
	out := msgs[:0]
	for _, m := range msgs {
		if _, ok := seen[m.ID]; ok {
			continue
		}
		seen[m.ID] = struct{}{}
		out = append(out, m)
	}
	return out
}

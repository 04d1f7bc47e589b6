// Package apply turns source transactions into effects. Per batch of many
// source transactions, strictly in this order:
//
//  1. PostgreSQL: recompute the queue rows of the touched users on the lookup
//     server and write the difference (plus the queue notices, in an outbox,
//     in the same transaction);
//  2. Redis: delete the touched users' keys in one pipeline;
//  3. NATS JetStream: publish the notices and wait for every ack;
//  4. PostgreSQL: advance the checkpoint.
//
// Every step is idempotent, so a crash anywhere replays from the stored
// checkpoint and redoes the rest (docs/design.md, invariants 1 and 2).
//
// Four goroutines run while Run does, each taking batches one at a time and
// in binlog order:
//
//   - the goroutine that called Run (prepare.go): handlers, the claim and
//     pointer maps, the commit barrier and every lookup, including the
//     queue rule; it also runs Do jobs (reconcile chunks), with the stages
//     idle;
//   - the PostgreSQL stage (write.go): dead letters and the queue write;
//   - the Redis and NATS stage (finish.go): key deletes, then publishing;
//   - the saver (saver.go): outbox cleanup and the checkpoint write.
//
// (A Do job also starts a short-lived goroutine that waits for the stages
// to drain.) Order still holds because every lookup of a batch happens on
// one goroutine in batch order and the queue writes happen on another in
// that same order, so a recomputation that read the source later is always
// written later and a stale one never overwrites a newer one (invariant 4);
// each batch passes the stages in order and deletes its keys before it
// publishes its notices (invariants 1 and 3); and the checkpoint is handed
// to the saver only after a batch's notices are acknowledged, and written
// in the order handed over, so it never runs ahead of an effect
// (invariant 1). A stage that fails drops every later batch.
package apply

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/idmap"
	"dialsync/internal/queue"
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
	// StopGrace is how long the batches in hand may take to finish once
	// Run's ctx ends (default 5s): past it their calls are cancelled and
	// they are abandoned, their checkpoint not stored, so a stuck or
	// always-failing server cannot hold a stop (docs/design.md,
	// "Deadlines and signals"; replay from the checkpoint makes it safe).
	StopGrace time.Duration
	Keys      *handlers.Keys
	// OnApplied, when set, is called after each batch's effects are
	// durable and its checkpoint is handed to the saver (for metrics and
	// tests), on the Redis and NATS stage's goroutine.
	OnApplied func(BatchStats)
	// OnSaved, when set, is called (on the saver goroutine) after each
	// checkpoint write with the position and how long the write took.
	OnSaved func(pos change.Position, took time.Duration)
	// OnRetry, when set, is called for every failed attempt of an
	// operation, with the stage it belongs to and the operation's name (as
	// logged).
	OnRetry func(stage Stage, op string, err error)
	// Fatal, when set, marks more errors as fatal: retrying them cannot
	// help, so the loop stops with them. Errors implementing Fatal are
	// fatal whatever it says.
	Fatal func(error) bool
	// OrderedCommits says the source commits in binlog order
	// (binlog_order_commits = ON on MySQL, the default; always on MariaDB:
	// docs/design.md, the commit barrier): then the
	// commit barrier needs one row of a batch's last transaction, since its
	// commit being visible implies every earlier one is. Otherwise it locks
	// one row per transaction.
	OrderedCommits bool
	// DeadLetter says whether a table's rows that cannot be processed go to
	// dead letters (true) or halt the pipeline (false, and when nil).
	DeadLetter func(table string) bool
}

// DefaultStopGrace is Config.StopGrace's default: with the stream, the
// lease and the clients closed after it, a stop ends well within 10 s.
const DefaultStopGrace = 5 * time.Second

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
	// Stages is the time spent per stage, indexed by Stage (StageLookup to
	// StageCheckpoint).
	Stages [batchStages]time.Duration
}

// RowKey is a (table, operation) pair of BatchStats.Rows.
type RowKey struct {
	Table string
	Op    change.Op
}

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

// item is what Submit and Do queue for the loop: a transaction or a job.
type item struct {
	txn *change.Txn
	job func(context.Context) error
	res chan error
}

// Loop is the apply loop. Create with New, feed with Submit (the canal
// handler) and Do, and run with Run.
type Loop struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	notices handlers.Notices

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

	// State of the goroutine running Run (prepare).
	owners   *tracked                                // claim -> user, as of the binlog position
	pointers *tracked                                // user -> current_user_address_id
	pointed  *idmap.Pairs                            // address -> users pointing at it (pointers reversed); nil until seeded
	replay   *queue.Mark                             // while replaying: the last transaction already in the queue
	includes func(change.Position, *change.Txn) bool // set with replay
	res      handlers.Result

	// State of the Redis and NATS stage (finish).
	partial map[uint64]*handlers.UserChanges // notices of a large transaction's earlier pieces
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
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	return &Loop{
		cfg:      cfg,
		deps:     deps,
		log:      log,
		notices:  handlers.NewNotices(cfg.Pipeline, cfg.SubjectPrefix),
		in:       make(chan item, 4*cfg.MaxBatchTxns),
		space:    make(chan struct{}, 1),
		saveKick: make(chan struct{}, 1),
		saveIdle: make(chan struct{}, 1),
		saveErr:  make(chan error, 1),
		owners:   newTracked(),
		pointers: newTracked(),
		partial:  make(map[uint64]*handlers.UserChanges),
	}
}

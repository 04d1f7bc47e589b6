package apply

import (
	"context"

	"dialsync/change"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// The apply loop's seams. Each is implemented against a real server
// elsewhere (internal/lookup, internal/pgstore, checkpoint, internal/cache,
// internal/publish); tests of the loop itself may use fakes.

// Lookup answers questions on the lookup server (which must be the server
// whose binlog is read: see docs/design.md, invariant 3). Every method takes
// a batch.
type Lookup interface {
	// CommitBarrier returns once the transactions that changed these rows
	// (table -> primary keys) are visible to reads on the lookup server: a
	// binlog event can arrive before its transaction's storage-engine
	// commit completes.
	CommitBarrier(ctx context.Context, rows map[string][]uint64) error
	// ClaimOwners returns the current user_id of each claim that exists.
	ClaimOwners(ctx context.Context, claimIDs []uint64) (map[uint64]uint64, error)
	// AddressUsers returns, per address id, the address's own user_id and
	// every user whose current_user_address_id is that address.
	AddressUsers(ctx context.Context, addressIDs []uint64) (map[uint64][]uint64, error)
	// QueueRows evaluates the queue rule for these users; a user absent from
	// the result is not queued.
	QueueRows(ctx context.Context, userIDs []uint64) ([]queue.Row, error)
}

// QueueStore writes the call queue in PostgreSQL.
type QueueStore interface {
	// Apply makes the queue entries of users equal to rows (users without a
	// row leave the queue) in one PostgreSQL transaction. For the changes it
	// made it calls build, and stores the returned messages in the outbox in
	// the same transaction, so queue notices survive a crash that happens
	// before they are published. It returns those messages. mark (when not
	// nil) is stored in the same transaction (see Loop.SetMark).
	Apply(ctx context.Context, users []uint64, rows []queue.Row, mark *queue.Mark,
		build func([]queue.Change) []notice.Message) ([]notice.Message, error)
	// Outbox returns messages stored by Apply and not yet cleared.
	Outbox(ctx context.Context) ([]notice.Message, error)
	// ClearOutbox deletes all outbox messages (called after their acks).
	ClearOutbox(ctx context.Context) error
	// DeleteOutbox deletes the outbox messages with these ids (published).
	DeleteOutbox(ctx context.Context, ids []string) error
}

// Checkpointer stores the position after a batch is durable everywhere.
type Checkpointer interface {
	// Save stores pos, and in the same transaction the claim -> user and
	// user -> current_user_address_id entries changed since the previous
	// Save (pointer 0: none), so the stored maps are the maps as of pos. It
	// fails with checkpoint.ErrFenced when another instance took over the
	// pipeline (a newer epoch).
	Save(ctx context.Context, pos change.Position, owners, pointers map[uint64]uint64) error
}

// Cache deletes keys (one pipeline per call).
type Cache interface {
	Del(ctx context.Context, keys []string) error
}

// Publisher publishes messages with their Nats-Msg-Id and returns once
// every one was acknowledged by the stream.
type Publisher interface {
	Publish(ctx context.Context, msgs []notice.Message) error
}

// DeadLetter is a row change set aside under its table's dead-letter
// policy. It names the change, never its values.
type DeadLetter struct {
	End        change.Position // the transaction's end (a piece's start for a large one)
	GTID       string
	Txn        string // the transaction's identity (notice ids)
	Table      string
	Op         change.Op
	Seq        int    // the change's index within its transaction
	PrimaryKey string // the row's id when it could be read
	Err        string
}

// DeadLetters records dead letters durably; recording one twice is a no-op.
type DeadLetters interface {
	AddDeadLetter(ctx context.Context, d DeadLetter) error
}

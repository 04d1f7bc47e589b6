package notice

import "time"

// Envelope constants.
const (
	SpecVersion = "1.0"              // CloudEvents specversion
	ContentType = "application/json" // datacontenttype
)

// ReconcileCompleted is the data of dialsync.reconcile.completed, published
// once after every reconcile run (bootstrap, periodic or manual; never for a
// dry run). Entered+Left+Updated is the number of corrections the run made:
// non-zero outside a bootstrap means drift (a bug or an outside writer).
type ReconcileCompleted struct {
	RunID      string    `json:"run_id"` // unique per run; the notice id is "reconcile/<run_id>"
	Reason     string    `json:"reason"` // "bootstrap" | "periodic" | "manual"
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Users      int64     `json:"users"`   // users evaluated
	Queued     int64     `json:"queued"`  // queue size after the run
	Entered    int64     `json:"entered"` // users the run added to the queue
	Left       int64     `json:"left"`    // users the run removed
	Updated    int64     `json:"updated"` // queue rows the run corrected
	// Source is the binlog position the reconcile is consistent with, when
	// known (zero Txn: unknown).
	Source SourcePosition `json:"source"`
}

// DeadLetter is the data of dialsync.deadletter: a row change that could not
// be processed and was set aside because its table's policy says so. It
// names the change, never its values.
type DeadLetter struct {
	Table     string `json:"table"`
	Operation string `json:"operation"` // insert | update | delete
	// Seq is the change's index within its source transaction, which makes
	// the id unique.
	Seq   int    `json:"seq"`
	Error string `json:"error"` // the processing error (carries no row values)
	// UserIDs are the users the change was known to touch, if any.
	UserIDs []uint64       `json:"user_ids,omitempty"`
	Source  SourcePosition `json:"source"`
}

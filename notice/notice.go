// Package notice defines the change notices dialsync publishes on NATS
// JetStream (CloudEvents 1.0, structured JSON mode) and a subscriber helper
// for dialler services written in Go. It is importable outside this module.
//
// Compatibility policy: within major version 1 (dataschema ".../v1") fields
// are only ever added; a field is never removed, renamed or given another
// meaning. A breaking change gets a new major version in dataschema.
package notice

import (
	"encoding/json"
	"time"
)

// CloudEvents type values.
const (
	TypeUserChanged        = "dialsync.user.changed"
	TypeQueueEntered       = "dialsync.queue.entered"
	TypeQueueLeft          = "dialsync.queue.left"
	TypeQueueUpdated       = "dialsync.queue.updated"
	TypeReconcileCompleted = "dialsync.reconcile.completed"
	TypeDeadLetter         = "dialsync.deadletter"
)

// SchemaVersion is the major version of the data format, carried in
// dataschema ("urn:dialsync:notice:v1").
const (
	SchemaVersion = 1
	DataSchema    = "urn:dialsync:notice:v1"
)

// Event is the CloudEvents 1.0 envelope.
type Event struct {
	SpecVersion     string          `json:"specversion"` // always "1.0"
	ID              string          `json:"id"`          // deterministic; also the Nats-Msg-Id
	Source          string          `json:"source"`      // "dialsync/<pipeline>"
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"` // the user id, decimal
	Time            time.Time       `json:"time"`              // source commit time (UTC)
	DataContentType string          `json:"datacontenttype"`   // "application/json"
	DataSchema      string          `json:"dataschema"`
	Data            json.RawMessage `json:"data"`
}

// SourcePosition says where in the source binlog a notice comes from.
type SourcePosition struct {
	File string `json:"file,omitempty"`
	Pos  uint32 `json:"pos,omitempty"`
	GTID string `json:"gtid,omitempty"` // the transaction's own GTID
	Txn  string `json:"txn"`            // transaction identity (GTID or file:pos)
}

// UserChanged is the data of a dialsync.user.changed notice: one per
// (source transaction, user).
type UserChanged struct {
	UserID     uint64         `json:"user_id"`
	Tables     []string       `json:"tables"`           // sorted, distinct
	Operations []string       `json:"operations"`       // sorted, distinct: insert/update/delete
	Columns    []string       `json:"columns"`          // changed column NAMES, sorted, distinct
	Values     map[string]any `json:"values,omitempty"` // only allow-listed columns
	Source     SourcePosition `json:"source"`
}

// QueueChanged is the data of dialsync.queue.entered|left|updated.
type QueueChanged struct {
	UserID              uint64         `json:"user_id"`
	OpenClaims          int64          `json:"open_claims"`
	PendingRequirements int64          `json:"pending_requirements"`
	OldestPendingAt     *time.Time     `json:"oldest_pending_at"`
	Source              SourcePosition `json:"source"`
}

// Message is an encoded notice ready to publish.
type Message struct {
	Subject string // NATS subject
	ID      string // Nats-Msg-Id (== Event.ID)
	Data    []byte // the encoded Event
}

package notice

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrWrongType is returned by a typed accessor called on an event of
	// another type.
	ErrWrongType = errors.New("notice: wrong event type")
	// ErrUnsupportedVersion is returned by a typed accessor when the event's
	// dataschema names a major version this package does not know (a
	// breaking change: upgrade the subscriber).
	ErrUnsupportedVersion = errors.New("notice: unsupported data schema version")
)

// Decode parses a notice. Unknown fields, in the envelope or in the data, are
// ignored so that subscribers keep working when fields are added (see the
// compatibility policy in the package doc). It checks only what every
// version has: a CloudEvents 1.x specversion, an id and a type.
func Decode(data []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("notice: decode: %w", err)
	}
	switch {
	case !strings.HasPrefix(e.SpecVersion, "1."):
		return Event{}, fmt.Errorf("notice: decode: specversion %q is not CloudEvents 1.x", e.SpecVersion)
	case e.ID == "":
		return Event{}, errors.New("notice: decode: missing id")
	case e.Type == "":
		return Event{}, errors.New("notice: decode: missing type")
	}
	return e, nil
}

// IsQueue reports whether e is one of the queue notices.
func (e Event) IsQueue() bool {
	return e.Type == TypeQueueEntered || e.Type == TypeQueueLeft || e.Type == TypeQueueUpdated
}

// QueueKind returns "entered", "left" or "updated" for a queue notice, else "".
func (e Event) QueueKind() string {
	if !e.IsQueue() {
		return ""
	}
	return strings.TrimPrefix(e.Type, "dialsync.queue.")
}

// UserChanged returns the data of a dialsync.user.changed notice.
func (e Event) UserChanged() (UserChanged, error) {
	var d UserChanged
	return d, e.data(&d, e.Type == TypeUserChanged)
}

// QueueChanged returns the data of a dialsync.queue.entered|left|updated
// notice (QueueKind says which).
func (e Event) QueueChanged() (QueueChanged, error) {
	var d QueueChanged
	return d, e.data(&d, e.IsQueue())
}

// ReconcileCompleted returns the data of a dialsync.reconcile.completed notice.
func (e Event) ReconcileCompleted() (ReconcileCompleted, error) {
	var d ReconcileCompleted
	return d, e.data(&d, e.Type == TypeReconcileCompleted)
}

// DeadLetter returns the data of a dialsync.deadletter notice.
func (e Event) DeadLetter() (DeadLetter, error) {
	var d DeadLetter
	return d, e.data(&d, e.Type == TypeDeadLetter)
}

func (e Event) data(v any, typeOK bool) error {
	if !typeOK {
		return fmt.Errorf("%w: %s", ErrWrongType, e.Type)
	}
	// An empty dataschema is accepted as v1: the field was always set, but a
	// hand-built event may omit it.
	if e.DataSchema != "" && e.DataSchema != DataSchema {
		return fmt.Errorf("%w: %s", ErrUnsupportedVersion, e.DataSchema)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("notice: decode %s data: %w", e.Type, err)
	}
	return nil
}

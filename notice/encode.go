package notice

import (
	"encoding/json"
	"strconv"
	"time"
)

// Queue notice kinds, the last token of the queue notice types.
const (
	KindEntered = "entered"
	KindLeft    = "left"
	KindUpdated = "updated"
)

// Subject tokens after the prefix: "<prefix>.user.<id>", "<prefix>.queue.<id>",
// "<prefix>.reconcile", "<prefix>.deadletter".
const (
	subjUser       = ".user."
	subjQueue      = ".queue."
	subjReconcile  = ".reconcile"
	subjDeadLetter = ".deadletter"
)

// NewUserChanged encodes a dialsync.user.changed notice for one (source
// transaction, user). source is the CloudEvents source ("dialsync/<pipeline>"),
// subjectPrefix the NATS subject prefix ("dialsync"), t the source commit
// time, and d.Source.Txn the transaction identity (change.Txn.ID()).
//
// The id is "<txn>/user.changed/<user>" and the subject "<prefix>.user.<user>".
// Nil Tables/Operations/Columns are encoded as empty arrays, never null.
//
// This is on the apply loop's hot path, so the JSON is appended by hand; the
// bytes equal encoding/json's output for the same Event (see encode_test.go).
func NewUserChanged(source, subjectPrefix string, t time.Time, d UserChanged) Message {
	user := strconv.FormatUint(d.UserID, 10)
	id := msgID(d.Source.Txn, "/user.changed/", user)

	n := 340 + 3*len(user) + len(source) + len(id) + len(d.Source.File) + len(d.Source.GTID) + len(d.Source.Txn)
	for _, ss := range [...][]string{d.Tables, d.Operations, d.Columns} {
		for _, s := range ss {
			n += len(s) + 3
		}
	}
	b := make([]byte, 0, n) // one allocation unless strings need escaping
	b = appendEnvelope(b, id, source, TypeUserChanged, user, t)
	b = append(b, `{"user_id":`...)
	b = append(b, user...)
	b = append(b, `,"tables":`...)
	b = appendStrings(b, d.Tables)
	b = append(b, `,"operations":`...)
	b = appendStrings(b, d.Operations)
	b = append(b, `,"columns":`...)
	b = appendStrings(b, d.Columns)
	if len(d.Values) > 0 {
		b = append(b, `,"values":`...)
		b = appendValues(b, d.Values)
	}
	b = append(b, `,"source":`...)
	b = appendSource(b, d.Source)
	b = append(b, "}}"...)
	return Message{Subject: subjectPrefix + subjUser + user, ID: id, Data: b}
}

// NewQueueChanged encodes a dialsync.queue.<kind> notice; kind is one of
// KindEntered, KindLeft, KindUpdated (queue.ChangeKind.String() gives these).
// For "left", d holds the row as it was before the user left.
//
// The id is "<txn>/queue.<kind>/<user>" and the subject "<prefix>.queue.<user>",
// so all queue notices of one user share a subject and keep their order.
func NewQueueChanged(source, subjectPrefix, kind string, t time.Time, d QueueChanged) Message {
	user := strconv.FormatUint(d.UserID, 10)
	id := msgID(d.Source.Txn, "/queue."+kind+"/", user)

	b := make([]byte, 0, 400+len(source)+len(id)+len(d.Source.File)+len(d.Source.GTID)+len(d.Source.Txn))
	b = appendEnvelope(b, id, source, "dialsync.queue."+kind, user, t)
	b = append(b, `{"user_id":`...)
	b = append(b, user...)
	b = append(b, `,"open_claims":`...)
	b = strconv.AppendInt(b, d.OpenClaims, 10)
	b = append(b, `,"pending_requirements":`...)
	b = strconv.AppendInt(b, d.PendingRequirements, 10)
	b = append(b, `,"oldest_pending_at":`...)
	if d.OldestPendingAt == nil {
		b = append(b, "null"...)
	} else {
		b = appendTime(b, *d.OldestPendingAt)
	}
	b = append(b, `,"source":`...)
	b = appendSource(b, d.Source)
	b = append(b, "}}"...)
	return Message{Subject: subjectPrefix + subjQueue + user, ID: id, Data: b}
}

// NewReconcileCompleted encodes the dialsync.reconcile.completed summary
// published after each reconcile run, on "<prefix>.reconcile". Its id is
// "reconcile/<run_id>" (RunID must be unique per run; when empty the start
// time is used). It fails only on times outside years 0-9999.
func NewReconcileCompleted(source, subjectPrefix string, t time.Time, d ReconcileCompleted) (Message, error) {
	run := d.RunID
	if run == "" {
		run = d.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	id := msgID("reconcile", "/", run)
	return encodeEvent(id, source, TypeReconcileCompleted, "", subjectPrefix+subjReconcile, t, d)
}

// NewDeadLetter encodes a dialsync.deadletter notice on "<prefix>.deadletter"
// for a change that could not be processed and was set aside by the table's
// policy. Its id is "<txn>/deadletter/<table>/<seq>".
func NewDeadLetter(source, subjectPrefix string, t time.Time, d DeadLetter) (Message, error) {
	id := msgID(d.Source.Txn, "/deadletter/", d.Table+"/"+strconv.Itoa(d.Seq))
	return encodeEvent(id, source, TypeDeadLetter, "", subjectPrefix+subjDeadLetter, t, d)
}

// encodeEvent is the general (not hot) path, using encoding/json.
func encodeEvent(id, source, typ, subject, natsSubject string, t time.Time, data any) (Message, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Message{}, err
	}
	b, err := json.Marshal(Event{
		SpecVersion: SpecVersion, ID: id, Source: source, Type: typ, Subject: subject,
		Time: t.UTC(), DataContentType: ContentType, DataSchema: DataSchema, Data: raw,
	})
	if err != nil {
		return Message{}, err
	}
	return Message{Subject: natsSubject, ID: id, Data: b}, nil
}

// msgID joins the parts of an id and makes it safe as a Nats-Msg-Id header
// value: whitespace and control bytes (which a header cannot carry, and which
// some tools split on) become '_'. The mapping is deterministic, so replays
// still produce the same id.
func msgID(txn, mid, tail string) string {
	id := txn + mid + tail
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] == 0x7f {
			return sanitize(id)
		}
	}
	return id
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c == 0x7f {
			b[i] = '_'
		}
	}
	return string(b)
}

// appendEnvelope writes the Event fields up to and including `"data":`, in
// encoding/json's field order.
func appendEnvelope(b []byte, id, source, typ, subject string, t time.Time) []byte {
	b = append(b, `{"specversion":"`+SpecVersion+`","id":`...)
	b = appendString(b, id)
	b = append(b, `,"source":`...)
	b = appendString(b, source)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	if subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, subject)
	}
	b = append(b, `,"time":`...)
	b = appendTime(b, t)
	b = append(b, `,"datacontenttype":"`+ContentType+`","dataschema":"`+DataSchema+`","data":`...)
	return b
}

func appendSource(b []byte, s SourcePosition) []byte {
	b = append(b, '{')
	if s.File != "" {
		b = append(b, `"file":`...)
		b = appendString(b, s.File)
		b = append(b, ',')
	}
	if s.Pos != 0 {
		b = append(b, `"pos":`...)
		b = strconv.AppendUint(b, uint64(s.Pos), 10)
		b = append(b, ',')
	}
	if s.GTID != "" {
		b = append(b, `"gtid":`...)
		b = appendString(b, s.GTID)
		b = append(b, ',')
	}
	b = append(b, `"txn":`...)
	b = appendString(b, s.Txn)
	return append(b, '}')
}

// appendTime writes t in UTC as encoding/json does (RFC 3339 with
// nanoseconds, trailing zeros trimmed). Commit times are always within the
// years 0-9999 that encoding/json accepts.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString writes s as a JSON string. Table and column names are plain
// ASCII, so the fast path copies them; anything encoding/json would escape
// (quotes, backslashes, control bytes, <>& which it HTML-escapes, non-ASCII
// for U+2028/9 and invalid UTF-8) goes through encoding/json itself, so the
// output is identical by construction.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendValues writes the allow-listed column values. They are rare (off by
// default), so encoding/json does it, sorting keys as it always does. A value
// encoding/json rejects (a NaN or infinite float) is written as null rather
// than failing the whole notice.
func appendValues(b []byte, v map[string]any) []byte {
	if q, err := json.Marshal(v); err == nil {
		return append(b, q...)
	}
	safe := make(map[string]any, len(v))
	for k, x := range v {
		if _, err := json.Marshal(x); err != nil {
			x = nil
		}
		safe[k] = x
	}
	q, _ := json.Marshal(safe)
	return append(b, q...)
}

package canal

import (
	"fmt"
	"time"

	gocanal "github.com/go-mysql-org/go-mysql/canal"
	"github.com/go-mysql-org/go-mysql/schema"
)

// Schema drift: what go-mysql v1.16.0 lets us check, and what it does not.
//
// canal decodes every rows event with the table's LIVE schema (SHOW FULL
// COLUMNS, cached until a DDL event on the table) and maps values to
// columns by position, never against the event's table map (go-mysql
// issue #905; canal/sync.go handleRowsEvent). While dialsync streams near
// the head this is right: canal clears its cache at each DDL event, and
// the next rows are decoded with a schema fetched after the DDL. While it
// lags across a DDL (stopped, or behind), rows written before the DDL are
// decoded with the newer schema.
//
// The exact fix would be the table map's column names
// (binlog_row_metadata=FULL on MySQL >= 8.0.1 and MariaDB >= 10.5). canal
// v1.16.0 offers no way to reach them: canal.RowsEvent carries only the
// live *schema.Table, the header and the values; Config has no decode hook
// (canal installs its own BinlogSyncerConfig.RowsEventDecodeFunc in
// prepareSyncer); the syncer is unexported; and OnTableNotFound, the one
// callback that receives the raw replication.RowsEvent with its
// TableMapEvent, runs only when the table no longer exists. So
// binlog_row_metadata=FULL changes nothing for dialsync today.
//
// What checkRows does instead, on every row of a tracked table:
//   - the number of values must equal the number of live columns (an
//     added or dropped column, the common case, is caught exactly);
//   - every non-NULL value must have the Go type go-mysql produces for the
//     live column's type (the decoder follows the event's own column
//     types, so a value shifted into a column of another kind shows up).
//
// Both stop the stream with ErrFatal before the row is handed on. What no
// check here can see: a DDL that keeps the column count and only moves
// values between columns of the same kind, or NULLs (for example DROP a
// VARCHAR + ADD a VARCHAR in one ALTER, while lagging). The operating rule
// (docs/troubleshooting.md, "Schema changes") is therefore: change tracked
// tables only while dialsync runs and is caught up.

// recoveryHint ends every schema-drift error: the queue is recomputable, so
// jumping past the DDL and reconciling is always safe.
const recoveryHint = `fix the schema or the table spec if a column the handlers need is gone, then run 'dialsync checkpoint reset --to-head --reason "..."' (jumps past the DDL and reconciles the whole queue) and start dialsync again`

// ddlNote names the last DDL seen on the table in this stream, if any.
func (s *streamer) ddlNote(tr *tracked) string {
	if tr.ddlAt == "" {
		return " (the table was altered after this change was written, or before dialsync started reading here)"
	}
	return fmt.Sprintf(" (the table was altered by the DDL at %s)", tr.ddlAt)
}

// ddlWhere is " by the DDL at <pos>" when the stream saw one on the table.
func (s *streamer) ddlWhere(tr *tracked) string {
	if tr.ddlAt == "" {
		return ""
	}
	return " by the DDL at " + tr.ddlAt
}

// checkRows refuses rows that do not fit the live schema; see above.
func (s *streamer) checkRows(tr *tracked, e *gocanal.RowsEvent) error {
	cols := e.Table.Columns
	for _, row := range e.Rows {
		if len(row) != len(cols) {
			return fatalf("table %s.%s at %s (after the last committed position %s): the binlog row has %d columns but the schema has %d live columns, so its values cannot be attributed to columns safely (go-mysql decodes old rows with the live schema)%s: %s",
				s.cfg.Database, tr.spec.Table, s.at(e.Header.LogPos), s.last, len(row), len(cols), s.ddlNote(tr), recoveryHint)
		}
		for _, i := range e.Table.PKColumns {
			if row[i] == nil {
				// A primary key is never NULL in a full row image. With
				// binlog_row_image = MINIMAL (or NOBLOB for some columns),
				// set globally or by one session while we stream, the
				// server logs only some columns and go-mysql gives nil for
				// the others, indistinguishable from NULL: nothing of the
				// row can be trusted.
				return fatalf("table %s.%s at %s (after the last committed position %s): the row image has no value for primary key column %q, so the writing session did not log full row images (binlog_row_image is MINIMAL or NOBLOB) and the change cannot be applied exactly: %s; make sure no session overrides it; then run 'dialsync checkpoint reset --to-head --reason \"row image not FULL\"' (it reconciles the whole queue) and start dialsync again",
					s.cfg.Database, tr.spec.Table, s.at(e.Header.LogPos), s.last, cols[i].Name, FixRowImage)
			}
		}
		for i, v := range row {
			if v != nil && !fits(cols[i].Type, v) {
				// Never the value itself: it may be personal data.
				return fatalf("table %s.%s at %s (after the last committed position %s): the binlog row holds a %T where the live schema has column %q of type %s, so the row was written with another column layout and its values cannot be attributed safely (go-mysql decodes old rows with the live schema)%s: %s",
					s.cfg.Database, tr.spec.Table, s.at(e.Header.LogPos), s.last, v, cols[i].Name, cols[i].RawType, s.ddlNote(tr), recoveryHint)
			}
		}
	}
	return nil
}

// fits reports whether v is a value go-mysql's decoder can produce for a
// column of live type typ (replication/row_event.go decodeValue, plus
// canal's unsigned conversion). Unknown types fit anything, so the check
// never stops a stream it does not understand.
func fits(typ int, v any) bool {
	switch typ {
	case schema.TYPE_NUMBER, schema.TYPE_MEDIUM_INT, schema.TYPE_ENUM, schema.TYPE_SET, schema.TYPE_BIT:
		return isInt(v)
	case schema.TYPE_FLOAT:
		switch v.(type) {
		case float32, float64:
			return true
		}
		return false
	case schema.TYPE_DATETIME, schema.TYPE_TIMESTAMP:
		// Zero and out-of-range values come as strings.
		switch v.(type) {
		case time.Time, string:
			return true
		}
		return false
	case schema.TYPE_STRING, schema.TYPE_BINARY, schema.TYPE_JSON, schema.TYPE_DATE, schema.TYPE_TIME, schema.TYPE_POINT:
		switch v.(type) {
		case string, []byte:
			return true
		}
		return false
	case schema.TYPE_DECIMAL:
		// A string, or decimal.Decimal with UseDecimal (not used here).
		return !isInt(v)
	}
	return true
}

func isInt(v any) bool {
	switch v.(type) {
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64, uint:
		return true
	}
	return false
}

// Package change is dialsync's ground floor: the model of what the binlog
// adapter (canal/) hands to the rest of the pipeline. A Txn is one source
// transaction (or a bounded piece of a large one) with its row changes and
// the position right after its commit. It has no third-party imports, so the
// handlers, the apply loop and the checkpoint store build without go-mysql.
// See docs/design.md for how the pipeline uses it.
package change

import (
	"fmt"
	"time"
)

// Position is a resumable point in the binlog. Positions handed out by this
// package are always transaction boundaries.
type Position struct {
	// File and Pos name the byte after the transaction's commit event.
	// Pos 4 is the start of a file; zero File means "unknown".
	File string
	Pos  uint32
	// GTIDSet is the executed GTID set including this transaction, in the
	// flavor's text form ("0-1-42,1-2-7" for MariaDB, "uuid:1-42" for MySQL).
	// Empty when the source has no GTIDs.
	GTIDSet string
}

func (p Position) String() string {
	if p.File == "" && p.GTIDSet != "" {
		return "gtid=" + p.GTIDSet
	}
	if p.GTIDSet != "" {
		return fmt.Sprintf("%s:%d gtid=%s", p.File, p.Pos, p.GTIDSet)
	}
	return fmt.Sprintf("%s:%d", p.File, p.Pos)
}

// IsZero reports whether p names no position at all.
func (p Position) IsZero() bool { return p.File == "" && p.GTIDSet == "" }

// Op is the kind of row change.
type Op uint8

const (
	Insert Op = iota + 1
	Update
	Delete
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return "unknown"
}

// Row holds the values of the columns a TableSpec asked for, in the order of
// TableSpec.Columns. Values are normalised (canal/types_test.go pins each):
//   - NULL is nil;
//   - every integer type, signed or unsigned, YEAR included, is int64; an
//     unsigned value that does not fit int64 is uint64;
//   - FLOAT is float32, DOUBLE float64; DECIMAL is its exact string form
//     ("12.50", all scale digits kept);
//   - CHAR/VARCHAR/TEXT/BINARY/VARBINARY/BLOB and JSON are string (copied
//     out of the event buffer). No charset conversion: bytes are as stored,
//     so a latin1 or binary column may hold invalid UTF-8 and NUL bytes.
//     BINARY(N) is padded back to N bytes with 0x00, as a SELECT returns it;
//     JSON is its text;
//   - DATETIME/TIMESTAMP are time.Time in UTC, except zero or out-of-range
//     values (zero month/day, before 1970 for DATETIME) which are strings
//     exactly as canal returns them ("0000-00-00 00:00:00.000000");
//   - DATE and TIME are strings ("2024-02-29", "-838:59:59"; TIME shows
//     its fraction only when non-zero);
//   - ENUM is the 1-based int64 index (0 for the empty invalid value), SET
//     an int64 bitmask, BIT an int64;
//   - generated columns (VIRTUAL and STORED) carry their computed values.
type Row []any

// Change is one row change of a tracked table.
type Change struct {
	Table  string // table name in the source database (no schema prefix)
	Op     Op
	Before Row // nil on Insert
	After  Row // nil on Delete
	// Changed names the columns (of the whole table, not only the tracked
	// ones) whose value differs between Before and After; Update only. The
	// strings are shared with the schema cache: do not modify.
	Changed []string
}

// Txn is one source transaction, or one piece of a large one.
type Txn struct {
	// Changes of tracked tables, in binlog order. Empty when every row of
	// the transaction belonged to an ignored table: such transactions are
	// still handed on so the checkpoint advances past them.
	Changes []Change
	// End is the position right after the commit. For a piece (Partial)
	// it is the position of the transaction's start and must not be stored.
	End Position
	// GTID is this transaction's own GTID ("0-1-42" / "uuid:42"); empty
	// when the source has none. With End it makes the notice ids.
	GTID string
	// CommitTime is the commit event's timestamp (second precision, UTC).
	CommitTime time.Time
	// Bytes approximates the memory held by Changes, for batching bounds.
	Bytes int
	// Partial is true for every piece of a large transaction but the last.
	// The apply side applies a piece's effects but moves the checkpoint
	// only when the last piece (Partial false) is durable.
	Partial bool
	// Piece counts the pieces of one transaction from 0.
	Piece int
}

// ID is the deterministic identity of the transaction, used for notice ids:
// the GTID when there is one, else "file:pos" of the commit end.
func (t *Txn) ID() string {
	if t.GTID != "" {
		return t.GTID
	}
	return fmt.Sprintf("%s:%d", t.End.File, t.End.Pos)
}

// TableSpec says which columns of a table the handlers need. Every column
// listed must exist in the live schema, or streaming stops with an error
// naming the table and column.
type TableSpec struct {
	Table   string
	Columns []string
}

package canal

import (
	"context"
	"dialsync/change"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	gocanal "github.com/go-mysql-org/go-mysql/canal"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-mysql-org/go-mysql/schema"
	"github.com/pingcap/tidb/pkg/parser"
)

// streamer is the go-mysql event handler. Every callback runs on the
// goroutine that called Canal.Run (go-mysql canal/sync.go), one event at a
// time, so its state needs no lock; the one exception is the OnPosSynced
// call Close makes from another goroutine, which carries a nil header and
// is ignored before touching any state.
type streamer struct {
	gocanal.DummyEventHandler

	ctx      context.Context
	cfg      Config
	log      *slog.Logger
	canal    *gocanal.Canal
	h        func(context.Context, *change.Txn) error
	accepted func(change.Position) // told of every End that h accepted; may be nil
	tables   map[string]*tracked

	last    change.Position       // End of the last transaction h accepted (start: from)
	file    string                // binlog file being read, for error messages
	tracker *mysql.MariadbGTIDSet // our own GTID tracking when go-mysql has none

	// The open transaction.
	open    bool
	gtid    string
	changes []change.Change
	bytes   int
	piece   int
	ts      uint32 // timestamp of its latest event

	ddlEnd  uint32 // end of the last query event go-mysql reported as DDL
	rowsEnd uint32 // end of the last rows event of the open transaction (replay.go)

	checkedFile string         // the last binlog file name checkPosition accepted
	sqlParser   *parser.Parser // for statement events (statements.go), made on first use

	// The replay guard (replay.go): the start position, and the
	// transactions skipped because they lie at or before it.
	guard    change.Position
	replayed replayRange

	err error // first error returned to go-mysql; Stream returns it as is
}

// tracked is one TableSpec with its columns resolved against go-mysql's
// schema cache.
type tracked struct {
	spec   change.TableSpec
	schema *schema.Table // what idx was resolved against; nil forces a resolve
	idx    []int
	pad    []int  // per wanted column: N of a BINARY(N) column, else 0; nil when none
	ddlAt  string // binlog position of the last DDL seen on the table ("" when none)
}

func newStreamer(ctx context.Context, cfg Config, log *slog.Logger, c *gocanal.Canal, from change.Position,
	h func(context.Context, *change.Txn) error, accepted func(change.Position)) *streamer {
	s := &streamer{ctx: ctx, cfg: cfg, log: log, canal: c, h: h, accepted: accepted,
		tables: make(map[string]*tracked, len(cfg.Tables)), last: from, file: from.File, guard: from}
	for _, t := range cfg.Tables {
		s.tables[t.Table] = &tracked{spec: t}
	}
	return s
}

func (s *streamer) String() string { return "dialsync" }

// loadTables fetches every tracked table's schema (warming go-mysql's cache)
// and resolves the wanted columns, so that a misconfiguration fails at start.
func (s *streamer) loadTables() error {
	for _, tr := range s.tables {
		t, err := s.canal.GetTable(s.cfg.Database, tr.spec.Table)
		if errors.Is(err, schema.ErrTableNotExist) {
			return fatalf("tracked table %s.%s does not exist on source %s", s.cfg.Database, tr.spec.Table, s.cfg.Addr)
		}
		if err != nil {
			return fmt.Errorf("load schema of %s.%s: %w", s.cfg.Database, tr.spec.Table, err)
		}
		if err := s.resolve(tr, t); err != nil {
			return fmt.Errorf("%w: fix the schema or the table spec", err)
		}
	}
	return nil
}

// resolve maps the wanted column names to positions in t.
func (s *streamer) resolve(tr *tracked, t *schema.Table) error {
	if tr.schema == t {
		return nil
	}
	idx := make([]int, len(tr.spec.Columns))
	for j, name := range tr.spec.Columns {
		idx[j] = -1
		for i := range t.Columns {
			if strings.EqualFold(t.Columns[i].Name, name) {
				idx[j] = i
				break
			}
		}
		if idx[j] < 0 {
			return fatalf("table %s.%s has no column %q, which the handlers need", s.cfg.Database, tr.spec.Table, name)
		}
	}
	var pad []int
	for j, i := range idx {
		if n := binaryLen(t.Columns[i].RawType); n > 0 {
			if pad == nil {
				pad = make([]int, len(idx))
			}
			pad[j] = n
		}
	}
	tr.schema, tr.idx, tr.pad = t, idx, pad
	return nil
}

func (s *streamer) fail(err error) error {
	if s.err == nil {
		s.err = err
	}
	return err
}

func (s *streamer) at(logPos uint32) string { return fmt.Sprintf("%s:%d", s.file, logPos) }

func (s *streamer) OnRotate(_ *replication.EventHeader, e *replication.RotateEvent) error {
	name := string(e.NextLogName)
	if err := s.checkPosition(name, uint32(e.Position), true); err != nil {
		return s.fail(err)
	}
	s.file = name
	return nil
}

// OnTableChanged fires for DDL on a table, before go-mysql reloads its
// schema on next use; our column positions must follow.
func (s *streamer) OnTableChanged(h *replication.EventHeader, db, table string) error {
	if tr := s.tables[table]; tr != nil && db == s.cfg.Database {
		tr.schema = nil
		tr.ddlAt = s.at(h.LogPos)
		s.log.Info("tracked table changed; column positions will be re-resolved", "table", table, "ddl_at", tr.ddlAt)
	}
	return nil
}

func (s *streamer) OnTableNotFound(h *replication.EventHeader, e *replication.RowsEvent) error {
	return s.fail(fatalf("table %s.%s, changed in the binlog at %s, no longer exists on source %s, so its rows cannot be decoded: reconcile and move the checkpoint past the drop",
		e.Table.Schema, e.Table.Table, s.at(h.LogPos), s.cfg.Addr))
}

func (s *streamer) OnGTID(_ *replication.EventHeader, ev mysql.BinlogGTIDEvent) error {
	if s.open {
		s.discardOpen()
	}
	s.begin(gtidString(ev))
	if me, ok := ev.(*replication.MariadbGTIDEvent); ok && s.tracker != nil {
		if err := s.tracker.AddSet(&me.GTID); err != nil {
			return s.fail(fmt.Errorf("track GTID %s: %w", s.gtid, err))
		}
	}
	return nil
}

func (s *streamer) begin(gtid string) {
	s.open, s.gtid, s.changes, s.bytes, s.piece, s.ts = true, gtid, nil, 0, 0, 0
}

// discardOpen drops a transaction whose commit never came. With
// DisableRetrySync go-mysql never re-delivers, so the only cause is a
// statement its parser could not read: it logs and skips it without an
// OnPosSynced (go-mysql canal/sync.go, QueryEvent case). Such a statement may
// be DDL that changed a tracked table, so the schemas are reloaded.
func (s *streamer) discardOpen() {
	skippedStatements.Add(1)
	s.log.Warn("go-mysql skipped a statement it could not parse; reloading tracked table schemas",
		"gtid", s.gtid, "rows_discarded", len(s.changes), "pieces_handed_on", s.piece)
	for _, tr := range s.tables {
		s.canal.ClearTableCache([]byte(s.cfg.Database), []byte(tr.spec.Table))
		tr.schema = nil
	}
	s.open = false
}

func (s *streamer) OnRow(e *gocanal.RowsEvent) error {
	tr := s.tables[e.Table.Name]
	if tr == nil || e.Table.Schema != s.cfg.Database {
		return nil // not ours; the include regexes normally keep these out
	}
	if err := s.resolve(tr, e.Table); err != nil {
		return s.fail(fmt.Errorf("%w (renamed or dropped%s), at %s (after the last committed position %s): %s",
			err, s.ddlWhere(tr), s.at(e.Header.LogPos), s.last, recoveryHint))
	}
	if !s.open {
		s.begin("") // a source without GTID events
	}
	if err := s.checkRows(tr, e); err != nil {
		return s.fail(err)
	}
	s.ts, s.rowsEnd = e.Header.Timestamp, e.Header.LogPos
	switch e.Action {
	case gocanal.InsertAction:
		for _, row := range e.Rows {
			if err := s.add(change.Change{Table: tr.spec.Table, Op: change.Insert, After: pick(row, tr.idx, tr.pad)}); err != nil {
				return err
			}
		}
	case gocanal.DeleteAction:
		for _, row := range e.Rows {
			if err := s.add(change.Change{Table: tr.spec.Table, Op: change.Delete, Before: pick(row, tr.idx, tr.pad)}); err != nil {
				return err
			}
		}
	case gocanal.UpdateAction:
		if len(e.Rows)%2 != 0 {
			return s.fail(fatalf("table %s.%s at %s: update event with an odd number of row images (%d)",
				s.cfg.Database, tr.spec.Table, s.at(e.Header.LogPos), len(e.Rows)))
		}
		for i := 0; i < len(e.Rows); i += 2 {
			before, after := e.Rows[i], e.Rows[i+1]
			if err := s.add(change.Change{Table: tr.spec.Table, Op: change.Update, Before: pick(before, tr.idx, tr.pad), After: pick(after, tr.idx, tr.pad),
				Changed: changedColumns(e.Table, before, after)}); err != nil {
				return err
			}
		}
	default:
		return s.fail(fatalf("table %s.%s at %s: unknown row action %q", s.cfg.Database, tr.spec.Table, s.at(e.Header.LogPos), e.Action))
	}
	return nil
}

// add buffers a change; past MaxTxnBytes it hands the buffer on as a piece.
// The check is per row, not per rows event: one event of narrow rows can
// decode to a few hundred changes.
func (s *streamer) add(c change.Change) error {
	s.bytes += changeSize(&c)
	s.changes = append(s.changes, c)
	if s.bytes > s.cfg.MaxTxnBytes {
		return s.handOnPiece()
	}
	return nil
}

// handOnPiece hands the rows buffered so far on as a Partial piece. Its End
// is the last committed position: a checkpoint stored from it would redo
// the whole transaction, never skip its rest.
func (s *streamer) handOnPiece() error {
	txn := &change.Txn{Changes: s.changes, End: s.last, GTID: s.gtid, CommitTime: unixUTC(s.ts),
		Bytes: s.bytes, Partial: true, Piece: s.piece}
	s.changes, s.bytes = nil, 0
	s.piece++
	if s.replay(txn) {
		return nil
	}
	if err := s.h(s.ctx, txn); err != nil {
		return s.fail(&handlerError{fmt.Errorf("handler: piece %d of txn %s: %w", txn.Piece, txn.ID(), err)})
	}
	return nil
}

// OnPosSynced is the commit boundary: go-mysql calls it after XID events and
// after query events other than BEGIN/SAVEPOINT (COMMIT of non-transactional
// tables, DDL), with the position after the event, and at rotates. Query
// events other than DDL are examined first (statements.go): a DML statement
// is not a boundary, and one on a tracked table stops the stream.
func (s *streamer) OnPosSynced(h *replication.EventHeader, pos mysql.Position, set mysql.GTIDSet, _ bool) error {
	if h == nil {
		// Close() announces its last position from another goroutine; the
		// commit at that position may have failed. Not a boundary for us.
		return nil
	}
	if err := s.checkPosition(pos.Name, pos.Pos, h.EventType == replication.ROTATE_EVENT); err != nil {
		return s.fail(err)
	}
	if h.EventType == replication.ROTATE_EVENT {
		s.file = pos.Name // between transactions; nothing to hand on
		return nil
	}
	if h.EventType == replication.QUERY_EVENT {
		boundary, err := s.checkStatement(h, pos)
		if err != nil {
			return s.fail(err)
		}
		if !boundary {
			return nil
		}
	}
	var gs string
	switch {
	case set != nil:
		gs = set.String()
	case s.tracker != nil:
		gs = s.tracker.String()
	}
	end := change.Position{File: pos.Name, Pos: pos.Pos, GTIDSet: gs}
	txn := &change.Txn{Changes: s.changes, End: end, GTID: s.gtid, CommitTime: unixUTC(h.Timestamp),
		Bytes: s.bytes, Piece: s.piece}
	s.open, s.changes, s.bytes = false, nil, 0
	if s.replay(txn) {
		return nil
	}
	if err := s.h(s.ctx, txn); err != nil {
		return s.fail(&handlerError{fmt.Errorf("handler: txn %s ending at %s: %w", txn.ID(), end, err)})
	}
	s.last, s.file = end, pos.Name
	if s.accepted != nil {
		s.accepted(end)
	}
	return nil
}

func unixUTC(ts uint32) time.Time { return time.Unix(int64(ts), 0).UTC() }

// gtidString is a transaction's own GTID in the flavor's text form, or ""
// for MySQL's anonymous transactions (gtid_mode OFF).
func gtidString(ev mysql.BinlogGTIDEvent) string {
	switch e := ev.(type) {
	case *replication.MariadbGTIDEvent:
		return e.GTID.String()
	case *replication.GTIDEvent:
		if e.GNO == 0 {
			return ""
		}
		set, err := e.GTIDNext()
		if err != nil {
			return ""
		}
		return set.String()
	}
	return ""
}

package preflight

import (
	"context"
	"dialsync/change"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// BinlogFile is one row of SHOW BINARY LOGS.
type BinlogFile struct {
	Name string
	Size uint64
}

// binlogName is what MySQL and MariaDB binlog file names look like
// ("mysql-bin.000042", RDS "mysql-bin-changelog.000123"). Names are
// checked against it before they go into a SHOW statement, which cannot
// take parameters.
var binlogName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,255}$`)

// ValidBinlogName reports whether name can be a binlog file name.
func ValidBinlogName(name string) bool { return binlogName.MatchString(name) }

// BinaryLogs lists the binary logs the server still has, oldest first.
func (s *Source) BinaryLogs(ctx context.Context) ([]BinlogFile, error) {
	rows, err := s.Query(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("list binary logs: %w", err)
	}
	out := make([]BinlogFile, 0, len(rows))
	for _, r := range rows {
		size, _ := strconv.ParseUint(r["file_size"], 10, 64)
		out = append(out, BinlogFile{Name: r["log_name"], Size: size})
	}
	return out, nil
}

// FindLog returns the index of file in logs, or -1.
func FindLog(logs []BinlogFile, file string) int {
	for i, l := range logs {
		if l.Name == file {
			return i
		}
	}
	return -1
}

// BytesBehind is the number of binlog bytes from `from` to `head` (both
// file/pos): within one file the difference, across files the rest of
// from's file, every file in between and head's offset. ok is false when
// either file is not listed in logs (purged, or from another server) or
// from is after head.
func BytesBehind(logs []BinlogFile, from, head change.Position) (n uint64, ok bool) {
	i, j := FindLog(logs, from.File), FindLog(logs, head.File)
	if i < 0 || j < 0 || i > j || (i == j && from.Pos > head.Pos) {
		return 0, false
	}
	if i == j {
		return uint64(head.Pos - from.Pos), true
	}
	n = logs[i].Size - min(uint64(from.Pos), logs[i].Size)
	for _, l := range logs[i+1 : j] {
		n += l.Size
	}
	return n + uint64(head.Pos), true
}

// Head reads the server's current binlog file and offset (SHOW MASTER
// STATUS or its MySQL 8.4 name). ok is false when binary logging is off.
func (s *Source) Head(ctx context.Context) (file string, pos uint32, ok bool, err error) {
	v, err := s.Version(ctx)
	if err != nil {
		return "", 0, false, err
	}
	q := "SHOW MASTER STATUS"
	if !IsMariaDB(v) && atLeast(v, "8.4.0") {
		q = "SHOW BINARY LOG STATUS"
	}
	rows, err := s.Query(ctx, q)
	if err != nil {
		return "", 0, false, fmt.Errorf("binlog head: %w", err)
	}
	if len(rows) == 0 {
		return "", 0, false, nil
	}
	p, _ := strconv.ParseUint(rows[0]["position"], 10, 32)
	return rows[0]["file"], uint32(p), true, nil
}

// Event is one row of SHOW BINLOG EVENTS.
type Event struct {
	Pos, End uint32
	Type     string // Event_type: "Gtid", "Query", "Xid", "Table_map", ...
	Info     string
}

// Events reads up to limit events of file starting at from (an event
// start; 0 or 4 means the file's start).
func (s *Source) Events(ctx context.Context, file string, from uint32, limit int) ([]Event, error) {
	if !ValidBinlogName(file) {
		return nil, fmt.Errorf("binlog events: %q is not a binlog file name", file)
	}
	q := fmt.Sprintf("SHOW BINLOG EVENTS IN '%s'", file)
	if from > 4 {
		q += fmt.Sprintf(" FROM %d", from)
	}
	q += fmt.Sprintf(" LIMIT %d", limit)
	rows, err := s.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("binlog events: %w", err)
	}
	out := make([]Event, 0, len(rows))
	for _, r := range rows {
		p, _ := strconv.ParseUint(r["pos"], 10, 32)
		e, _ := strconv.ParseUint(r["end_log_pos"], 10, 32)
		out = append(out, Event{Pos: uint32(p), End: uint32(e), Type: r["event_type"], Info: r["info"]})
	}
	return out, nil
}

// Boundary says whether an offset is a transaction boundary of its file,
// and the nearest boundaries around it (for the error message).
type Boundary struct {
	OK bool
	// Before is the last boundary at or before the offset; After the first
	// one after it (0: none, the offset is at or past the last event).
	Before, After uint32
}

// eventsPage is how many events one SHOW BINLOG EVENTS reads.
var eventsPage = 2000

// TxnBoundary tells whether pos is a transaction boundary in file: the
// start of the file (4), or right after an event that ends a transaction
// (or stands outside any). It walks the file's events with SHOW BINLOG
// EVENTS, page by page, up to the first event after pos.
//
// Why SHOW BINLOG EVENTS rather than a replication stream: the server
// decodes its own events (no flavor-specific parsing here), and it needs
// no replica registration, so it cannot kick a running dialsync (same
// server_id) off the source. It needs the same privilege as streaming
// (REPLICATION SLAVE on MySQL, BINLOG MONITOR on MariaDB).
func (s *Source) TxnBoundary(ctx context.Context, file string, pos uint32) (Boundary, error) {
	b := Boundary{Before: 4}
	if pos == 4 {
		b.OK = true
	}
	var w groupWalker
	from := uint32(4)
	skipFirst := false
	for {
		evs, err := s.Events(ctx, file, from, eventsPage+1)
		if err != nil {
			return b, err
		}
		if skipFirst && len(evs) > 0 {
			evs = evs[1:] // the last event of the previous page
		}
		for i, e := range evs {
			end := e.End
			if end == 0 && i+1 < len(evs) {
				// MariaDB >= 11.4 writes End_log_pos 0 inside transactions.
				end = evs[i+1].Pos
			}
			if !w.step(e) || end == 0 {
				continue
			}
			switch {
			case end == pos:
				b.OK, b.Before = true, end
			case end < pos:
				b.Before = end
			default:
				b.After = end
				return b, nil
			}
		}
		if len(evs) < eventsPage {
			return b, nil
		}
		from, skipFirst = evs[len(evs)-1].Pos, true
	}
}

// groupWalker follows event groups (a transaction, or a single statement
// such as DDL) through SHOW BINLOG EVENTS rows:
//   - MySQL: Gtid|Anonymous_Gtid, Query "BEGIN", rows..., Xid|Query "COMMIT";
//     DDL: Gtid, Query "<ddl>".
//   - MariaDB: Gtid "BEGIN GTID d-s-n", rows..., Xid|Query "COMMIT";
//     DDL: Gtid "GTID d-s-n" (standalone), Query "<ddl>".
//
// Header events (Format_desc, Previous_gtids, Gtid_list, Binlog_checkpoint)
// stand outside any group.
type groupWalker struct{ inGroup, inTxn bool }

// step consumes one event and reports whether the position after it is a
// boundary (no group open).
func (w *groupWalker) step(e Event) bool {
	info := strings.ToUpper(strings.TrimSpace(e.Info))
	switch e.Type {
	case "Gtid", "Anonymous_Gtid":
		w.inGroup = true
		w.inTxn = strings.HasPrefix(info, "BEGIN")
	case "Query":
		switch {
		case info == "BEGIN" || strings.HasPrefix(info, "XA START"):
			w.inGroup, w.inTxn = true, true
		case info == "COMMIT" || info == "ROLLBACK" || strings.HasPrefix(info, "XA COMMIT") || strings.HasPrefix(info, "XA ROLLBACK"):
			w.inGroup, w.inTxn = false, false
		case !w.inTxn:
			// A statement outside BEGIN...COMMIT (DDL) is its own group.
			w.inGroup = false
		}
	case "Xid", "XA_prepare":
		w.inGroup, w.inTxn = false, false
	}
	return !w.inGroup
}

// mariaDBMissing returns the GTIDs of a Gtid_list event's Info ("[0-1-5,1-2-3]")
// that the position has not reached ("" when none): per domain, the
// position's sequence must be at least the list's.
func mariaDBMissing(pos *mysql.MariadbGTIDSet, info string) string {
	list := strings.Trim(strings.TrimSpace(info), "[]")
	if list == "" {
		return ""
	}
	var missing []string
	for _, g := range strings.Split(list, ",") {
		gt, err := mysql.ParseMariadbGTID(strings.TrimSpace(g))
		if err != nil {
			continue
		}
		have, ok := pos.Sets[gt.DomainID]
		if !ok || have.SequenceNumber < gt.SequenceNumber {
			missing = append(missing, gt.String())
		}
	}
	return strings.Join(missing, ",")
}

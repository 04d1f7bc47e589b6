package preflight

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/checkpoint"
)

// Whether the source can serve a checkpoint, and if not, why. Only one
// cause allows recovery.on_purged = "reconcile" to jump to the head by
// itself: the binlog is provably purged. Every other cause (a position
// inside an event, past the end of its file, a GTID set ahead of the
// source, another server's checkpoint) means the checkpoint or source.addr
// is wrong, and jumping ahead would hide it (docs/troubleshooting.md).
// Gathering (GatherPosition, over a connection) and judging (JudgePosition,
// pure) are apart, so the judging is unit-tested with made-up facts; run,
// check and checkpoint show share both and so say the same thing.

// Cause names why the source cannot serve a checkpoint ("" when it can).
type Cause string

// The causes JudgePosition tells apart.
const (
	CausePurged      Cause = "purged"       // the binlog holding what follows it is gone
	CausePastEnd     Cause = "past_end"     // offset beyond the end of its file
	CauseMidEvent    Cause = "mid_event"    // offset inside an event
	CauseUnknownFile Cause = "unknown_file" // a file this server never had
	CauseAhead       Cause = "gtid_ahead"   // GTIDs the source has not executed
	CauseOtherServer Cause = "other_server" // stored with another server's identity
	CauseInvalid     Cause = "invalid"      // the stored GTID set does not parse
)

// ResetFix and SetFix are the recovery commands the verdicts name.
const (
	ResetFix = "`dialsync checkpoint reset --to-head --reason '...'` (jumps to the source head and reconciles the whole queue)"
	SetFix   = "`dialsync checkpoint set --file F --pos N --reason '...'` (or --gtid SET) to a position of this server (it checks the position)"
)

// Verdict is JudgePosition's answer.
type Verdict struct {
	Cause  Cause
	Detail string // what is wrong, or how it was established when OK
	Fix    string // the recovery, when not OK
	// Failover: the checkpoint was stored with another server's identity,
	// and this server's executed GTIDs contain the checkpoint's set, so it
	// has the history (a GTID failover): accepted.
	Failover bool
	// Identity is the server's identity (lookup.Identity).
	Identity string
}

// OK reports whether streaming can resume at the checkpoint.
func (v Verdict) OK() bool { return v.Cause == "" }

// Purged reports whether the binlog is provably purged: the only cause
// recovery.on_purged = "reconcile" may recover from by itself.
func (v Verdict) Purged() bool { return v.Cause == CausePurged }

// Err is the verdict as run's one-line error (nil when OK).
func (v Verdict) Err() error {
	if v.OK() {
		return nil
	}
	return errors.New(v.Detail + ": " + v.Fix)
}

// PositionFacts is what a server says about a checkpoint.
type PositionFacts struct {
	Flavor   string
	Identity string // lookup.Identity of the server
	Logs     []BinlogFile
	// Executed is the server's executed GTID set as its binlog holds it
	// (MySQL gtid_executed, MariaDB gtid_binlog_pos); read only for a
	// checkpoint with a GTID set.
	Executed string
	// State is MariaDB's gtid_binlog_state: the last GTID of every
	// (domain, server_id) in the binlog. A failover is proven by it: the
	// checkpoint's GTIDs, server_id included, must be there (per-domain
	// sequence numbers alone do not tell two servers' histories apart).
	State string
	// Purged is MySQL's gtid_purged, or MariaDB's Gtid_list at the start of
	// the oldest binlog (the GTID state before every binlog it still has);
	// PurgedKnown is false when there was nothing to read it from.
	Purged      string
	PurgedKnown bool
	// NotEventStart is the server's refusal to read events from a file/pos
	// checkpoint's offset ("" when it read them: the offset starts an event
	// or ends the file).
	NotEventStart string
}

// GatherPosition reads what JudgePosition needs about cp from the server.
// An error is a query that failed (named, with the server's error).
func (s *Source) GatherPosition(ctx context.Context, flavor string, cp checkpoint.Checkpoint) (PositionFacts, error) {
	f := PositionFacts{Flavor: flavor}
	var err error
	if f.Identity, err = s.Identity(ctx); err != nil {
		return f, err
	}
	if f.Logs, err = s.BinaryLogs(ctx); err != nil {
		return f, err
	}
	pos := cp.Pos
	if pos.GTIDSet != "" {
		names := []string{"gtid_binlog_pos", "gtid_binlog_state"}
		if flavor == mysql.MySQLFlavor {
			names = []string{"gtid_executed", "gtid_purged"}
		}
		vars, err := s.Vars(ctx, names...)
		if err != nil {
			return f, err
		}
		if flavor == mysql.MySQLFlavor {
			f.Executed, f.Purged, f.PurgedKnown = oneLine(vars["gtid_executed"]), oneLine(vars["gtid_purged"]), true
			return f, nil
		}
		f.Executed, f.State = vars["gtid_binlog_pos"], vars["gtid_binlog_state"]
		if len(f.Logs) > 0 {
			evs, err := s.Events(ctx, f.Logs[0].Name, 4, 10)
			if err != nil {
				return f, err
			}
			for _, e := range evs {
				if e.Type == "Gtid_list" {
					f.Purged, f.PurgedKnown = strings.Trim(strings.TrimSpace(e.Info), "[]"), true
					break
				}
			}
		}
		return f, nil
	}
	if i := FindLog(f.Logs, pos.File); i >= 0 && uint64(pos.Pos) <= f.Logs[i].Size && pos.Pos > 4 {
		// One event from the offset: the server refuses an offset inside
		// an event (ERROR 1220 "Wrong offset or I/O error").
		_, err := s.Query(ctx, fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d LIMIT 1", pos.File, pos.Pos))
		var my *mysql.MyError
		if errors.As(err, &my) && my.Code == mysql.ER_ERROR_WHEN_EXECUTING_COMMAND {
			f.NotEventStart = my.Message
		} else if err != nil {
			return f, fmt.Errorf("read the event at the checkpoint: %w", err)
		}
	}
	return f, nil
}

func oneLine(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\n", ""), " ", "") }

// JudgePosition decides whether the server described by f can serve cp.
// Identity first: a checkpoint stored with another server's identity is
// refused unless its GTID set is within this server's executed GTIDs (a
// failover to a server with the history). Then, for a GTID checkpoint, the
// GTID sets decide (streaming resumes by GTID): ahead of the server, or
// after GTIDs the server purged; for a file/pos checkpoint the file list
// and the offset decide.
func JudgePosition(cp checkpoint.Checkpoint, f PositionFacts) Verdict {
	v := Verdict{Identity: f.Identity}
	pos := cp.Pos
	bad := func(c Cause, fix, format string, a ...any) Verdict {
		v.Cause, v.Fix, v.Detail = c, fix, fmt.Sprintf(format, a...)
		return v
	}
	notPurge := "this is not a purge: check source.addr; if it is the right server, " + SetFix + ", or " + ResetFix
	var set, executed mysql.GTIDSet
	if pos.GTIDSet != "" {
		var err error
		if set, err = mysql.ParseGTIDSet(f.Flavor, pos.GTIDSet); err != nil {
			return bad(CauseInvalid, ResetFix, "the checkpoint's GTID set %q is an invalid %s GTID set (%v)", pos.GTIDSet, f.Flavor, oneLineErr(err))
		}
		if executed, err = mysql.ParseGTIDSet(f.Flavor, f.Executed); err != nil {
			return bad(CauseInvalid, "report this: the server's GTID set could not be read", "the server's executed GTID set %q does not parse (%v)", f.Executed, oneLineErr(err))
		}
	}
	same := cp.ServerUUID != "" && cp.ServerUUID == f.Identity
	if cp.ServerUUID != "" && !same {
		if set == nil || !hasHistory(f, executed, set) {
			why := "it has no GTID set to prove this server has its history"
			if set != nil {
				why = fmt.Sprintf("this server's binlog GTIDs (%s) do not contain the checkpoint's %s", orEmpty(history(f)), pos.GTIDSet)
			}
			return bad(CauseOtherServer, "check source.addr; to start over on this server "+ResetFix+", or "+SetFix,
				"the checkpoint was taken on another server: stored with %s, but source.addr is %s (%s); refusing to stream another server's positions", cp.ServerUUID, f.Identity, why)
		}
		v.Failover = true
	}
	if set != nil {
		if !executed.Contain(set) {
			return bad(CauseAhead, "check source.addr; if it is the right server, "+ResetFix+", or `dialsync checkpoint set --gtid SET --reason '...'` to a set this server has",
				"the source cannot serve the checkpoint: its GTID set %s is ahead of the source (its binlog has %s): the source has not executed transactions the checkpoint includes: source.addr is another server, or the source was restored from a backup or rolled back; this is not a purge", pos.GTIDSet, orEmpty(f.Executed))
		}
		if f.PurgedKnown && f.Purged != "" {
			if missing := purgedMissing(f.Flavor, set, f.Purged); missing != "" {
				return bad(CausePurged, purgedFix, "the source cannot serve the checkpoint: binlog purged: the server purged transactions after the checkpoint %s (purged: %s)", pos.GTIDSet, missing)
			}
		}
		v.Detail = fmt.Sprintf("the server's binlog has every transaction after %s", pos.GTIDSet)
		if v.Failover {
			v.Detail = fmt.Sprintf("taken on %s; this server's GTIDs contain the checkpoint's (failover): %s", cp.ServerUUID, v.Detail)
		}
		return v
	}
	if pos.File == "" {
		return v
	}
	if len(f.Logs) == 0 {
		return bad(CauseUnknownFile, notPurge, "the source lists no binary logs, so it cannot serve the checkpoint %s", pos)
	}
	oldest, newest := f.Logs[0], f.Logs[len(f.Logs)-1]
	i := FindLog(f.Logs, pos.File)
	if i < 0 {
		older, comparable := olderLog(pos.File, oldest.Name)
		switch {
		case comparable && older && (same || cp.ServerUUID == ""):
			v = bad(CausePurged, purgedFix, "the source cannot serve the checkpoint's position: binlog %s was purged (the oldest binlog on the server is %s)", pos.File, oldest.Name)
			if !same {
				// Not proven this server's: say so, and do not jump.
				v.Cause = CauseUnknownFile
				v.Detail += "; the checkpoint carries no server identity, so this is not proven to be this server's purge"
				v.Fix = "if source.addr is the server the checkpoint was taken on: " + ResetFix
			}
			return v
		case comparable && !older:
			return bad(CauseUnknownFile, notPurge, "the source cannot serve the checkpoint's position: binlog %s is not on the server and is not older than its oldest %s (newest %s): the checkpoint is from another server, or the source's binlog was reset (RESET MASTER) or restored", pos.File, oldest.Name, newest.Name)
		}
		return bad(CauseUnknownFile, notPurge, "the source cannot serve the checkpoint's position: binlog %s is not a file of this server (its binlogs are %s to %s)", pos.File, oldest.Name, newest.Name)
	}
	if uint64(pos.Pos) > f.Logs[i].Size {
		return bad(CausePastEnd, notPurge, "the source cannot serve the checkpoint's position: offset %d is past the end of %s (%d bytes): the checkpoint is from another server, or the source was restored from a backup", pos.Pos, pos.File, f.Logs[i].Size)
	}
	if f.NotEventStart != "" {
		return bad(CauseMidEvent, "set the checkpoint to a transaction boundary: "+SetFix+"; or "+ResetFix,
			"the source cannot serve the checkpoint's position: %s is not an event boundary (the offset falls inside an event; the server says: %s): the checkpoint was edited or is from another server; this is not a purge", pos, f.NotEventStart)
	}
	v.Detail = fmt.Sprintf("%s is on the server", pos.File)
	return v
}

// hasHistory reports whether the server's binlog holds every transaction
// of set, whichever server wrote them: MySQL: gtid_executed contains it;
// MariaDB: for each GTID d-s-n of the set, gtid_binlog_state has d-s-m with
// m >= n (parsed with go-mysql's GTID code).
func hasHistory(f PositionFacts, executed, set mysql.GTIDSet) bool {
	if f.Flavor == mysql.MySQLFlavor {
		return executed.Contain(set)
	}
	have := map[[2]uint32]uint64{}
	for _, g := range strings.Split(f.State, ",") {
		if gt, err := mysql.ParseMariadbGTID(strings.TrimSpace(g)); err == nil {
			k := [2]uint32{gt.DomainID, gt.ServerID}
			have[k] = max(have[k], gt.SequenceNumber)
		}
	}
	for _, g := range set.(*mysql.MariadbGTIDSet).Sets {
		if n, ok := have[[2]uint32{g.DomainID, g.ServerID}]; !ok || n < g.SequenceNumber {
			return false
		}
	}
	return true
}

func history(f PositionFacts) string {
	if f.Flavor == mysql.MySQLFlavor {
		return f.Executed
	}
	return f.State
}

const purgedFix = "Recover with `dialsync checkpoint reset --to-head --reason \"binlog purged\"` (jumps to the head and reconciles the queue), or set recovery.on_purged = \"reconcile\" to do this automatically"

func orEmpty(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

func oneLineErr(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// purgedMissing returns the purged GTIDs the checkpoint set has not
// reached ("" when none), compared with go-mysql's own GTID code (no
// server function: GTID_SUBSET is missing on some MySQL-protocol servers).
// MySQL: gtid_purged must be within the set. MariaDB: per domain, the
// set's sequence must reach the Gtid_list's.
func purgedMissing(flavor string, set mysql.GTIDSet, purged string) string {
	if flavor == mysql.MySQLFlavor {
		p, err := mysql.ParseMysqlGTIDSet(purged)
		if err != nil || set.Contain(p) {
			return ""
		}
		return purged
	}
	return mariaDBMissing(set.(*mysql.MariadbGTIDSet), purged)
}

// olderLog compares two binlog names of the form <base>.<number>:
// comparable is false when the bases differ (another server's naming).
func olderLog(file, than string) (older, comparable bool) {
	fb, fn, ok1 := splitLog(file)
	tb, tn, ok2 := splitLog(than)
	if !ok1 || !ok2 || fb != tb {
		return false, false
	}
	return fn < tn, true
}

func splitLog(name string) (base string, n uint64, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(name[i+1:], 10, 64)
	return name[:i], n, err == nil
}

// DiagnosePosition gathers and judges in one call.
func (s *Source) DiagnosePosition(ctx context.Context, flavor string, cp checkpoint.Checkpoint) (Verdict, error) {
	f, err := s.GatherPosition(ctx, flavor, cp)
	if err != nil {
		return Verdict{}, err
	}
	return JudgePosition(cp, f), nil
}

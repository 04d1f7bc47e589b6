// Package canal adapts go-mysql's canal to dialsync: it decodes the binlog of
// one source database, buffers each transaction until its commit and hands
// whole transactions (or, for very large ones, bounded pieces of them) to the
// apply side as change.Txn values. It copies out only the columns handlers
// asked for.
//
// What this package relies on in go-mysql is written down in docs/canal.md;
// the short form: positions only at commit boundaries (OnPosSynced),
// GTID-first, explicit server_id, no mysqldump, no discarding of rows,
// heartbeats + read timeout, UTC times, anchored table filters, row-length
// check against the schema.
package canal

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/change"
)

// Includes reports whether the whole transaction t lies at or before p in
// the source's history: by GTID when both have one (t's GTID is in p's
// set; MariaDB compares sequence numbers per domain, MySQL set membership,
// as go-mysql's GTIDSet.Contain does), else by file and offset on the same
// server. It says false when it cannot tell (no GTIDs and an unknown file),
// so callers must treat false as "maybe not", never as proof.
func Includes(p change.Position, t *change.Txn) bool {
	if p.GTIDSet != "" && t.GTID != "" {
		flavor := mysql.MariaDBFlavor
		if strings.Contains(t.GTID, ":") {
			flavor = mysql.MySQLFlavor
		}
		set, err := mysql.ParseGTIDSet(flavor, p.GTIDSet)
		if err != nil {
			return false
		}
		own, err := mysql.ParseGTIDSet(flavor, t.GTID)
		if err != nil {
			return false
		}
		return set.Contain(own)
	}
	if p.File == "" || t.End.File == "" {
		return false
	}
	if c := compareBinlogNames(t.End.File, p.File); c != 0 {
		return c < 0
	}
	return t.End.Pos <= p.Pos
}

// compareBinlogNames orders binlog file names "<base>.<number>" by number
// (the server pads it to six digits, but it grows past 999999); names with
// different bases compare as text.
func compareBinlogNames(a, b string) int {
	i, j := strings.LastIndexByte(a, '.'), strings.LastIndexByte(b, '.')
	if i >= 0 && j >= 0 && a[:i] == b[:j] {
		an, bn := a[i+1:], b[j+1:]
		x, errA := strconv.ParseUint(an, 10, 64)
		y, errB := strconv.ParseUint(bn, 10, 64)
		if errA == nil && errB == nil {
			return cmp.Compare(x, y)
		}
	}
	return strings.Compare(a, b)
}

package canal

import (
	"dialsync/change"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// positionHint ends the error about a start position that cannot even be
// parsed (a damaged checkpoint). Errors wrapping ErrPositionGone carry no
// hint: the caller knows its recovery options (cmd/dialsync names the
// commands and recovery.on_purged).
const positionHint = "the checkpoint cannot be used: move it with 'dialsync checkpoint reset --to-head --reason \"...\"' (the next run reconciles everything), or 'dialsync checkpoint set' to a position the source still has"

// ErrPositionGone marks (together with ErrFatal) a start position the source
// cannot serve: its binlog was purged, it lies past the end of its file, or
// its GTIDs are unknown to the server. A caller configured to recover by
// itself may jump to Head and reconcile; otherwise an operator must. The
// message says what is wrong, not what to run.
var ErrPositionGone = errors.New("binlog position not available on the source")

// checkSource verifies, on an open connection, everything streaming needs
// from the server that go-mysql does not check (or checks only for one
// flavor): the flavor, the server variables, and the tracked tables. Head
// runs it too, so a bootstrap stops before it does any work. Its errors
// are fatal, one line, and name the setting and the fix. It reports

// The fix for each binlog setting dialsync needs, worded once: the stream's
// start check says it in its error, `dialsync check` (internal/preflight)
// prints it beside the setting.
const (
	FixLogBin   = "start the server with log_bin enabled (my.cnf [mysqld]: log_bin = mysql-bin, then restart; RDS: enable automated backups, backup retention period > 0)"
	FixFormat   = "SET GLOBAL binlog_format = 'ROW', and binlog_format = ROW in the server configuration so it survives a restart (RDS: parameter group binlog_format = ROW, then reboot)"
	FixRowImage = "SET GLOBAL binlog_row_image = 'FULL', and binlog_row_image = FULL in the server configuration (RDS: parameter group binlog_row_image = full)"
)

// whether go-mysql must fill zero LogPos values (MariaDB >= 11.4).
func checkSource(cfg Config, conn *client.Conn) (fillZeroLogPos bool, err error) {
	version := conn.GetServerVersion()
	if err := checkFlavor(cfg, version); err != nil {
		return false, err
	}
	r, err := conn.Execute("SELECT @@GLOBAL.server_id, @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.binlog_row_image")
	if err != nil {
		return false, fmt.Errorf("preflight: read server variables: %w", err)
	}
	serverID, _ := r.GetUint(0, 0)
	logBin, _ := r.GetString(0, 1)
	format, _ := r.GetString(0, 2)
	image, _ := r.GetString(0, 3)
	format, image = strings.ToUpper(strings.Clone(format)), strings.ToUpper(strings.Clone(image))
	r.Close()
	switch {
	case uint32(serverID) == cfg.ServerID:
		return false, fatalf("source %s has server_id %d, the same as our server_id: set source.server_id to a value unique among the source's replicas", cfg.Addr, serverID)
	case logBin != "1":
		return false, fatalf("log_bin is OFF on source %s: %s", cfg.Addr, FixLogBin)
	case format != "ROW":
		return false, fatalf("binlog_format is %s on source %s, dialsync needs ROW (statement events carry no row images): %s", format, cfg.Addr, FixFormat)
	case image != "FULL":
		// MINIMAL/NOBLOB images leave unlogged columns nil, indistinguishable
		// from NULL; go-mysql checks this only for the mysql flavor.
		return false, fatalf("binlog_row_image is %s on source %s, dialsync needs FULL (unlogged columns are indistinguishable from NULL): %s", image, cfg.Addr, FixRowImage)
	}
	if cfg.Flavor == mysql.MySQLFlavor {
		// go-mysql stops on partial JSON updates.
		if r, err := conn.Execute("SHOW GLOBAL VARIABLES LIKE 'binlog_row_value_options'"); err == nil {
			opts, _ := r.GetString(0, 1)
			if strings.Contains(strings.ToUpper(opts), "PARTIAL_JSON") {
				return false, fatalf("binlog_row_value_options is %s on source %s: SET GLOBAL binlog_row_value_options = '' (partial JSON updates cannot be decoded)", opts, cfg.Addr)
			}
		}
	} else if cmp, err := mysql.CompareServerVersions(version, "11.4.0"); err == nil && cmp >= 0 {
		fillZeroLogPos = true
	}
	return fillZeroLogPos, checkTables(cfg, conn)
}

// checkTables verifies that every tracked table exists, has a primary key
// and has every wanted column. Rows are identified by their primary key
// (handlers key everything on `id`); a table without one may hold
// duplicates that no change could be attributed to reliably, so it is
// refused rather than half-supported.
func checkTables(cfg Config, conn *client.Conn) error {
	if len(cfg.Tables) == 0 {
		return nil
	}
	args := []any{cfg.Database}
	marks := make([]string, 0, len(cfg.Tables))
	for _, t := range cfg.Tables {
		args = append(args, t.Table)
		marks = append(marks, "?")
	}
	r, err := conn.Execute(`SELECT TABLE_NAME, COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (`+strings.Join(marks, ",")+`)`, args...)
	if err != nil {
		return fmt.Errorf("preflight: read tracked table columns: %w", privileges(cfg, err))
	}
	defer r.Close()
	cols := map[string][]string{}
	hasPK := map[string]bool{}
	for i := range r.RowNumber() {
		tbl, _ := r.GetString(i, 0)
		col, _ := r.GetString(i, 1)
		key, _ := r.GetString(i, 2)
		cols[tbl] = append(cols[tbl], strings.ToLower(col))
		if key == "PRI" {
			hasPK[tbl] = true
		}
	}
	for _, t := range cfg.Tables {
		have, ok := cols[t.Table]
		switch {
		case !ok:
			return fatalf("tracked table %s.%s does not exist on source %s (or the source user cannot see it): create it, or GRANT SELECT ON %s.* to the source user",
				cfg.Database, t.Table, cfg.Addr, cfg.Database)
		case !hasPK[t.Table]:
			return fatalf("tracked table %s.%s on source %s has no primary key: dialsync identifies rows by their primary key id; add one (ALTER TABLE %s ADD PRIMARY KEY (id))",
				cfg.Database, t.Table, cfg.Addr, t.Table)
		}
		for _, c := range t.Columns {
			if !slices.Contains(have, strings.ToLower(c)) {
				return fatalf("table %s.%s has no column %q, which the handlers need: fix the schema or the table spec", cfg.Database, t.Table, c)
			}
		}
	}
	return nil
}

// resolveStartFile fills an empty start file with the oldest binlog, and
// checks that a given file is still on the server and that the offset is
// inside it, so a purged or past-the-end checkpoint is reported at start
// with the recovery command instead of as a bare server error 1236.
func resolveStartFile(cfg Config, conn *client.Conn, from *change.Position) error {
	r, err := conn.Execute("SHOW BINARY LOGS")
	if err != nil {
		return fmt.Errorf("preflight: list binary logs: %w", privileges(cfg, err))
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return fatalf("source %s has no binary logs (log_bin off?)", cfg.Addr)
	}
	first, _ := r.GetString(0, 0)
	last, _ := r.GetString(r.RowNumber()-1, 0)
	if from.File == "" {
		from.File, from.Pos = strings.Clone(first), 4
		return nil
	}
	for i := range r.RowNumber() {
		name, _ := r.GetString(i, 0)
		if name != from.File {
			continue
		}
		size, _ := r.GetUint(i, 1)
		if uint64(from.Pos) > size {
			return fatalf("%w: start position %s is past the end of %s (%d bytes) on source %s",
				ErrPositionGone, from, from.File, size, cfg.Addr)
		}
		return nil
	}
	return fatalf("%w: start position %s: binlog file %s is not on source %s (purged? the server has %s to %s)",
		ErrPositionGone, from, from.File, cfg.Addr, first, last)
}

// privileges adds the grants to an access-denied error from the source.
func privileges(cfg Config, err error) error {
	var my *mysql.MyError
	if !errors.As(err, &my) {
		return err
	}
	switch my.Code {
	case mysql.ER_SPECIFIC_ACCESS_DENIED_ERROR, mysql.ER_DBACCESS_DENIED_ERROR,
		mysql.ER_TABLEACCESS_DENIED_ERROR, mysql.ER_COLUMNACCESS_DENIED_ERROR:
		monitor := "REPLICATION CLIENT"
		if cfg.Flavor == mysql.MariaDBFlavor {
			monitor = "BINLOG MONITOR" // MariaDB >= 10.5.2 renamed it
		}
		return fatalf("source user %q lacks a privilege (%w): GRANT REPLICATION SLAVE, %s ON *.* TO the source user, and GRANT SELECT ON %s.* (see deploy/ for the grants)",
			cfg.User, err, monitor, cfg.Database)
	}
	return err
}

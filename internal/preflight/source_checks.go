package preflight

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/internal/lookup"
)

// HeadroomWarn is the retention headroom under which the checkpoint check
// warns: less than this and a stopped dialsync loses its position.
const HeadroomWarn = 2 * time.Hour

// RetentionWarn is the binlog retention under which the retention check
// warns: an outage over a night or a weekend should not need a reconcile.
const RetentionWarn = 24 * time.Hour

// SourceInput is what the source checks compare the server with.
type SourceInput struct {
	Flavor   string // "mysql" or "mariadb" (source.flavor)
	ServerID uint32 // source.server_id
	Database string // source.database
	Tables   []change.TableSpec
	// Checkpoint is the stored checkpoint; nil when none is stored or it
	// could not be read (then CheckpointErr says why).
	Checkpoint    *checkpoint.Checkpoint
	CheckpointErr error
	// Now is the current time (zero: time.Now()).
	Now time.Time
}

// sourceVars are read in one statement; checks judge their values.
var sourceVars = []string{
	"log_bin", "binlog_format", "binlog_row_image", "log_slave_updates", "log_replica_updates",
	"binlog_expire_logs_seconds", "expire_logs_days", "gtid_mode", "enforce_gtid_consistency",
	"gtid_binlog_pos", "server_id", "server_uuid", "hostname", "port",
}

// CheckSource runs every check of the binlog source over s: connection,
// flavor, binlog settings, replica updates, retention, GTIDs, grants,
// server_id, tracked tables and the checkpoint's presence on the server.
// Each check has its own timeout (s.Timeout per statement); a failing one
// does not stop the rest. When the server cannot be reached the result is
// one FAIL naming source.addr.
func CheckSource(ctx context.Context, s *Source, in SourceInput) Report {
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	version, err := s.Version(ctx)
	if err != nil {
		return Report{fail("source", "check source.addr, source.user and source.password (DIALSYNC_SOURCE_PASSWORD), and that the server is up; the other source checks were skipped",
			"cannot connect to %s: %v", s.Addr, err)}
	}
	r := Report{ok("source", "connected to %s (%s)", s.Addr, version)}
	r = append(r, checkFlavor(in.Flavor, version))
	vars, err := s.Vars(ctx, sourceVars...)
	if err != nil {
		return append(r, fail("server variables", "check that source.user may run SHOW GLOBAL VARIABLES", "cannot read server variables: %v", err))
	}
	maria := IsMariaDB(version)
	r = append(r, checkLogBin(vars), checkFormat(vars), checkRowImage(vars))
	per := 2 * s.timeout()
	r = append(r, timed(ctx, per, func(ctx context.Context) []Result { return []Result{s.checkReplicaUpdates(ctx, version, vars)} })...)
	retention, known := BinlogRetention(vars)
	var rdsHours *int
	r = append(r, timed(ctx, per, func(ctx context.Context) []Result {
		var res Result
		res, rdsHours = s.checkRetention(ctx, retention, known)
		return []Result{res}
	})...)
	r = append(r, checkGTIDMode(maria, vars))
	r = append(r, timed(ctx, per, func(ctx context.Context) []Result { return []Result{s.checkGrants(ctx, version, in)} })...)
	r = append(r, timed(ctx, per, func(ctx context.Context) []Result { return []Result{s.checkServerID(ctx, version, vars, in.ServerID)} })...)
	r = append(r, timed(ctx, per, func(ctx context.Context) []Result { return []Result{s.checkTables(ctx, in)} })...)
	if rdsHours != nil {
		retention, known = time.Duration(*rdsHours)*time.Hour, true
	}
	r = append(r, timed(ctx, 4*per, func(ctx context.Context) []Result { return s.checkCheckpoint(ctx, in, retention, known) })...)
	return r
}

func checkFlavor(flavor, version string) Result {
	want := mysql.MySQLFlavor
	if IsMariaDB(version) {
		want = mysql.MariaDBFlavor
	}
	if flavor != want {
		return fail("flavor", fmt.Sprintf("set source.flavor = %q", want), "the server runs %s but source.flavor is %q", version, flavor)
	}
	return ok("flavor", "%s", flavor)
}

func checkLogBin(v map[string]string) Result {
	if on(v["log_bin"]) {
		return ok("log_bin", "ON")
	}
	return fail("log_bin", canal.FixLogBin,
		"binary logging is OFF")
}

func checkFormat(v map[string]string) Result {
	f := strings.ToUpper(v["binlog_format"])
	if f == "ROW" {
		return ok("binlog_format", "ROW")
	}
	return fail("binlog_format", canal.FixFormat,
		"%s, dialsync needs ROW (statement events carry no row images)", f)
}

func checkRowImage(v map[string]string) Result {
	img := strings.ToUpper(v["binlog_row_image"])
	if img == "FULL" {
		return ok("binlog_row_image", "FULL")
	}
	return fail("binlog_row_image", canal.FixRowImage,
		"%s, dialsync needs FULL (with %s, unlogged columns are indistinguishable from NULL)", img, img)
}

func on(v string) bool { return strings.EqualFold(v, "ON") || v == "1" }

// checkReplicaUpdates: a replica writes the changes it applies to its own
// binlog only with log_slave_updates (MySQL 8.0.26+: log_replica_updates).
func (s *Source) checkReplicaUpdates(ctx context.Context, version string, v map[string]string) Result {
	const name = "log_replica_updates"
	if on(v["log_replica_updates"]) || on(v["log_slave_updates"]) {
		return ok(name, "ON")
	}
	q := "SHOW SLAVE STATUS"
	if !IsMariaDB(version) && atLeast(version, "8.0.22") {
		q = "SHOW REPLICA STATUS"
	}
	rows, err := s.Query(ctx, q)
	if err != nil && IsMariaDB(version) {
		// MariaDB >= 10.5.2 shows SHOW SLAVE STATUS only with SLAVE
		// MONITOR, which dialsync does not need: ask what needs no
		// privilege instead (running replication threads, and the GTID
		// position replication has applied, empty on a server that never
		// replicated).
		return s.replicaByStatus(ctx, name, q, err)
	}
	if err != nil {
		return warn(name, "GRANT REPLICATION CLIENT ON *.* TO the dialsync user (deploy/mysql/grants.sql), or check by hand that the source is not a replica",
			"OFF, and cannot tell whether the source is a replica (%s: %v)", q, err)
	}
	if len(rows) == 0 {
		return ok(name, "OFF, fine: the source is not a replica")
	}
	varName := "log_slave_updates"
	if !IsMariaDB(version) && atLeast(version, "8.0.26") {
		varName = "log_replica_updates"
	}
	return fail(name, fmt.Sprintf("set %s = ON in my.cnf and restart (it is read-only at runtime; RDS: enable automated backups on the replica, which turns it on)", varName),
		"OFF on a replica: the changes it replicates never reach its binlog, so dialsync would see nothing")
}

// replicaByStatus tells a MariaDB replica from Slaves_running and
// gtid_slave_pos, which any account may read.
func (s *Source) replicaByStatus(ctx context.Context, name, q string, qerr error) Result {
	rows, err := s.Query(ctx, "SELECT @@GLOBAL.gtid_slave_pos AS slave_pos, (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SLAVES_RUNNING') AS running")
	if err != nil || len(rows) != 1 {
		return warn(name, "GRANT SLAVE MONITOR ON *.* TO the dialsync user, or check by hand that the source is not a replica",
			"OFF, and cannot tell whether the source is a replica (%s: %v; gtid_slave_pos: %v)", q, qerr, err)
	}
	running, pos := rows[0]["running"], rows[0]["slave_pos"]
	if (running == "" || running == "0") && pos == "" {
		return ok(name, "OFF, fine: the source is not a replica (no replication running, gtid_slave_pos empty)")
	}
	return fail(name, "set log_slave_updates = ON in my.cnf and restart (it is read-only at runtime), or point source.addr at the primary",
		"OFF, and the source replicates (or did: Slaves_running %s, gtid_slave_pos %q): the changes it replicates never reach its binlog, so dialsync would not see them", orEmpty(running), pos)
}

// BinlogRetention is the server's time-based binlog expiry: MySQL 8 and
// MariaDB 10.6+ have binlog_expire_logs_seconds (MariaDB keeps it in step
// with expire_logs_days), older servers expire_logs_days. 0 means never.
// known is false when neither variable exists.
func BinlogRetention(v map[string]string) (d time.Duration, known bool) {
	if s, ok := v["binlog_expire_logs_seconds"]; ok {
		if n, err := strconv.ParseFloat(s, 64); err == nil && n > 0 {
			return time.Duration(n) * time.Second, true
		}
		known = true
	}
	if s, ok := v["expire_logs_days"]; ok {
		if n, err := strconv.ParseFloat(s, 64); err == nil && n > 0 {
			return time.Duration(n * float64(24*time.Hour)), true
		}
		known = true
	}
	return 0, known
}

// rdsRetentionHours reads RDS's 'binlog retention hours' (best effort:
// only when mysql.rds_show_configuration exists). set is false for NULL
// (RDS then purges binlogs as soon as it can).
func (s *Source) rdsRetentionHours(ctx context.Context) (hours int, set, isRDS bool) {
	rows, err := s.Query(ctx, `SELECT COUNT(*) AS n FROM information_schema.ROUTINES
		WHERE ROUTINE_SCHEMA = 'mysql' AND ROUTINE_NAME = 'rds_show_configuration'`)
	if err != nil || len(rows) == 0 || rows[0]["n"] == "0" {
		return 0, false, false
	}
	rows, err = s.Query(ctx, "CALL mysql.rds_show_configuration")
	if err != nil {
		return 0, false, true
	}
	for _, r := range rows {
		if strings.EqualFold(r["name"], "binlog retention hours") {
			v, present := r["value"]
			h, err := strconv.Atoi(v)
			return h, present && err == nil, true
		}
	}
	return 0, false, true
}

func (s *Source) checkRetention(ctx context.Context, d time.Duration, known bool) (Result, *int) {
	const name = "binlog_retention"
	if hours, set, isRDS := s.rdsRetentionHours(ctx); isRDS {
		if !set {
			return fail(name, "CALL mysql.rds_set_configuration('binlog retention hours', 24);",
				"RDS 'binlog retention hours' is NULL: RDS purges binary logs as soon as it can"), nil
		}
		res := ok(name, "RDS binlog retention hours = %d", hours)
		if time.Duration(hours)*time.Hour < RetentionWarn {
			res = warn(name, "CALL mysql.rds_set_configuration('binlog retention hours', 24);",
				"RDS binlog retention hours = %d: an outage longer than that needs a full reconcile", hours)
		}
		return res, &hours
	}
	switch {
	case !known:
		return warn(name, "check the server's binlog expiry by hand", "cannot read binlog_expire_logs_seconds or expire_logs_days"), nil
	case d == 0:
		return ok(name, "binary logs never expire (watch the disk)"), nil
	case d < RetentionWarn:
		return warn(name, "SET GLOBAL binlog_expire_logs_seconds = 86400; and the same in my.cnf (MariaDB < 10.6: expire_logs_days = 1)",
			"binary logs expire after %s: an outage longer than that needs a full reconcile", d), nil
	}
	return ok(name, "binary logs expire after %s", d), nil
}

func checkGTIDMode(maria bool, v map[string]string) Result {
	if maria {
		domains := []string{}
		for _, g := range strings.Split(v["gtid_binlog_pos"], ",") {
			if d, _, ok := strings.Cut(strings.TrimSpace(g), "-"); ok && !slices.Contains(domains, d) {
				domains = append(domains, d)
			}
		}
		if len(domains) == 0 {
			return ok("gtid_mode", "MariaDB GTIDs are always on (no GTID written yet)")
		}
		return ok("gtid_mode", "MariaDB GTIDs, domains %s (gtid_binlog_pos %s)", strings.Join(domains, ","), v["gtid_binlog_pos"])
	}
	if strings.EqualFold(v["gtid_mode"], "ON") {
		return ok("gtid_mode", "ON")
	}
	return warn("gtid_mode", "SET GLOBAL enforce_gtid_consistency = ON; then SET GLOBAL gtid_mode = OFF_PERMISSIVE; ON_PERMISSIVE; ON (one step at a time; RDS: parameter group gtid-mode = ON, enforce_gtid_consistency = ON)",
		"gtid_mode is %s: dialsync works by file/position, but cannot follow a failover to another server", v["gtid_mode"])
}

// identity is the server's identity as lookup.Identity renders it.
func (s *Source) Identity(ctx context.Context) (string, error) {
	rows, err := s.Query(ctx, lookup.IdentitySQL)
	if err != nil {
		return "", fmt.Errorf("server identity: %w", err)
	}
	vars := map[string]string{}
	for _, r := range rows {
		vars[strings.ToLower(r["variable_name"])] = r["value"]
	}
	return lookup.Identity(vars), nil
}

// CheckLookupSame compares the binlog server's and the lookup server's
// identities (lookup.Identity): lookups on another server may read rows
// older than the binlog event being applied.
func CheckLookupSame(sourceID, lookupID string) Result {
	if sourceID == lookupID {
		return ok("lookup_server", "the lookup server is the binlog server (%s)", sourceID)
	}
	return fail("lookup_server", "point [lookup] addr at the binlog source, or remove the [lookup] section so it inherits [source]",
		"the lookup server (%s) is not the binlog server (%s): lookups could read rows older than the change being applied", lookupID, sourceID)
}

func (s *Source) checkServerID(ctx context.Context, version string, v map[string]string, ours uint32) Result {
	const name = "server_id"
	fix := "set source.server_id to a value no other server or replica in the topology uses"
	if v["server_id"] == strconv.FormatUint(uint64(ours), 10) {
		return fail(name, fix, "source.server_id %d is the source's own server_id", ours)
	}
	q := "SHOW SLAVE HOSTS"
	if !IsMariaDB(version) && atLeast(version, "8.0.22") {
		q = "SHOW REPLICAS"
	}
	rows, err := s.Query(ctx, q)
	if err != nil {
		// Listing replicas needs a privilege dialsync does not (MariaDB
		// >= 10.5.2: REPLICATION MASTER ADMIN). Nothing to fix: a
		// collision stops `dialsync run` at once with its own error
		// naming source.server_id (canal's classify).
		return ok(name, "%d differs from the source's own; the source's replicas are not listed (%s needs a privilege dialsync does not need): another replica with this id would stop `dialsync run` with a clear error", ours, q)
	}
	for _, r := range rows {
		if r["server_id"] != strconv.FormatUint(uint64(ours), 10) {
			continue
		}
		// canal registers as host "dialsync": a running dialsync with this
		// id is expected (this pipeline's own instance).
		if r["host"] == "dialsync" {
			return ok(name, "%d, registered by a running dialsync (this pipeline's instance, unless two pipelines share the id)", ours)
		}
		return fail(name, fix, "server_id %d is already registered on the source by replica %s:%s: the source disconnects one of the two whenever the other connects",
			ours, r["host"], r["port"])
	}
	return ok(name, "%d, unique among the source's %d registered replica(s)", ours, len(rows))
}

func (s *Source) checkTables(ctx context.Context, in SourceInput) Result {
	const name = "tables"
	names := make([]any, 0, len(in.Tables))
	ph := make([]string, 0, len(in.Tables))
	for _, t := range in.Tables {
		names = append(names, t.Table)
		ph = append(ph, "?")
	}
	args := append([]any{in.Database}, names...)
	// COLUMN_KEY rather than TABLE_CONSTRAINTS: MariaDB hides the latter
	// from an account that has only SELECT on the tables.
	cols, err := s.Query(ctx, `SELECT TABLE_NAME AS t, COLUMN_NAME AS c, COLUMN_KEY AS k FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (`+strings.Join(ph, ",")+`)`, args...)
	if err != nil {
		return fail(name, "check that source.user has SELECT on the tracked tables", "cannot read the table definitions: %v", err)
	}
	have := map[string]map[string]bool{}
	pk := map[string]bool{}
	for _, r := range cols {
		t := strings.ToLower(r["t"])
		if have[t] == nil {
			have[t] = map[string]bool{}
		}
		have[t][strings.ToLower(r["c"])] = true
		if r["k"] == "PRI" {
			pk[t] = true
		}
	}
	var problems []string
	for _, t := range in.Tables {
		c := have[strings.ToLower(t.Table)]
		if c == nil {
			problems = append(problems, fmt.Sprintf("table %s.%s is missing (or not visible to source.user)", in.Database, t.Table))
			continue
		}
		for _, col := range t.Columns {
			if !c[strings.ToLower(col)] {
				problems = append(problems, fmt.Sprintf("column %s.%s is missing", t.Table, col))
			}
		}
		if !pk[strings.ToLower(t.Table)] {
			problems = append(problems, fmt.Sprintf("table %s has no primary key", t.Table))
		}
	}
	if len(problems) > 0 {
		return fail(name, fmt.Sprintf("check source.database (now %q) names the application schema, and that its tables have these columns and a primary key (GRANT SELECT ON `%s`.* to the dialsync user if they are hidden)", in.Database, in.Database),
			"%s", strings.Join(problems, "; "))
	}
	return ok(name, "%d tracked tables in %s have their columns and a primary key", len(in.Tables), in.Database)
}

// checkCheckpoint reports whether the stored checkpoint is still on the
// server and how long until it would be purged (retention headroom).
//
// Headroom estimate: MySQL and MariaDB expire a binlog file by its last
// write time (RDS likewise by age); the checkpoint's file was written at
// least until the checkpoint's event, which is about when the checkpoint
// was saved (updated_at, lag aside). So the checkpoint's file survives at
// least retention - checkpoint age: a lower bound that needs no binlog
// reading (a position an operator set by hand to an old file is the
// exception; the availability check covers it).
func (s *Source) checkCheckpoint(ctx context.Context, in SourceInput, retention time.Duration, known bool) []Result {
	const name, hname = "checkpoint", "retention_headroom"
	reset := ResetFix
	if in.CheckpointErr != nil {
		return []Result{fail(name, "see the postgres check", "cannot read the stored checkpoint: %v", in.CheckpointErr)}
	}
	if in.Checkpoint == nil {
		return []Result{ok(name, "none stored: the next run bootstraps (records the head, reconciles, then streams)")}
	}
	cp := in.Checkpoint
	// The same judgement as run's at start (JudgePosition): the same cause,
	// the same fix.
	v, err := s.DiagnosePosition(ctx, in.Flavor, *cp)
	if err != nil {
		return []Result{fail(name, "see the error: a query on the source failed", "cannot check checkpoint %s on the server: a query failed: %v", cp.Pos, err)}
	}
	if !v.OK() {
		return []Result{fail(name, v.Fix, "%s", v.Detail)}
	}
	age := in.Now.Sub(cp.UpdatedAt).Round(time.Second)
	res := []Result{ok(name, "%s: %s (saved %s ago)", cp.Pos, v.Detail, age)}
	switch {
	case !known || retention == 0:
		res = append(res, ok(hname, "binary logs do not expire by age"))
	default:
		left := retention - age
		if left < HeadroomWarn {
			res = append(res, warn(hname, "start dialsync so the checkpoint moves, or raise the retention (see binlog_retention); if it is purged: "+reset,
				"the checkpoint's binlog may be purged within %s (retention %s, checkpoint saved %s ago)", max(left, 0).Round(time.Second), retention, age))
		} else {
			res = append(res, ok(hname, "at least %s before the checkpoint's binlog can expire (retention %s, checkpoint saved %s ago)", left.Round(time.Minute), retention, age))
		}
	}
	return res
}

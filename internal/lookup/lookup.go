// Package lookup answers the apply loop's questions on the lookup server:
// which user owns a claim, which users an address belongs to, and the
// queue rule (docs/design.md, "The queue rule") for a batch or a range of users.
//
// The lookup server must be the server whose binlog dialsync reads (docs/design.md,
// invariant 3); ServerUUID returns the identity a preflight compares.
// Every connection is READ ONLY at the session level: this package cannot
// write to the source even if the configured rule tries to.
package lookup

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/driver"

	"dialsync/internal/errclass"
	"dialsync/internal/queue"
)

// UsersToken is replaced in the queue rule by a boolean predicate on the
// user id column: "u.id IN (1,2,3)" for a batch, "u.id > 10 AND u.id <= 20"
// for a range.
const UsersToken = "{users}"

// DefaultUserIDColumn is the SQL expression the {users} predicate
// constrains when Config.UserIDColumn is empty.
const DefaultUserIDColumn = "u.id"

// DefaultQueueSQL is the shipped queue rule (config key rules.queue_sql).
//
// A user is queued iff the user is not soft-deleted, is_enabled = 1,
// status = 'active', phone_number is non-empty (a NULL phone fails the
// comparison, so it counts as empty), and at least one not-soft-deleted
// claim whose status is not closed/rejected/paid has at least one PENDING
// requirement.
//
// Contract for any replacement rule:
//   - it contains {users} where a boolean predicate may stand; it is
//     replaced by a predicate on the user id column (Config.UserIDColumn,
//     default "u.id", so alias users as u or set that option). The
//     predicate holds integer literals only.
//   - it returns exactly the columns user_id, open_claims,
//     pending_requirements, oldest_pending_at (any order; oldest_pending_at
//     may be NULL), at most one row per user, and only users the predicate
//     selects. A user without a row is not queued.
//   - TIMESTAMP values are read in UTC (the session time_zone is +00:00);
//     DATETIME values are taken as UTC.
//   - it runs on a read-only session; it must not write.
//
// The joins follow the indexes of the demo schema: users by primary key,
// claims by (user_id, status, deleted_at), requirements by (claim_id,
// status, created_at), so the rule never reads a table row it discards.
const DefaultQueueSQL = `SELECT u.id AS user_id,
       COUNT(DISTINCT c.id) AS open_claims,
       COUNT(*) AS pending_requirements,
       MIN(r.created_at) AS oldest_pending_at
FROM users AS u
JOIN claims AS c
  ON c.user_id = u.id
 AND c.deleted_at IS NULL
 AND c.status NOT IN ('closed', 'rejected', 'paid')
JOIN claim_requirements AS r
  ON r.claim_id = c.id
 AND r.status = 'PENDING'
WHERE {users}
  AND u.deleted_at IS NULL
  AND u.is_enabled = 1
  AND u.status = 'active'
  AND u.phone_number <> ''
GROUP BY u.id`

// queueColumns are the columns the rule must return, exactly.
var queueColumns = []string{"user_id", "open_claims", "pending_requirements", "oldest_pending_at"}

// BatchSize is the most ids one lookup query carries; bigger lists are
// split. 5,000 ids keep a statement near 40 KB and the server's IN-list
// handling (a sorted array, binary searched) fast.
const BatchSize = 5000

// Config says how to reach the lookup server and which rule to run.
type Config struct {
	Addr     string // host:port of the lookup server (the binlog server)
	User     string
	Password string
	Database string // the Laravel schema
	// TLS secures the connection; nil means plaintext. An empty ServerName
	// is filled from Addr's host so certificates are verified.
	TLS *tls.Config
	// QueueSQL is the queue rule (rules.queue_sql); empty means
	// DefaultQueueSQL. See DefaultQueueSQL for the contract.
	QueueSQL string
	// UserIDColumn is the expression the {users} predicate constrains;
	// empty means DefaultUserIDColumn ("u.id").
	UserIDColumn string
	// MaxOpen caps open connections; zero means 4.
	MaxOpen int
}

// Lookup runs point lookups and the queue rule on the lookup server. It is
// safe for concurrent use.
type Lookup struct {
	barrierTimeouts atomic.Uint64

	db       *sql.DB
	log      *slog.Logger
	rule     string
	idColumn string
	tlsKey   string
}

// Open connects, checks the server answers, and validates the queue rule by
// running it for a user id that cannot exist (0): a syntax error, an
// unknown column or a wrong result shape fails here, naming
// rules.queue_sql, rather than at the first batch.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Lookup, error) {
	if cfg.Addr == "" || cfg.Database == "" {
		return nil, errors.New("open lookup: addr and database are required")
	}
	rule := cfg.QueueSQL
	if strings.TrimSpace(rule) == "" {
		rule = DefaultQueueSQL
	}
	if !strings.Contains(rule, UsersToken) {
		return nil, fmt.Errorf("open lookup: rules.queue_sql must contain %s (replaced by a predicate on the user id)", UsersToken)
	}
	idColumn := cfg.UserIDColumn
	if idColumn == "" {
		idColumn = DefaultUserIDColumn
	}
	params := url.Values{
		"timeout":      {"10s"},
		"readTimeout":  {"60s"}, // a half-open TCP connection must not hang the apply loop forever
		"writeTimeout": {"30s"},
	}
	if logger == nil {
		logger = slog.Default()
	}
	l := &Lookup{log: logger.With("component", "lookup"), rule: rule, idColumn: idColumn}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		if tc.ServerName == "" && !tc.InsecureSkipVerify {
			host, _, err := net.SplitHostPort(cfg.Addr)
			if err != nil {
				return nil, fmt.Errorf("open lookup: addr %q: %w", cfg.Addr, err)
			}
			tc.ServerName = host
		}
		l.tlsKey = registerTLS(tc)
		params.Set(tlsOption, l.tlsKey)
	}
	conn := sessionConnector{inner: driver.Connector{Addr: cfg.Addr, User: cfg.User, Password: cfg.Password, DB: cfg.Database, Params: params},
		log: l.log, lockOnce: new(sync.Once)}
	l.db = sql.OpenDB(conn)
	maxOpen := cfg.MaxOpen
	if maxOpen <= 0 {
		maxOpen = 4
	}
	l.db.SetMaxOpenConns(maxOpen)
	l.db.SetMaxIdleConns(maxOpen)
	l.db.SetConnMaxIdleTime(5 * time.Minute)

	if err := l.db.PingContext(ctx); err != nil {
		l.Close()
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("open lookup: connect %s: %w", cfg.Addr, err) // stopped (a signal): no advice
		}
		return nil, fmt.Errorf("open lookup: connect %s: %w: check source.addr/user/password (or [lookup]) and that the server is up", cfg.Addr, err)
	}
	if err := l.validateRule(ctx); err != nil {
		l.Close()
		return nil, fmt.Errorf("open lookup: %w", err)
	}
	l.log.Info("lookup server ready", "addr", cfg.Addr, "database", cfg.Database, "tls", cfg.TLS != nil,
		"default_rule", rule == DefaultQueueSQL)
	return l, nil
}

// Close closes the connections.
func (l *Lookup) Close() error {
	if l.tlsKey != "" {
		tlsConfigs.Delete(l.tlsKey)
	}
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close lookup: %w", err)
	}
	return nil
}

func (l *Lookup) validateRule(ctx context.Context) error {
	rows, err := l.db.QueryContext(ctx, l.render(l.inPredicate([]uint64{0})))
	if err != nil {
		return fmt.Errorf("rules.queue_sql does not run: %w", flatError{err})
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return fmt.Errorf("rules.queue_sql: read columns: %w", err)
	}
	if _, err := columnIndex(cols); err != nil {
		return err
	}
	for rows.Next() { // drain: id 0 matches no user, but a broken rule may still return rows
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rules.queue_sql does not run: %w", flatError{err})
	}
	return l.checkRuleTypes(ctx)
}

// flatError shows an error on one line. A syntax error quotes the statement
// from the error point on ("... near 'FROM x\n  WHERE ...'"), and a rule
// written over several lines would otherwise end the process with a
// multi-line message.
type flatError struct{ err error }

func (e flatError) Error() string { return strings.Join(strings.Fields(e.err.Error()), " ") }
func (e flatError) Unwrap() error { return e.err }

// columnIndex maps the rule's result columns to the order of queueColumns,
// failing with the missing and unexpected names.
func columnIndex(cols []string) ([4]int, error) {
	var idx [4]int
	var missing, extra []string
	seen := map[string]bool{}
	for _, want := range queueColumns {
		i := slices.Index(cols, want)
		if i < 0 {
			missing = append(missing, want)
			continue
		}
		idx[slices.Index(queueColumns, want)] = i
	}
	for _, c := range cols {
		if seen[c] || !slices.Contains(queueColumns, c) {
			extra = append(extra, c)
		}
		seen[c] = true
	}
	if len(missing) > 0 || len(extra) > 0 {
		return idx, fmt.Errorf("rules.queue_sql must return exactly the columns %s; it returns [%s] (missing: [%s], unexpected: [%s])",
			strings.Join(queueColumns, ", "), strings.Join(cols, ", "), strings.Join(missing, ", "), strings.Join(extra, ", "))
	}
	return idx, nil
}

func (l *Lookup) render(predicate string) string {
	return strings.ReplaceAll(l.rule, UsersToken, "("+predicate+")")
}

func (l *Lookup) inPredicate(ids []uint64) string {
	return l.idColumn + " IN (" + idList(ids) + ")"
}

// ClaimOwners returns the current user_id of each claim that exists
// (soft-deleted claims included: they still belong to their user).
func (l *Lookup) ClaimOwners(ctx context.Context, claimIDs []uint64) (map[uint64]uint64, error) {
	out := make(map[uint64]uint64, len(claimIDs))
	for _, batch := range batches(claimIDs) {
		err := l.pairs(ctx, "SELECT id, user_id FROM claims WHERE id IN ("+idList(batch)+")", func(claim, user uint64) {
			out[claim] = user
		})
		if err != nil {
			return nil, fmt.Errorf("lookup claim owners: %w", err)
		}
	}
	return out, nil
}

// AddressUsers returns, per address id, the address's own user_id and every
// user (soft-deleted or not) whose current_user_address_id is that address,
// sorted and distinct. An address that no longer exists still maps to the
// users pointing at it; an id nobody refers to is absent.
func (l *Lookup) AddressUsers(ctx context.Context, addressIDs []uint64) (map[uint64][]uint64, error) {
	out := make(map[uint64][]uint64, len(addressIDs))
	for _, batch := range batches(addressIDs) {
		in := idList(batch)
		err := l.pairs(ctx, "SELECT id, user_id FROM user_addresses WHERE id IN ("+in+
			") UNION ALL SELECT current_user_address_id, id FROM users WHERE current_user_address_id IN ("+in+")",
			func(addr, user uint64) {
				if !slices.Contains(out[addr], user) {
					out[addr] = append(out[addr], user)
				}
			})
		if err != nil {
			return nil, fmt.Errorf("lookup address users: %w", err)
		}
	}
	for _, users := range out {
		slices.Sort(users)
	}
	return out, nil
}

// pairs runs a query returning two unsigned integer columns.
func (l *Lookup) pairs(ctx context.Context, q string, fn func(a, b uint64)) error {
	rows, err := l.db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a, b uint64
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		fn(a, b)
	}
	return rows.Err()
}

// QueueRows evaluates the queue rule for these users (duplicates ignored),
// BatchSize ids per query, and returns their rows sorted by user id. A
// user absent from the result is not queued.
func (l *Lookup) QueueRows(ctx context.Context, userIDs []uint64) ([]queue.Row, error) {
	ids := slices.Clone(userIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var out []queue.Row
	for _, batch := range batches(ids) {
		start := time.Now()
		rows, err := l.evaluate(ctx, l.inPredicate(batch), func(u uint64) bool {
			_, found := slices.BinarySearch(batch, u)
			return found
		})
		if err != nil {
			return nil, fmt.Errorf("batch of %d users: %w", len(batch), err)
		}
		l.log.Debug("queue rule evaluated", "users", len(batch), "queued", len(rows), "took", time.Since(start))
		out = append(out, rows...)
	}
	sortRows(out)
	return out, nil
}

// QueueRowsRange evaluates the rule for the next chunk of users in id
// order: those with id in (afterID, X], where X (returned as lastID) is the
// limit-th users.id after afterID, or the highest one. Keyset pagination:
// call again with afterID = lastID until done. done is true when the chunk
// held fewer than limit users, i.e. it reached the end of the users table
// (a pass whose last chunk is exactly full ends with one extra call that
// returns no rows, lastID == afterID and done). Users inserted behind the
// cursor during a pass are missed by that pass; the binlog covers them.
func (l *Lookup) QueueRowsRange(ctx context.Context, afterID uint64, limit int) (rows []queue.Row, lastID uint64, done bool, err error) {
	if limit <= 0 {
		return nil, afterID, false, fmt.Errorf("queue rule range: limit %d must be positive", limit)
	}
	// Index-only walk of the primary key, cheap even for 10,000 ids, which
	// also finds the middle of the chunk: the two halves are evaluated at
	// once on two connections (the rule is the slow part of a reconcile,
	// and it uses one server thread per query).
	var n int
	var mid sql.NullInt64
	q := fmt.Sprintf(`SELECT COUNT(*), COALESCE(MAX(id), 0), MAX(CASE WHEN rn = %d THEN id END)
		FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS rn
			FROM (SELECT id FROM users WHERE id > %d ORDER BY id LIMIT %d) AS ids) AS chunk`,
		(limit+1)/2, afterID, limit)
	if err := l.db.QueryRowContext(ctx, q).Scan(&n, &lastID, &mid); err != nil {
		return nil, afterID, false, fmt.Errorf("queue rule range after user %d: find chunk end: %w", afterID, err)
	}
	if n == 0 {
		return nil, afterID, true, nil
	}
	bounds := []uint64{afterID, lastID}
	if mid.Valid && uint64(mid.Int64) > afterID && uint64(mid.Int64) < lastID {
		bounds = []uint64{afterID, uint64(mid.Int64), lastID}
	}
	parts := make([][]queue.Row, len(bounds)-1)
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i := range parts {
		from, to := bounds[i], bounds[i+1]
		wg.Go(func() {
			pred := fmt.Sprintf("%s > %d AND %s <= %d", l.idColumn, from, l.idColumn, to)
			parts[i], errs[i] = l.evaluate(ctx, pred, func(u uint64) bool { return u > from && u <= to })
			if errs[i] != nil {
				errs[i] = fmt.Errorf("queue rule for users (%d, %d]: %w", from, to, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, afterID, false, err
	}
	for _, p := range parts {
		rows = append(rows, p...)
	}
	sortRows(rows)
	return rows, lastID, n < limit, nil
}

// evaluate runs the rule with predicate and checks its answer: the right
// columns, one row per user, and only users the predicate selects (a rule
// that ignores {users} would otherwise queue strangers).
func (l *Lookup) evaluate(ctx context.Context, predicate string, asked func(uint64) bool) ([]queue.Row, error) {
	rs, err := l.db.QueryContext(ctx, l.render(predicate))
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		return nil, err
	}
	idx, err := columnIndex(cols)
	if err != nil {
		return nil, err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []queue.Row
	seen := map[uint64]bool{}
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			return nil, err
		}
		row, err := parseRow(vals, idx)
		if err != nil {
			// The rule's own output: retrying gives the same value again.
			return nil, errclass.Permanentf("rules.queue_sql returned a value dialsync cannot use: %w: fix the rule's SELECT list (user_id, open_claims and pending_requirements integers, oldest_pending_at a DATETIME/TIMESTAMP or NULL)", err)
		}
		if !asked(row.UserID) {
			return nil, fmt.Errorf("rules.queue_sql returned user %d, which the %s predicate excludes (is {users} applied to every branch?)", row.UserID, UsersToken)
		}
		if seen[row.UserID] {
			return nil, fmt.Errorf("rules.queue_sql returned user %d twice (GROUP BY the user id)", row.UserID)
		}
		seen[row.UserID] = true
		out = append(out, row)
	}
	return out, rs.Err()
}

func sortRows(rows []queue.Row) {
	sort.Slice(rows, func(i, j int) bool { return rows[i].UserID < rows[j].UserID })
}

func batches(ids []uint64) [][]uint64 {
	var out [][]uint64
	for len(ids) > 0 {
		n := min(len(ids), BatchSize)
		out = append(out, ids[:n])
		ids = ids[n:]
	}
	return out
}

func idList(ids []uint64) string {
	b := make([]byte, 0, len(ids)*8)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, id, 10)
	}
	return string(b)
}

// IdentitySQL lists the server variables that identify a server. It needs no
// privilege and works on MySQL and MariaDB, so a preflight can run it on the
// binlog connection too (canal.Execute) and compare with Identity.
const IdentitySQL = "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('server_uuid', 'server_id', 'hostname', 'port')"

// Identity renders IdentitySQL's rows (variable name -> value). MySQL has a
// server_uuid unique to each server (a replica has its own), so it alone is
// the identity. MariaDB has none; there server_id (which replication
// requires to be unique within a topology) plus hostname and port identify
// the server (gtid_domain_id would not help: a primary and its replicas
// usually share domain 0). Two connections reach the same server iff their
// identities are equal.
func Identity(vars map[string]string) string {
	if u := vars["server_uuid"]; u != "" {
		return "server_uuid=" + u
	}
	return "server_id=" + vars["server_id"] + ";hostname=" + vars["hostname"] + ";port=" + vars["port"]
}

// ServerUUID returns the lookup server's identity (see Identity): compare
// it with the binlog connection's to prove they are the same server.
func (l *Lookup) ServerUUID(ctx context.Context) (string, error) {
	rows, err := l.db.QueryContext(ctx, IdentitySQL)
	if err != nil {
		return "", fmt.Errorf("lookup server identity: %w", err)
	}
	defer rows.Close()
	vars := map[string]string{}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return "", fmt.Errorf("lookup server identity: %w", err)
		}
		vars[strings.ToLower(name)] = value
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("lookup server identity: %w", err)
	}
	if vars["server_uuid"] == "" && vars["server_id"] == "" {
		return "", errors.New("lookup server identity: neither server_uuid nor server_id is visible")
	}
	return Identity(vars), nil
}

// Package explain answers "why is this user (not) in the call queue?" for
// `dialsync explain`: it gathers the user's source facts, evaluates the
// queue rule clause by clause (built-in rule) or as a whole (custom rule),
// compares the verdict with the PostgreSQL call_queue row (drift), lists
// which of the user's Redis keys exist and the user's latest notices.
//
// The report carries no row values beyond those facts: no names, emails,
// phone numbers or addresses. The phone number is only compared with the
// empty string on the server, never read.
package explain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"dialsync/internal/queue"
)

// ParseUserID parses a user id as given on the command line: a decimal
// integer in 1..2^64-1 (users.id is BIGINT UNSIGNED and 0 is never an
// AUTO_INCREMENT value). The error is one line, fit for an operator.
func ParseUserID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err != nil && errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("invalid user id %q: larger than the largest BIGINT UNSIGNED (%d)", s, uint64(math.MaxUint64))
	case err != nil:
		return 0, fmt.Errorf("invalid user id %q: want a positive decimal integer", s)
	case id == 0:
		return 0, fmt.Errorf("invalid user id %q: user ids start at 1", s)
	}
	return id, nil
}

// Rule kinds.
const (
	RuleBuiltin = "built-in"
	RuleCustom  = "custom"
)

// Clause names of the built-in rule (docs/design.md, "The queue rule"), in evaluation order.
const (
	ClauseNotSoftDeleted = "not_soft_deleted"
	ClauseEnabled        = "enabled"
	ClauseActive         = "active"
	ClauseHasPhone       = "has_phone"
	ClausePendingClaim   = "open_claim_with_pending_requirement"
)

// clauseText describes each built-in clause as the SQL that decides it.
var clauseText = map[string]string{
	ClauseNotSoftDeleted: "users.deleted_at IS NULL",
	ClauseEnabled:        "users.is_enabled = 1",
	ClauseActive:         "users.status = 'active'",
	ClauseHasPhone:       "users.phone_number <> '' (NULL counts as empty)",
	ClausePendingClaim: "a claim not soft-deleted, status not in ('closed','rejected','paid'), " +
		"with a claim_requirements row in status 'PENDING'",
}

// UserFacts are the facts about the users row the report may show.
type UserFacts struct {
	SoftDeleted bool `json:"soft_deleted"`
	// Enabled is the server's answer to is_enabled = 1; IsEnabled the raw
	// flag (nil when NULL).
	Enabled   bool    `json:"enabled"`
	IsEnabled *int64  `json:"is_enabled"`
	Status    *string `json:"status"` // nil when NULL
	// Active is the server's answer to status = 'active' (the column's
	// collation decides, e.g. case-insensitively).
	Active bool `json:"active"`
	// PhonePresent is the server's answer to phone_number <> ''; the number
	// itself is never read.
	PhonePresent bool `json:"phone_present"`
}

// Claim is one of the user's claims, soft-deleted ones included.
type Claim struct {
	ID          uint64  `json:"id"`
	Status      *string `json:"status"`
	SoftDeleted bool    `json:"soft_deleted"`
	// Open: not soft-deleted and status not closed/rejected/paid, so its
	// PENDING requirements count for the built-in rule.
	Open                bool       `json:"open"`
	Requirements        int64      `json:"requirements"` // all statuses
	PendingRequirements int64      `json:"pending_requirements"`
	OldestPendingAt     *time.Time `json:"oldest_pending_at"`
}

// Facts is what the source says about a user. Clause results are computed
// by the server with the built-in rule's own expressions.
type Facts struct {
	Found bool
	User  UserFacts
	// HasPendingClaim is the built-in rule's last clause.
	HasPendingClaim bool
	Claims          []Claim
	// ClaimsTotal is the number of claims (Claims may be truncated to
	// MaxClaims).
	ClaimsTotal int
}

// MaxClaims bounds the claims listed in a report (the clauses still see
// every claim).
const MaxClaims = 200

// Row is a call-queue row: as the rule computes it, or as stored.
type Row struct {
	OpenClaims          int64      `json:"open_claims"`
	PendingRequirements int64      `json:"pending_requirements"`
	OldestPendingAt     *time.Time `json:"oldest_pending_at"`
	// EnteredAt and UpdatedAt exist only for a stored row.
	EnteredAt *time.Time `json:"entered_at,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// Clause is one built-in rule clause and whether the user passes it.
type Clause struct {
	Name string `json:"name"`
	SQL  string `json:"sql"`
	Pass bool   `json:"pass"`
}

// Verdict is the rule's answer for the user.
type Verdict struct {
	Rule   string `json:"rule"` // RuleBuiltin or RuleCustom
	Queued bool   `json:"queued"`
	// Row is the row the rule computes (nil: not queued).
	Row *Row `json:"row"`
	// Clauses and Failing: the built-in rule only.
	Clauses []Clause `json:"clauses,omitempty"`
	Failing []string `json:"failing,omitempty"`
	Note    string   `json:"note,omitempty"`
}

// QueueState is the stored call_queue row and whether it agrees with the
// rule.
type QueueState struct {
	Row    *Row   `json:"row"` // nil: no row
	Agrees bool   `json:"agrees"`
	Drift  string `json:"drift,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Key scopes.
const (
	ScopeUser  = "user"  // one of the user's own keys
	ScopeQueue = "queue" // a queue-wide key, dropped when the queue changes
)

// KeyState says whether one cache key exists.
type KeyState struct {
	Key    string `json:"key"`
	Scope  string `json:"scope"`
	Exists bool   `json:"exists"`
}

// CacheState lists the user's (and the queue's) cache keys.
type CacheState struct {
	Keys  []KeyState `json:"keys"`
	Error string     `json:"error,omitempty"`
}

// Notice summarises one notice without any row values.
type Notice struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"` // source commit time
	Type       string    `json:"type"`
	ID         string    `json:"id"`
	UserID     uint64    `json:"user_id,omitempty"`
	Tables     []string  `json:"tables,omitempty"`
	Operations []string  `json:"operations,omitempty"`
	Columns    []string  `json:"columns,omitempty"`
	// Queue notices.
	OpenClaims          *int64     `json:"open_claims,omitempty"`
	PendingRequirements *int64     `json:"pending_requirements,omitempty"`
	OldestPendingAt     *time.Time `json:"oldest_pending_at,omitempty"`
	// Reconcile and dead-letter notices (watch shows them).
	Detail string `json:"detail,omitempty"`
}

// NoticeHistory is the user's latest notices, oldest first.
type NoticeHistory struct {
	Stream string   `json:"stream"`
	Filter string   `json:"subject_filter"`
	Total  int      `json:"total"` // notices on the filter in the stream
	Latest []Notice `json:"latest"`
	Note   string   `json:"note,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// Report is everything explain says about one user.
type Report struct {
	UserID uint64 `json:"user_id"`
	Found  bool   `json:"found"`
	// User is nil when the user does not exist.
	User        *UserFacts    `json:"user"`
	Claims      []Claim       `json:"claims"`
	ClaimsTotal int           `json:"claims_total"`
	Rule        Verdict       `json:"rule"`
	Queue       QueueState    `json:"call_queue"`
	Cache       CacheState    `json:"cache"`
	Notices     NoticeHistory `json:"notices"`
}

// Incomplete reports which sections could not be read (their Error), or
// "" when the report is complete.
func (r *Report) Incomplete() string {
	var parts []string
	for _, s := range []struct{ name, err string }{
		{"call_queue", r.Queue.Error}, {"cache", r.Cache.Error}, {"notices", r.Notices.Error},
	} {
		if s.err != "" {
			parts = append(parts, s.name+": "+s.err)
		}
	}
	return strings.Join(parts, "; ")
}

// The ports Build reads through. The implementations in this package
// (Source, PGQueue, RedisKeys, StreamNotices) use the real servers; Failed
// stands in for one that could not be reached.
type (
	// FactReader reads the user's source facts.
	FactReader interface {
		Facts(ctx context.Context, user uint64) (Facts, error)
	}
	// RuleEvaluator runs the configured queue rule (*lookup.Lookup).
	RuleEvaluator interface {
		QueueRows(ctx context.Context, users []uint64) ([]queue.Row, error)
	}
	// QueueReader reads the stored call_queue row (nil: none).
	QueueReader interface {
		QueueRow(ctx context.Context, user uint64) (*Row, error)
	}
	// KeyChecker says which keys exist, in order.
	KeyChecker interface {
		Exists(ctx context.Context, keys []string) ([]bool, error)
	}
	// NoticeReader reads the user's latest n notices.
	NoticeReader interface {
		Latest(ctx context.Context, user uint64, n int) (NoticeHistory, error)
	}
)

// Deps are Build's inputs.
type Deps struct {
	Facts FactReader
	Rule  RuleEvaluator
	// CustomRule: rules.queue_sql is configured, so the clauses of the
	// built-in rule do not apply.
	CustomRule bool
	Queue      QueueReader
	Keys       KeyChecker
	// UserKeys and QueueKeys are the keys to check (handlers.Keys).
	UserKeys, QueueKeys []string
	Notices             NoticeReader
	// LatestNotices is how many notices to show; 0 skips the stream.
	LatestNotices int
}

// Failed is a port whose server could not be reached: every call returns
// Err, so the report shows the section's error and the rest of it.
type Failed struct{ Err error }

func (f Failed) QueueRow(context.Context, uint64) (*Row, error)   { return nil, f.Err }
func (f Failed) Exists(context.Context, []string) ([]bool, error) { return nil, f.Err }
func (f Failed) Latest(context.Context, uint64, int) (NoticeHistory, error) {
	return NoticeHistory{}, f.Err
}

// Build gathers the report. Source facts and the rule are required (an error
// there fails Build); a failing call_queue, cache or notice read is recorded
// in its section (see Report.Incomplete) so the operator still sees the
// rest.
func Build(ctx context.Context, d Deps, user uint64) (*Report, error) {
	facts, err := d.Facts.Facts(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("explain user %d: source facts: %w", user, err)
	}
	rows, err := d.Rule.QueueRows(ctx, []uint64{user})
	if err != nil {
		return nil, fmt.Errorf("explain user %d: queue rule: %w", user, err)
	}
	var ruleRow *queue.Row
	for i := range rows {
		if rows[i].UserID == user {
			ruleRow = &rows[i]
		}
	}

	r := &Report{UserID: user, Found: facts.Found, Claims: facts.Claims, ClaimsTotal: facts.ClaimsTotal}
	if r.Claims == nil {
		r.Claims = []Claim{}
	}
	if facts.Found {
		u := facts.User
		r.User = &u
	}
	r.Rule = verdict(facts, ruleRow, d.CustomRule)

	if stored, err := d.Queue.QueueRow(ctx, user); err != nil {
		r.Queue.Error = err.Error()
	} else {
		r.Queue.Row = stored
		r.Queue.Agrees, r.Queue.Drift = compare(r.Rule.Row, stored)
	}

	keys := append(append([]string(nil), d.UserKeys...), d.QueueKeys...)
	r.Cache.Keys = []KeyState{}
	if len(keys) > 0 {
		if exists, err := d.Keys.Exists(ctx, keys); err != nil {
			r.Cache.Error = err.Error()
		} else {
			for i, k := range keys {
				scope := ScopeUser
				if i >= len(d.UserKeys) {
					scope = ScopeQueue
				}
				r.Cache.Keys = append(r.Cache.Keys, KeyState{Key: k, Scope: scope, Exists: exists[i]})
			}
		}
	}

	r.Notices.Latest = []Notice{}
	if d.LatestNotices > 0 {
		h, err := d.Notices.Latest(ctx, user, d.LatestNotices)
		if err != nil {
			r.Notices.Error = err.Error()
		} else {
			r.Notices = h
			if r.Notices.Latest == nil {
				r.Notices.Latest = []Notice{}
			}
		}
	}
	return r, nil
}

// verdict combines the clauses (built-in rule) with the rule's own answer.
func verdict(f Facts, ruleRow *queue.Row, custom bool) Verdict {
	v := Verdict{Rule: RuleBuiltin, Queued: ruleRow != nil}
	if ruleRow != nil {
		v.Row = &Row{OpenClaims: ruleRow.OpenClaims, PendingRequirements: ruleRow.PendingRequirements,
			OldestPendingAt: ruleRow.OldestPendingAt}
	}
	if custom {
		v.Rule = RuleCustom
		v.Note = "a custom rules.queue_sql is configured: the verdict is that rule's answer; " +
			"per-clause explanation is only available for the built-in rule"
		return v
	}
	if !f.Found {
		v.Note = "the user does not exist in the source users table"
		return v
	}
	pass := map[string]bool{
		ClauseNotSoftDeleted: !f.User.SoftDeleted,
		ClauseEnabled:        f.User.Enabled,
		ClauseActive:         f.User.Active,
		ClauseHasPhone:       f.User.PhonePresent,
		ClausePendingClaim:   f.HasPendingClaim,
	}
	all := true
	for _, name := range []string{ClauseNotSoftDeleted, ClauseEnabled, ClauseActive, ClauseHasPhone, ClausePendingClaim} {
		v.Clauses = append(v.Clauses, Clause{Name: name, SQL: clauseText[name], Pass: pass[name]})
		if !pass[name] {
			v.Failing = append(v.Failing, name)
			all = false
		}
	}
	if all != v.Queued {
		// Two reads on two connections: a change committed in between can
		// make them differ. A persistent disagreement is a bug.
		v.Note = fmt.Sprintf("the clauses say queued=%t but the rule query says queued=%t: the data may have changed "+
			"between the two reads; run explain again", all, v.Queued)
	}
	return v
}

// compare says whether the stored row is what the rule computes, with
// times compared at PostgreSQL's microsecond precision.
func compare(rule, stored *Row) (bool, string) {
	switch {
	case rule == nil && stored == nil:
		return true, ""
	case rule == nil:
		return false, "call_queue has a row but the rule does not queue the user"
	case stored == nil:
		return false, "the rule queues the user but call_queue has no row"
	}
	var diffs []string
	if rule.OpenClaims != stored.OpenClaims {
		diffs = append(diffs, fmt.Sprintf("open_claims %d (rule) != %d (call_queue)", rule.OpenClaims, stored.OpenClaims))
	}
	if rule.PendingRequirements != stored.PendingRequirements {
		diffs = append(diffs, fmt.Sprintf("pending_requirements %d (rule) != %d (call_queue)",
			rule.PendingRequirements, stored.PendingRequirements))
	}
	if !sameTime(rule.OldestPendingAt, stored.OldestPendingAt) {
		diffs = append(diffs, fmt.Sprintf("oldest_pending_at %s (rule) != %s (call_queue)",
			fmtTime(rule.OldestPendingAt), fmtTime(stored.OldestPendingAt)))
	}
	if len(diffs) > 0 {
		return false, strings.Join(diffs, "; ")
	}
	return true, ""
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "none"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

package explain

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/internal/myconn"
)

// SourceConfig says how to reach the lookup server (the binlog server).
type SourceConfig struct {
	Addr, User, Password, Database string
	TLS                            *tls.Config // nil: plaintext
}

// Source reads a user's facts on the lookup server over one read-only
// connection. Not safe for concurrent use.
type Source struct {
	conn   *client.Conn
	broken bool // a query was interrupted mid-flight
}

// OpenSource connects and prepares a read-only UTC session (the same
// session settings as the lookup package, so times read the same).
func OpenSource(ctx context.Context, cfg SourceConfig) (*Source, error) {
	var opts []client.Option
	if cfg.TLS != nil {
		tc := cfg.TLS
		opts = append(opts, func(c *client.Conn) error { c.SetTLSConfig(tc); return nil })
	}
	// myconn bounds the handshake by ctx (a signal, explain's connect
	// timeout); each query is bounded by exec.
	conn, err := myconn.Connect(ctx, cfg.Addr, cfg.User, cfg.Password, cfg.Database, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect source %s: %w", cfg.Addr, err)
	}
	s := &Source{conn: conn}
	for _, q := range []string{"SET time_zone = '+00:00'", "SET SESSION TRANSACTION READ ONLY"} {
		if _, err := s.exec(ctx, q); err != nil {
			s.Close()
			return nil, fmt.Errorf("prepare source session (%s): %w", q, err)
		}
	}
	return s, nil
}

// Close closes the connection.
func (s *Source) Close() error { return s.conn.Close() }

// exec runs q, giving up when ctx ends. go-mysql's client has no context on
// queries, and its Close is not safe while a query runs, so an expired
// deadline on the socket (safe from any goroutine, see net.Conn) interrupts
// the read; the connection is unusable afterwards.
func (s *Source) exec(ctx context.Context, q string) (*mysql.Result, error) {
	if s.broken {
		return nil, errors.New("source connection was interrupted")
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	sock := s.conn.Conn.Conn
	stop := context.AfterFunc(ctx, func() { _ = sock.SetDeadline(time.Unix(1, 0)) })
	r, err := s.conn.Execute(q)
	if !stop() {
		s.broken = true
		return nil, context.Cause(ctx)
	}
	return r, err
}

// The queries mirror the built-in rule's expressions (lookup.DefaultQueueSQL,
// docs/design.md, "The queue rule") one clause at a time, so the SERVER decides each clause
// with the columns' own types and collations (e.g. status = 'active' is
// case-insensitive under utf8mb4_unicode_ci, and a phone of spaces is empty
// under PAD SPACE collations).
// COALESCE(..., 0) turns a NULL comparison into "fails", as in a WHERE.
// Only these facts are selected: never a name, email, phone or address.
const userSQL = `SELECT COALESCE(u.deleted_at IS NOT NULL, 0),
       COALESCE(u.is_enabled = 1, 0), u.is_enabled,
       COALESCE(u.status = 'active', 0), u.status,
       COALESCE(u.phone_number <> '', 0)
FROM users AS u WHERE u.id = %d`

const pendingClaimSQL = `SELECT EXISTS (
  SELECT 1 FROM claims AS c
  JOIN claim_requirements AS r ON r.claim_id = c.id AND r.status = 'PENDING'
  WHERE c.user_id = %d AND c.deleted_at IS NULL AND c.status NOT IN ('closed', 'rejected', 'paid'))`

const claimsSQL = `SELECT c.id, c.status, COALESCE(c.deleted_at IS NOT NULL, 0),
       COALESCE(c.deleted_at IS NULL AND c.status NOT IN ('closed', 'rejected', 'paid'), 0),
       COUNT(r.id),
       COALESCE(SUM(r.status = 'PENDING'), 0),
       MIN(CASE WHEN r.status = 'PENDING' THEN r.created_at END)
FROM claims AS c LEFT JOIN claim_requirements AS r ON r.claim_id = c.id
WHERE c.user_id = %d
GROUP BY c.id, c.status, c.deleted_at
ORDER BY c.id
LIMIT %d`

const claimCountSQL = `SELECT COUNT(*) FROM claims WHERE user_id = %d`

// Facts reads the user's facts in one consistent read-only snapshot, so the
// clauses and the claim list describe the same moment.
func (s *Source) Facts(ctx context.Context, user uint64) (f Facts, err error) {
	if _, err := s.exec(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		return f, fmt.Errorf("source facts: begin: %w", err)
	}
	defer func() {
		if _, rbErr := s.exec(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil && err == nil {
			err = fmt.Errorf("source facts: end snapshot: %w", rbErr)
		}
	}()

	r, err := s.exec(ctx, fmt.Sprintf(userSQL, user))
	if err != nil {
		return f, fmt.Errorf("source facts: users: %w", err)
	}
	if r.RowNumber() == 1 {
		f.Found = true
		g := getter{rs: r.Resultset}
		f.User = UserFacts{
			SoftDeleted:  g.boolean(0, 0),
			Enabled:      g.boolean(0, 1),
			IsEnabled:    g.intPtr(0, 2),
			Active:       g.boolean(0, 3),
			Status:       g.strPtr(0, 4),
			PhonePresent: g.boolean(0, 5),
		}
		if g.err != nil {
			return f, fmt.Errorf("source facts: users: %w", g.err)
		}
	}

	r, err = s.exec(ctx, fmt.Sprintf(pendingClaimSQL, user))
	if err != nil {
		return f, fmt.Errorf("source facts: pending claims: %w", err)
	}
	g := getter{rs: r.Resultset}
	f.HasPendingClaim = g.boolean(0, 0)

	r, err = s.exec(ctx, fmt.Sprintf(claimCountSQL, user))
	if err != nil {
		return f, fmt.Errorf("source facts: claim count: %w", err)
	}
	g = getter{rs: r.Resultset}
	f.ClaimsTotal = int(g.int(0, 0))

	r, err = s.exec(ctx, fmt.Sprintf(claimsSQL, user, MaxClaims))
	if err != nil {
		return f, fmt.Errorf("source facts: claims: %w", err)
	}
	g = getter{rs: r.Resultset}
	for i := 0; i < r.RowNumber(); i++ {
		f.Claims = append(f.Claims, Claim{
			ID:                  g.uint(i, 0),
			Status:              g.strPtr(i, 1),
			SoftDeleted:         g.boolean(i, 2),
			Open:                g.boolean(i, 3),
			Requirements:        g.int(i, 4),
			PendingRequirements: g.int(i, 5),
			OldestPendingAt:     g.time(i, 6),
		})
	}
	if g.err != nil {
		return f, fmt.Errorf("source facts: %w", g.err)
	}
	return f, nil
}

// getter reads text-protocol values, keeping the first error.
type getter struct {
	rs  *mysql.Resultset
	err error
}

func (g *getter) fail(err error) {
	if g.err == nil && err != nil {
		g.err = err
	}
}

func (g *getter) null(row, col int) bool {
	if g.rs == nil || row >= g.rs.RowNumber() {
		g.fail(errors.New("missing result row"))
		return true
	}
	n, err := g.rs.IsNull(row, col)
	g.fail(err)
	return n || err != nil
}

func (g *getter) int(row, col int) int64 {
	if g.null(row, col) {
		return 0
	}
	v, err := g.rs.GetInt(row, col)
	g.fail(err)
	return v
}

func (g *getter) uint(row, col int) uint64 {
	if g.null(row, col) {
		return 0
	}
	v, err := g.rs.GetUint(row, col)
	g.fail(err)
	return v
}

func (g *getter) boolean(row, col int) bool { return g.int(row, col) != 0 }

func (g *getter) intPtr(row, col int) *int64 {
	if g.null(row, col) {
		return nil
	}
	v := g.int(row, col)
	return &v
}

func (g *getter) strPtr(row, col int) *string {
	if g.null(row, col) {
		return nil
	}
	v, err := g.rs.GetString(row, col)
	g.fail(err)
	return &v
}

// time parses MySQL's "YYYY-MM-DD hh:mm:ss[.ffffff]" (UTC: the session
// time_zone is +00:00). The zero date means no time.
func (g *getter) time(row, col int) *time.Time {
	s := g.strPtr(row, col)
	if s == nil || strings.HasPrefix(*s, "0000-00-00") {
		return nil
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999999", *s, time.UTC)
	if err != nil {
		g.fail(fmt.Errorf("cannot parse time %q", *s))
		return nil
	}
	return &t
}

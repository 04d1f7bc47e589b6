// Package preflight checks that a MySQL/MariaDB source, the lookup server and
// the sinks are fit for dialsync, and answers the binlog questions the
// recovery commands ask (which binary logs exist, how far behind a position
// is, whether a position is a transaction boundary, whether a checkpoint is
// still on the server).
//
// The checks are split in two: gathering facts over connections (Gather*,
// functions on *Source) and judging them (pure functions returning a Result
// with the exact fix). So the judging is unit-tested with made-up facts and
// the gathering against real servers.
//
// Nothing here writes to the source: every statement is a SELECT or SHOW.
package preflight

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/internal/myconn"
)

// DefaultTimeout bounds one connection attempt or one statement.
const DefaultTimeout = 5 * time.Second

// Source is a MySQL/MariaDB connection for the checks and the recovery
// commands. It connects on first use, and again after a statement failed
// (a timed-out statement closes the connection, so a slow server cannot
// leave a half-read reply behind for the next one). Not safe for concurrent
// use.
type Source struct {
	Addr, User, Password string
	TLS                  *tls.Config // nil: plaintext
	// Timeout bounds connecting and each statement; zero means
	// DefaultTimeout.
	Timeout time.Duration

	conn *client.Conn
}

// Close closes the connection, if any.
func (s *Source) Close() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

func (s *Source) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

// Connect opens the connection unless it is open.
func (s *Source) Connect(ctx context.Context) error {
	if s.conn != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	var opts []client.Option
	if s.TLS != nil {
		opts = append(opts, func(c *client.Conn) error { c.SetTLSConfig(s.TLS); return nil })
	}
	opts = append(opts, func(c *client.Conn) error {
		c.ReadTimeout, c.WriteTimeout = s.timeout(), s.timeout()
		return nil
	})
	// myconn ties the handshake to ctx: a signal stops it at once.
	c, err := myconn.Connect(ctx, s.Addr, s.User, s.Password, "", opts...)
	if err != nil {
		return fmt.Errorf("connect to %s as %s: %w", s.Addr, s.User, err)
	}
	s.conn = c
	return nil
}

// Version is the server's version string (connects if needed).
func (s *Source) Version(ctx context.Context) (string, error) {
	if err := s.Connect(ctx); err != nil {
		return "", err
	}
	// MariaDB prefixes its version with "5.5.5-" in the handshake for old
	// MySQL clients; drop it so version comparisons see the real one.
	return strings.TrimPrefix(s.conn.GetServerVersion(), "5.5.5-"), nil
}

// Row is one result row: column name (lower case) -> value as text. A NULL
// column is absent.
type Row map[string]string

// Query runs one statement and returns its rows, copied out of the
// driver's pooled buffers.
func (s *Source) Query(ctx context.Context, query string, args ...any) ([]Row, error) {
	if err := s.Connect(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	conn := s.conn
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	r, err := conn.Execute(query, args...)
	if !stop() || err != nil {
		// Timed out (the connection was closed under the statement) or
		// failed: start afresh next time. A server error (ER_*) leaves
		// the connection usable, but reconnecting is cheap and simpler.
		if r != nil {
			r.Close()
		}
		s.Close()
		if err == nil || ctx.Err() != nil {
			// DeadlineExceeded for the statement's timeout; the signal
			// for a cancelled command.
			return nil, fmt.Errorf("%s: %w", query, context.Cause(ctx))
		}
		return nil, fmt.Errorf("%s: %w", query, err)
	}
	defer r.Close()
	if r.Resultset == nil {
		return nil, nil
	}
	names := make([]string, len(r.Fields))
	for i, f := range r.Fields {
		names[i] = strings.ToLower(string(f.Name))
	}
	rows := make([]Row, 0, r.RowNumber())
	for i := range r.RowNumber() {
		row := make(Row, len(names))
		for j, n := range names {
			if null, _ := r.IsNull(i, j); null {
				continue
			}
			v, err := r.GetString(i, j)
			if err != nil {
				return nil, fmt.Errorf("%s: column %s: %w", query, n, err)
			}
			row[n] = strings.Clone(v)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// Vars reads global variables by name; absent names are missing from the
// map (a variable this server version does not have).
func (s *Source) Vars(ctx context.Context, names ...string) (map[string]string, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "'" + n + "'"
	}
	rows, err := s.Query(ctx, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ("+strings.Join(quoted, ", ")+")")
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(rows))
	for _, r := range rows {
		m[strings.ToLower(r["variable_name"])] = r["value"]
	}
	return m, nil
}

// IsMariaDB tells the flavor from a version string.
func IsMariaDB(version string) bool { return strings.Contains(strings.ToLower(version), "mariadb") }

// atLeast reports version >= min (false when unparsable).
func atLeast(version, min string) bool {
	c, err := mysql.CompareServerVersions(version, min)
	return err == nil && c >= 0
}

package lookup

import (
	"context"
	"crypto/tls"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/driver"
	"github.com/go-mysql-org/go-mysql/mysql"

	"dialsync/internal/myconn"
)

// sessionSetup runs on every new connection. UTC makes TIMESTAMP values
// come back as UTC text regardless of the server's zone; READ ONLY makes
// any write (by a bad rule or a bug) fail instead of touching the source
// (https://dev.mysql.com/doc/refman/8.0/en/set-transaction.html: the
// session access mode also applies to autocommit statements).
var sessionSetup = []string{"SET time_zone = '+00:00'", "SET SESSION TRANSACTION READ ONLY"}

// lockWaitSetup bounds CommitBarrier (the only locking read) with a short
// lock wait, tried in order: some MySQL-protocol servers refuse any value
// but 1, and a server may refuse the variable altogether; then the
// barrier's own query deadline bounds the wait (barrierWaitSeconds), and
// the first session says so once.
var lockWaitSetup = []string{
	"SET SESSION innodb_lock_wait_timeout = " + strconv.Itoa(barrierWaitSeconds),
	"SET SESSION innodb_lock_wait_timeout = 1",
}

// sessionConnector wraps the go-mysql connector to prepare each new
// session (sessionSetup, lockWaitSetup) before database/sql hands it out.
type sessionConnector struct {
	inner    driver.Connector
	log      *slog.Logger
	lockOnce *sync.Once // logs a refused lock wait once
}

func (c sessionConnector) Connect(ctx context.Context) (sqldriver.Conn, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(sqldriver.ExecerContext)
	if !ok {
		conn.Close()
		return nil, errors.New("lookup: driver connection cannot execute statements")
	}
	for _, q := range sessionSetup {
		if _, err := ex.ExecContext(ctx, q, nil); err != nil {
			conn.Close()
			return nil, fmt.Errorf("prepare session (%s): %w", q, err)
		}
	}
	var refused error
	for _, q := range lockWaitSetup {
		if _, refused = ex.ExecContext(ctx, q, nil); refused == nil {
			break
		}
		var my *mysql.MyError
		if !errors.As(refused, &my) {
			conn.Close() // not the server refusing: the connection failed
			return nil, fmt.Errorf("prepare session (%s): %w", q, refused)
		}
	}
	if refused != nil {
		c.lockOnce.Do(func() {
			c.log.Warn("the lookup server refuses to set innodb_lock_wait_timeout; the commit barrier's wait is bounded by its query deadline instead",
				"deadline_seconds", barrierWaitSeconds, "err", refused)
		})
	}
	return conn, nil
}

func (c sessionConnector) Driver() sqldriver.Driver { return c.inner.Driver() }

// connect is the driver's Connect bounded by ctx and
// myconn.HandshakeTimeout. The go-mysql driver dials with ctx, but its
// handshake reads honour only the readTimeout option (60 s) and never ctx,
// so a server that accepts TCP and says nothing would hold the caller
// (and a signal) that long (docs/design.md, "Deadlines and signals"). The
// driver offers no hook on the socket, so an attempt cut off is abandoned:
// its goroutine ends by that read timeout and closes what it got.
func (c sessionConnector) connect(ctx context.Context) (sqldriver.Conn, error) {
	limit := myconn.Limit(ctx)
	hctx, cancel := context.WithTimeout(ctx, myconn.HandshakeTimeout)
	defer cancel()
	type result struct {
		conn sqldriver.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := c.inner.Connect(hctx)
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && hctx.Err() != nil {
			return nil, myconn.Cut(ctx, limit)
		}
		return r.conn, r.err
	case <-hctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				_ = r.conn.Close()
			}
		}()
		return nil, myconn.Cut(ctx, limit)
	}
}

// The go-mysql driver only takes TLS settings through DSN options (its
// "tls=custom" needs PEM bytes, not a *tls.Config), so a private option
// carries a key into this registry. driver.SetDSNOptions writes a global
// map without a lock, hence once, at init, before any connection.
const tlsOption = "dialsync_tls"

var (
	tlsConfigs sync.Map // key -> *tls.Config
	tlsSeq     atomic.Uint64
)

func init() {
	driver.SetDSNOptions(map[string]driver.DriverOption{
		tlsOption: func(c *client.Conn, key string) error {
			cfg, ok := tlsConfigs.Load(key)
			if !ok {
				return fmt.Errorf("lookup: no TLS config registered under %q", key)
			}
			c.SetTLSConfig(cfg.(*tls.Config))
			return nil
		},
	})
}

func registerTLS(cfg *tls.Config) string {
	key := "lookup-" + strconv.FormatUint(tlsSeq.Add(1), 10)
	tlsConfigs.Store(key, cfg)
	return key
}

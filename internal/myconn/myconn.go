// Package myconn connects go-mysql clients with a deadline on the whole
// connect, handshake included, tied to the caller's context.
//
// go-mysql v1.16.0 passes the context only to the dialer: the handshake
// that follows (reading the server greeting, authenticating) reads the
// socket with no deadline unless the connection has a ReadTimeout, and
// never looks at the context. A server that accepts TCP and then says
// nothing (a black hole, a wedged proxy, a port that is not MySQL) holds
// the caller forever and past SIGTERM (docs/design.md, "Deadlines and
// signals"). The dialers here close the socket when the context ends or the
// connect deadline passes before the connect returned; go-mysql then fails
// with a read error that Connect turns into a message naming the cause.
//
// Closing the net.Conn (not go-mysql's packet.Conn, whose Close writes
// fields a concurrent reader uses) is safe from any goroutine.
package myconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
)

// HandshakeTimeout bounds one connect: the TCP dial and the MySQL
// handshake (greeting, TLS, authentication) together.
const HandshakeTimeout = 10 * time.Second

var netDialer = net.Dialer{KeepAlive: 30 * time.Second}

// ErrNoHandshake is a connect that did not finish within its deadline:
// the TCP connection was made, but no complete MySQL handshake followed.
// Errors that wrap it are also context.DeadlineExceeded.
var ErrNoHandshake = errors.New("no MySQL handshake")

type noHandshake struct{ limit time.Duration }

func (e noHandshake) Error() string {
	return fmt.Sprintf("no MySQL handshake within %s: the server accepted the TCP connection but did not complete the handshake (is it a MySQL/MariaDB server, and is it healthy?)", e.limit)
}

func (e noHandshake) Is(target error) bool {
	return target == ErrNoHandshake || target == context.DeadlineExceeded
}

// Connect connects like client.ConnectWithDialer, bounded by ctx and
// HandshakeTimeout (or ctx's deadline, when earlier). When ctx is
// cancelled first, the error is context.Cause(ctx) (for a signal:
// "terminated signal received"); when the deadline passes during the
// handshake, it wraps ErrNoHandshake and context.DeadlineExceeded. Once
// connected, the connection no longer depends on ctx: bound each query
// yourself (a ReadTimeout option, or closing it when the query's context
// ends).
func Connect(ctx context.Context, addr, user, password, db string, opts ...client.Option) (*client.Conn, error) {
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	limit := Limit(ctx)
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	// The dialer runs synchronously inside ConnectWithDialer, so stop is
	// set before it returns.
	var stop func() bool
	dial := func(dctx context.Context, network, address string) (net.Conn, error) {
		c, err := netDialer.DialContext(dctx, network, address)
		if err != nil {
			return nil, err
		}
		stop = context.AfterFunc(dctx, func() { _ = c.Close() })
		return c, nil
	}
	conn, err := client.ConnectWithDialer(hctx, "", addr, user, password, db, dial, opts...)
	if stop == nil { // the dial failed
		if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	if !stop() {
		// hctx ended during the handshake and closed the socket; a connect
		// that won the race is not used either.
		if conn != nil {
			_ = conn.Close()
		}
		return nil, Cut(ctx, limit)
	}
	return conn, err
}

// Limit is how long a connect started now may take: HandshakeTimeout, or
// less when ctx's deadline comes first.
func Limit(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < HandshakeTimeout {
		return time.Until(dl).Round(time.Millisecond)
	}
	return HandshakeTimeout
}

// Cut is the error of a connect cut off by its context: the cause of ctx
// when ctx was cancelled (a signal), else the missed deadline limit.
func Cut(ctx context.Context, limit time.Duration) error {
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return context.Cause(ctx)
	}
	return noHandshake{limit}
}

// Dialer is a dialer for go-mysql's canal and binlog syncer, which connect
// with a context of their own (a 10 s timeout from a background context,
// cancelled when the connect returns). A connection it makes is closed
//   - when that context's deadline passes before the connect returned (the
//     handshake never finished: go-mysql's own deadline covers only the
//     dial), and
//   - when life ends, whatever the connection is doing then (the stream's
//     context: a signal stops a handshake, a query or a binlog read at
//     once), until the connection is closed.
func Dialer(life context.Context) client.Dialer {
	return func(dctx context.Context, network, address string) (net.Conn, error) {
		c, err := netDialer.DialContext(dctx, network, address)
		if err != nil {
			return nil, err
		}
		stopHandshake := context.AfterFunc(dctx, func() {
			if errors.Is(dctx.Err(), context.DeadlineExceeded) {
				_ = c.Close()
			}
		})
		stopLife := context.AfterFunc(life, func() { _ = c.Close() })
		return &lifeConn{Conn: c, stop: func() { stopHandshake(); stopLife() }}, nil
	}
}

// lifeConn releases its context hooks when closed.
type lifeConn struct {
	net.Conn
	once sync.Once
	stop func()
}

func (c *lifeConn) Close() error {
	c.once.Do(c.stop)
	return c.Conn.Close()
}

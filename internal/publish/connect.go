package publish

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect is nats.Connect bounded by ctx as well as by nats.Timeout
// (timeout): nats.go takes no context, so a server that accepts TCP and
// never sends INFO would hold a stopping command for the whole timeout
// (docs/design.md, "Deadlines and signals"). A connection still in its
// first connect when ctx ends is closed; once Connect has returned, the
// connection and its reconnects no longer depend on ctx (a stopping run
// still publishes the batch in hand). When ctx ended first, the error is
// context.Cause(ctx).
func Connect(ctx context.Context, url string, timeout time.Duration, opts ...nats.Option) (*nats.Conn, error) {
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	d := &firstConnectDialer{ctx: ctx, dialer: net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(timeout), nats.SetCustomDialer(d))...)
	if cut := d.connected(); cut || err != nil && ctx.Err() != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, context.Cause(ctx)
	}
	return nc, err
}

// firstConnectDialer dials with ctx until connected is called, and closes
// the connections it made by then when ctx ends first.
type firstConnectDialer struct {
	ctx    context.Context
	dialer net.Dialer

	mu    sync.Mutex
	done  bool
	stops []func() bool
}

func (d *firstConnectDialer) Dial(network, address string) (net.Conn, error) {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	if done {
		return d.dialer.Dial(network, address)
	}
	c, err := d.dialer.DialContext(d.ctx, network, address)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(d.ctx, func() { _ = c.Close() })
	d.mu.Lock()
	d.stops = append(d.stops, stop)
	d.mu.Unlock()
	return c, nil
}

// connected ends the watch; it reports whether ctx had already closed a
// connection.
func (d *firstConnectDialer) connected() (cut bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	for _, stop := range d.stops {
		if !stop() {
			cut = true
		}
	}
	d.stops = nil
	return cut
}

package subscriber_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/publish/natstest"
	"dialsync/notice"
	"dialsync/notice/subscriber"
)

// env is one test's private NATS server with a stream named after the test.
type env struct {
	srv    *natstest.Server
	js     jetstream.JetStream
	stream string
	prefix string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	name := strings.NewReplacer("/", "_", " ", "_", "=", "_").Replace(t.Name())
	e := &env{srv: srv, js: js, stream: "S_" + name, prefix: "t_" + strings.ToLower(name)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A short duplicate window, so the dedupe test can publish a repeat the
	// stream no longer catches.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: e.stream, Subjects: []string{e.prefix + ".>"},
		Duplicates: time.Second, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return e
}

func (e *env) opts(t *testing.T) subscriber.Options {
	return subscriber.Options{Stream: e.stream, Subject: e.prefix + ".>", RetryDelay: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// userMsg builds notice n (txn "tx-n", user n).
func (e *env) userMsg(n int) notice.Message {
	return notice.NewUserChanged("dialsync/test", e.prefix, time.Now(), notice.UserChanged{
		UserID: uint64(n), Tables: []string{"users"}, Operations: []string{"update"}, Columns: []string{"email"},
		Source: notice.SourcePosition{Txn: fmt.Sprintf("tx-%d", n)}})
}

// publish stores m with natsID as Nats-Msg-Id (normally m.ID).
func (e *env) publish(t *testing.T, m notice.Message, natsID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data}, jetstream.WithMsgID(natsID)); err != nil {
		t.Fatalf("publish %s: %v", m.ID, err)
	}
}

func (e *env) publishRange(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		m := e.userMsg(i)
		e.publish(t, m, m.ID)
	}
}

// collector records the user ids handed to the callback.
type collector struct {
	mu   sync.Mutex
	ids  []uint64
	seen chan struct{}
	fail func(notice.UserChanged) error // optional failure injection
}

func newCollector() *collector { return &collector{seen: make(chan struct{}, 100000)} }

func (c *collector) fn(_ context.Context, ev notice.Event) error {
	d, err := ev.UserChanged()
	if err != nil {
		return err
	}
	if c.fail != nil {
		if err := c.fail(d); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.ids = append(c.ids, d.UserID)
	c.mu.Unlock()
	c.seen <- struct{}{}
	return nil
}

func (c *collector) snapshot() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.ids...)
}

// waitFor waits until n callbacks succeeded.
func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for len(c.snapshot()) < n {
		select {
		case <-c.seen:
		case <-timeout:
			t.Fatalf("got %d notices, want %d: %v", len(c.snapshot()), n, c.snapshot())
		}
	}
}

// run starts Subscribe in the background and waits until its consumer
// exists, so "only new notices" has a well-defined start. The returned stop
// cancels it and returns Subscribe's result.
func (e *env) run(t *testing.T, opt subscriber.Options, c *collector) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	before := e.consumers(t)
	go func() { done <- subscriber.Subscribe(ctx, e.js, opt, c.fn) }()
	deadline := time.Now().Add(5 * time.Second)
	for opt.Durable == "" && e.consumers(t) == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if opt.Durable != "" {
		for time.Now().Before(deadline) {
			if _, err := e.js.Consumer(ctx, e.stream, opt.Durable); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				result = errors.New("Subscribe did not return after cancel")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (e *env) consumers(t *testing.T) int {
	t.Helper()
	s, err := e.js.Stream(context.Background(), e.stream)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return s.CachedInfo().State.Consumers
}

func seq(from, to int) []uint64 {
	var out []uint64
	for i := from; i < to; i++ {
		out = append(out, uint64(i))
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOrderedGetsEverythingPublishedAfterStart(t *testing.T) {
	e := newEnv(t)
	e.publishRange(t, 0, 5) // before: must not be delivered
	c := newCollector()
	stop := e.run(t, e.opts(t), c)
	e.publishRange(t, 5, 505)
	c.waitFor(t, 500)
	if err := stop(); err != nil {
		t.Fatalf("Subscribe returned %v after cancel, want nil", err)
	}
	if got := c.snapshot(); !equal(got, seq(5, 505)) {
		t.Fatalf("got %d notices, want 5..504 in order; first %v", len(got), got[:min(len(got), 10)])
	}
}

func TestOrderedStartTimeReplays(t *testing.T) {
	e := newEnv(t)
	e.publishRange(t, 0, 10)
	time.Sleep(50 * time.Millisecond)
	from := time.Now()
	time.Sleep(50 * time.Millisecond)
	e.publishRange(t, 10, 20)

	o := e.opts(t)
	o.StartTime = from
	c := newCollector()
	stop := e.run(t, o, c)
	e.publishRange(t, 20, 25)
	c.waitFor(t, 15)
	_ = stop()
	if got := c.snapshot(); !equal(got, seq(10, 25)) {
		t.Fatalf("replay from StartTime got %v, want 10..24", got)
	}
}

func TestDurableResumesWithoutRedelivery(t *testing.T) {
	e := newEnv(t)
	o := e.opts(t)
	o.Durable = "dialler"
	c := newCollector()
	stop := e.run(t, o, c)
	e.publishRange(t, 0, 10)
	c.waitFor(t, 10)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.waitAcked(t, o.Durable)

	e.publishRange(t, 10, 15) // while the subscriber is down
	c2 := newCollector()
	stop = e.run(t, o, c2)
	e.publishRange(t, 15, 20)
	c2.waitFor(t, 10)
	time.Sleep(100 * time.Millisecond) // room for a wrong redelivery to show up
	_ = stop()
	if got := c2.snapshot(); !equal(got, seq(10, 20)) {
		t.Fatalf("after restart got %v, want exactly 10..19", got)
	}
}

// waitAcked waits until the durable has nothing pending or unacknowledged.
func (e *env) waitAcked(t *testing.T, durable string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cons, err := e.js.Consumer(context.Background(), e.stream, durable)
		if err != nil {
			t.Fatal(err)
		}
		info := cons.CachedInfo()
		if info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("durable %s: %d unacked, %d pending", durable, info.NumAckPending, info.NumPending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDurableRedeliversAfterCallbackError(t *testing.T) {
	e := newEnv(t)
	o := e.opts(t)
	o.Durable = "retry"
	var mu sync.Mutex
	attempts := map[uint64]int{}
	c := newCollector()
	c.fail = func(d notice.UserChanged) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[d.UserID]++
		if d.UserID == 3 && attempts[3] <= 2 {
			return errors.New("downstream unavailable")
		}
		return nil
	}
	stop := e.run(t, o, c)
	e.publishRange(t, 0, 6)
	c.waitFor(t, 6)
	e.waitAcked(t, o.Durable)
	_ = stop()

	mu.Lock()
	defer mu.Unlock()
	if attempts[3] != 3 {
		t.Fatalf("notice 3 attempted %d times, want 3 (two failures, then success)", attempts[3])
	}
	got := c.snapshot()
	count := map[uint64]int{}
	for _, id := range got {
		count[id]++
	}
	for i := uint64(0); i < 6; i++ {
		if count[i] != 1 {
			t.Fatalf("notice %d handled %d times (got %v)", i, count[i], got)
		}
	}
}

func TestDedupeDropsRepeatedEventID(t *testing.T) {
	for _, durable := range []string{"", "dedupe"} {
		t.Run("durable="+durable, func(t *testing.T) {
			e := newEnv(t)
			o := e.opts(t)
			o.Durable = durable
			c := newCollector()
			stop := e.run(t, o, c)

			m := e.userMsg(1)
			e.publish(t, m, m.ID)
			// The same event again under another Nats-Msg-Id (as after the
			// stream's duplicate window): the stream stores it twice...
			e.publish(t, m, m.ID+"#replay")
			// ...and a garbage message in between must not stop anything.
			e.publish(t, notice.Message{Subject: e.prefix + ".user.9", Data: []byte("not json")}, "garbage")
			e.publish(t, e.userMsg(2), e.userMsg(2).ID)
			c.waitFor(t, 2)
			time.Sleep(100 * time.Millisecond)
			if durable != "" {
				e.waitAcked(t, durable) // the duplicate was acked, garbage terminated
			}
			_ = stop()

			s, err := e.js.Stream(context.Background(), e.stream)
			if err != nil {
				t.Fatal(err)
			}
			if n := s.CachedInfo().State.Msgs; n != 4 {
				t.Fatalf("stream holds %d messages, want 4 (repeat stored)", n)
			}
			if got := c.snapshot(); !equal(got, []uint64{1, 2}) {
				t.Fatalf("callback got %v, want [1 2] (repeat skipped)", got)
			}
		})
	}
}

func TestSubscribeMissingStream(t *testing.T) {
	e := newEnv(t)
	o := e.opts(t)
	o.Stream = "NOPE"
	err := subscriber.Subscribe(context.Background(), e.js, o, func(context.Context, notice.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), `"NOPE"`) {
		t.Fatalf("err = %v, want one naming the stream", err)
	}
}

// A durable stopped in the middle of a backlog resumes promptly (well within
// AckWait): notices prefetched but not handled are returned on shutdown, and
// none handled before the stop is handled again.
func TestDurableRestartMidBacklog(t *testing.T) {
	e := newEnv(t)
	o := e.opts(t)
	o.Durable = "midway"
	o.AckWait = time.Minute // a redelivery by timeout would fail the deadline below
	c := newCollector()
	c.fail = func(notice.UserChanged) error { time.Sleep(time.Millisecond); return nil }
	stop := e.run(t, o, c)
	e.publishRange(t, 0, 1000)
	c.waitFor(t, 100)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	first := c.snapshot()

	c2 := newCollector()
	stop = e.run(t, o, c2)
	start := time.Now()
	c2.waitFor(t, 1000-len(first))
	e.waitAcked(t, o.Durable)
	_ = stop()
	t.Logf("first run handled %d, second %d in %s", len(first), len(c2.snapshot()), time.Since(start))

	handled := map[uint64]int{}
	for _, id := range append(first, c2.snapshot()...) {
		handled[id]++
	}
	for i := uint64(0); i < 1000; i++ {
		if handled[i] != 1 {
			t.Fatalf("notice %d handled %d times", i, handled[i])
		}
	}
}

// A durable subscriber keeps going across a NATS restart, and Subscribe does
// not return: the client reconnects and re-issues its pull requests.
func TestDurableSurvivesServerRestart(t *testing.T) {
	e := newEnv(t)
	o := e.opts(t)
	o.Durable = "restart"
	c := newCollector()
	stop := e.run(t, o, c)
	e.publishRange(t, 0, 10)
	c.waitFor(t, 10)

	e.srv.Stop()
	e.srv.Restart()
	start := time.Now()
	e.publishRange(t, 10, 20)
	c.waitFor(t, 20)
	t.Logf("resumed %s after the restart", time.Since(start).Round(time.Millisecond))
	if err := stop(); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if got := c.snapshot(); !equal(got, seq(0, 20)) {
		t.Fatalf("got %v, want 0..19 once each, in order", got)
	}
}

// Package subscriber reads dialsync notices from NATS JetStream and hands
// them, decoded and deduplicated, to a callback. It is the one part of the
// notice API that needs the NATS client; the envelope itself (package
// notice) has no third-party imports.
package subscriber

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/notice"
)

// Options configures Subscribe. Every zero value has a default.
type Options struct {
	// Stream is the JetStream stream to read; "" means "DIALSYNC".
	Stream string
	// Subject filters the stream; "" means "dialsync.>". One subject only:
	// the NATS server this targets (2.9) has no multi-subject filters.
	Subject string
	// Durable names a durable consumer with explicit acks: it resumes where
	// it stopped after a restart, and a notice whose callback fails is
	// redelivered. Several instances using the same Durable share the work.
	// Empty: an ephemeral ordered consumer, so every instance sees every
	// notice, from now (or from StartTime), in stream order.
	Durable string
	// StartTime, when set, delivers notices stored at or after it (replay).
	// Zero: only notices published after Subscribe starts. For a durable it
	// applies only when the consumer is first created.
	StartTime time.Time
	// DedupeWindow is how many recent notice ids are remembered to skip
	// repeats (bounded LRU); 0 means 10000, negative disables.
	DedupeWindow int
	// RetryDelay is how long a durable consumer waits before redelivering a
	// notice whose callback failed; 0 means 1s.
	RetryDelay time.Duration
	// AckWait is how long a durable consumer waits for the callback before
	// redelivering (only on creation); 0 means 30s.
	AckWait time.Duration
	// Logger receives decode and callback errors; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Stream == "" {
		o.Stream = "DIALSYNC"
	}
	if o.Subject == "" {
		o.Subject = "dialsync.>"
	}
	if o.DedupeWindow == 0 {
		o.DedupeWindow = 10000
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Subscribe hands every notice of the stream (filtered by opt.Subject) to fn,
// one at a time in stream order, until ctx is done; it then returns nil. It
// returns an error when the stream or consumer cannot be set up, or when the
// consumer goes away for good (e.g. deleted by an operator, connection
// closed).
//
// Notices repeated with the same id (a replay that JetStream's duplicate
// window did not catch, or a redelivery of a notice already handled) are
// skipped and, for a durable consumer, acknowledged. When fn returns an
// error, a durable consumer redelivers the notice after RetryDelay (other
// notices may be handled meanwhile, so per-user order is not kept across a
// failure); an ordered consumer logs the error and moves on. A message that
// is not a valid notice is logged and, for a durable, terminated (never
// redelivered).
func Subscribe(ctx context.Context, js jetstream.JetStream, opt Options, fn func(context.Context, notice.Event) error) error {
	opt.defaults()
	log := opt.Logger.With("stream", opt.Stream, "subject", opt.Subject)

	stream, err := js.Stream(ctx, opt.Stream)
	if err != nil {
		return fmt.Errorf("notice: subscribe: stream %q: %w", opt.Stream, err)
	}

	var cons jetstream.Consumer
	if opt.Durable != "" {
		log = log.With("durable", opt.Durable)
		cons, err = durableConsumer(ctx, stream, opt)
	} else {
		cfg := jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{opt.Subject},
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		}
		if !opt.StartTime.IsZero() {
			cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
			st := opt.StartTime
			cfg.OptStartTime = &st
		}
		cons, err = stream.OrderedConsumer(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("notice: subscribe to %q on %q: %w", opt.Subject, opt.Stream, err)
	}

	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("notice: subscribe: messages of %q: %w", opt.Stream, err)
	}
	defer stopIterator(js, it, opt.Durable != "", log)

	seen := newLRU(opt.DedupeWindow)
	durable := opt.Durable != ""
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("notice: subscribe: next on %q: %w", opt.Stream, err)
		}
		handle(ctx, log, m, durable, opt.RetryDelay, seen, fn)
	}
}

// stopIterator ends the pull subscription. An ordered consumer just stops
// (it is ephemeral and acks nothing).
//
// A durable drains instead, for a prompt resume: notices already prefetched
// into the client buffer are Nak'ed so they are redelivered at once (to the
// next run or another instance) rather than after AckWait. Stop and Drain
// only signal a goroutine that unsubscribes later (nats.go jetstream/pull.go);
// the iterator reports ErrMsgIteratorClosed once the subscription is closed,
// and the flush makes sure the server has the UNSUB and the Naks before we
// return. Otherwise the server would keep a live pull request for a dead
// inbox, and a notice published right after a clean shutdown would reach the
// durable's next run only after AckWait.
func stopIterator(js jetstream.JetStream, it jetstream.MessagesContext, durable bool, log *slog.Logger) {
	if !durable {
		it.Stop()
		return
	}
	it.Drain()
	nak := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		m, err := it.Next(jetstream.NextMaxWait(100 * time.Millisecond))
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if err == nil {
			_ = m.Nak()
			nak++
		}
	}
	if err := js.Conn().FlushTimeout(2 * time.Second); err != nil {
		log.Debug("notice: flush on shutdown", "err", err)
	}
	if nak > 0 {
		log.Debug("notice: returned prefetched notices on shutdown", "count", nak)
	}
}

// durableConsumer binds to the durable if it exists, else creates it. Binding
// first (rather than create-or-update) keeps a restart with another
// StartTime from failing: the server refuses to change a deliver policy.
func durableConsumer(ctx context.Context, stream jetstream.Stream, opt Options) (jetstream.Consumer, error) {
	c, err := stream.Consumer(ctx, opt.Durable)
	if err == nil {
		if f := c.CachedInfo().Config.FilterSubject; f != opt.Subject {
			return nil, fmt.Errorf("durable %q exists with filter %q, not %q", opt.Durable, f, opt.Subject)
		}
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       opt.Durable,
		FilterSubject: opt.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opt.AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if !opt.StartTime.IsZero() {
		st := opt.StartTime
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &st
	}
	return stream.CreateConsumer(ctx, cfg)
}

func handle(ctx context.Context, log *slog.Logger, m jetstream.Msg, durable bool, retry time.Duration,
	seen *lru, fn func(context.Context, notice.Event) error) {
	seq := uint64(0)
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	ack := func(what string, f func() error) {
		if !durable {
			return
		}
		if err := f(); err != nil {
			// The server redelivers after AckWait; dedupe or fn handles it.
			log.Warn("notice: "+what+" failed", "seq", seq, "err", err)
		}
	}

	e, err := notice.Decode(m.Data())
	if err != nil {
		log.Error("notice: skipping undecodable message", "seq", seq, "msg_subject", m.Subject(), "err", err)
		ack("term", m.Term)
		return
	}
	if seen.contains(e.ID) {
		ack("ack", m.Ack)
		return
	}
	if err := fn(ctx, e); err != nil {
		if ctx.Err() != nil && durable {
			// Shutting down: let the server redeliver it to whoever is next.
			ack("nak", m.Nak)
			return
		}
		log.Error("notice: callback failed", "seq", seq, "id", e.ID, "type", e.Type, "err", err)
		if durable {
			ack("nak", func() error { return m.NakWithDelay(retry) })
			return
		}
	}
	seen.add(e.ID)
	ack("ack", m.Ack)
}

// lru is a bounded set of recently seen ids; the least recently seen is
// evicted first. A nil *lru (dedupe disabled) contains nothing.
type lru struct {
	max   int
	order *list.List // front: most recent
	items map[string]*list.Element
}

func newLRU(max int) *lru {
	if max <= 0 {
		return nil
	}
	return &lru{max: max, order: list.New(), items: make(map[string]*list.Element, max)}
}

func (l *lru) contains(id string) bool {
	if l == nil {
		return false
	}
	el, ok := l.items[id]
	if ok {
		l.order.MoveToFront(el)
	}
	return ok
}

func (l *lru) add(id string) {
	if l == nil {
		return
	}
	if el, ok := l.items[id]; ok {
		l.order.MoveToFront(el)
		return
	}
	l.items[id] = l.order.PushFront(id)
	if l.order.Len() > l.max {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.items, old.Value.(string))
	}
}

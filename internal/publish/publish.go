// Package publish sends dialsync's notices to NATS JetStream. It implements
// apply.Publisher: Publish returns only once the stream acknowledged every
// message, so the apply loop can move the checkpoint afterwards.
//
// Replays are harmless because every notice id is deterministic and sent as
// Nats-Msg-Id: the stream drops a repeat inside its duplicate window
// (https://docs.nats.io/using-nats/developer/develop_jetstream/model_deep_dive#message-deduplication).
package publish

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/notice"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultStream          = "DIALSYNC"
	DefaultSubjectPrefix   = "dialsync"
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultMaxAge          = 72 * time.Hour
	DefaultAckTimeout      = 5 * time.Second
	// MaxInFlight bounds the unacknowledged messages of one Publish call.
	MaxInFlight = 4096
)

// Config says where and how to publish. Zero values take the defaults above.
type Config struct {
	URL           string // server URL(s), comma separated; may carry user:password (never logged)
	Stream        string // stream name; "" = DIALSYNC
	SubjectPrefix string // notices go to "<prefix>.>"; "" = dialsync
	// ManageStream creates the stream at Open, or widens the one it created
	// to this config (see stream.go); a stream it did not create is used
	// unchanged if it fits, else Open fails. When false the stream must
	// already exist (deploy/ defines it); Open checks it captures
	// "<prefix>.>" with a duplicate window of at least DuplicateWindow.
	ManageStream bool
	// ShrinkStream lets a managed Open also cut the retention, limits,
	// duplicate window or subjects of the stream it created (off: it only
	// widens them, and a config that would cut is an error).
	ShrinkStream    bool
	DuplicateWindow time.Duration // stream duplicate window; 0 = 2m
	MaxAge          time.Duration // managed stream retention; 0 = 72h
	MaxBytes        int64         // managed stream size bound; 0 = unlimited
	Replicas        int           // managed stream replicas; 0 = 1
	Storage         string        // managed stream storage: "file" (default) or "memory"
	Name            string        // connection name shown by the server; "" = "dialsync"
	TLS             *tls.Config   // nil: TLS only if the URL says tls://
	CredsFile       string        // a .creds file (JWT + NKey seed)
	NKeyFile        string        // an NKey seed file
	Token           string
	User, Password  string
	// AckTimeout bounds the wait for each message's ack; 0 = 5s. A timed out
	// ack fails Publish (the caller retries the whole batch).
	AckTimeout time.Duration
	// OnReconnect, when set, is called after the connection to NATS was
	// re-established.
	OnReconnect func()
}

// AuthOptions are the NATS connect options for c's TLS and authentication
// (TLS, CredsFile, NKeyFile, Token, User and Password): every connection
// dialsync makes to NATS (this publisher, and the check, explain and watch
// commands) takes them from here.
func (c Config) AuthOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if c.TLS != nil {
		opts = append(opts, nats.Secure(c.TLS))
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey file %s: %w", c.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.User != "" || c.Password != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	return opts, nil
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Storage == "" {
		c.Storage = "file"
	}
	if c.Name == "" {
		c.Name = "dialsync"
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
}

func (c *Config) validate() error {
	if c.URL == "" {
		return errors.New("publish: nats url is empty")
	}
	if strings.ContainsAny(c.SubjectPrefix, " \t\r\n*>") || strings.HasPrefix(c.SubjectPrefix, ".") ||
		strings.HasSuffix(c.SubjectPrefix, ".") || strings.Contains(c.SubjectPrefix, "..") {
		return fmt.Errorf("publish: subject_prefix %q is not a valid literal subject", c.SubjectPrefix)
	}
	if c.Storage != "file" && c.Storage != "memory" {
		return fmt.Errorf("publish: storage %q: want \"file\" or \"memory\"", c.Storage)
	}
	if c.MaxAge < c.DuplicateWindow {
		return fmt.Errorf("publish: max_age %s is shorter than duplicate_window %s", c.MaxAge, c.DuplicateWindow)
	}
	return nil
}

// ContentTypeHeader and ContentType label every notice as a CloudEvent in
// structured mode (the CloudEvents NATS protocol binding, section 3.1: the
// whole event is the JSON payload, and the content type says so);
// docs/notices.md, "On the wire".
const (
	ContentTypeHeader = "Content-Type"
	ContentType       = "application/cloudevents+json"
)

// contentType is shared by every message's header: nats.go only reads it.
var contentType = []string{ContentType}

// Publisher is a JetStream publisher bound to one stream.
type Publisher struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
	log    *slog.Logger
	closed atomic.Bool
}

// Open connects to NATS and makes sure the stream is fit to receive the
// notices (see Config.ManageStream). Errors name the URL without secrets.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Publisher, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	where := redactURL(cfg.URL)
	log := logger.With("component", "publish", "nats", where, "stream", cfg.Stream)

	opts := []nats.Option{
		nats.Name(cfg.Name),
		// Reconnect forever: the apply loop pauses on failed publishes and
		// retries; it must never be left with a dead connection.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			// nats.go calls it with a nil error when the connection is
			// closed on purpose (Close, at every clean exit): not news.
			if err == nil {
				log.Debug("nats connection closed")
				return
			}
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			if cfg.OnReconnect != nil {
				cfg.OnReconnect()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats async error", "err", err)
		}),
	}
	auth, err := cfg.AuthOptions()
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	opts = append(opts, auth...)

	nc, err := Connect(ctx, cfg.URL, 5*time.Second, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("publish: connect to NATS at %s: %w", where, err)
		}
		return nil, fmt.Errorf("publish: connect to NATS at %s: %w: check nats.url (and its credentials) and that the server is up", where, err)
	}
	js, err := jetstream.New(nc,
		// Above our own window so the library never stalls a Publish call.
		jetstream.WithPublishAsyncMaxPending(2*MaxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("publish: jetstream on %s: %w", where, err)
	}
	p := &Publisher{nc: nc, js: js, stream: cfg.Stream, log: log}
	if err := p.ensureStream(ctx, cfg); err != nil {
		nc.Close()
		return nil, err
	}
	log.Info("nats publisher ready", "subjects", cfg.SubjectPrefix+".>", "managed", cfg.ManageStream)
	return p, nil
}

// errCodeSubjectOverlap is the JetStream API error "subjects overlap with
// an existing stream" (NATS server errors.json, JSStreamSubjectOverlapErr);
// nats.go has no constant for it.
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// Publish sends every message with Nats-Msg-Id = msg.ID and waits for all
// acks, keeping at most MaxInFlight unacknowledged. It returns nil only if
// every message was acknowledged by the stream (a "duplicate" ack counts: the
// stream already holds that notice). On any error the caller retries the
// whole batch; ids are deterministic, so the stream drops the repeats.
func (p *Publisher) Publish(ctx context.Context, msgs []notice.Message) error {
	if p.closed.Load() {
		return errors.New("publish: publisher closed")
	}
	if len(msgs) == 0 {
		return nil
	}
	// ring holds the futures of the last MaxInFlight sends: before reusing a
	// slot, the ack of the message that had it must be in.
	ring := make([]jetstream.PubAckFuture, min(len(msgs), MaxInFlight))
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return fmt.Errorf("publish: ack for %s (%s): %w", f.Msg().Header.Get(jetstream.MsgIDHeader), f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("publish: waiting for acks: %w", ctx.Err())
		}
	}
	for i := range msgs {
		slot := i % len(ring)
		if i >= len(ring) {
			if err := wait(ring[slot]); err != nil {
				return err
			}
		}
		m := &msgs[i]
		f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{ContentTypeHeader: contentType}},
			jetstream.WithMsgID(m.ID), jetstream.WithExpectStream(p.stream))
		if err != nil {
			return fmt.Errorf("publish: send %s (%s): %w", m.ID, m.Subject, err)
		}
		ring[slot] = f
	}
	for i := max(0, len(msgs)-len(ring)); i < len(msgs); i++ {
		if err := wait(ring[i%len(ring)]); err != nil {
			return err
		}
	}
	return nil
}

// Healthy reports whether the connection to NATS is up.
func (p *Publisher) Healthy() bool { return !p.closed.Load() && p.nc.IsConnected() }

// Close closes the connection; pending acks are abandoned (their batch was
// not reported as published, so it is retried after a restart).
func (p *Publisher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.nc.Close()
	return nil
}

// redactURL hides passwords (and tokens in the user part) in a comma
// separated server list.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, part := range parts {
		part = strings.TrimSpace(part)
		u, err := url.Parse(part)
		if err != nil || u.User == nil {
			if err != nil && strings.Contains(part, "@") {
				part = "<unparsable url with credentials>"
			}
			parts[i] = part
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a bare user part may be a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// anyCovers reports whether a subject filter in filters matches every subject
// matched by sub (token by token: ">" covers the rest, "*" covers one token
// but not a ">").
func anyCovers(filters []string, sub string) bool {
	for _, f := range filters {
		if covers(f, sub) {
			return true
		}
	}
	return false
}

func covers(filter, sub string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(sub, ".")
	for i, f := range ft {
		if f == ">" {
			return i < len(st)
		}
		if i >= len(st) {
			return false
		}
		switch {
		case f == "*":
			if st[i] == ">" {
				return false
			}
		case f != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}

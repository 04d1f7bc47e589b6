package clients

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"dialsync/internal/config"
	"dialsync/internal/publish"
)

// PublishConfig is [nats] as the publisher takes it; onReconnect (may be
// nil) is called after each reconnect.
func PublishConfig(cfg *config.Config, onReconnect func(), log *slog.Logger) (publish.Config, error) {
	n := cfg.NATS
	tc, err := TLS("nats", n.TLSConfig, "", log)
	if err != nil {
		return publish.Config{}, err
	}
	return publish.Config{
		URL: n.URL, Stream: n.Stream, SubjectPrefix: n.SubjectPrefix,
		ManageStream: n.ManageStream, ShrinkStream: n.ShrinkStream, DuplicateWindow: n.DuplicateWindow.Duration(),
		MaxAge: n.MaxAge.Duration(), MaxBytes: int64(n.MaxBytes), Replicas: n.Replicas,
		Storage: n.Storage, Name: "dialsync-" + cfg.Pipeline.Name, TLS: tc,
		CredsFile: n.CredsFile, NKeyFile: n.NKeyFile, Token: n.Token,
		User: n.User, Password: n.Password, AckTimeout: n.AckTimeout.Duration(),
		OnReconnect: onReconnect,
	}, nil
}

// Publisher connects the pipeline's JetStream publisher.
func Publisher(ctx context.Context, cfg *config.Config, onReconnect func(), log *slog.Logger) (*publish.Publisher, error) {
	pc, err := PublishConfig(cfg, onReconnect, log)
	if err != nil {
		return nil, err
	}
	return publish.Open(ctx, pc, log)
}

// NATSOptions are the connect options of [nats]'s TLS and authentication
// (the publisher's, publish.Config.AuthOptions) for a connection of a
// one-shot command, and the publisher's configuration they come from (its
// TLS nil: none configured; check judges the stream with it).
func NATSOptions(cfg *config.Config, log *slog.Logger) ([]nats.Option, publish.Config, error) {
	pc, err := PublishConfig(cfg, nil, log)
	if err != nil {
		return nil, pc, err
	}
	opts, err := pc.AuthOptions()
	if err != nil {
		return nil, pc, fmt.Errorf("nats: %w", err)
	}
	return opts, pc, nil
}

// NATS connects to [nats] for reading (explain, watch), reconnecting
// forever: watch runs for long; explain closes it at once. The connect is
// bounded by ctx and 5 s (publish.Connect).
func NATS(ctx context.Context, cfg *config.Config, name string, log *slog.Logger) (*nats.Conn, error) {
	opts, _, err := NATSOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// A nil error is a Close of ours (see internal/publish).
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
	)
	nc, err := publish.Connect(ctx, cfg.NATS.URL, 5*time.Second, opts...)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactNATSURL(cfg.NATS.URL), context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactNATSURL(cfg.NATS.URL), Redact(err, cfg))
	}
	return nc, nil
}

// redactNATSURL drops any user:password@ from each URL of a list.
func redactNATSURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		} else if err != nil {
			parts[i] = "(unparsable URL)"
		}
	}
	return strings.Join(parts, ",")
}

// Package cache deletes the dialler's Redis cache keys. Deletion is the only
// write: it is idempotent, so replaying a batch after a crash is harmless
// (docs/design.md, invariant 2), and the apply loop calls Del only after the
// change is visible on the lookup server, so a reader can never refill a key
// with data older than the change (invariant 3).
package cache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxPipeline is the most commands sent in one pipeline. Larger key lists
// are sent as several pipelines, in order, so neither side buffers an
// unbounded request or reply (docs/design.md, invariant 7).
const MaxPipeline = 10_000

// Config says how to reach Redis.
type Config struct {
	// Addr is "host:port", or a "redis://" / "rediss://" URL
	// ("rediss://user:pass@host:6380/2"; see redis.ParseURL for the
	// query options it accepts). rediss turns TLS on. Required.
	Addr string
	// Username and Password authenticate (Redis 6 ACL, or the legacy
	// requirepass with an empty Username). When set they replace any in
	// the URL; empty means none, or the URL's.
	Username, Password string
	// DB selects the logical database. Non-zero replaces the URL's; zero
	// means the URL's, else database 0.
	DB int
	// TLS turns TLS on with this configuration (it replaces the one
	// rediss implies). An empty ServerName is set to Addr's host. Nil
	// means plain TCP, unless the URL is rediss.
	TLS *tls.Config
}

// Cache is a Redis client for deleting keys. It is safe for concurrent use.
type Cache struct {
	rdb redis.UniversalClient
	// where names the server in errors and logs: host:port/db, never a
	// password.
	where string
	log   *slog.Logger
}

// Open connects to Redis and pings it, so a wrong address, password or DB
// is reported at start-up rather than on the first batch. Errors name the
// address, never the password. logger may be nil. Bound ctx: go-redis
// retries a failing dial (5 attempts, 5 s dial timeout each), so an
// unbounded ctx may wait long on a TLS mismatch or a silent host.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Cache, error) {
	opts, err := Options(cfg)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		rdb:   redis.NewClient(opts),
		where: opts.Addr + "/" + strconv.Itoa(opts.DB),
	}
	c.log = logger.With("component", "cache", "redis", c.where)
	if err := c.Ping(ctx); err != nil {
		_ = c.rdb.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cache: open: redis at %s: %w", c.where, context.Cause(ctx)) // stopped (a signal)
		}
		return nil, fmt.Errorf("cache: open: %w: check redis.addr, redis.password and the redis.tls_* keys, and that the server is up", err)
	}
	c.log.Info("connected to redis", "tls", opts.TLSConfig != nil)
	return c, nil
}

// Options turns cfg into go-redis options: the one place a Redis
// connection's settings are made (Open, and the read-only commands that
// need a raw client). Its errors never quote a URL: one may carry a
// password (net/url's own errors quote the whole URL).
func Options(cfg Config) (*redis.Options, error) {
	if cfg.Addr == "" {
		return nil, errors.New("redis addr is empty: want host:port or a redis:// URL")
	}
	if cfg.DB < 0 {
		return nil, fmt.Errorf("redis db %d: must be >= 0", cfg.DB)
	}
	var opts *redis.Options
	if scheme, _, ok := strings.Cut(cfg.Addr, "://"); ok {
		if scheme != "redis" && scheme != "rediss" {
			return nil, fmt.Errorf("redis addr: scheme %q: want redis:// or rediss://", scheme)
		}
		if _, err := url.Parse(cfg.Addr); err != nil {
			return nil, errors.New("redis addr: malformed URL (not shown: it may hold a password)")
		}
		var err error
		if opts, err = redis.ParseURL(cfg.Addr); err != nil {
			// Past url.Parse, go-redis's errors name only the part
			// at fault (scheme, path, db, query option).
			return nil, fmt.Errorf("redis addr: %w", err)
		}
	} else {
		if strings.Contains(cfg.Addr, "@") {
			return nil, errors.New("redis addr: credentials need a redis:// URL (addr not shown: it may hold a password)")
		}
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			return nil, fmt.Errorf("redis addr %q: want host:port or a redis:// URL: %w", cfg.Addr, err)
		}
		opts = &redis.Options{Addr: cfg.Addr}
	}
	if cfg.Username != "" {
		opts.Username = cfg.Username
	}
	if cfg.Password != "" {
		opts.Password = cfg.Password
	}
	if cfg.DB != 0 {
		opts.DB = cfg.DB
	}
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if t.ServerName == "" {
			t.ServerName, _, _ = net.SplitHostPort(opts.Addr)
		}
		opts.TLSConfig = t
	}
	return opts, nil
}

// Del deletes keys, in order, in one pipeline per MaxPipeline keys. Missing
// keys are not an error. One DEL per key (not one multi-key DEL) keeps the
// commands valid on Redis Cluster, where a multi-key DEL across hash slots
// fails with CROSSSLOT.
//
// On error some keys may already be gone; Del still reports the failure,
// and the caller retries the whole list (DEL is idempotent) before it moves
// the checkpoint. The error names the server and key counts, never keys.
func (c *Cache) Del(ctx context.Context, keys []string) error {
	for start := 0; start < len(keys); start += MaxPipeline {
		chunk := keys[start:min(start+MaxPipeline, len(keys))]
		// Pipelined returns the first failed command's error, or the
		// connection's; either way the chunk is not known to be done.
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range chunk {
				p.Del(ctx, k)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("cache: del keys %d-%d of %d on %s: %w",
				start+1, start+len(chunk), len(keys), c.where, err)
		}
	}
	return nil
}

// Ping checks that Redis answers (for readiness and preflight checks).
func (c *Cache) Ping(ctx context.Context) error {
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis at %s: %w", c.where, err)
	}
	return nil
}

// Addr returns the server as host:port/db, for logs and checks.
func (c *Cache) Addr() string { return c.where }

// Close closes the connections. Calls after the first return an error.
func (c *Cache) Close() error {
	if err := c.rdb.Close(); err != nil {
		return fmt.Errorf("cache: close %s: %w", c.where, err)
	}
	return nil
}

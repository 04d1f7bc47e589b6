package clients

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"dialsync/internal/cache"
	"dialsync/internal/config"
)

// CacheConfig is [redis] as the cache package takes it (cache.Options turns
// it into go-redis options).
func CacheConfig(cfg *config.Config, log *slog.Logger) (cache.Config, error) {
	r := cfg.Redis
	tc, err := TLS("redis", r.TLSConfig, HostOf(r.Addr), log)
	if err != nil {
		return cache.Config{}, err
	}
	return cache.Config{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB, TLS: tc}, nil
}

// Cache connects the cache the pipeline deletes keys through.
func Cache(ctx context.Context, cfg *config.Config, log *slog.Logger) (*cache.Cache, error) {
	cc, err := CacheConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	return cache.Open(ctx, cc, log)
}

// Redis connects a read-only client (explain) as [redis] says: host:port or
// a redis:// / rediss:// URL (the cache's options), and also a
// comma-separated cluster list or sentinels with master_name. It tries once
// (no retries). Errors never quote a URL (it may hold a password).
func Redis(ctx context.Context, cfg *config.Config, log *slog.Logger) (redis.UniversalClient, error) {
	r := cfg.Redis
	cc, err := CacheConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	var rdb redis.UniversalClient
	addrs := r.Addrs()
	where := strings.Join(addrs, ",")
	isURL := len(addrs) == 1 && strings.Contains(addrs[0], "://")
	if isURL || len(addrs) == 1 && r.MasterName == "" {
		cc.Addr = addrs[0]
		opts, err := cache.Options(cc)
		if err != nil {
			return nil, err
		}
		if isURL {
			where = "the configured URL" // not shown: it may hold a password
		} else {
			opts.MaxRetries = 1
		}
		rdb = redis.NewClient(opts)
	} else {
		rdb = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: addrs, MasterName: r.MasterName, Username: r.Username, Password: r.Password, DB: r.DB,
			TLSConfig: cc.TLS, MaxRetries: 1,
		})
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("redis at %s: %w", where, context.Cause(ctx)) // stopped (a signal)
		}
		return nil, fmt.Errorf("redis at %s: %w", where, Redact(err, cfg))
	}
	return rdb, nil
}

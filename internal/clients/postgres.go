package clients

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"dialsync/internal/config"
)

// errBadDSN is postgres.dsn not parsing. pgx's parse errors can quote the
// DSN (and its password): they are never shown.
var errBadDSN = errors.New("postgres.dsn: not a valid PostgreSQL connection string (URL or key=value)")

// PostgresConfig parses postgres.dsn into a pool configuration (with
// postgres.max_conns) for the caller to adjust. Its error never quotes the
// DSN.
func PostgresConfig(cfg *config.Config) (*pgxpool.Config, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.Postgres.DSN)
	if err != nil {
		return nil, errBadDSN
	}
	pcfg.MaxConns = int32(cfg.Postgres.MaxConns)
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		// Without connect_timeout pgx waits for a server that accepted
		// TCP but never answers the startup message as long as ctx lasts:
		// for run, forever (docs/design.md, "Deadlines and signals").
		pcfg.ConnConfig.ConnectTimeout = DefaultPostgresConnectTimeout
	}
	return pcfg, nil
}

// DefaultPostgresConnectTimeout bounds a PostgreSQL connect (TCP, TLS,
// startup, authentication) when postgres.dsn sets no connect_timeout.
const DefaultPostgresConnectTimeout = 10 * time.Second

// Postgres opens the pool of pcfg and pings the server. The error names
// the server as host:port, never a secret.
func Postgres(ctx context.Context, cfg *config.Config, pcfg *pgxpool.Config) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err == nil {
		if err = pool.Ping(ctx); err != nil {
			pool.Close()
		}
	}
	if err != nil && ctx.Err() != nil {
		// Stopped (a signal): say so, not pgx's "context canceled".
		return nil, fmt.Errorf("postgres at %s:%d: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres at %s:%d: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, Redact(err, cfg))
	}
	return pool, nil
}

package clients

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
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
		// pgx reads the TLS files the DSN names (sslrootcert, sslcert,
		// sslkey) while parsing: say which file, not "not valid". The
		// path error holds only the path and the reason.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("postgres.dsn: cannot read the TLS file it names (sslrootcert, sslcert or sslkey): %v: fix the path in postgres.dsn or the file's permissions", pe)
		}
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
// the server as host:port, never a secret, and ends with the fix.
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
		return nil, fmt.Errorf("postgres at %s:%d: %w: %s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, Redact(err, cfg), postgresFix(err))
	}
	return pool, nil
}

// postgresFix says what to do about a failed connection. A certificate the
// client refused (sslmode=verify-ca or verify-full) is not a server that is
// down: name the DSN key that decides it.
func postgresFix(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown):
		return "the server's TLS certificate is not signed by the CA in sslrootcert: set sslrootcert in postgres.dsn to the CA that signed it"
	case errors.As(err, &host):
		return "the server's TLS certificate does not name this host: with sslmode=verify-full the host in postgres.dsn must be one the certificate names (or have it reissued for this name)"
	case errors.As(err, &verify):
		return "the server's TLS certificate was refused: check sslrootcert in postgres.dsn and the server's certificate (expiry, usage)"
	}
	return "check postgres.dsn and that the server is up"
}

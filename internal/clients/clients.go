// Package clients builds dialsync's connections from the configuration: the
// PostgreSQL pool, the lookup client and the binlog reader's configuration
// (MySQL/MariaDB), the Redis cache and the NATS connections, each with its
// section's TLS. Every command (run, check, explain, reconcile, deadletters,
// watch, checkpoint) builds them here, so a key means the same everywhere.
// It knows nothing of the running pipeline (internal/pipeline).
package clients

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"

	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/config"
)

// TLS builds a client TLS config from a section's tls_* keys; nil when TLS
// is disabled. Verification is on unless the operator explicitly chose
// skip-verify, which is logged loudly. Errors are usage errors (exit 2).
func TLS(section string, t config.TLSConfig, host string, log *slog.Logger) (*tls.Config, error) {
	if t.Mode == config.TLSSkipVerify {
		log.Warn("TLS certificate verification is OFF: the connection is encrypted but not authenticated", "section", section)
	}
	tc, err := t.ClientTLS(section, host)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	return tc, nil
}

// HostOf is the host of a "host:port" address (brackets of an IPv6 literal
// removed).
func HostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// Redact strips configured secrets from an error's text (drivers may quote
// a DSN).
func Redact(err error, cfg *config.Config) error {
	msg := err.Error()
	for _, s := range []string{cfg.Postgres.DSN, cfg.Source.Password, cfg.Redis.Password, cfg.NATS.Password, cfg.NATS.Token} {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "REDACTED")
		}
	}
	return errors.New(msg)
}

// Specs are the tables and columns the binlog reader decodes: the handlers'
// own columns plus notices.include_values.
func Specs(cfg *config.Config) []change.TableSpec {
	if extra := includeValues(cfg.Notices.IncludeValues); len(extra) > 0 {
		return handlers.SpecsWith(extra)
	}
	return handlers.Specs()
}

// includeValues turns ["users.status", ...] into {"users": ["status"]}.
func includeValues(list []string) map[string][]string {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string][]string)
	for _, tc := range list {
		t, c, _ := strings.Cut(tc, ".")
		m[t] = append(m[t], c)
	}
	return m
}

// Keys are the Redis keys of [redis] prefix and [cache].
func Keys(cfg *config.Config) (*handlers.Keys, error) {
	keys, err := handlers.NewKeys(cfg.Redis.Prefix, cfg.Cache.UserKeys, cfg.Cache.QueueKeys)
	if err != nil {
		return nil, config.Usagef("cache: %v", err)
	}
	return keys, nil
}

package clients

import (
	"context"
	"crypto/tls"
	"log/slog"

	"dialsync/canal"
	"dialsync/internal/config"
	"dialsync/internal/lookup"
)

// SourceTLS is [source]'s TLS for a server at addr: the binlog server, or
// the lookup server (which shares [source]'s TLS keys).
func SourceTLS(cfg *config.Config, addr string, log *slog.Logger) (*tls.Config, error) {
	return TLS("source", cfg.Source.TLSConfig, HostOf(addr), log)
}

// Canal is the binlog reader's configuration ([source], the tracked specs,
// apply.max_txn_bytes).
func Canal(cfg *config.Config, log *slog.Logger) (canal.Config, error) {
	tc, err := SourceTLS(cfg, cfg.Source.Addr, log)
	if err != nil {
		return canal.Config{}, err
	}
	return canal.Config{
		Addr: cfg.Source.Addr, User: cfg.Source.User, Password: cfg.Source.Password,
		Flavor: cfg.Source.Flavor, ServerID: cfg.Source.ServerID, Database: cfg.Source.Database,
		Tables:          Specs(cfg),
		HeartbeatPeriod: cfg.Source.HeartbeatPeriod.Duration(),
		ReadTimeout:     cfg.Source.ReadTimeout.Duration(),
		MaxTxnBytes:     int(cfg.Apply.MaxTxnBytes),
		TLS:             tc,
		Logger:          log,
	}, nil
}

// Lookup connects to the lookup server ([lookup], its empty keys
// inheriting [source]) with the queue rule; maxOpen 0 means lookup's
// default. Its TLS is [source]'s, verified against the lookup server's own
// host name, so run, check and explain connect alike.
func Lookup(ctx context.Context, cfg *config.Config, maxOpen int, log *slog.Logger) (*lookup.Lookup, error) {
	lk := cfg.EffectiveLookup()
	tc, err := SourceTLS(cfg, lk.Addr, log)
	if err != nil {
		return nil, err
	}
	return lookup.Open(ctx, lookup.Config{
		Addr: lk.Addr, User: lk.User, Password: lk.Password, Database: lk.Database,
		TLS: tc, QueueSQL: cfg.Rules.QueueSQL, MaxOpen: maxOpen,
	}, log)
}

// SourceLookup connects a lookup client to the binlog server itself
// ([source]), without the queue rule: to compare it with the lookup server.
func SourceLookup(ctx context.Context, cfg *config.Config, log *slog.Logger) (*lookup.Lookup, error) {
	tc, err := SourceTLS(cfg, cfg.Source.Addr, log)
	if err != nil {
		return nil, err
	}
	return lookup.Open(ctx, lookup.Config{
		Addr: cfg.Source.Addr, User: cfg.Source.User, Password: cfg.Source.Password,
		Database: cfg.Source.Database, TLS: tc,
	}, log)
}

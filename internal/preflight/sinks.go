package preflight

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/publish"
)

// CheckRedis reports a Redis ping (err from cache.Open or a ping).
func CheckRedis(where string, err error) Result {
	if err != nil {
		return fail("redis", "check redis.addr, redis.username/password (DIALSYNC_REDIS_PASSWORD), redis.db and the tls_* keys, and that the server is up",
			"cannot reach %s: %v", where, err)
	}
	return ok("redis", "%s answers", where)
}

// NATSUnreachable is the NATS check's result when connecting failed.
func NATSUnreachable(where string, err error) Result {
	return fail("nats", "check nats.url, the nats credentials (creds_file, nkey_file, token, user/password) and the tls_* keys, and that the server is up with JetStream",
		"cannot reach %s: %v", where, err)
}

// CheckStream checks the notices stream as `dialsync run` will find it
// (publish.PlanStream decides for both): present (or dialsync creates it),
// capturing "<prefix>.>", with a long enough duplicate window (publish
// retries rely on it to store each notice once), not a work queue, and,
// for a stream dialsync created, no setting the config would cut.
func CheckStream(ctx context.Context, js jetstream.JetStream, cfg publish.Config) Result {
	const name = "nats"
	s, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if cfg.ManageStream {
			return ok(name, "stream %s does not exist yet: `dialsync run` creates it (nats.manage_stream = true)", cfg.Stream)
		}
		return fail(name, "create it from deploy/ (subjects "+cfg.SubjectPrefix+".>), or set nats.manage_stream = true",
			"stream %s does not exist and nats.manage_stream is false", cfg.Stream)
	}
	if err != nil {
		return fail(name, "check that the nats account has JetStream enabled and may read stream info", "stream %s: %v", cfg.Stream, err)
	}
	c := s.CachedInfo().Config
	next, note, err := publish.PlanStream(c, cfg)
	switch {
	case err != nil:
		return fail(name, "see the message: fix the stream, or set nats.stream / nats.subject_prefix to match it", "%v", err)
	case note != "":
		// Fit for the notices and used unchanged: nothing to fix.
		return ok(name, "%s", note)
	case next != nil:
		return ok(name, "stream %s captures %s.>; `dialsync run` will widen it: %s", cfg.Stream, cfg.SubjectPrefix, strings.Join(publish.Differences(c, *next), "; "))
	}
	return ok(name, "stream %s captures %s.>, duplicate window %s", cfg.Stream, cfg.SubjectPrefix, c.Duplicates)
}

// CheckTLS warns about a plaintext connection that leaves the machine.
// Loopback addresses (and unix sockets) are exempt: their traffic never
// crosses a network.
func CheckTLS(section, host string, encrypted bool) Result {
	name := "tls." + section
	if encrypted {
		return ok(name, "encrypted")
	}
	if isLocal(host) {
		return ok(name, "plaintext, but to %s (loopback)", host)
	}
	fix := section + ".tls_mode = \"required\" (with tls_ca_file if the server's CA is private)"
	if section == "postgres" {
		fix = "add sslmode=verify-full (and sslrootcert=...) to postgres.dsn"
	}
	if section == "nats" {
		fix = "use a tls:// nats.url or set nats.tls_mode = \"required\""
	}
	return warn(name, fix, "plaintext connection to %s: credentials and data cross the network unencrypted", host)
}

func isLocal(host string) bool {
	if host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

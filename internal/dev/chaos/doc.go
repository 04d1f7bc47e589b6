// Package chaos is the fault-injection suite behind `make chaos`: a
// realistic workload runs against a private binlog-enabled MariaDB while the
// real dialsync binary is killed and its four dependencies (MariaDB,
// PostgreSQL, Redis, NATS JetStream, all private instances) are restarted at
// random moments. An independent checker then proves that no change was
// lost or doubled, no cache key was left stale, the queue equals the rule
// and the checkpoint never went backwards.
//
// Everything lives in the package's tests; `go test ./internal/chaos` runs a
// short version and `-chaos.long` the full one (see the Makefile).
package chaos

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"dialsync/checkpoint"
	"dialsync/internal/clients"
	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/pgstore"
)

func init() {
	register(command{25, "status", "the pipeline's health: leader, checkpoint, lag, queue, dead letters, last reconcile", runStatus})
}

// Exit codes of status (1 and 2 keep their meaning for every command).
const (
	exitDegraded = 1
	exitNoLeader = 3
)

const statusUsage = `usage: dialsync status [--config PATH] [--json]

Reports the pipeline's state from PostgreSQL (read only: it never creates or
migrates the schema) and, when http.listen is set, from the instance serving
there (/readyz and /metrics): the leader and its epoch with the age of its
heartbeat, the checkpoint (position, GTID set, age), the lag, the call queue
size, notices waiting in the outbox, dead letters not yet retried, the last
reconcile (time and drift) and, when the instance is not ready, why.

The lag, readiness and last reconcile are known only to the running instance:
they show as unknown when its endpoint is disabled or unreachable (the leader
may run on another host: point --config at a config whose http.listen reaches
it).

Exit status:
  0  healthy: a leader holds the lease and nothing below applies
  1  degraded: the instance is unreachable or not ready, lag over
     health.max_lag, the leader's heartbeat older than ha.lease_ttl, dead
     letters not yet retried, or PostgreSQL could not answer
  2  bad arguments or configuration
  3  no leader: no instance holds the pipeline's lease (stopped, or the
     schema does not exist yet)`

// statusTimeout bounds the whole report: a few statements and two HTTP
// requests.
const statusTimeout = 15 * time.Second

// statusExit carries the exit code after the report was printed.
type statusExit struct {
	code   int
	health string
}

func (e statusExit) Error() string { return "status: " + e.health }
func (e statusExit) ExitCode() int { return e.code }

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	cfgPath := fs.String("config", "config.toml", "configuration file")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	fs.Usage = func() { fmt.Fprintln(stderr, statusUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("status: unexpected argument %q (see 'dialsync status -h')", fs.Arg(0))
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	r, err := gatherStatus(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("status: write json: %w", err)
		}
	} else {
		r.print(stdout)
	}
	switch r.Health {
	case healthHealthy:
		return nil
	case healthNoLeader:
		return statusExit{exitNoLeader, r.Health}
	}
	return statusExit{exitDegraded, r.Health}
}

// gatherStatus builds the report. Only a PostgreSQL that cannot be reached
// at all is an error; what fails after that is a reason in the report.
func gatherStatus(ctx context.Context, cfg *config.Config) (*statusReport, error) {
	r := &statusReport{Pipeline: cfg.Pipeline.Name, Schema: schemaStatus{Name: cfg.Postgres.Schema, Latest: dbschema.LatestVersion()}}
	pcfg, err := clients.PostgresConfig(cfg)
	if err != nil {
		return nil, usageError{Err: err}
	}
	pcfg.MaxConns = 2
	pool, err := clients.Postgres(ctx, cfg, pcfg)
	if err != nil {
		return nil, fmt.Errorf("status: %w: check postgres.dsn and that the server is up", err)
	}
	defer pool.Close()
	schema, pipeline := cfg.Postgres.Schema, cfg.Pipeline.Name

	// The instance first: it answers even when the schema is missing, and
	// a standby tells us a pipeline is configured here.
	r.Instance = probeInstance(ctx, cfg)

	if r.Schema.Version, err = dbschema.Version(ctx, pool, schema); err != nil {
		r.degrade("PostgreSQL: %v", clients.Redact(err, cfg))
		return r.finish(cfg), nil
	}
	switch v := r.Schema.Version; {
	case v == 0:
		r.noLeader, r.Leader = true, &leaderStatus{}
		r.degrade("schema %q does not exist in this database: no dialsync has run against it yet ('dialsync run' creates it)", schema)
		return r.finish(cfg), nil
	case v > r.Schema.Latest:
		r.note("schema %q is at version %d, newer than this binary's %d: upgrade dialsync; the report may be incomplete", schema, v, r.Schema.Latest)
	case v < r.Schema.Latest:
		r.note("schema %q is at version %d; this binary's is %d: the next 'dialsync run' of this version migrates it", schema, v, r.Schema.Latest)
	}

	if ls, err := checkpoint.ReadLease(ctx, pool, schema, pipeline); err != nil {
		r.degrade("PostgreSQL: %v", clients.Redact(err, cfg))
	} else {
		r.Leader = newLeaderStatus(ls, cfg)
	}
	store := checkpoint.NewStore(pool, schema, pipeline)
	if cp, found, err := store.Load(ctx); err != nil {
		r.degrade("PostgreSQL: %v", clients.Redact(err, cfg))
	} else if found {
		age, _, err := store.Age(ctx)
		if err != nil {
			r.degrade("PostgreSQL: %v", clients.Redact(err, cfg))
		}
		r.Checkpoint = &checkpointStatus{
			GTIDSet: cp.Pos.GTIDSet, File: cp.Pos.File, Pos: cp.Pos.Pos, Epoch: cp.Epoch,
			UpdatedAt: cp.UpdatedAt, AgeSeconds: seconds(age),
		}
	}
	if n, err := pgstore.ReadCounts(ctx, pool, schema, pipeline); err != nil {
		r.degrade("PostgreSQL: %v", clients.Redact(err, cfg))
	} else {
		r.Queue = &queueStatus{Queued: n.Queued, Outbox: n.Outbox, DeadLetters: n.DeadLetters}
		if !n.OldestDeadLetter.IsZero() {
			t := n.OldestDeadLetter
			r.Queue.OldestDeadLetter = &t
		}
	}
	return r.finish(cfg), nil
}

// finish judges the report: no leader, degraded (with the reasons) or
// healthy.
func (r *statusReport) finish(cfg *config.Config) *statusReport {
	l := r.Leader
	if l == nil || !l.Held {
		r.noLeader = true
		if l != nil && l.Holder != "" {
			r.degrade("no leader: no instance holds the lease of pipeline %q (the last leader was %s, epoch %d)", r.Pipeline, l.Holder, l.Epoch)
		} else if r.Schema.Version > 0 {
			r.degrade("no leader: no instance has ever held the lease of pipeline %q in schema %q", r.Pipeline, r.Schema.Name)
		}
	} else if l.HeartbeatStale {
		r.degrade("the leader's heartbeat is %s old, over ha.lease_ttl %s: it may be paused or cut off from PostgreSQL (a standby takes over)",
			dur(l.HeartbeatAgeSeconds), cfg.HA.LeaseTTL)
	}
	if q := r.Queue; q != nil && q.DeadLetters > 0 {
		r.degrade("%d dead letter(s) not yet retried: see 'dialsync deadletters list', fix the cause, then 'dialsync deadletters retry --all'", q.DeadLetters)
	}
	in := r.Instance
	switch {
	case in.Addr == "":
		// Disabled by config: nothing to judge, said in the report.
	case in.Error != "":
		if !r.noLeader {
			r.degrade("the instance at %s does not answer (%s): lag, readiness and the last reconcile are unknown", in.Addr, in.Error)
		}
	case in.Role == roleStandby:
		// A standby is ready by definition; its lag is not the leader's.
	case in.Ready != nil && !*in.Ready:
		r.degrade("the instance at %s is not ready: %s", in.Addr, joinOr(in.Failing, "no reason given"))
	}
	if in.LagSeconds != nil && cfg.Health.MaxLag.Duration() > 0 && *in.LagSeconds > cfg.Health.MaxLag.Duration().Seconds() {
		r.degrade("lag %s over health.max_lag %s", dur(*in.LagSeconds), cfg.Health.MaxLag)
	}
	switch {
	case r.noLeader:
		r.Health = healthNoLeader
	case len(r.Reasons) > 0:
		r.Health = healthDegraded
	default:
		r.Health = healthHealthy
	}
	return r
}

func newLeaderStatus(ls checkpoint.LeaseState, cfg *config.Config) *leaderStatus {
	l := &leaderStatus{Held: ls.Held, Holder: ls.Holder, Epoch: ls.Epoch}
	if !ls.AcquiredAt.IsZero() {
		t := ls.AcquiredAt
		l.AcquiredAt = &t
	}
	if ls.HeartbeatAge >= 0 {
		a := seconds(ls.HeartbeatAge)
		l.HeartbeatAgeSeconds = a
		l.HeartbeatStale = ls.Held && ls.HeartbeatAge > cfg.HA.LeaseTTL.Duration()
	}
	return l
}

func seconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }

// dur writes seconds as a Go duration rounded to what a person reads.
func dur(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

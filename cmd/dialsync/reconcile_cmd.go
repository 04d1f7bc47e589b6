package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"dialsync/internal/metrics"
	"dialsync/internal/pipeline"
	"dialsync/internal/progress"
	"dialsync/internal/reconcile"
)

func init() {
	register(command{40, "reconcile", "recompute the call queue from the source and repair drift (--dry-run: report only)", runReconcileCmd})
}

const reconcileUsage = `usage: dialsync reconcile [--config PATH] [--dry-run] [--user ID ...] [--since TIME] [--json]

Recomputes the call queue from the source rows with the queue rule and
applies the difference (entered, left, changed), with the same notices and
cache deletions as streamed changes. Without --user or --since every user is
recomputed.

  --user ID     only this user (repeatable, or a comma-separated list)
  --since TIME  only users whose users, claims or claim_requirements rows have
                updated_at >= TIME (RFC 3339, e.g. 2025-01-31T09:00:00Z, or a
                duration back from now, e.g. 2h or 90m). It cannot see hard
                deletes, a claim moved away from a user, or writes that bypass
                updated_at: a full reconcile covers those.
  --dry-run     print the difference and change nothing
  --json        print the result as one JSON object on stdout

While an instance of this pipeline runs (holds the lease), reconcile refuses:
the running instance reconciles on its schedule ([reconcile] interval). A dry
run only reads, so it may run alongside; it then compares the queue with
source rows that streamed changes are still catching up with, so it may
report transient differences that the running instance is about to apply.
Otherwise reconcile holds the lease while it runs (a 'run' started meanwhile
waits) and applies through the same apply loop as 'run'.

Exit status: 0 done (drift or not: drift is reported), 1 refused or failed,
2 bad arguments or configuration.
`

// reconcileArgs is the parsed command line.
type reconcileArgs struct {
	cfgPath string
	dryRun  bool
	asJSON  bool
	users   []uint64
	since   time.Time // zero: not given
}

func parseReconcileArgs(args []string, stderr io.Writer, now time.Time) (reconcileArgs, error) {
	var a reconcileArgs
	fs := newFlags("reconcile", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, reconcileUsage) }
	fs.StringVar(&a.cfgPath, "config", "config.toml", "configuration file")
	fs.BoolVar(&a.dryRun, "dry-run", false, "print the difference, change nothing")
	fs.BoolVar(&a.asJSON, "json", false, "print the result as JSON")
	// Values are collected raw and validated after parsing, so a bad one
	// gives one clear line rather than the flag package's error plus usage.
	var rawUsers []string
	fs.Func("user", "only this user id (repeatable)", func(v string) error {
		rawUsers = append(rawUsers, v)
		return nil
	})
	since := fs.String("since", "", "only users changed since TIME (RFC 3339 or a duration like 2h)")
	if err := parseFlags(fs, args); err != nil {
		return a, err
	}
	if fs.NArg() > 0 {
		return a, usagef("reconcile: unexpected argument %q (see 'dialsync reconcile -h')", fs.Arg(0))
	}
	for _, raw := range rawUsers {
		for _, v := range strings.Split(raw, ",") {
			v = strings.TrimSpace(v)
			id, err := strconv.ParseUint(v, 10, 63)
			if err != nil || id == 0 {
				return a, usagef("reconcile: --user %q: not a user id (a positive integer)", v)
			}
			a.users = append(a.users, id)
		}
	}
	if *since != "" {
		t, err := parseSince(*since, now)
		if err != nil {
			return a, usagef("reconcile: --since %q: %v", *since, err)
		}
		a.since = t
	}
	if len(a.users) > 0 && !a.since.IsZero() {
		return a, usagef("reconcile: --user and --since cannot be combined")
	}
	return a, nil
}

// parseSince accepts RFC 3339 (with or without fractional seconds) or a
// positive Go duration counted back from now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		if t.After(now) {
			return time.Time{}, errors.New("is in the future")
		}
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return time.Time{}, errors.New("want an RFC 3339 time (2025-01-31T09:00:00Z) or a duration back from now (2h, 90m)")
	}
	if d <= 0 {
		return time.Time{}, errors.New("the duration must be positive")
	}
	return now.Add(-d), nil
}

// reconcileResult is what the command prints (--json: this object).
type reconcileResult struct {
	DryRun     bool      `json:"dry_run"`
	Mode       string    `json:"mode"` // all | users | since
	Since      string    `json:"since,omitempty"`
	RunID      string    `json:"run_id"`
	Users      int64     `json:"users"`
	Queued     int64     `json:"queued"`
	Entered    int64     `json:"entered"`
	Left       int64     `json:"left"`
	Changed    int64     `json:"changed"`
	Drift      int64     `json:"drift"`
	Chunks     int       `json:"chunks"`
	TookMS     float64   `json:"took_ms"`
	RuleMS     float64   `json:"rule_ms"`   // evaluating the queue rule on the lookup server
	WriteMS    float64   `json:"write_ms"`  // writing (dry run: diffing) the queue in PostgreSQL
	NotifyMS   float64   `json:"notify_ms"` // deleting cache keys and publishing notices
	EnteredIDs []uint64  `json:"entered_ids"`
	LeftIDs    []uint64  `json:"left_ids"`
	ChangedIDs []uint64  `json:"changed_ids"`
	StartedAt  time.Time `json:"started_at"`
}

func runReconcileCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseReconcileArgs(args, stderr, time.Now())
	if err != nil {
		return err
	}
	cfg, err := loadConfig(a.cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr, oneShotLog)
	open := pipeline.OpenEnv
	if a.dryRun {
		open = pipeline.OpenEnvReadOnly // reads only: never migrates
	}
	env, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer env.Close()

	holder, epoch, held, err := env.Holder(ctx)
	if err != nil {
		return err
	}
	refuse := func(holder string, epoch int64) error {
		return fmt.Errorf("refusing: instance %s holds the lease for pipeline %s (epoch %d); "+
			"a running instance reconciles on its schedule ([reconcile] interval) — or stop it first",
			holder, cfg.Pipeline.Name, epoch)
	}
	if held && !a.dryRun {
		return refuse(holder, epoch)
	}

	var rec *reconcile.Reconciler
	if a.dryRun {
		// Read-only: the lookup server and the queue table, no lease, no
		// apply loop, no Redis or NATS.
		if err := env.ConnectLookup(ctx); err != nil {
			return err
		}
		rec = &reconcile.Reconciler{
			Loop: reconcile.Direct{}, Lookup: env.Lookup, Queue: env.Queue, Keys: env.Keys,
			Pipeline: cfg.Pipeline.Name, SubjectPrefix: cfg.NATS.SubjectPrefix,
			ChunkSize: cfg.Reconcile.ChunkSize,
		}
	} else {
		lease, err := env.TakeLease(ctx, "reconcile", log, refuse)
		if err != nil {
			return err
		}
		defer lease.Release(context.WithoutCancel(ctx))
		var stop func()
		ctx, rec, stop, err = env.StartLoop(ctx, lease, log,
			"lost the pipeline lease: stopping the reconcile (rerun it: every chunk is idempotent)")
		if err != nil {
			return err
		}
		defer stop()
	}

	res := reconcileResult{DryRun: a.dryRun, Mode: "all"}
	var users []uint64
	switch {
	case len(a.users) > 0:
		res.Mode = "users"
		users = a.users
	case !a.since.IsZero():
		res.Mode = "since"
		res.Since = a.since.UTC().Format(time.RFC3339)
		if users, err = env.Lookup.UsersChangedSince(ctx, a.since); err != nil {
			return err
		}
		log.Info("users changed since", "since", res.Since, "users", len(users))
	}

	var bar *progress.Bar
	opts := reconcile.Options{Trigger: metrics.TriggerManual, DryRun: a.dryRun, CollectIDs: true}
	var sum reconcile.Summary
	if res.Mode == "all" {
		var maxID uint64
		if maxID, err = env.Lookup.MaxUserID(ctx); err != nil {
			return err
		}
		bar = progress.New(stderr, "reconcile", "user ids", int64(maxID))
		opts.Progress = func(last uint64, s reconcile.Summary) {
			if s.Complete {
				// End the line now: the reconciler logs its result next.
				bar.Done(int64(maxID))
				return
			}
			bar.Set(int64(min(last, maxID)))
		}
		sum, err = rec.Run(ctx, opts)
		bar.Finish()
	} else {
		distinct := slices.Compact(slices.Sorted(slices.Values(users)))
		bar = progress.New(stderr, "reconcile", "users", int64(len(distinct)))
		opts.Progress = func(_ uint64, s reconcile.Summary) {
			if s.Complete {
				bar.Done(s.Users)
				return
			}
			bar.Set(s.Users)
		}
		sum, err = rec.RunUsers(ctx, users, opts)
		bar.Finish()
	}

	if err != nil {
		if ctx.Err() != nil && !a.dryRun {
			return fmt.Errorf("reconcile interrupted after %d chunks: the queue is partly reconciled; rerun to finish (every chunk is idempotent): %w", sum.Chunks, context.Cause(ctx))
		}
		return err
	}
	res.RunID, res.Users, res.Queued = sum.RunID, sum.Users, sum.Queued
	res.Entered, res.Left, res.Changed, res.Drift = sum.Entered, sum.Left, sum.Changed, sum.Drift()
	res.Chunks, res.TookMS, res.StartedAt = sum.Chunks, millis(sum.Took), sum.Started.UTC()
	res.RuleMS, res.WriteMS, res.NotifyMS = millis(sum.RuleTime), millis(sum.WriteTime), millis(sum.NotifyTime)
	res.EnteredIDs, res.LeftIDs, res.ChangedIDs = idsOrEmpty(sum.EnteredIDs), idsOrEmpty(sum.LeftIDs), idsOrEmpty(sum.ChangedIDs)
	if a.asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	printReconcile(stdout, res, sum)
	return nil
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func idsOrEmpty(ids []uint64) []uint64 {
	if ids == nil {
		return []uint64{}
	}
	return ids
}

// maxPrintedIDs bounds the ids the text output lists per kind (--json
// lists all).
const maxPrintedIDs = 50

func printReconcile(w io.Writer, r reconcileResult, sum reconcile.Summary) {
	what := "reconciled"
	if r.DryRun {
		what = "dry run (nothing changed)"
	}
	scope := "all users"
	switch r.Mode {
	case "users":
		scope = fmt.Sprintf("%d listed users", r.Users)
	case "since":
		scope = fmt.Sprintf("%d users changed since %s", r.Users, r.Since)
	}
	fmt.Fprintf(w, "%s: %s, %d queued by the rule; drift %d: %d entered, %d left, %d changed; %d chunks in %s (rule %s, queue %s, cache+notices %s)\n",
		what, scope, r.Queued, r.Drift, r.Entered, r.Left, r.Changed, r.Chunks, sum.Took.Round(time.Millisecond),
		sum.RuleTime.Round(time.Millisecond), sum.WriteTime.Round(time.Millisecond), sum.NotifyTime.Round(time.Millisecond))
	for _, k := range []struct {
		name string
		ids  []uint64
	}{{"entered", r.EnteredIDs}, {"left", r.LeftIDs}, {"changed", r.ChangedIDs}} {
		if len(k.ids) == 0 {
			continue
		}
		var b strings.Builder
		for i, id := range k.ids[:min(len(k.ids), maxPrintedIDs)] {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatUint(id, 10))
		}
		if len(k.ids) > maxPrintedIDs {
			fmt.Fprintf(&b, " ... and %d more (--json lists all)", len(k.ids)-maxPrintedIDs)
		}
		fmt.Fprintf(w, "  %-8s %s\n", k.name+":", b.String())
	}
}

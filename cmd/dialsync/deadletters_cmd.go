package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"dialsync/internal/lookup"
	"dialsync/internal/metrics"
	"dialsync/internal/pgstore"
	"dialsync/internal/pipeline"
	"dialsync/internal/reconcile"
)

func init() {
	register(command{45, "deadletters", "list dead-lettered source rows, and retry them (recompute their users)", runDeadLetters})
}

const deadLettersUsage = `usage: dialsync deadletters <subcommand> [--config PATH] [flags]

subcommands:
  list   [--limit N] [--json]                  dead letters, newest first: id, time, table,
                                               primary key, binlog position, error, retried_at
  retry  (--id N [--id M ...] | --all) --reason TEXT
                                               recompute the users each row touches now
                                               (looked up on the source by table and primary
                                               key) through the apply loop, then mark it retried

A dead letter is a source row a table's on_error = "dead_letter" policy set
aside. Fix the row on the source, then retry it: the users it concerns are
recomputed from the rows as they are now (the queue is recomputable), which
deletes their cache keys and publishes notices for any queue change. --all
retries every dead letter not yet retried; a row that no longer exists
touches no one; a dead letter without a primary key recomputes every user.

list only reads and works while 'run' runs. retry refuses while a running
instance holds the pipeline's lease: stop it first.

Exit status: 0 done, 1 refused or failed, 2 bad arguments, configuration
or dead letter ids.`

func runDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, fs, cfgPath, ok, err := subcommand("deadletters", "list or retry", deadLettersUsage, args, stderr)
	if !ok {
		return err
	}
	var (
		limit  int
		asJSON bool
		all    bool
		reason string
		rawIDs []string
	)
	switch sub {
	case "list":
		fs.IntVar(&limit, "limit", 50, "show at most N dead letters, newest first (0: all)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	case "retry":
		// Collected raw and checked after parsing: one clear line per bad id.
		fs.Func("id", "dead letter id (repeatable, or a comma-separated list)", func(v string) error {
			rawIDs = append(rawIDs, v)
			return nil
		})
		fs.BoolVar(&all, "all", false, "every dead letter not yet retried")
		fs.StringVar(&reason, "reason", "", "why (printed with the result; required)")
	default:
		fmt.Fprintln(stderr, deadLettersUsage)
		return usagef("deadletters: unknown subcommand %q (list or retry)", sub)
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("deadletters %s: unexpected argument %q", sub, fs.Arg(0))
	}
	var ids []int64
	if sub == "list" && limit < 0 {
		return usagef("deadletters list: --limit %d: want 0 (all) or more", limit)
	}
	if sub == "retry" {
		var err error
		if ids, err = parseDeadLetterIDs(rawIDs); err != nil {
			return err
		}
		switch {
		case len(ids) == 0 && !all:
			return usagef("deadletters retry: give --id N (repeatable) or --all")
		case len(ids) > 0 && all:
			return usagef("deadletters retry: --id and --all cannot be combined")
		case strings.TrimSpace(reason) == "":
			return usagef("deadletters retry: --reason is required")
		}
	}

	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	// Operator commands print their own output; the log carries warnings
	// from the libraries and the apply loop (the rest at debug level).
	log := newLogger(cfg, stderr, oneShotLog)
	open := pipeline.OpenEnv
	if sub == "list" {
		open = pipeline.OpenEnvReadOnly // reads only: never migrates
	}
	env, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer env.Close()
	if sub == "list" {
		return listDeadLetters(ctx, env, limit, asJSON, stdout)
	}
	return retryDeadLetters(ctx, env, log, ids, all, reason, stdout)
}

func parseDeadLetterIDs(raw []string) ([]int64, error) {
	var ids []int64
	for _, r := range raw {
		for _, v := range strings.Split(r, ",") {
			v = strings.TrimSpace(v)
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				return nil, usagef("deadletters retry: --id %q: not a dead letter id (a positive integer)", v)
			}
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// deadLetterJSON is one dead letter in `list --json`.
type deadLetterJSON struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	Table      string          `json:"table"`
	PrimaryKey string          `json:"primary_key"`
	File       string          `json:"file"`
	Pos        uint32          `json:"pos"`
	GTID       string          `json:"gtid"`
	Error      string          `json:"error"`
	RowImage   json.RawMessage `json:"row_image,omitempty"`
	RetriedAt  *time.Time      `json:"retried_at"`
}

func listDeadLetters(ctx context.Context, env *pipeline.Env, limit int, asJSON bool, stdout io.Writer) error {
	dls, err := env.Queue.DeadLetters(ctx, limit)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]deadLetterJSON, 0, len(dls))
		for _, d := range dls {
			out = append(out, deadLetterJSON{ID: d.ID, At: d.At, Table: d.Table, PrimaryKey: d.PrimaryKey,
				File: d.File, Pos: d.Pos, GTID: d.GTID, Error: d.Error, RowImage: d.RowImage, RetriedAt: d.RetriedAt})
		}
		return json.NewEncoder(stdout).Encode(out)
	}
	if len(dls) == 0 {
		fmt.Fprintf(stdout, "no dead letters in pipeline %s\n", env.Cfg.Pipeline.Name)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAT\tTABLE\tPRIMARY KEY\tPOSITION\tRETRIED AT\tERROR")
	for _, d := range dls {
		retried := "-"
		if d.RetriedAt != nil {
			retried = d.RetriedAt.Format(time.RFC3339)
		}
		pk := d.PrimaryKey
		if pk == "" {
			pk = "?"
		}
		// The error is last: it is the long, free-form column. One line each.
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.At.Format(time.RFC3339), d.Table, pk,
			dlPosition(d), retried, strings.Join(strings.Fields(d.Error), " "))
	}
	return tw.Flush()
}

// dlPosition is file:pos, with the GTID when the source has GTIDs.
func dlPosition(d pgstore.DeadLetter) string {
	s := fmt.Sprintf("%s:%d", d.File, d.Pos)
	if d.GTID != "" {
		s += " gtid " + d.GTID
	}
	return s
}

func retryDeadLetters(ctx context.Context, env *pipeline.Env, log *slog.Logger, ids []int64, all bool, reason string, stdout io.Writer) error {
	cfg := env.Cfg
	// Resolve the ids before anything else: an unknown id is an operator
	// mistake (exit 2) and nothing is done. Dead letters are few: read all.
	known, err := env.Queue.DeadLetters(ctx, 0)
	if err != nil {
		return err
	}
	byID := make(map[int64]pgstore.DeadLetter, len(known))
	for _, d := range known {
		byID[d.ID] = d
	}
	var todo []pgstore.DeadLetter
	if all {
		// DeadLetters is newest first; retry in the order they happened.
		for i := len(known) - 1; i >= 0; i-- {
			if known[i].RetriedAt == nil {
				todo = append(todo, known[i])
			}
		}
		if len(todo) == 0 {
			fmt.Fprintf(stdout, "nothing to retry: pipeline %s has no dead letter that was not retried\n", cfg.Pipeline.Name)
			return nil
		}
	} else {
		seen := map[int64]bool{}
		for _, id := range ids {
			d, ok := byID[id]
			if !ok {
				return usagef("deadletters retry: no dead letter %d in pipeline %s (see 'dialsync deadletters list')", id, cfg.Pipeline.Name)
			}
			if !seen[id] {
				seen[id] = true
				todo = append(todo, d)
			}
		}
	}

	refuse := func(holder string, epoch int64) error {
		return fmt.Errorf("refusing: instance %s holds the lease for pipeline %s (epoch %d); stop it first "+
			"(its scheduled reconcile also recomputes every user)", holder, cfg.Pipeline.Name, epoch)
	}
	holder, epoch, held, err := env.Holder(ctx)
	if err != nil {
		return err
	}
	if held {
		return refuse(holder, epoch)
	}
	lease, err := env.TakeLease(ctx, "deadletters", log, refuse)
	if err != nil {
		return err
	}
	defer lease.Release(context.WithoutCancel(ctx))
	ctx, rec, stop, err := env.StartLoop(ctx, lease, log,
		"lost the pipeline lease: stopping (rerun the retry: recomputing is idempotent)")
	if err != nil {
		return err
	}
	defer stop()
	opts := reconcile.Options{Trigger: metrics.TriggerManual, CollectIDs: true}

	fmt.Fprintf(stdout, "retrying %d dead letters of pipeline %s (reason: %s)\n", len(todo), cfg.Pipeline.Name, reason)
	var full *reconcile.Summary // a full reconcile, run at most once
	for _, d := range todo {
		what := fmt.Sprintf("dead letter %d (%s %s @ %s)", d.ID, d.Table, orUnknown(d.PrimaryKey), dlPosition(d))
		var done string
		pk, perr := strconv.ParseUint(d.PrimaryKey, 10, 64)
		var users []uint64
		var lerr error
		if perr == nil && pk > 0 {
			users, lerr = env.Lookup.RowUsers(ctx, d.Table, pk)
		}
		switch {
		case perr != nil || pk == 0 || errors.Is(lerr, lookup.ErrUntrackedTable):
			// Without a usable key the users it touched are unknown:
			// recompute them all (once for every such dead letter).
			if full == nil {
				s, err := rec.Run(ctx, opts)
				if err != nil {
					return retryFailed(ctx, what, err)
				}
				full = &s
			}
			done = "primary key unknown: recomputed every user: " + driftText(*full)
		case lerr != nil:
			return retryFailed(ctx, what, lerr)
		case len(users) == 0:
			done = "the row (or its claim) no longer exists on the source: no user to recompute"
		default:
			s, err := rec.RunUsers(ctx, users, opts)
			if err != nil {
				return retryFailed(ctx, what, err)
			}
			done = "recomputed users " + joinUints(users) + ": " + driftText(s)
		}
		if err := env.Queue.MarkRetried(ctx, d.ID); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s; marked retried\n", what, done)
	}
	return nil
}

func retryFailed(ctx context.Context, what string, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return fmt.Errorf("retry %s: %w (the dead letters before it are done; rerun for the rest)", what, err)
}

func orUnknown(pk string) string {
	if pk == "" {
		return "?"
	}
	return pk
}

func driftText(s reconcile.Summary) string {
	return fmt.Sprintf("%d entered, %d left, %d changed", s.Entered, s.Left, s.Changed)
}

func joinUints(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, ",")
}

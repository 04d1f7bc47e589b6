package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"dialsync/change"
	"dialsync/checkpoint"
	"dialsync/internal/clients"
	"dialsync/internal/pipeline"
	"dialsync/internal/preflight"
)

func init() {
	register(command{30, "checkpoint", "show, set, reset, history, rollback: inspect and move the binlog checkpoint", runCheckpoint})
}

const checkpointUsage = `usage: dialsync checkpoint <subcommand> [--config PATH] [flags]

subcommands:
  show     [--json]                          the stored position, its age, bytes behind the source,
                                             whether the source still has it, and the lease holder
  set      (--gtid SET | --file F --pos N) --reason TEXT [--force]
                                             move the checkpoint; checked against the source
                                             (listed binlog, transaction boundary) unless --force
  reset    --reason TEXT [--to-head]         without --to-head: remove it, the next run bootstraps;
                                             with --to-head: jump to the source head and reconcile now
  history  [--limit N] [--json]              every change: when, who, why, old and new
  rollback --to ID --reason TEXT [--force]   put the checkpoint where history entry ID put it

Every change is recorded in the history with your OS user and the reason.
Changes refuse while a running instance holds the pipeline's lease: stop it first.

Exit status: 0 done; 1 refused, failed, or a server could not be read (show
still prints what it could read, e.g. the stored checkpoint when the source
is unreachable); 2 bad arguments or configuration.`

func runCheckpoint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, fs, cfgPath, ok, err := subcommand("checkpoint", "show, set, reset, history or rollback", checkpointUsage, args, stderr)
	if !ok {
		return err
	}
	c := &ckptCmd{stdout: stdout, stderr: stderr}
	var run func(context.Context) error
	switch sub {
	case "show":
		fs.BoolVar(&c.json, "json", false, "print JSON")
		run = c.show
	case "set":
		fs.StringVar(&c.gtid, "gtid", "", "GTID set to resume after (the flavor's text form)")
		fs.StringVar(&c.file, "file", "", "binlog file name")
		fs.Func("pos", "offset in --file (a transaction boundary)", func(s string) error { return parseUint32(s, &c.pos, &c.posSet) })
		fs.StringVar(&c.reason, "reason", "", "why (recorded in the history; required)")
		fs.BoolVar(&c.force, "force", false, "skip the checks against the source (not the syntax checks)")
		run = c.set
	case "reset":
		fs.BoolVar(&c.toHead, "to-head", false, "jump to the source's current position and reconcile the whole queue now")
		fs.StringVar(&c.reason, "reason", "", "why (recorded in the history; required)")
		run = c.reset
	case "history":
		fs.IntVar(&c.limit, "limit", 20, "show at most N entries, newest first (0: all)")
		fs.BoolVar(&c.json, "json", false, "print JSON")
		run = c.history
	case "rollback":
		fs.Func("to", "history entry ID to go back to", func(s string) error {
			_, err := fmt.Sscan(s, &c.to)
			if err != nil || c.to <= 0 || fmt.Sprint(c.to) != s {
				return fmt.Errorf("%q is not a history entry id (a positive integer)", s)
			}
			return nil
		})
		fs.StringVar(&c.reason, "reason", "", "why (recorded in the history; required)")
		fs.BoolVar(&c.force, "force", false, "skip the check that the source still has the position")
		run = c.rollback
	default:
		fmt.Fprintln(stderr, checkpointUsage)
		return usagef("checkpoint: unknown subcommand %q", sub)
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("checkpoint %s: unexpected argument %q", sub, fs.Arg(0))
	}
	if err := c.validate(sub); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	// Operator commands print their own output; the log carries warnings
	// (the rest at debug level).
	c.log = newLogger(cfg, stderr, oneShotLog)
	// show and history only read: they never migrate (a PostgreSQL user
	// without CREATE may run them).
	open := pipeline.OpenEnv
	if sub == "show" || sub == "history" {
		open = pipeline.OpenEnvReadOnly
	}
	c.env, err = open(ctx, cfg, c.log)
	if err != nil {
		return err
	}
	defer c.env.Close()
	return run(ctx)
}

func parseUint32(s string, dst *uint32, set *bool) error {
	var v uint64
	if _, err := fmt.Sscan(s, &v); err != nil || fmt.Sprint(v) != s || v > 1<<32-1 {
		return fmt.Errorf("%q is not a binlog offset (0 to 4294967295)", s)
	}
	*dst, *set = uint32(v), true
	return nil
}

// ckptCmd is one checkpoint subcommand's flags and connections.
type ckptCmd struct {
	stdout, stderr io.Writer
	env            *pipeline.Env
	log            *slog.Logger

	json, force, toHead bool
	gtid, file, reason  string
	pos                 uint32
	posSet              bool
	limit               int
	to                  int64
}

// validate checks the flags that need no server (exit 2 on error).
func (c *ckptCmd) validate(sub string) error {
	switch sub {
	case "set", "reset", "rollback":
		if strings.TrimSpace(c.reason) == "" {
			return usagef("checkpoint %s: --reason is required (it is recorded in the history)", sub)
		}
	}
	switch sub {
	case "set":
		byFile := c.file != "" || c.posSet
		switch {
		case c.gtid == "" && !byFile:
			return usagef("checkpoint set: give --gtid SET, or --file F --pos N")
		case c.gtid != "" && byFile:
			return usagef("checkpoint set: give --gtid, or --file with --pos, not both")
		case byFile && (c.file == "" || !c.posSet):
			return usagef("checkpoint set: --file and --pos go together")
		case byFile && !preflight.ValidBinlogName(c.file):
			return usagef("checkpoint set: --file %q is not a binlog file name", c.file)
		case byFile && c.pos < 4:
			return usagef("checkpoint set: --pos %d: a binlog offset is at least 4 (the start of a file)", c.pos)
		}
	case "rollback":
		if c.to == 0 {
			return usagef("checkpoint rollback: --to ID is required (see dialsync checkpoint history)")
		}
	case "history":
		if c.limit < 0 {
			return usagef("checkpoint history: --limit must be >= 0")
		}
	}
	return nil
}

func (c *ckptCmd) store() *checkpoint.Store { return c.env.Ckpt }

func (c *ckptCmd) source() *preflight.Source {
	cc := c.env.Canal
	return &preflight.Source{Addr: cc.Addr, User: cc.User, Password: cc.Password, TLS: cc.TLS, Timeout: 10 * time.Second}
}

// actor is who the history records: the OS user.
func actor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// refusedError is a change refused because an instance runs.
type refusedError struct{ msg string }

func (e refusedError) Error() string { return e.msg }

// exclusive runs fn while holding the pipeline's lease, so no instance can
// start streaming (and saving checkpoints) in the middle of an operator's
// change; it refuses, naming the holder, while a running instance holds it.
// Taking the lease bumps the pipeline's epoch, which is harmless: the next
// leader takes a newer one.
func (c *ckptCmd) exclusive(ctx context.Context, stamp bool, fn func(context.Context) error) error {
	cfg := c.env.Cfg
	refuse := func() error {
		holder, epoch, _, err := c.env.Holder(ctx)
		if err != nil {
			return err
		}
		return refusedError{fmt.Sprintf("refusing: instance %s holds the lease for pipeline %s (epoch %d); stop it first", holder, cfg.Pipeline.Name, epoch)}
	}
	_, _, held, err := c.env.Holder(ctx)
	if err != nil {
		return err
	}
	if held {
		return refuse()
	}
	host, _ := os.Hostname()
	name := fmt.Sprintf("%s/pid-%d (dialsync checkpoint, %s)", host, os.Getpid(), actor())
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	lease, err := checkpoint.AcquireLease(actx, cfg.Postgres.DSN, cfg.Postgres.Schema, cfg.Pipeline.Name, name, c.log)
	cancel()
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return refuse() // an instance started meanwhile
		}
		return err
	}
	defer lease.Release(context.WithoutCancel(ctx))
	// Writes this command makes (the reconcile of reset --to-head) are
	// fenced like run's: they carry this lease's epoch.
	c.env.Ckpt.SetEpoch(lease.Epoch())
	// A position checked against the source (set without --force, reset
	// --to-head) is this server's: store its identity with it, so run
	// recognises it (and not the server a previous checkpoint came from).
	// A position not checked (--force) or taken from the history (rollback:
	// entries carry no identity) keeps the stored identity, as before, so
	// run's identity check still judges it.
	if stamp {
		src := c.source()
		if id, err := src.Identity(ctx); err == nil {
			c.env.Ckpt.SetServerUUID(id)
		}
		src.Close()
	}
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go func() {
		select {
		case <-lease.Lost():
			stop(errors.New("lost the pipeline lease while changing the checkpoint"))
		case <-ctx.Done():
		}
	}()
	if err := fn(ctx); err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return fmt.Errorf("%w (%v)", err, cause)
		}
		return err
	}
	return nil
}

// posJSON is a position in JSON output.
type posJSON struct {
	File    string `json:"file,omitempty"`
	Pos     uint32 `json:"pos,omitempty"`
	GTIDSet string `json:"gtid_set,omitempty"`
}

// toPosJSON is nil for no position (before the first, or after a reset).
func toPosJSON(p change.Position) *posJSON {
	if p.IsZero() {
		return nil
	}
	return &posJSON{File: p.File, Pos: p.Pos, GTIDSet: p.GTIDSet}
}

// --- show ---

type showOutput struct {
	Pipeline   string     `json:"pipeline"`
	Stored     bool       `json:"stored"`
	File       string     `json:"file,omitempty"`
	Pos        uint32     `json:"pos,omitempty"`
	GTIDSet    string     `json:"gtid_set,omitempty"`
	ServerUUID string     `json:"server_uuid,omitempty"`
	Epoch      int64      `json:"epoch"`
	UpdatedAt  *time.Time `json:"updated_at,omitempty"`
	AgeSeconds *float64   `json:"age_seconds,omitempty"`
	Head       *posJSON   `json:"source_head,omitempty"`
	// BytesBehind is nil when it cannot be computed (the source is
	// unreachable, or the checkpoint's file is gone).
	BytesBehind *uint64 `json:"bytes_behind,omitempty"`
	// OnServer is nil when the source could not be asked.
	OnServer       *bool  `json:"on_server,omitempty"`
	OnServerDetail string `json:"on_server_detail,omitempty"`
	OnServerFix    string `json:"on_server_fix,omitempty"`
	// SourceError is why the source could not be asked: unreachable
	// (SourceUnreachable), or a query that failed.
	SourceError       string `json:"source_error,omitempty"`
	SourceUnreachable bool   `json:"source_unreachable,omitempty"`
	LeaseHeld         bool   `json:"lease_held"`
	LeaseHolder       string `json:"lease_holder,omitempty"`
	LeaseEpoch        int64  `json:"lease_epoch"`
}

func (c *ckptCmd) show(ctx context.Context) error {
	cfg := c.env.Cfg
	cp, found, err := c.store().Load(ctx)
	if err != nil {
		return err
	}
	out := showOutput{Pipeline: cfg.Pipeline.Name, Stored: found}
	out.LeaseHolder, out.LeaseEpoch, out.LeaseHeld, err = c.env.Holder(ctx)
	if err != nil {
		return err
	}
	if found {
		out.File, out.Pos, out.GTIDSet, out.ServerUUID, out.Epoch = cp.Pos.File, cp.Pos.Pos, cp.Pos.GTIDSet, cp.ServerUUID, cp.Epoch
		at := cp.UpdatedAt
		age := time.Since(at).Seconds()
		out.UpdatedAt, out.AgeSeconds = &at, &age
	}
	src := c.source()
	defer src.Close()
	if err := c.sourceFacts(ctx, src, cp, found, &out); err != nil {
		out.SourceError = clients.Redact(err, cfg).Error()
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		c.printShow(out)
	}
	// A partial answer exits 1, like explain's (README, "Commands and exit
	// codes"): what could be read was printed.
	if out.SourceError != "" {
		return fmt.Errorf("checkpoint show: incomplete: the source could not be read: %s", out.SourceError)
	}
	return nil
}

func (c *ckptCmd) sourceFacts(ctx context.Context, src *preflight.Source, cp checkpoint.Checkpoint, found bool, out *showOutput) error {
	if err := src.Connect(ctx); err != nil {
		out.SourceUnreachable = true
		return err
	}
	file, pos, ok, err := src.Head(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("binary logging is off on the source")
	}
	out.Head = &posJSON{File: file, Pos: pos}
	if !found {
		return nil
	}
	logs, err := src.BinaryLogs(ctx)
	if err != nil {
		return err
	}
	if cp.Pos.File != "" {
		if n, ok := preflight.BytesBehind(logs, cp.Pos, change.Position{File: file, Pos: pos}); ok {
			out.BytesBehind = &n
		}
	}
	v, err := src.DiagnosePosition(ctx, c.env.Cfg.Source.Flavor, cp)
	if err != nil {
		return err
	}
	ok = v.OK()
	out.OnServer, out.OnServerDetail, out.OnServerFix = &ok, v.Detail, v.Fix
	return nil
}

func (c *ckptCmd) printShow(o showOutput) {
	w := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "pipeline:\t%s\n", o.Pipeline)
	if !o.Stored {
		fmt.Fprintf(w, "checkpoint:\tnone (the next run bootstraps: records the source head, reconciles, then streams)\n")
	} else {
		if o.File == "" {
			fmt.Fprintf(w, "position:\t(none: GTID only)\n")
		} else {
			fmt.Fprintf(w, "position:\t%s:%d\n", o.File, o.Pos)
		}
		fmt.Fprintf(w, "gtid set:\t%s\n", orNone(o.GTIDSet))
		fmt.Fprintf(w, "updated:\t%s (%s ago), epoch %d\n", o.UpdatedAt.Format(time.RFC3339), (time.Duration(*o.AgeSeconds) * time.Second).Round(time.Second), o.Epoch)
	}
	if o.Head != nil {
		fmt.Fprintf(w, "source head:\t%s:%d\n", o.Head.File, o.Head.Pos)
	}
	if o.Stored {
		switch {
		case o.BytesBehind != nil:
			fmt.Fprintf(w, "behind:\t%d bytes\n", *o.BytesBehind)
		case o.SourceError == "":
			fmt.Fprintf(w, "behind:\tunknown\n")
		}
		if o.OnServer != nil {
			if *o.OnServer {
				fmt.Fprintf(w, "on server:\tyes (%s)\n", o.OnServerDetail)
			} else {
				fmt.Fprintf(w, "on server:\tNO: %s\n", o.OnServerDetail)
				fmt.Fprintf(w, "fix:\t%s\n", o.OnServerFix)
			}
		}
	}
	switch {
	case o.SourceUnreachable:
		fmt.Fprintf(w, "source:\tunreachable: %s\n", o.SourceError)
	case o.SourceError != "":
		fmt.Fprintf(w, "source:\ta query failed: %s\n", o.SourceError)
	}
	switch {
	case o.LeaseHeld:
		fmt.Fprintf(w, "lease:\theld by %s (epoch %d)\n", o.LeaseHolder, o.LeaseEpoch)
	case o.LeaseHolder != "":
		fmt.Fprintf(w, "lease:\tfree (last holder %s, epoch %d)\n", o.LeaseHolder, o.LeaseEpoch)
	default:
		fmt.Fprintf(w, "lease:\tfree (never taken)\n")
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

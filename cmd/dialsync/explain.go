package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/clients"
	"dialsync/internal/config"
	"dialsync/internal/dbschema"
	"dialsync/internal/explain"
)

func init() {
	register(command{50, "explain", "why a user is or is not queued, with the inputs", runExplain})
}

const explainUsage = `usage: dialsync explain [--config PATH] [--json] [--notices N] USER_ID

Explains why a user is or is not in the call queue, from the inputs:
  - the user's source facts on the lookup server: exists, soft-deleted,
    enabled, status, phone present (never the number), and each claim with
    its status, soft-deleted flag, requirement count and PENDING requirements
    (count and oldest created_at);
  - the queue rule's verdict; for the built-in rule each clause separately
    and which ones fail (with a custom rules.queue_sql, only that rule's
    answer);
  - the PostgreSQL call_queue row (or none) and whether it agrees with the
    rule: a disagreement is drift, transient while a running dialsync has not
    yet applied the latest change, otherwise repaired by 'dialsync reconcile';
  - which of the user's Redis keys (and the queue-wide keys) exist;
  - the user's latest notices in the stream (subjects <prefix>.user.<id> and
    <prefix>.queue.<id>).
No other row values (names, emails, phone numbers, addresses) are read.
Nothing is written anywhere.

  --json       print the report as one JSON object
  --notices N  how many of the latest notices to show (default 10, 0: skip)

Exit status: 0 explained (also for a user that does not exist: the report
says "not found"), 1 a server could not be reached or read (the parts that
could be read are still printed), 2 bad arguments (e.g. an id that is not an
integer in 1..18446744073709551615) or configuration.
`

// negativeNumber matches what the flag package would take for a flag but an
// operator means as an id: "-5".
var negativeNumber = regexp.MustCompile(`^-[0-9]+$`)

// parseArgs parses flags that may come before or after positional
// arguments ("explain 42 --json" works too), and refuses a negative number
// as an invalid id rather than as an unknown flag.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		for i := 0; i < len(args); i++ {
			a := args[i]
			if a == "--" {
				break
			}
			if negativeNumber.MatchString(a) && !takesValue(fs, args, i) {
				return nil, usagef("invalid user id %q: want a positive decimal integer", a)
			}
		}
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// A "--" ends the flags: everything after it is positional.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// takesValue reports whether args[i] is the value of the flag before it
// ("--notices -1").
func takesValue(fs *flag.FlagSet, args []string, i int) bool {
	if i == 0 {
		return false
	}
	prev := strings.TrimLeft(args[i-1], "-")
	if !strings.HasPrefix(args[i-1], "-") || strings.Contains(prev, "=") {
		return false
	}
	f := fs.Lookup(prev)
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}

func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("explain", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, explainUsage) }
	cfgPath := fs.String("config", "config.toml", "config file")
	asJSON := fs.Bool("json", false, "print JSON")
	latest := fs.Int("notices", 10, "latest notices to show")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("explain takes exactly one USER_ID (got none); see 'dialsync explain -h'")
	}
	if len(pos) > 1 {
		return usagef("explain: unexpected argument %q: explain takes exactly one USER_ID; see 'dialsync explain -h'", pos[1])
	}
	user, err := explain.ParseUserID(pos[0])
	if err != nil {
		return usageError{Err: err}
	}
	if *latest < 0 {
		return usagef("--notices %d: must be 0 or more", *latest)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	// Warnings only: the report is the output; connection chatter would
	// bury it.
	log := newLogger(cfg, stderr, oneShotLog)

	keys, err := clients.Keys(cfg)
	if err != nil {
		return err
	}
	lk := cfg.EffectiveLookup()
	srcTLS, err := clients.SourceTLS(cfg, lk.Addr, log)
	if err != nil {
		return err
	}

	connectCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// The source is required: without it there is nothing to explain.
	src, err := explain.OpenSource(connectCtx, explain.SourceConfig{
		Addr: lk.Addr, User: lk.User, Password: lk.Password, Database: lk.Database, TLS: srcTLS})
	if err != nil {
		return fmt.Errorf("explain: %w", clients.Redact(err, cfg))
	}
	defer src.Close()
	rule, err := clients.Lookup(connectCtx, cfg, 1, log)
	if err != nil {
		return fmt.Errorf("explain: %w", clients.Redact(err, cfg))
	}
	defer rule.Close()

	d := explain.Deps{
		Facts: src, Rule: rule, CustomRule: strings.TrimSpace(cfg.Rules.QueueSQL) != "",
		UserKeys: keys.AppendUser(nil, user), QueueKeys: keys.Queue(), LatestNotices: *latest,
	}
	// The sinks are optional: a failure is shown in its section, unless a
	// signal cut the connect short (then its error, naming the server it
	// waited for, is the answer).
	stopped := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("explain: %w", clients.Redact(err, cfg))
		}
		return nil
	}
	if pool, err := inspectPostgres(connectCtx, cfg); err != nil {
		if err := stopped(err); err != nil {
			return err
		}
		d.Queue = explain.Failed{Err: err}
	} else {
		defer pool.Close()
		d.Queue = explain.PGQueue{Pool: pool, Schema: cfg.Postgres.Schema}
	}
	if rdb, err := clients.Redis(connectCtx, cfg, log); err != nil {
		if err := stopped(err); err != nil {
			return err
		}
		d.Keys = explain.Failed{Err: err}
	} else {
		defer rdb.Close()
		d.Keys = explain.RedisKeys{Client: rdb}
	}
	if *latest > 0 {
		if nc, err := clients.NATS(connectCtx, cfg, "dialsync-explain", log); err != nil {
			if err := stopped(err); err != nil {
				return err
			}
			d.Notices = explain.Failed{Err: err}
		} else {
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				d.Notices = explain.Failed{Err: err}
			} else {
				d.Notices = explain.StreamNotices{JS: js, Stream: cfg.NATS.Stream, SubjectPrefix: cfg.NATS.SubjectPrefix}
			}
		}
	}

	readCtx, cancelRead := context.WithTimeout(ctx, 30*time.Second)
	defer cancelRead()
	report, err := explain.Build(readCtx, d, user)
	if err != nil {
		return clients.Redact(err, cfg)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
	} else {
		err = explain.WriteText(stdout, report)
	}
	if err != nil {
		return fmt.Errorf("explain: write report: %w", err)
	}
	if inc := report.Incomplete(); inc != "" {
		return clients.Redact(fmt.Errorf("explain: incomplete report: %s", inc), cfg)
	}
	return nil
}

// inspectPostgres connects a one-connection pool for reading; it does not
// migrate (read-only commands never change the schema).
func inspectPostgres(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pcfg, err := clients.PostgresConfig(cfg)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = 1
	pool, err := clients.Postgres(ctx, cfg, pcfg)
	if err != nil {
		return nil, err
	}
	// A schema that is missing or at another version is said as such,
	// not as the failed queries it would cause.
	if err := dbschema.CheckVersion(ctx, pool, cfg.Postgres.Schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

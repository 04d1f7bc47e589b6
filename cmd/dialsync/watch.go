package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/clients"
	"dialsync/internal/explain"
	"dialsync/internal/progress"
	"dialsync/notice"
	"dialsync/notice/subscriber"
)

func init() {
	register(command{60, "watch", "print notices live (all, one user's, or one type)", runWatch})
}

const watchUsage = `usage: dialsync watch [--config PATH] [--user ID] [--type TYPE] [--since DURATION] [--format F]

Prints the notices of the configured stream as they are published, until
interrupted (Ctrl-C exits 0).

  --user ID         only this user's notices (user.changed and queue.*, and
                    dead letters naming the user)
  --type TYPE       only one type: user.changed, queue.entered, queue.left,
                    queue.updated, reconcile.completed, deadletter (the
                    "dialsync." prefix is optional)
  --since DURATION  first replay the notices stored in the last DURATION
                    (e.g. 10m, 1h), then continue live
  --format F        auto (default: text on a terminal, JSON lines otherwise),
                    text, or json (one CloudEvents notice per line, as
                    published)

Text lines show the commit time, type, user, tables, operations, changed
columns and queue fields; never row values.

Exit status: 0 interrupted, 1 the stream could not be read, 2 bad arguments
or configuration.
`

// watchTypes are the notice types watch can filter on.
var watchTypes = []string{
	notice.TypeUserChanged, notice.TypeQueueEntered, notice.TypeQueueLeft, notice.TypeQueueUpdated,
	notice.TypeReconcileCompleted, notice.TypeDeadLetter,
}

// watchFilter is what to show: a subject filter for the server, and the
// checks the subject cannot express (the queue kinds share a subject; dead
// letters carry their users in the data).
type watchFilter struct {
	subject string
	typ     string // "" any
	user    uint64 // 0 any
}

// newWatchFilter picks the narrowest single subject (nats-server 2.9 takes
// one filter subject per consumer) for the user and type.
func newWatchFilter(prefix, userArg, typeArg string) (watchFilter, error) {
	f := watchFilter{}
	if userArg != "" {
		u, err := explain.ParseUserID(userArg)
		if err != nil {
			return f, usagef("--user: %v", err)
		}
		f.user = u
	}
	if typeArg != "" {
		t := typeArg
		if !strings.HasPrefix(t, "dialsync.") {
			t = "dialsync." + t
		}
		if !slices.Contains(watchTypes, t) {
			names := make([]string, len(watchTypes))
			for i, w := range watchTypes {
				names[i] = strings.TrimPrefix(w, "dialsync.")
			}
			return f, usagef("--type %q: unknown notice type; want one of %s", typeArg, strings.Join(names, ", "))
		}
		f.typ = t
	}
	who := "*"
	if f.user != 0 {
		who = strconv.FormatUint(f.user, 10)
	}
	switch {
	case f.typ == notice.TypeUserChanged:
		f.subject = prefix + ".user." + who
	case f.typ == notice.TypeQueueEntered || f.typ == notice.TypeQueueLeft || f.typ == notice.TypeQueueUpdated:
		f.subject = prefix + ".queue." + who
	case f.typ == notice.TypeReconcileCompleted:
		if f.user != 0 {
			return f, usagef("--type reconcile.completed: reconcile summaries are not per user; drop --user")
		}
		f.subject = prefix + ".reconcile"
	case f.typ == notice.TypeDeadLetter:
		f.subject = prefix + ".deadletter"
	case f.user != 0:
		// user.changed and queue.*; dead letters live on another subject
		// and would need a second consumer: --type deadletter --user shows them.
		f.subject = explain.UserFilter(prefix, f.user)
	default:
		f.subject = prefix + ".>"
	}
	return f, nil
}

// match applies what the subject filter cannot.
func (f watchFilter) match(ev notice.Event) bool {
	if f.typ != "" && ev.Type != f.typ {
		return false
	}
	if f.user == 0 {
		return true
	}
	if ev.Type == notice.TypeDeadLetter {
		d, err := ev.DeadLetter()
		return err == nil && slices.Contains(d.UserIDs, f.user)
	}
	return ev.Subject == strconv.FormatUint(f.user, 10)
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("watch", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, watchUsage) }
	cfgPath := fs.String("config", "config.toml", "config file")
	userArg := fs.String("user", "", "only this user's notices")
	typeArg := fs.String("type", "", "only this notice type")
	sinceArg := fs.String("since", "", "replay notices stored in the last DURATION first")
	format := fs.String("format", "auto", "auto, text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("watch takes no arguments (got %q); see 'dialsync watch -h'", fs.Args())
	}
	var since time.Duration
	if *sinceArg != "" {
		d, err := time.ParseDuration(*sinceArg)
		if err != nil || d <= 0 {
			return usagef("--since %q: want a positive duration such as 30s, 10m or 2h", *sinceArg)
		}
		since = d
	}
	text := false
	switch *format {
	case "auto":
		text = progress.IsTerminal(stdout)
	case "text":
		text = true
	case "json":
	default:
		return usagef("--format %q: want auto, text or json", *format)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	filter, err := newWatchFilter(cfg.NATS.SubjectPrefix, *userArg, *typeArg)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr, oneShotLog)

	nc, err := clients.NATS(ctx, cfg, "dialsync-watch", log)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("watch: jetstream: %w", err)
	}
	opt := subscriber.Options{Stream: cfg.NATS.Stream, Subject: filter.subject, Logger: log}
	if since > 0 {
		opt.StartTime = time.Now().Add(-since)
	}
	if text {
		fmt.Fprintf(stderr, "watching %s on stream %s (Ctrl-C to stop)\n", filter.subject, cfg.NATS.Stream)
	}
	err = subscriber.Subscribe(ctx, js, opt, func(_ context.Context, ev notice.Event) error {
		if !filter.match(ev) {
			return nil
		}
		var line []byte
		if text {
			line = []byte(explain.NoticeLine(explain.Summarize(ev)))
		} else {
			var err error
			if line, err = json.Marshal(ev); err != nil {
				return fmt.Errorf("encode notice %s: %w", ev.ID, err)
			}
		}
		// One write per line, so a reader never sees half a notice.
		_, err := stdout.Write(append(line, '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return nil
}

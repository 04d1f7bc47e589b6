// Package reconcile recomputes the whole call queue from the source rows, in
// chunks of users (keyset pagination on users.id), and applies the
// difference. Every chunk runs as an apply loop job (Loop.Do: on the
// goroutine running the loop, with its stages idle), so its writes are
// ordered with streamed changes: a chunk read before a
// streamed change is written before that change's recomputation, never after
// it (docs/design.md, invariant 4). Memory is bounded by the chunk size.
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"dialsync/handlers"
	"dialsync/internal/apply"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// Lookup evaluates the queue rule over a range or a list of users.
type Lookup interface {
	QueueRowsRange(ctx context.Context, afterID uint64, limit int) (rows []queue.Row, lastID uint64, done bool, err error)
	QueueRows(ctx context.Context, userIDs []uint64) ([]queue.Row, error)
}

// Queue writes (or diffs) a range of the call queue.
type Queue interface {
	ApplyRange(ctx context.Context, fromUser, toUser uint64, rows []queue.Row,
		build func([]queue.Change) []notice.Message) ([]notice.Message, error)
	Apply(ctx context.Context, users []uint64, rows []queue.Row, mark *queue.Mark,
		build func([]queue.Change) []notice.Message) ([]notice.Message, error)
	Diff(ctx context.Context, rows []queue.Row, fromUser, toUser uint64) ([]queue.Change, error)
	ClearOutbox(ctx context.Context) error
}

// Loop is the apply loop (ordering and retries).
type Loop interface {
	Do(ctx context.Context, fn func(context.Context) error) error
	Retry(ctx context.Context, stage apply.Stage, op string, fn func() error) error
}

// Reconciler runs reconciles. All fields are required except Log.
type Reconciler struct {
	Loop          Loop
	Lookup        Lookup
	Queue         Queue
	Cache         apply.Cache
	Publisher     apply.Publisher
	Keys          *handlers.Keys
	Pipeline      string
	SubjectPrefix string
	ChunkSize     int // default 5000
	Log           *slog.Logger
}

// Options choose what a run does.
type Options struct {
	Trigger string // bootstrap | schedule | manual | purged: for the summary and metrics
	DryRun  bool   // compute and report the difference; change nothing
	// CollectIDs fills Summary.EnteredIDs/LeftIDs/ChangedIDs with every
	// corrected (or, dry, differing) user id; a dry run always collects.
	// Memory grows with the drift, so bootstrap leaves it off.
	CollectIDs bool
	// Progress, when set, is called after each chunk with the highest user
	// id done so far (RunUsers: the last user of the chunk; Summary.Users
	// counts the users done).
	Progress func(lastUserID uint64, s Summary)
	// SampleSize bounds Summary.Sample (user ids of changes); default 20.
	SampleSize int
}

// Summary is what a run found (and, unless dry, corrected).
type Summary struct {
	RunID                  string
	Users                  int64 // users evaluated (Run: an upper bound, ids in the chunks)
	Queued                 int64 // queue rows computed by the rule
	Entered, Left, Changed int64
	Sample                 []queue.Change // up to SampleSize changes, for logs and --dry-run
	Chunks                 int
	Started                time.Time
	Took                   time.Duration
	// Where the time went: evaluating the rule, writing (dry: diffing) the
	// queue, and deleting cache keys plus publishing notices.
	RuleTime, WriteTime, NotifyTime time.Duration
	// Complete is set once every chunk is done (before the last Progress
	// call); a run cut short by an error returns it false.
	Complete bool
	// Every differing user id, sorted within each chunk (chunks are in id
	// order), when Options.CollectIDs or DryRun.
	EnteredIDs, LeftIDs, ChangedIDs []uint64
	collectIDs                      bool
}

// Drift is the number of corrections.
func (s Summary) Drift() int64 { return s.Entered + s.Left + s.Changed }

// run is one reconcile in progress.
type run struct {
	r       *Reconciler
	o       Options
	s       Summary
	notices handlers.Notices
	txnID   string
	changed bool // a chunk changed the queue: the queue-wide keys are stale
}

func (r *Reconciler) start(o Options) *run {
	if o.SampleSize <= 0 {
		o.SampleSize = 20
	}
	x := &run{r: r, o: o, notices: handlers.NewNotices(r.Pipeline, r.SubjectPrefix)}
	x.s = Summary{Started: time.Now(), collectIDs: o.DryRun || o.CollectIDs}
	x.s.RunID = strconv.FormatInt(x.s.Started.UnixNano(), 36)
	x.txnID = "reconcile-" + x.s.RunID
	return x
}

func (r *Reconciler) chunkSize() int {
	if r.ChunkSize <= 0 {
		return 5000
	}
	return r.ChunkSize
}

// Run reconciles every user: keyset chunks over users.id, each evaluated
// and applied (or diffed) in one Loop.Do job.
func (r *Reconciler) Run(ctx context.Context, o Options) (Summary, error) {
	x := r.start(o)
	chunk := r.chunkSize()
	after := uint64(0)
	for {
		var done bool
		err := r.Loop.Do(ctx, func(ctx context.Context) error {
			var rows []queue.Row
			var last uint64
			t0 := time.Now()
			if err := r.Loop.Retry(ctx, apply.StageLookup, "reconcile: evaluate rule", func() (err error) {
				rows, last, done, err = r.Lookup.QueueRowsRange(ctx, after, chunk)
				return err
			}); err != nil {
				return err
			}
			x.s.RuleTime += time.Since(t0)
			to := last
			if done {
				// The last chunk also owns every id above the highest user,
				// so rows of users that no longer exist are removed.
				to = math.MaxInt64
			}
			x.s.Users += int64(countRange(after, last, done))
			if err := x.chunk(ctx, rows, after, to, nil); err != nil {
				return err
			}
			after = last
			return nil
		})
		if err != nil {
			return x.s, fmt.Errorf("reconcile after user %d: %w", after, err)
		}
		if done {
			x.s.Complete = true
		}
		if o.Progress != nil {
			o.Progress(after, x.s)
		}
		if done {
			break
		}
	}
	return x.finish(ctx)
}

// RunUsers reconciles only the given users (duplicates ignored; 0 is not a
// user id and is rejected): the rule is evaluated for ChunkSize users at a
// time and the queue rows of exactly those users are made equal to it (a
// listed user the rule does not queue leaves; rows of other users are not
// touched). Operators use it to repair known users without a full pass.
func (r *Reconciler) RunUsers(ctx context.Context, users []uint64, o Options) (Summary, error) {
	ids := slices.Clone(users)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > 0 && ids[0] == 0 {
		return Summary{}, fmt.Errorf("reconcile users: 0 is not a user id")
	}
	x := r.start(o)
	chunk := r.chunkSize()
	for len(ids) > 0 {
		batch := ids[:min(chunk, len(ids))]
		ids = ids[len(batch):]
		err := r.Loop.Do(ctx, func(ctx context.Context) error {
			var rows []queue.Row
			t0 := time.Now()
			if err := r.Loop.Retry(ctx, apply.StageLookup, "reconcile: evaluate rule", func() (err error) {
				rows, err = r.Lookup.QueueRows(ctx, batch)
				return err
			}); err != nil {
				return err
			}
			x.s.RuleTime += time.Since(t0)
			x.s.Users += int64(len(batch))
			return x.chunk(ctx, rows, batch[0]-1, batch[len(batch)-1], batch)
		})
		if err != nil {
			return x.s, fmt.Errorf("reconcile users %d..%d: %w", batch[0], batch[len(batch)-1], err)
		}
		if len(ids) == 0 {
			x.s.Complete = true
		}
		if o.Progress != nil {
			o.Progress(batch[len(batch)-1], x.s)
		}
	}
	x.s.Complete = true
	return x.finish(ctx)
}

// chunk diffs or applies one chunk on the loop goroutine: rows are the
// rule's rows for the users in (from, to], or, when users is set, for
// exactly those users (sorted, all in (from, to]).
func (x *run) chunk(ctx context.Context, rows []queue.Row, from, to uint64, users []uint64) error {
	r := x.r
	x.s.Queued += int64(len(rows))
	x.s.Chunks++
	var changes []queue.Change
	t0 := time.Now()
	if x.o.DryRun {
		if err := r.Loop.Retry(ctx, apply.StagePostgres, "reconcile: diff", func() (err error) {
			changes, err = r.Queue.Diff(ctx, rows, from, to)
			return err
		}); err != nil {
			return err
		}
		if users != nil {
			// Diff covers the whole id range; users between the listed ones
			// are not part of this run (their rows would read as Left).
			changes = slices.DeleteFunc(changes, func(ch queue.Change) bool {
				_, listed := slices.BinarySearch(users, ch.Row.UserID)
				return !listed
			})
		}
		x.s.add(changes, x.o.SampleSize)
		x.s.WriteTime += time.Since(t0)
		return nil
	}
	var msgs []notice.Message
	origin := handlers.Origin{Txn: x.txnID, At: x.s.Started}
	build := x.notices.QueueBuilder(func(uint64) handlers.Origin { return origin }, &changes)
	if err := r.Loop.Retry(ctx, apply.StagePostgres, "reconcile: write queue", func() (err error) {
		if users != nil {
			msgs, err = r.Queue.Apply(ctx, users, rows, nil, build)
		} else {
			msgs, err = r.Queue.ApplyRange(ctx, from, to, rows, build)
		}
		return err
	}); err != nil {
		return err
	}
	x.s.add(changes, x.o.SampleSize)
	x.s.WriteTime += time.Since(t0)
	if len(changes) == 0 {
		return nil
	}
	x.changed = true
	t1 := time.Now()
	defer func() { x.s.NotifyTime += time.Since(t1) }()
	keys := make([]string, 0, 2*len(changes))
	for _, ch := range changes {
		keys = r.Keys.AppendUser(keys, ch.Row.UserID)
	}
	if err := r.Loop.Retry(ctx, apply.StageRedis, "reconcile: delete cache keys", func() error { return r.Cache.Del(ctx, keys) }); err != nil {
		return err
	}
	if err := r.Loop.Retry(ctx, apply.StageNATS, "reconcile: publish", func() error { return r.Publisher.Publish(ctx, msgs) }); err != nil {
		return err
	}
	return r.Loop.Retry(ctx, apply.StagePostgres, "reconcile: clear outbox", func() error { return r.Queue.ClearOutbox(ctx) })
}

// finish refreshes the queue-wide keys, publishes the summary notice and
// logs the result (a dry run only times itself).
func (x *run) finish(ctx context.Context) (Summary, error) {
	r, s, o := x.r, &x.s, x.o
	s.Took = time.Since(s.Started)
	if o.DryRun {
		return *s, nil
	}
	// Queue refresh: after a reconcile that changed anything, the lists
	// built from the whole queue are stale.
	if x.changed {
		if err := r.Loop.Do(ctx, func(ctx context.Context) error {
			return r.Loop.Retry(ctx, apply.StageRedis, "reconcile: delete queue keys", func() error { return r.Cache.Del(ctx, r.Keys.Queue()) })
		}); err != nil {
			return *s, err
		}
	}
	msg, err := x.notices.ReconcileCompleted(time.Now(), notice.ReconcileCompleted{
		RunID: s.RunID, Reason: o.Trigger, StartedAt: s.Started.UTC(), FinishedAt: time.Now().UTC(),
		Users: s.Users, Queued: s.Queued, Entered: s.Entered, Left: s.Left, Updated: s.Changed,
		Source: notice.SourcePosition{Txn: x.txnID},
	})
	if err != nil {
		return *s, fmt.Errorf("reconcile: encode summary: %w", err)
	}
	if err := r.Loop.Do(ctx, func(ctx context.Context) error {
		return r.Loop.Retry(ctx, apply.StageNATS, "reconcile: publish summary", func() error { return r.Publisher.Publish(ctx, []notice.Message{msg}) })
	}); err != nil {
		return *s, err
	}
	s.Took = time.Since(s.Started)
	if r.Log != nil {
		lvl := slog.LevelInfo
		if s.Drift() > 0 && o.Trigger != "bootstrap" {
			// Drift means a bug or an outside writer to the queue table.
			lvl = slog.LevelWarn
		}
		r.Log.Log(ctx, lvl, "reconcile done", "trigger", o.Trigger, "users", s.Users, "queued", s.Queued,
			"entered", s.Entered, "left", s.Left, "changed", s.Changed, "sample_user_ids", sampleIDs(s.Sample),
			"took", s.Took.Round(time.Millisecond), "rule_took", s.RuleTime.Round(time.Millisecond),
			"write_took", s.WriteTime.Round(time.Millisecond), "notify_took", s.NotifyTime.Round(time.Millisecond))
	}
	return *s, nil
}

func (s *Summary) add(chs []queue.Change, sample int) {
	for _, ch := range chs {
		switch ch.Kind {
		case queue.Entered:
			s.Entered++
			if s.collectIDs {
				s.EnteredIDs = append(s.EnteredIDs, ch.Row.UserID)
			}
		case queue.Left:
			s.Left++
			if s.collectIDs {
				s.LeftIDs = append(s.LeftIDs, ch.Row.UserID)
			}
		case queue.Updated:
			s.Changed++
			if s.collectIDs {
				s.ChangedIDs = append(s.ChangedIDs, ch.Row.UserID)
			}
		}
		if len(s.Sample) < sample {
			s.Sample = append(s.Sample, ch)
		}
	}
}

func sampleIDs(chs []queue.Change) []uint64 {
	ids := make([]uint64, len(chs))
	for i, ch := range chs {
		ids[i] = ch.Row.UserID
	}
	return ids
}

// countRange is an upper bound of the users in (after, last].
func countRange(after, last uint64, done bool) uint64 {
	if last <= after {
		return 0
	}
	return last - after
}

// Direct is a Loop for read-only runs (dry runs): jobs run on the caller's
// goroutine. A dry run must not start an apply loop, whose first act is to
// publish notices a previous run left in the outbox (a write, and one that
// would race a running instance). Retry gives up after Attempts tries so
// a command line fails fast instead of waiting forever for a server.
type Direct struct {
	Attempts int           // tries per operation; zero means 3
	Backoff  time.Duration // wait between tries; zero means 200ms
}

// Do runs fn now.
func (d Direct) Do(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) }

// Retry runs fn up to Attempts times.
func (d Direct) Retry(ctx context.Context, _ apply.Stage, op string, fn func() error) error {
	attempts, backoff := d.Attempts, d.Backoff
	if attempts <= 0 {
		attempts = 3
	}
	if backoff <= 0 {
		backoff = 200 * time.Millisecond
	}
	var err error
	for i := range attempts {
		if err = fn(); err == nil {
			return nil
		}
		if i == attempts-1 {
			break
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Package reconcile recomputes the whole call queue from the source rows, in
// chunks of users (keyset pagination on users.id), and applies the
// difference. Every chunk runs on the apply loop's goroutine (Loop.Do), so
// its writes are ordered with streamed changes: a chunk read before a
// streamed change is written before that change's recomputation, never after
// it (BRIEF invariant 4). Memory is bounded by the chunk size.
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"dialsync/canal"
	"dialsync/handlers"
	"dialsync/internal/apply"
	"dialsync/internal/queue"
	"dialsync/notice"
)

// Lookup evaluates the queue rule over a range of users.
type Lookup interface {
	QueueRowsRange(ctx context.Context, afterID uint64, limit int) (rows []queue.Row, lastID uint64, done bool, err error)
}

// Queue writes (or diffs) a range of the call queue.
type Queue interface {
	ApplyRange(ctx context.Context, fromUser, toUser uint64, rows []queue.Row,
		build func([]queue.Change) []notice.Message) ([]notice.Message, error)
	Diff(ctx context.Context, rows []queue.Row, fromUser, toUser uint64) ([]queue.Change, error)
	ClearOutbox(ctx context.Context) error
}

// Loop is the apply loop (ordering and retries).
type Loop interface {
	Do(ctx context.Context, fn func(context.Context) error) error
	Retry(ctx context.Context, op string, fn func() error) error
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
	// Progress, when set, is called after each chunk with the highest user
	// id done so far.
	Progress func(lastUserID uint64, s Summary)
	// SampleSize bounds Summary.Sample (user ids of changes); default 20.
	SampleSize int
}

// Summary is what a run found (and, unless dry, corrected).
type Summary struct {
	RunID                  string
	Users                  int64 // users evaluated (upper bound: ids in the chunks)
	Queued                 int64 // queue rows computed by the rule
	Entered, Left, Changed int64
	Sample                 []queue.Change // up to SampleSize changes, for logs and --dry-run
	Chunks                 int
	Started                time.Time
	Took                   time.Duration
	EnteredIDs, LeftIDs    []uint64 // dry run: every id (bounded by the caller's data)
	ChangedIDs             []uint64
	collectIDs             bool
}

// Drift is the number of corrections.
func (s Summary) Drift() int64 { return s.Entered + s.Left + s.Changed }

// Run reconciles every user.
func (r *Reconciler) Run(ctx context.Context, o Options) (Summary, error) {
	chunk := r.ChunkSize
	if chunk <= 0 {
		chunk = 5000
	}
	if o.SampleSize <= 0 {
		o.SampleSize = 20
	}
	s := Summary{Started: time.Now(), collectIDs: o.DryRun}
	s.RunID = strconv.FormatInt(s.Started.UnixNano(), 36)
	src := "dialsync/" + r.Pipeline
	txnID := "reconcile-" + s.RunID
	after := uint64(0)
	anyChange := false
	for {
		var done bool
		err := r.Loop.Do(ctx, func(ctx context.Context) error {
			var rows []queue.Row
			var last uint64
			if err := r.Loop.Retry(ctx, "reconcile: evaluate rule", func() (err error) {
				rows, last, done, err = r.Lookup.QueueRowsRange(ctx, after, chunk)
				return err
			}); err != nil {
				return err
			}
			to := last
			if done {
				// The last chunk also owns every id above the highest user,
				// so rows of users that no longer exist are removed.
				to = math.MaxInt64
			}
			s.Users += int64(countRange(after, last, done))
			s.Queued += int64(len(rows))
			s.Chunks++
			var changes []queue.Change
			if o.DryRun {
				if err := r.Loop.Retry(ctx, "reconcile: diff", func() (err error) {
					changes, err = r.Queue.Diff(ctx, rows, after, to)
					return err
				}); err != nil {
					return err
				}
				s.add(changes, o.SampleSize)
				after = last
				return nil
			}
			var msgs []notice.Message
			build := func(chs []queue.Change) []notice.Message {
				changes = chs
				out := make([]notice.Message, 0, len(chs))
				for _, ch := range chs {
					out = append(out, apply.QueueNotice(src, r.SubjectPrefix, txnID, "", canal.Position{}, s.Started, ch))
				}
				return out
			}
			if err := r.Loop.Retry(ctx, "reconcile: write queue", func() (err error) {
				msgs, err = r.Queue.ApplyRange(ctx, after, to, rows, build)
				return err
			}); err != nil {
				return err
			}
			s.add(changes, o.SampleSize)
			if len(changes) > 0 {
				anyChange = true
				keys := make([]string, 0, 2*len(changes))
				for _, ch := range changes {
					keys = r.Keys.AppendUser(keys, ch.Row.UserID)
				}
				if err := r.Loop.Retry(ctx, "reconcile: delete cache keys", func() error { return r.Cache.Del(ctx, keys) }); err != nil {
					return err
				}
				if err := r.Loop.Retry(ctx, "reconcile: publish", func() error { return r.Publisher.Publish(ctx, msgs) }); err != nil {
					return err
				}
				if err := r.Loop.Retry(ctx, "reconcile: clear outbox", func() error { return r.Queue.ClearOutbox(ctx) }); err != nil {
					return err
				}
			}
			after = last
			return nil
		})
		if err != nil {
			return s, fmt.Errorf("reconcile after user %d: %w", after, err)
		}
		if o.Progress != nil {
			o.Progress(after, s)
		}
		if done {
			break
		}
	}
	s.Took = time.Since(s.Started)
	if o.DryRun {
		return s, nil
	}
	// Queue refresh: after a reconcile that changed anything, the lists
	// built from the whole queue are stale.
	if anyChange {
		if err := r.Loop.Do(ctx, func(ctx context.Context) error {
			return r.Loop.Retry(ctx, "reconcile: delete queue keys", func() error { return r.Cache.Del(ctx, r.Keys.Queue()) })
		}); err != nil {
			return s, err
		}
	}
	msg, err := notice.NewReconcileCompleted(src, r.SubjectPrefix, time.Now(), notice.ReconcileCompleted{
		RunID: s.RunID, Reason: o.Trigger, StartedAt: s.Started.UTC(), FinishedAt: time.Now().UTC(),
		Users: s.Users, Queued: s.Queued, Entered: s.Entered, Left: s.Left, Updated: s.Changed,
		Source: notice.SourcePosition{Txn: txnID},
	})
	if err != nil {
		return s, fmt.Errorf("reconcile: encode summary: %w", err)
	}
	if err := r.Loop.Do(ctx, func(ctx context.Context) error {
		return r.Loop.Retry(ctx, "reconcile: publish summary", func() error { return r.Publisher.Publish(ctx, []notice.Message{msg}) })
	}); err != nil {
		return s, err
	}
	if r.Log != nil {
		lvl := slog.LevelInfo
		if s.Drift() > 0 && o.Trigger != "bootstrap" {
			// Drift means a bug or an outside writer to the queue table.
			lvl = slog.LevelWarn
		}
		r.Log.Log(ctx, lvl, "reconcile done", "trigger", o.Trigger, "users", s.Users, "queued", s.Queued,
			"entered", s.Entered, "left", s.Left, "changed", s.Changed, "sample_user_ids", sampleIDs(s.Sample),
			"took", s.Took.Round(time.Millisecond))
	}
	return s, nil
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

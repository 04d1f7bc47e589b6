package explain

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/pgstore"
	"dialsync/notice"
)

// PGQueue reads call_queue rows from the dialler's PostgreSQL, through the
// queue store that owns the table (pgstore.ReadQueueRow).
type PGQueue struct {
	Pool   *pgxpool.Pool
	Schema string
}

// QueueRow returns the user's stored row, or nil. It never writes (no
// migration either): a schema without call_queue is reported as such.
func (q PGQueue) QueueRow(ctx context.Context, user uint64) (*Row, error) {
	stored, found, err := pgstore.ReadQueueRow(ctx, q.Pool, q.Schema, user)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		return nil, fmt.Errorf("read call_queue: %s does not exist (has dialsync run against this database and schema?)",
			pgx.Identifier{q.Schema, "call_queue"}.Sanitize())
	case err != nil:
		return nil, err
	case !found:
		return nil, nil
	}
	entered, updated := stored.EnteredAt, stored.UpdatedAt
	return &Row{OpenClaims: stored.OpenClaims, PendingRequirements: stored.PendingRequirements,
		OldestPendingAt: stored.OldestPendingAt, EnteredAt: &entered, UpdatedAt: &updated}, nil
}

// RedisKeys checks keys with one EXISTS per key in one pipeline (single-key
// commands stay valid on Redis Cluster, where keys may live in different
// hash slots).
type RedisKeys struct{ Client redis.Cmdable }

// Exists says, in order, whether each key exists.
func (k RedisKeys) Exists(ctx context.Context, keys []string) ([]bool, error) {
	cmds := make([]*redis.IntCmd, len(keys))
	_, err := k.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, key := range keys {
			cmds[i] = p.Exists(ctx, key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check %d redis keys: %w", len(keys), err)
	}
	out := make([]bool, len(keys))
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}

// DefaultMaxScan bounds how many of a user's notices Latest reads to find
// the last n. Beyond it Latest shows the last notice per subject only.
const DefaultMaxScan = 10_000

// StreamNotices reads a user's notices from the JetStream stream.
type StreamNotices struct {
	JS            jetstream.JetStream
	Stream        string
	SubjectPrefix string
	// FetchWait bounds the wait for each batch; 0 means 5s.
	FetchWait time.Duration
	// MaxScan: 0 means DefaultMaxScan.
	MaxScan int
}

// UserFilter is the one subject filter covering a user's notices:
// "<prefix>.user.<id>" and "<prefix>.queue.<id>". One subject, because
// nats-server 2.9 has no multi-subject consumer filters.
func UserFilter(prefix string, user uint64) string {
	return prefix + ".*." + strconv.FormatUint(user, 10)
}

// Latest returns the user's last n notices, oldest first. The stream's
// subject counts say how many there are; up to MaxScan of them are read
// with an ordered consumer filtered to the user's subjects (the server does
// the filtering) keeping the last n. Past MaxScan, an ordered consumer with
// DeliverLastPerSubject returns the last notice of each subject instead.
func (s StreamNotices) Latest(ctx context.Context, user uint64, n int) (NoticeHistory, error) {
	h := NoticeHistory{Stream: s.Stream, Filter: UserFilter(s.SubjectPrefix, user), Latest: []Notice{}}
	stream, err := s.JS.Stream(ctx, s.Stream)
	if err != nil {
		return h, fmt.Errorf("stream %q: %w", s.Stream, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(h.Filter))
	if err != nil {
		return h, fmt.Errorf("stream %q info: %w", s.Stream, err)
	}
	for _, c := range info.State.Subjects {
		h.Total += int(c)
	}
	if h.Total == 0 || n <= 0 {
		return h, nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{h.Filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	want := h.Total
	maxScan := s.MaxScan
	if maxScan <= 0 {
		maxScan = DefaultMaxScan
	}
	if h.Total > maxScan {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
		want = len(info.State.Subjects)
		h.Note = fmt.Sprintf("%d notices on %s: showing the last one per subject", h.Total, h.Filter)
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return h, fmt.Errorf("read notices on %s: %w", h.Filter, err)
	}
	wait := s.FetchWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	ring := make([]Notice, 0, n)
	read := 0
	for read < want {
		batch, err := cons.Fetch(min(want-read, 500), jetstream.FetchMaxWait(wait))
		if err != nil {
			return h, fmt.Errorf("read notices on %s: %w", h.Filter, err)
		}
		got, last := 0, false
		for m := range batch.Messages() {
			got++
			read++
			md, err := m.Metadata()
			if err != nil {
				return h, fmt.Errorf("read notices on %s: metadata: %w", h.Filter, err)
			}
			// Messages published after the count also arrive; NumPending
			// zero marks the stream's end as the consumer saw it.
			last = md.NumPending == 0
			ev, err := notice.Decode(m.Data())
			if err != nil {
				continue // not a notice: nothing to show
			}
			sum := Summarize(ev)
			sum.Seq = md.Sequence.Stream
			if len(ring) == n {
				ring = append(ring[:0], ring[1:]...)
			}
			ring = append(ring, sum)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return h, fmt.Errorf("read notices on %s: %w", h.Filter, err)
		}
		if got == 0 {
			return h, fmt.Errorf("read notices on %s: got %d of %d within %s", h.Filter, read, want, wait)
		}
		if last {
			break
		}
	}
	h.Latest = ring
	return h, nil
}

// Summarize turns a notice into its value-free summary: the type, ids,
// tables, operations and column NAMES, and the queue counts. Allow-listed
// values a user.changed notice may carry are left out on purpose.
func Summarize(ev notice.Event) Notice {
	s := Notice{Time: ev.Time, Type: ev.Type, ID: ev.ID}
	if ev.Subject != "" {
		s.UserID, _ = strconv.ParseUint(ev.Subject, 10, 64)
	}
	switch {
	case ev.Type == notice.TypeUserChanged:
		if d, err := ev.UserChanged(); err == nil {
			s.UserID, s.Tables, s.Operations, s.Columns = d.UserID, d.Tables, d.Operations, d.Columns
		}
	case ev.IsQueue():
		if d, err := ev.QueueChanged(); err == nil {
			s.UserID = d.UserID
			s.OpenClaims, s.PendingRequirements, s.OldestPendingAt = &d.OpenClaims, &d.PendingRequirements, d.OldestPendingAt
		}
	case ev.Type == notice.TypeReconcileCompleted:
		if d, err := ev.ReconcileCompleted(); err == nil {
			s.Detail = fmt.Sprintf("reason=%s users=%d queued=%d entered=%d left=%d updated=%d took=%s",
				d.Reason, d.Users, d.Queued, d.Entered, d.Left, d.Updated, d.FinishedAt.Sub(d.StartedAt).Round(time.Millisecond))
		}
	case ev.Type == notice.TypeDeadLetter:
		if d, err := ev.DeadLetter(); err == nil {
			s.Detail = fmt.Sprintf("table=%s operation=%s users=%v error=%q", d.Table, d.Operation, d.UserIDs, d.Error)
		}
	}
	return s
}

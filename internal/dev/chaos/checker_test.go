package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// The independent checker. It shares no code with the pipeline: it decodes
// notices with its own struct, evaluates the queue rule with its own SQL,
// and orders events by the GTIDs the writers read back from MariaDB.

// wireNotice is the part of a CloudEvents notice the checker needs,
// decoded from the JSON the stream holds (not through package notice).
type wireNotice struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Subject string `json:"subject"`
	Data    struct {
		UserID uint64 `json:"user_id"`
		// Queue notices carry the whole row.
		OpenClaims          int64   `json:"open_claims"`
		PendingRequirements int64   `json:"pending_requirements"`
		OldestPendingAt     *string `json:"oldest_pending_at"`
		Source              struct {
			GTID string `json:"gtid"`
			Txn  string `json:"txn"`
		} `json:"source"`
	} `json:"data"`
}

// txn is the notice's source transaction: its GTID, else its txn identity.
func (n wireNotice) txn() string {
	if n.Data.Source.GTID != "" {
		return n.Data.Source.GTID
	}
	return n.Data.Source.Txn
}

const userChanged = "dialsync.user.changed"

type streamMsg struct {
	n     wireNotice
	msgID string // Nats-Msg-Id header
}

// readStream reads every message of the stream, in order.
func readStream(ctx context.Context, js jetstream.JetStream, stream string) ([]streamMsg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	total := info.State.Msgs
	out := make([]streamMsg, 0, total)
	if total == 0 {
		return out, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	for uint64(len(out)) < total {
		batch, err := c.Fetch(int(min(total-uint64(len(out)), 2000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			var n wireNotice
			if err := json.Unmarshal(m.Data(), &n); err != nil {
				return nil, fmt.Errorf("undecodable notice %q: %w", m.Data(), err)
			}
			out = append(out, streamMsg{n: n, msgID: m.Headers().Get("Nats-Msg-Id")})
			got++
		}
		if err := batch.Error(); err != nil && got == 0 {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if got == 0 {
			return nil, fmt.Errorf("read %d of %d messages, then nothing", len(out), total)
		}
	}
	return out, nil
}

// figures is what the checker found. Every "bad" count must be zero.
type figures struct {
	Txns, TxnsTouchingUsers, Pairs int
	Notices                        int
	NoticesByType                  map[string]int

	Lost         int // (transaction, user) pairs without their user.changed notice
	DupIDs       int // messages whose id another message already had
	DupPairs     int // (type, transaction, user) seen more than once
	IDMismatch   int // Nats-Msg-Id header != CloudEvents id
	Unattributed int // user.changed for a recorded transaction but a user it did not touch (informational)

	KeysSet, KeysPresent, StaleKeys, AmbiguousKeys, UnknownTokens int

	ExpectedQueue, ActualQueue, Drift int
	DriftUsers                        []uint64

	// lastQueue is each user's last queue notice in stream order;
	// StaleQueueNotices counts users whose last one disagrees with their
	// final call_queue row (a subscriber following queue notices would
	// hold a wrong row).
	lastQueue         map[uint64]wireNotice
	StaleQueueNotices int

	Examples []string
}

func (f *figures) example(format string, args ...any) {
	if len(f.Examples) < 30 {
		f.Examples = append(f.Examples, fmt.Sprintf(format, args...))
	}
}

func (f *figures) bad() int {
	return f.Lost + f.DupIDs + f.DupPairs + f.IDMismatch + f.StaleKeys + f.UnknownTokens + f.Drift + f.StaleQueueNotices
}

// checkNotices: every recorded (transaction, user) has a user.changed
// notice carrying that transaction's GTID; no id twice; no (type,
// transaction, user) twice.
func checkNotices(f *figures, txns []committed, msgs []streamMsg) {
	f.Notices = len(msgs)
	f.NoticesByType = map[string]int{}
	ids := make(map[string]bool, len(msgs))
	pairs := make(map[string]int, len(msgs))
	changed := make(map[string]bool, len(msgs)) // gtid|user of user.changed
	for _, m := range msgs {
		n := m.n
		f.NoticesByType[n.Type]++
		if m.msgID != n.ID {
			f.IDMismatch++
			f.example("Nats-Msg-Id %q != id %q", m.msgID, n.ID)
		}
		if ids[n.ID] {
			f.DupIDs++
			f.example("duplicate notice id %s", n.ID)
		}
		ids[n.ID] = true
		if n.txn() == "" || n.Data.UserID == 0 {
			continue // e.g. a reconcile summary
		}
		k := n.Type + "|" + n.txn() + "|" + strconv.FormatUint(n.Data.UserID, 10)
		pairs[k]++
		if pairs[k] == 2 {
			f.DupPairs++
			f.example("two %s notices for transaction %s, user %d", n.Type, n.txn(), n.Data.UserID)
		}
		if n.Type == userChanged {
			changed[n.txn()+"|"+strconv.FormatUint(n.Data.UserID, 10)] = true
		}
		if strings.HasPrefix(n.Type, "dialsync.queue.") {
			if f.lastQueue == nil {
				f.lastQueue = map[uint64]wireNotice{}
			}
			f.lastQueue[n.Data.UserID] = n
		}
	}
	f.Txns = len(txns)
	recorded := make(map[string]bool, len(txns)*2)
	for _, t := range txns {
		if len(t.users) > 0 {
			f.TxnsTouchingUsers++
		}
		for _, u := range t.users {
			f.Pairs++
			k := t.gtid + "|" + strconv.FormatUint(u, 10)
			recorded[k] = true
			if !changed[k] {
				f.Lost++
				f.example("LOST: transaction %s (%s) touched user %d: no user.changed notice", t.gtid, t.kind, u)
			}
		}
	}
	gtids := make(map[string]bool, len(txns))
	for _, t := range txns {
		gtids[t.gtid] = true
	}
	for k := range changed {
		g, _, _ := strings.Cut(k, "|")
		if gtids[g] && !recorded[k] {
			f.Unattributed++
		}
	}
}

// checkKeys: a cache key still present whose user was touched by a
// transaction that committed after the key was SET is stale.
func checkKeys(ctx context.Context, f *figures, rdb *redis.Client, prefix string, txns []committed, sets map[string]keySet) error {
	f.KeysSet = 2 * len(sets)
	touches := map[uint64][]uint64{} // user -> sequences of the transactions touching it
	for _, t := range txns {
		for _, u := range t.users {
			touches[u] = append(touches[u], t.seq)
		}
	}
	for _, s := range touches {
		slices.Sort(s)
	}
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"user:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan cache keys: %w", err)
	}
	f.KeysPresent = len(keys)
	for _, k := range keys {
		tok, err := rdb.Get(ctx, k).Result()
		if err != nil {
			return fmt.Errorf("get %s: %w", k, err)
		}
		ks, ok := sets[tok]
		if !ok {
			f.UnknownTokens++
			f.example("key %s holds %q, which the filler never wrote", k, tok)
			continue
		}
		s := touches[ks.user]
		// First touch strictly after "before".
		i := sort.Search(len(s), func(i int) bool { return s[i] > ks.before })
		switch {
		case i == len(s):
			// Never touched after the SET: keeping it is right.
		case s[len(s)-1] > ks.after:
			f.StaleKeys++
			f.example("STALE: key %s set before transaction seq %d (set between seq %d and %d) touched user %d", k, s[len(s)-1], ks.before, ks.after, ks.user)
		default:
			f.AmbiguousKeys++ // touched only while the SET was in flight
		}
	}
	return nil
}

type queueRow struct {
	open, pending int64
	oldest        int64 // unix seconds; -1 for NULL
}

// checkQueue compares call_queue with the default queue rule (docs/design.md)
// evaluated directly on MariaDB by SQL written here.
func checkQueue(ctx context.Context, f *figures, src *sql.DB, pg *pgx.Conn) error {
	want := map[uint64]queueRow{}
	rows, err := src.QueryContext(ctx, `
SELECT usr.id,
       COUNT(DISTINCT cl.id),
       COUNT(*),
       COALESCE(UNIX_TIMESTAMP(MIN(req.created_at)), -1)
FROM users usr, claims cl, claim_requirements req
WHERE cl.user_id = usr.id AND req.claim_id = cl.id
  AND usr.deleted_at IS NULL AND usr.is_enabled = 1 AND usr.status = 'active'
  AND usr.phone_number IS NOT NULL AND LENGTH(usr.phone_number) > 0
  AND cl.deleted_at IS NULL AND cl.status NOT IN ('closed', 'rejected', 'paid')
  AND req.status = 'PENDING'
GROUP BY usr.id`)
	if err != nil {
		return fmt.Errorf("evaluate rule on the source: %w", err)
	}
	for rows.Next() {
		var id uint64
		var r queueRow
		if err := rows.Scan(&id, &r.open, &r.pending, &r.oldest); err != nil {
			rows.Close()
			return fmt.Errorf("scan rule row: %w", err)
		}
		want[id] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read rule rows: %w", err)
	}
	got := map[uint64]queueRow{}
	prows, err := pg.Query(ctx, `SELECT user_id, open_claims, pending_requirements,
		COALESCE(EXTRACT(EPOCH FROM oldest_pending_at)::bigint, -1) FROM dialsync.call_queue`)
	if err != nil {
		return fmt.Errorf("read call_queue: %w", err)
	}
	for prows.Next() {
		var id, open, pending, oldest int64
		if err := prows.Scan(&id, &open, &pending, &oldest); err != nil {
			prows.Close()
			return fmt.Errorf("scan call_queue: %w", err)
		}
		got[uint64(id)] = queueRow{open, pending, oldest}
	}
	prows.Close()
	if err := prows.Err(); err != nil {
		return fmt.Errorf("read call_queue: %w", err)
	}
	f.ExpectedQueue, f.ActualQueue = len(want), len(got)
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			f.Drift++
			f.DriftUsers = append(f.DriftUsers, id)
			f.example("DRIFT: user %d qualifies (%+v) but is not queued", id, w)
		case g != w:
			f.Drift++
			f.DriftUsers = append(f.DriftUsers, id)
			f.example("DRIFT: user %d queued as %+v, rule says %+v", id, g, w)
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			f.Drift++
			f.DriftUsers = append(f.DriftUsers, id)
			f.example("DRIFT: user %d queued (%+v) but does not qualify", id, g)
		}
	}
	return checkQueueNotices(f, got)
}

// checkQueueNotices: each user's last queue notice must agree with the
// user's final call_queue row (got).
func checkQueueNotices(f *figures, got map[uint64]queueRow) error {
	for id, n := range f.lastQueue {
		g, queued := got[id]
		if n.Type == "dialsync.queue.left" {
			if queued {
				f.StaleQueueNotices++
				f.example("STALE QUEUE NOTICE: user %d is queued (%+v) but its last queue notice is %s", id, g, n.ID)
			}
			continue
		}
		said := queueRow{n.Data.OpenClaims, n.Data.PendingRequirements, -1}
		if n.Data.OldestPendingAt != nil {
			t, err := time.Parse(time.RFC3339Nano, *n.Data.OldestPendingAt)
			if err != nil {
				return fmt.Errorf("notice %s: oldest_pending_at %q: %w", n.ID, *n.Data.OldestPendingAt, err)
			}
			said.oldest = t.Unix()
		}
		if !queued || g != said {
			f.StaleQueueNotices++
			f.example("STALE QUEUE NOTICE: user %d: last queue notice %s says %+v, call_queue has %+v (queued %v)", id, n.ID, said, g, queued)
		}
	}
	return nil
}

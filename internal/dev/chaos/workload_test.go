package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/dev/demo"
)

// committed is one source transaction a writer saw commit, with the GTID
// MariaDB gave it (read with SELECT @@last_gtid on the same session).
type committed struct {
	gtid  string
	seq   uint64
	kind  string
	users []uint64
}

// ledger collects what the writers and the cache filler did.
type ledger struct {
	mu       sync.Mutex
	txns     []committed
	keySets  map[string]keySet // token -> when it was set
	stepErrs int               // Step failed: outcome unknown (MariaDB down mid-transaction, ...)
	noGTID   int               // committed, but the session was gone before @@last_gtid
	lastErr  string
}

// keySet says when a cache value was written, as binlog positions: the
// head's GTID sequence read just before (before) and just after (after) the
// SET. A transaction with a sequence above after committed after the SET
// (so dialsync had to delete the key); one at or below before committed
// earlier (the key may legitimately survive it); one in between is
// ambiguous and never counted either way.
type keySet struct {
	user          uint64
	before, after uint64
}

func newLedger() *ledger { return &ledger{keySets: map[string]keySet{}} }

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.txns)
}

// gtidSeq returns the sequence number of domain 0 in a MariaDB GTID or GTID
// position ("0-1-42" or "0-1-42,1-5-7"); ok is false when there is none.
// Written here, not shared with the pipeline's parsing.
func gtidSeq(s string) (seq uint64, ok bool) {
	for _, g := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 || parts[0] != "0" {
			continue
		}
		n, err := strconv.ParseUint(parts[2], 10, 64)
		if err != nil {
			continue
		}
		if !ok || n > seq {
			seq, ok = n, true
		}
	}
	return seq, ok
}

// writer runs demo.Workload on a pool of exactly one connection, so that
// @@last_gtid is read on the session that committed. It paces itself to
// interval per transaction and keeps going through MariaDB restarts: after
// any failed step it opens a fresh pool (the driver does not always report
// a dead connection as driver.ErrBadConn, so database/sql would keep
// handing out the broken one) and a fresh Workload on it.
func writer(ctx context.Context, dsn string, seed int64, interval time.Duration, l *ledger) {
	var db *sql.DB
	var w *demo.Workload
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	next := time.Now()
	for gen := int64(0); ctx.Err() == nil; {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		} else if d < -time.Second {
			next = time.Now() // do not burst after an outage
		}
		next = next.Add(interval)
		if db == nil {
			var err error
			if db, err = sql.Open("mysql", dsn); err != nil {
				l.failed(err)
				return
			}
			db.SetMaxOpenConns(1)
			db.SetMaxIdleConns(1)
			db.SetConnMaxLifetime(0)
			gen++
			w = demo.NewWorkload(db, seed*1_000_003+gen)
		}
		op, err := w.Step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.failed(err)
			db.Close()
			db = nil
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var g string
		// Not cancelled with ctx: a committed transaction is recorded even
		// when the run is stopping.
		err = db.QueryRowContext(context.WithoutCancel(ctx), "SELECT @@last_gtid").Scan(&g)
		seq, ok := gtidSeq(g)
		l.mu.Lock()
		if err != nil || !ok {
			// The connection died between COMMIT and the SELECT (a new
			// session has no last GTID): the transaction is not checked.
			l.noGTID++
		} else {
			l.txns = append(l.txns, committed{gtid: g, seq: seq, kind: op.Kind, users: op.Users})
		}
		l.mu.Unlock()
		if err != nil {
			db.Close()
			db = nil
		}
	}
}

func (l *ledger) failed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stepErrs++
	l.lastErr = err.Error()
}

// headSeq reads the source's binlog head (domain 0 sequence).
func headSeq(ctx context.Context, db *sql.DB) (uint64, error) {
	var pos string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		return 0, fmt.Errorf("read @@gtid_binlog_pos: %w", err)
	}
	seq, ok := gtidSeq(pos)
	if !ok {
		return 0, fmt.Errorf("no domain-0 GTID in %q", pos)
	}
	return seq, nil
}

// cacheKeys are the user keys the dialler would cache (config defaults).
func cacheKeys(prefix string, user uint64) []string {
	return []string{fmt.Sprintf("%suser:%d:context", prefix, user), fmt.Sprintf("%suser:%d:claims", prefix, user)}
}

// cacheFiller plays the dialler: every period it caches a random sample of
// users (ids up to maxUser, which grows as users are inserted), each value
// a unique token recorded with the binlog head read around the SET.
func cacheFiller(ctx context.Context, src *sql.DB, rdb *redis.Client, prefix string, maxUser *atomic.Uint64, sample int, period time.Duration, l *ledger) {
	r := rand.New(rand.NewPCG(7, 7))
	var n uint64
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before, err := headSeq(ctx, src)
		if err != nil {
			continue // MariaDB down: nothing can be ordered against it
		}
		type set struct {
			token string
			user  uint64
		}
		var sets []set
		pipe := rdb.Pipeline()
		for range sample {
			u := 1 + r.Uint64N(maxUser.Load())
			n++
			tok := "chaos-" + strconv.FormatUint(n, 10)
			for _, k := range cacheKeys(prefix, u) {
				pipe.Set(ctx, k, tok, 0)
			}
			sets = append(sets, set{tok, u})
		}
		_, _ = pipe.Exec(ctx) // some may have landed even on error
		after, err := headSeq(ctx, src)
		if err != nil {
			// Cannot say when the SET happened relative to later commits:
			// record it as "after everything", which never counts as stale.
			after = ^uint64(0)
		}
		l.mu.Lock()
		for _, s := range sets {
			l.keySets[s.token] = keySet{user: s.user, before: before, after: after}
		}
		l.mu.Unlock()
	}
}

// ckptWatch polls the stored checkpoint through the run, counting any move
// backwards of its GTID sequence.
type ckptWatch struct {
	mu          sync.Mutex
	seq         uint64
	changedAt   time.Time
	regressions []string
	polls, errs int
}

func (w *ckptWatch) run(ctx context.Context, dsn, pipeline string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if conn == nil {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				w.note(0, false)
				continue
			}
			conn = c
		}
		var set string
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.QueryRow(qctx, `SELECT gtid_set FROM dialsync.checkpoints WHERE pipeline = $1`, pipeline).Scan(&set)
		cancel()
		if err != nil {
			if err != pgx.ErrNoRows {
				_ = conn.Close(context.Background())
				conn = nil
			}
			w.note(0, false)
			continue
		}
		seq, ok := gtidSeq(set)
		w.note(seq, ok)
	}
}

func (w *ckptWatch) note(seq uint64, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	if !ok {
		w.errs++
		return
	}
	switch {
	case seq < w.seq:
		w.regressions = append(w.regressions, fmt.Sprintf("%s: %d -> %d", time.Now().Format("15:04:05.000"), w.seq, seq))
		w.seq, w.changedAt = seq, time.Now()
	case seq > w.seq:
		w.seq, w.changedAt = seq, time.Now()
	}
}

func (w *ckptWatch) current() (uint64, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq, w.changedAt
}

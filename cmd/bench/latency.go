package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"dialsync/internal/dev/benchkit"
)

// The latency scenario: writers commit single-row transactions on users at
// a fixed offered rate (or as fast as the source goes), each recording the
// moment its COMMIT returned. A NATS core subscriber on
// <subjects>.user.> timestamps each notice, and a Redis keyspace-event
// subscriber timestamps the deletion of each user's context key (set
// before the window). Matching is per user in order (benchkit.MatchFIFO):
// each writer owns a disjoint range of user ids and writes them one after
// the other, so a user's commits are serialised on the source.

// userUpdate always changes the row (a toggle), so every statement is one
// binlog row event, one user.changed notice and one cache DEL; it also moves
// users in and out of the queue like real status changes do.
const userUpdate = "UPDATE users SET status = IF(status = 'active', 'inactive', 'active'), updated_at = NOW() WHERE id = ?"

// collector gathers timestamped arrivals from the subscribers.
type collector struct {
	mu      sync.Mutex
	notices []benchkit.Event
	dels    []benchkit.Event
}

func (c *collector) reset() {
	c.mu.Lock()
	c.notices, c.dels = c.notices[:0], c.dels[:0]
	c.mu.Unlock()
}

func (c *collector) counts() (notices, dels int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.notices), len(c.dels)
}

func (c *collector) take() (notices, dels []benchkit.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]benchkit.Event(nil), c.notices...), append([]benchkit.Event(nil), c.dels...)
}

// subscribe starts both subscribers; the returned function stops them and
// restores Redis's notify-keyspace-events.
func (b *bench) subscribe(ctx context.Context, subjects string, col *collector) (func(), error) {
	userSubj := subjects + ".user."
	sub, err := b.nc.Subscribe(subjects+".user.>", func(m *nats.Msg) {
		now := time.Now()
		id, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, userSubj), 10, 64)
		if err != nil {
			return
		}
		col.mu.Lock()
		col.notices = append(col.notices, benchkit.Event{Key: id, At: now})
		col.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe notices: %w", err)
	}
	// A slow consumer would drop notices and count as missing: no limits.
	_ = sub.SetPendingLimits(-1, -1)
	if err := b.nc.Flush(); err != nil {
		return nil, fmt.Errorf("subscribe notices: %w", err)
	}

	// Keyspace notifications are off by default; "E" (keyevent channel)
	// plus "g" (generic commands such as DEL) publishes every deleted key
	// name on __keyevent@<db>__:del. See https://redis.io/docs/latest/develop/use/keyspace-notifications/
	old, err := b.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("redis config get: %w", err)
	}
	prev := old["notify-keyspace-events"]
	flags := prev
	if !strings.Contains(flags, "E") {
		flags += "E"
	}
	if !strings.Contains(flags, "g") && !strings.Contains(flags, "A") { // A includes g
		flags += "g"
	}
	if err := b.rdb.ConfigSet(ctx, "notify-keyspace-events", flags).Err(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("redis config set notify-keyspace-events: %w", err)
	}
	ps := b.rdb.Subscribe(ctx, "__keyevent@0__:del")
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		_ = sub.Unsubscribe()
		_ = b.rdb.ConfigSet(context.Background(), "notify-keyspace-events", prev).Err()
		return nil, fmt.Errorf("redis subscribe: %w", err)
	}
	keyPrefix, keySuffix := b.prefix+"user:", ":context"
	ch := ps.Channel(redis.WithChannelSize(1 << 16))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			now := time.Now()
			k := m.Payload
			if !strings.HasPrefix(k, keyPrefix) || !strings.HasSuffix(k, keySuffix) {
				continue // another test's key, or the claims key
			}
			id, err := strconv.ParseUint(k[len(keyPrefix):len(k)-len(keySuffix)], 10, 64)
			if err != nil {
				continue
			}
			col.mu.Lock()
			col.dels = append(col.dels, benchkit.Event{Key: id, At: now})
			col.mu.Unlock()
		}
	}()
	return func() {
		_ = sub.Unsubscribe()
		_ = ps.Close()
		<-done
		if err := b.rdb.ConfigSet(context.Background(), "notify-keyspace-events", prev).Err(); err != nil {
			b.log.Error("could not restore Redis notify-keyspace-events", "value", prev, "error", err)
		}
	}, nil
}

// setContextKeys sets every user's context key so its deletion can be seen.
func (b *bench) setContextKeys(ctx context.Context, users int) error {
	for lo := 1; lo <= users; lo += 5000 {
		pipe := b.rdb.Pipeline()
		for u := lo; u < lo+5000 && u <= users; u++ {
			pipe.Set(ctx, b.prefix+"user:"+strconv.Itoa(u)+":context", "cached", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("set context keys: %w", err)
		}
	}
	return nil
}

// writer is one connection with the prepared update.
type writer struct {
	conn   *client.Conn
	stmt   *client.Stmt
	lo, hi uint64 // user ids [lo, hi)
	next   uint64
}

func (b *bench) newWriters(n, users int) ([]*writer, error) {
	ws := make([]*writer, 0, n)
	for i := 0; i < n; i++ {
		c, err := client.Connect(b.my.Addr(), "root", "", b.name)
		if err != nil {
			closeWriters(ws)
			return nil, fmt.Errorf("writer connect: %w", err)
		}
		st, err := c.Prepare(userUpdate)
		if err != nil {
			c.Close()
			closeWriters(ws)
			return nil, fmt.Errorf("writer prepare: %w", err)
		}
		lo := uint64(1 + i*users/n)
		hi := uint64(1 + (i+1)*users/n)
		ws = append(ws, &writer{conn: c, stmt: st, lo: lo, hi: hi, next: lo})
	}
	return ws, nil
}

func closeWriters(ws []*writer) {
	for _, w := range ws {
		_ = w.stmt.Close()
		_ = w.conn.Close()
	}
}

// write commits one update (autocommit: one transaction) of the writer's
// next user and returns the user and when the commit returned.
func (w *writer) write() (benchkit.Event, error) {
	u := w.next
	w.next++
	if w.next >= w.hi {
		w.next = w.lo
	}
	r, err := w.stmt.Execute(u)
	now := time.Now()
	if err != nil {
		return benchkit.Event{}, fmt.Errorf("update user %d: %w", u, err)
	}
	if r.AffectedRows != 1 {
		return benchkit.Event{}, fmt.Errorf("update user %d: %d rows affected, want 1", u, r.AffectedRows)
	}
	r.Close()
	return benchkit.Event{Key: u, At: now}, nil
}

// window runs the writers for d at rate tx/s in total (0: unthrottled) and
// returns every commit. Throttled writers follow an open-loop schedule (the
// i-th write is due at start + i*interval, staggered between writers): a
// slow commit does not lower the offered rate, it only delays that writer.
func window(ctx context.Context, ws []*writer, rate int, d time.Duration) ([]benchkit.Event, error) {
	start := time.Now().Add(20 * time.Millisecond)
	end := start.Add(d)
	var wg sync.WaitGroup
	out := make([][]benchkit.Event, len(ws))
	errs := make([]error, len(ws))
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			if rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(len(ws)) / float64(rate))
			}
			offset := interval * time.Duration(i) / time.Duration(len(ws))
			time.Sleep(time.Until(start))
			for k := 0; ctx.Err() == nil; k++ {
				due := start.Add(offset + time.Duration(k)*interval)
				if rate == 0 {
					due = time.Now()
				}
				if !due.Before(end) {
					return
				}
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				ev, err := w.write()
				if err != nil {
					errs[i] = err
					return
				}
				out[i] = append(out[i], ev)
			}
		}()
	}
	wg.Wait()
	var all []benchkit.Event
	for i := range ws {
		if errs[i] != nil {
			return nil, errs[i]
		}
		all = append(all, out[i]...)
	}
	return all, ctx.Err()
}

func distinctKeys(es []benchkit.Event) int {
	m := make(map[uint64]struct{}, len(es))
	for _, e := range es {
		m[e.Key] = struct{}{}
	}
	return len(m)
}

// latencyScenario measures each rate for o.runs windows against the running
// dialsync p (caught up).
func (b *bench) latencyScenario(ctx context.Context, p *dsProc, pc pipeCfg) ([]benchkit.LatencyResult, error) {
	users := b.o.size.Users
	col := &collector{}
	stopSubs, err := b.subscribe(ctx, pc.subjects, col)
	if err != nil {
		return nil, err
	}
	defer stopSubs()
	ws, err := b.newWriters(b.o.writers, users)
	if err != nil {
		return nil, err
	}
	defer closeWriters(ws)

	// Warm-up (not measured): connections, prepared statements, the
	// pipeline's lookups and caches.
	if err := b.setContextKeys(ctx, users); err != nil {
		return nil, err
	}
	if _, err := window(ctx, ws, 200, time.Second); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if err := b.waitCaughtUp(ctx, p, pc.schema, "", time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}

	var out []benchkit.LatencyResult
	for _, rate := range b.o.rates {
		name := strconv.Itoa(rate) + "/s"
		if rate == 0 {
			name = fmt.Sprintf("max (%d writers)", len(ws))
		}
		res := benchkit.LatencyResult{Name: name, Rate: rate, Writers: len(ws), WindowSec: b.o.window.Seconds()}
		var achieved, first, last, growth []float64
		var nl, rl []benchkit.Latency
		var nm, rm []int
		var rs []benchkit.Resources
		var work []int
		var stages []*benchkit.Stages
		res.Flat = true
		for run := 1; run <= b.o.runs; run++ {
			wait := func() {}
			if run == 1 {
				wait = b.profileCPU(ctx, pc, "latency-"+strconv.Itoa(rate), b.o.window)
			}
			r, err := b.latencyRun(ctx, p, pc, ws, col, rate)
			wait()
			if err != nil {
				return nil, fmt.Errorf("latency %s run %d: %w", name, run, err)
			}
			b.log.Info("latency", "rate", name, "run", run, "achieved", int(r.AchievedRate), "notice_p50_ms", r.Notice.P50,
				"notice_p99_ms", r.Notice.P99, "cache_p99_ms", r.Redis.P99, "missing", r.NoticeMissing, "flat", r.Flat)
			res.Runs = append(res.Runs, r)
			achieved = append(achieved, r.AchievedRate)
			first, last, growth = append(first, r.First20MS), append(last, r.Last20MS), append(growth, r.Growth)
			nl, rl = append(nl, r.Notice), append(rl, r.Redis)
			nm, rm = append(nm, r.NoticeMissing), append(rm, r.RedisMissing)
			rs, work = append(rs, r.Resources), append(work, r.Writes)
			stages = append(stages, r.Stages)
			res.Flat = res.Flat && r.Flat
		}
		res.Achieved = benchkit.SpreadOf(achieved)
		res.First20, res.Last20, res.Growth = benchkit.SpreadOf(first), benchkit.SpreadOf(last), benchkit.SpreadOf(growth)
		res.Notice, res.Redis = benchkit.SpreadLatency(nl, nm), benchkit.SpreadLatency(rl, rm)
		res.Resources = benchkit.SpreadResources(rs, work, "row changes")
		res.Stages = benchkit.CombineStages(stages)
		out = append(out, res)
	}
	return out, nil
}

func (b *bench) latencyRun(ctx context.Context, p *dsProc, pc pipeCfg, ws []*writer, col *collector, rate int) (benchkit.LatencyRun, error) {
	var r benchkit.LatencyRun
	if err := b.setContextKeys(ctx, b.o.size.Users); err != nil {
		return r, err
	}
	col.reset()
	before := b.scrape(ctx, pc)
	t0 := time.Now()
	s, err := benchkit.StartSampler(p.pid(), 100*time.Millisecond)
	if err != nil {
		return r, err
	}
	commits, err := window(ctx, ws, rate, b.o.window)
	if err != nil {
		s.Stop()
		return r, err
	}
	// Settle: wait for every notice and deletion, or until nothing more
	// arrives for 5 s (then the rest count as missing).
	wantDels := distinctKeys(commits)
	lastN, lastD, lastChange := -1, -1, time.Now()
	for {
		n, d := col.counts()
		if n >= len(commits) && d >= wantDels {
			break
		}
		if n != lastN || d != lastD {
			lastN, lastD, lastChange = n, d, time.Now()
		} else if time.Since(lastChange) > 5*time.Second {
			break
		}
		if p.exited() {
			s.Stop()
			return r, fmt.Errorf("dialsync exited: %s", p.lastErrors())
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Resources = s.Stop()
	if after := b.scrape(ctx, pc); before != nil && after != nil {
		r.Stages = benchkit.StagesBetween(before, after, time.Since(t0))
	}
	notices, dels := col.take()
	samples, missing, extra := benchkit.MatchFIFO(commits, notices)
	dsamples, dmissing := benchkit.MatchFirst(commits, dels)
	r.Writes = len(commits)
	r.AchievedRate = float64(len(commits)) / b.o.window.Seconds()
	r.Notice, r.NoticeMissing, r.NoticeExtra = benchkit.Summarize(benchkit.Latencies(samples)), missing, extra
	r.Redis, r.RedisMissing = benchkit.Summarize(benchkit.Latencies(dsamples)), dmissing
	f, l, g := benchkit.Trend(samples)
	r.First20MS, r.Last20MS, r.Growth = float64(f.Microseconds())/1000, float64(l.Microseconds())/1000, g
	r.Flat = benchkit.Flat(f, l, g) && missing == 0
	return r, nil
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"dialsync/canal"
	"dialsync/change"
	"dialsync/handlers"
	"dialsync/internal/apply"
	"dialsync/internal/clients"
	"dialsync/internal/lookup"
	"dialsync/internal/metrics"
	"dialsync/internal/preflight"
	"dialsync/internal/queue"
	"dialsync/internal/reconcile"
)

// Monitor turns what the pipeline does into metrics and readiness. It is
// fed by the apply loop's hooks and a once-a-second poll; it never changes
// pipeline state.
type Monitor struct {
	m      *metrics.Metrics
	env    *Env
	log    *slog.Logger
	maxLag time.Duration

	leader      atomic.Bool
	loop        atomic.Pointer[apply.Loop]
	newest      atomic.Int64 // unix nanos of the newest applied source commit
	lastSave    atomic.Int64 // unix nanos of the last checkpoint write (at start: the stored one's)
	started     time.Time    // when the monitor started: lag is at least this old while nothing was applied
	streaming   atomic.Bool  // the binlog reader is connected (set by run)
	behindBytes atomic.Int64 // -1 when unknown

	skipped  uint64 // canal.SkippedStatements already counted (poll only)
	replayed uint64 // canal.ReplayedTransactions already counted (poll only)

	mu         sync.Mutex
	pos        change.Position // last stored checkpoint
	retrySince time.Time       // first failed attempt of the current retry streak (zero: none)
	retryLast  string          // its latest failure: operation, server, error
}

func newMonitor(e *Env, m *metrics.Metrics, version string, log *slog.Logger) *Monitor {
	o := &Monitor{m: m, env: e, log: log, maxLag: e.Cfg.Health.MaxLag.Duration(), started: time.Now()}
	o.behindBytes.Store(-1)
	m.RetentionHeadroomSeconds.Set(math.Inf(1)) // until measured
	m.SetBuildInfo(version)
	m.InitTables(handlers.Tables()...)
	for _, s := range apply.BatchStages() {
		m.InitStages(s.String())
	}
	return o
}

func (o *Monitor) setLeader(epoch int64) {
	o.leader.Store(true)
	o.m.Leader.Set(1)
	o.m.Epoch.Set(float64(epoch))
}

// onApplied is apply.Config.OnApplied.
func (o *Monitor) onApplied(st apply.BatchStats) {
	o.mu.Lock()
	o.retrySince, o.retryLast = time.Time{}, "" // a batch got through: the streak is over
	o.mu.Unlock()
	m := o.m
	m.Transactions.Add(float64(st.Txns))
	m.BatchTxns.Observe(float64(st.Txns))
	m.BatchRows.Observe(float64(st.Changes))
	if st.Changes == 0 {
		m.IgnoredTransactions.Add(float64(st.Txns))
	}
	for k, n := range st.Rows {
		m.RowChanges.WithLabelValues(k.Table, k.Op.String()).Add(float64(n))
	}
	for i, d := range st.Stages {
		if d > 0 {
			m.StageSeconds.WithLabelValues(apply.Stage(i).String()).Observe(d.Seconds())
		}
	}
	queueNotices := 0
	for _, ch := range st.QueueChanges {
		m.QueueChanges.WithLabelValues(ch.Kind.String()).Inc()
		queueNotices++
		switch ch.Kind {
		case queue.Entered:
			m.QueueSize.Inc()
		case queue.Left:
			m.QueueSize.Dec()
		}
	}
	if queueNotices > 0 {
		m.NoticesPublished.WithLabelValues("dialsync.queue").Add(float64(queueNotices))
	}
	if n := st.Notices - queueNotices; n > 0 {
		m.NoticesPublished.WithLabelValues("dialsync.user.changed").Add(float64(n))
	}
	m.KeysDeleted.Add(float64(st.Keys))
	for _, d := range st.DeadLetters {
		m.DeadLetters.WithLabelValues(d.Table).Inc()
	}
	if st.Unresolved > 0 {
		m.UnresolvedChanges.WithLabelValues("claim_requirements|claim_vehicle_packages").Add(float64(st.Unresolved))
	}
	if !st.NewestCommit.IsZero() {
		o.newest.Store(st.NewestCommit.UnixNano())
		m.LastAppliedTimestamp.Set(float64(st.NewestCommit.Unix()))
	}
}

// onSaved is apply.Config.OnSaved: a checkpoint write.
func (o *Monitor) onSaved(pos change.Position, took time.Duration) {
	now := time.Now()
	o.lastSave.Store(now.UnixNano())
	o.m.CheckpointTimestamp.Set(float64(now.Unix()))
	o.m.StageSeconds.WithLabelValues(apply.StageCheckpoint.String()).Observe(took.Seconds())
	o.mu.Lock()
	o.pos = pos
	o.mu.Unlock()
}

// onRetry is apply.Config.OnRetry: a failed attempt of a stage. The first
// failure of a streak is remembered for /readyz (see retryStuckAfter).
func (o *Monitor) onRetry(stage apply.Stage, op string, err error) {
	o.m.Retries.WithLabelValues(stage.String(), stage.Server()).Inc()
	o.m.Errors.WithLabelValues(stage.String(), stage.Server()).Inc()
	o.mu.Lock()
	if o.retrySince.IsZero() {
		o.retrySince = time.Now()
	}
	o.retryLast = fmt.Sprintf("%s (%s): %v", op, stage.Server(), err)
	o.mu.Unlock()
}

// retryStuckAfter is how long the apply loop may keep retrying before
// /readyz says so: a server that answers pings but fails every write
// (a transient error that does not go away) must not look healthy.
const retryStuckAfter = 20 * time.Second

// retrying reports the current retry streak, if it is older than
// retryStuckAfter.
func (o *Monitor) retrying() (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.retrySince.IsZero() || time.Since(o.retrySince) < retryStuckAfter {
		return "", false
	}
	return fmt.Sprintf("retrying for %s: %s", time.Since(o.retrySince).Round(time.Second), o.retryLast), true
}

// onReconcile records a reconcile run.
func (o *Monitor) onReconcile(trigger string, s reconcile.Summary) {
	o.m.ReconcileRuns.WithLabelValues(trigger).Inc()
	o.m.ReconcileSeconds.Observe(s.Took.Seconds())
	o.m.ReconcileLast.WithLabelValues(trigger).Set(float64(time.Now().Unix()))
	o.m.ReconcileDrift.WithLabelValues(metrics.KindEntered).Set(float64(s.Entered))
	o.m.ReconcileDrift.WithLabelValues(metrics.KindLeft).Set(float64(s.Left))
	o.m.ReconcileDrift.WithLabelValues(metrics.KindChanged).Set(float64(s.Changed))
	o.m.QueueSize.Set(float64(s.Queued))
}

// lag is the time since the newest applied commit while anything is
// behind (transactions waiting in the loop, or binlog bytes not yet read),
// and zero when caught up. Source heartbeats keep the reader connected on
// an idle source, so "nothing pending" really means caught up.
func (o *Monitor) lag() time.Duration {
	loop := o.loop.Load()
	pending := loop != nil && loop.Pending() > 0
	if !pending && o.behindBytes.Load() <= 0 {
		return 0
	}
	newest := o.newest.Load()
	if newest == 0 {
		// Behind, and nothing applied since the start (a stream that
		// cannot get going): the lag is at least the time since then,
		// never a reassuring 0.
		return time.Since(o.started)
	}
	return max(0, time.Since(time.Unix(0, newest)))
}

// poll updates the gauges that need a look at the servers.
func (o *Monitor) poll(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n := canal.SkippedStatements(); n > o.skipped {
			o.m.SkippedDDL.Add(float64(n - o.skipped))
			o.skipped = n
		}
		if n := canal.ReplayedTransactions(); n > o.replayed {
			o.m.Replayed.Add(float64(n - o.replayed))
			o.replayed = n
		}
		if ls := o.lastSave.Load(); ls != 0 {
			o.m.CheckpointAgeSeconds.Set(time.Since(time.Unix(0, ls)).Seconds())
		}
		if i%5 == 0 && o.env.Lookup != nil {
			o.pollSource(ctx)
		}
		o.m.LagSeconds.Set(o.lag().Seconds())
	}
}

func (o *Monitor) pollSource(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	// Retention headroom: the source expires a binlog file by its last
	// write, so the file at the checkpoint goes after roughly the retention
	// minus how far behind we are. No expiry configured: no limit (+Inf,
	// so the alert stays quiet). RDS's own 'binlog retention hours' needs a
	// procedure call: `dialsync check` reports it.
	vars, err := o.env.Lookup.GlobalVars(ctx, "binlog_expire_logs_seconds", "expire_logs_days")
	if err == nil {
		if d, _ := preflight.BinlogRetention(vars); d > 0 {
			o.m.RetentionHeadroomSeconds.Set((d - o.lag()).Seconds())
		} else {
			o.m.RetentionHeadroomSeconds.Set(math.Inf(1))
		}
	}
	o.mu.Lock()
	pos := o.pos
	o.mu.Unlock()
	if pos.File == "" {
		return
	}
	logs, err := o.env.Lookup.BinaryLogs(ctx)
	if err != nil {
		return
	}
	if b, ok := lookup.BytesBehind(logs, pos.File, pos.Pos); ok {
		o.behindBytes.Store(int64(b))
		o.m.BehindBytes.Set(float64(b))
	}
}

// ready is /readyz: a standby is ready (it is doing its job: waiting); a
// leader is ready when every server answers and lag is under health.max_lag.
func (o *Monitor) ready(ctx context.Context) (bool, any) {
	type check struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail,omitempty"`
	}
	checks := map[string]check{}
	if !o.leader.Load() {
		checks["role"] = check{OK: true, Detail: "standby: waiting for the pipeline lease"}
		return true, checks
	}
	checks["role"] = check{OK: true, Detail: "leader"}
	ok := true
	add := func(name string, err error) {
		if err != nil {
			ok = false
			checks[name] = check{Detail: clients.Redact(err, o.env.Cfg).Error()}
			return
		}
		checks[name] = check{OK: true}
	}
	e := o.env
	if e.Pool != nil {
		add("postgres", e.Pool.Ping(ctx))
	}
	if e.Lookup != nil {
		add("mysql", e.Lookup.Ping(ctx))
	}
	if e.Cache != nil {
		add("redis", e.Cache.Ping(ctx))
	}
	if e.Pub != nil {
		var err error
		if !e.Pub.Healthy() {
			err = errNotConnected
		}
		add("nats", err)
	}
	if !o.streaming.Load() {
		ok = false
		checks["binlog"] = check{Detail: "binlog reader not streaming (bootstrapping or reconnecting)"}
	} else {
		checks["binlog"] = check{OK: true}
	}
	if lag := o.lag(); o.maxLag > 0 && lag > o.maxLag {
		ok = false
		checks["lag"] = check{Detail: "lag " + lag.Round(time.Millisecond).String() + " over health.max_lag " + o.maxLag.String()}
	} else {
		checks["lag"] = check{OK: true, Detail: lag.Round(time.Millisecond).String()}
	}
	if why, stuck := o.retrying(); stuck {
		ok = false
		checks["apply"] = check{Detail: clients.Redact(errors.New(why), o.env.Cfg).Error()}
	} else {
		checks["apply"] = check{OK: true}
	}
	return ok, checks
}

type constErr string

func (e constErr) Error() string { return string(e) }

const errNotConnected = constErr("not connected")

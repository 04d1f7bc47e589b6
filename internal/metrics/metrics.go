// Package metrics defines every Prometheus metric dialsync exports, in one
// place, on a dedicated registry.
//
// A dedicated registry (rather than prometheus.DefaultRegisterer) lets tests
// build independent instances with New and keeps the exported set exactly
// what this file declares plus the Go runtime and process collectors. The
// names are also the contract of deploy/prometheus/alerts.yml and
// deploy/grafana/dialsync.json; Names lists them and the package tests check
// both that list and every dialsync_ name the deploy files mention.
package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The stage label values of StageSeconds, Retries and Errors are not
// declared here: they are the apply stages' names (apply.Stage's String,
// one vocabulary for the loop, its retry reports and these labels). This
// package imports nothing of dialsync, so the caller passes them in
// (InitStages).

// Kind label values of QueueChanges and ReconcileDrift.
const (
	KindEntered = "entered"
	KindLeft    = "left"
	KindUpdated = "updated" // QueueChanges only
	KindChanged = "changed" // ReconcileDrift only
)

// Trigger label values of ReconcileRuns.
const (
	TriggerBootstrap = "bootstrap"
	TriggerSchedule  = "schedule"
	TriggerManual    = "manual"
	TriggerPurged    = "purged"
)

// Op label values of RowChanges.
const (
	OpInsert = "insert"
	OpUpdate = "update"
	OpDelete = "delete"
)

// Metrics holds every dialsync metric. Build it with New; the zero value is
// not usable. All fields are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	// Pipeline throughput.
	RowChanges          *prometheus.CounterVec // {table, op}
	Transactions        prometheus.Counter
	IgnoredTransactions prometheus.Counter
	BatchTxns           prometheus.Histogram
	BatchRows           prometheus.Histogram
	StageSeconds        *prometheus.HistogramVec // {stage}

	// Position and freshness.
	LagSeconds               prometheus.Gauge
	BehindBytes              prometheus.Gauge
	CheckpointAgeSeconds     prometheus.Gauge
	RetentionHeadroomSeconds prometheus.Gauge
	LastAppliedTimestamp     prometheus.Gauge
	CheckpointTimestamp      prometheus.Gauge

	// Queue and effects.
	QueueSize        prometheus.Gauge
	QueueChanges     *prometheus.CounterVec // {kind}
	NoticesPublished *prometheus.CounterVec // {type}
	KeysDeleted      prometheus.Counter

	// Faults.
	Retries           *prometheus.CounterVec // {stage, server}
	Errors            *prometheus.CounterVec // {stage, server}
	Reconnects        *prometheus.CounterVec // {server}
	UnresolvedChanges *prometheus.CounterVec // {table}
	SkippedDDL        prometheus.Counter
	DeadLetters       *prometheus.CounterVec // {table}
	Replayed          prometheus.Counter

	// Reconcile.
	ReconcileSeconds prometheus.Histogram
	ReconcileDrift   *prometheus.GaugeVec   // {kind}
	ReconcileRuns    *prometheus.CounterVec // {trigger}
	// ReconcileLast is when the last reconcile of each trigger finished
	// (dialsync status reads the newest with the drift).
	ReconcileLast    *prometheus.GaugeVec // {trigger}
	PurgedRecoveries prometheus.Counter

	// High availability and identity.
	Leader    prometheus.Gauge
	Epoch     prometheus.Gauge
	BuildInfo *prometheus.GaugeVec // {version, go_version}
}

// StageBuckets are the StageSeconds buckets: 100 µs to 10 s, dense below
// 100 ms where the latency goal (well under 100 ms end to end) lives.
var StageBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5, 10,
}

// Names returns the name of every dialsync_ metric New registers, in the
// order they are declared. It is the single list the tests hold the
// registry and the deploy files to.
func Names() []string {
	return []string{
		"dialsync_row_changes_total",
		"dialsync_transactions_total",
		"dialsync_ignored_transactions_total",
		"dialsync_batch_transactions",
		"dialsync_batch_rows",
		"dialsync_stage_duration_seconds",
		"dialsync_lag_seconds",
		"dialsync_behind_bytes",
		"dialsync_checkpoint_age_seconds",
		"dialsync_retention_headroom_seconds",
		"dialsync_last_applied_timestamp_seconds",
		"dialsync_checkpoint_timestamp_seconds",
		"dialsync_queue_size",
		"dialsync_queue_changes_total",
		"dialsync_notices_published_total",
		"dialsync_keys_deleted_total",
		"dialsync_retries_total",
		"dialsync_errors_total",
		"dialsync_reconnects_total",
		"dialsync_unresolved_changes_total",
		"dialsync_skipped_ddl_total",
		"dialsync_dead_letters_total",
		"dialsync_replayed_transactions_total",
		"dialsync_reconcile_duration_seconds",
		"dialsync_reconcile_drift",
		"dialsync_reconcile_runs_total",
		"dialsync_reconcile_last_timestamp_seconds",
		"dialsync_purged_recoveries_total",
		"dialsync_leader",
		"dialsync_epoch",
		"dialsync_build_info",
	}
}

// New builds a Metrics on its own registry, together with the Go runtime and
// process collectors (process_resident_memory_bytes feeds the RSS panel).
// Label values known in advance are created at zero so that rate() and
// increase() see the first event (a series born at 1 has no increase);
// InitTables and InitStages do the same for the values the caller knows.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),

		RowChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_row_changes_total",
			Help: "Source row changes applied, by table and operation (insert, update, delete). Rows of untracked tables are not counted.",
		}, []string{"table", "op"}),
		Transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialsync_transactions_total",
			Help: "Source transactions whose effects were applied and checkpointed.",
		}),
		IgnoredTransactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialsync_ignored_transactions_total",
			Help: "Source transactions with no row of a tracked table; they only advance the checkpoint.",
		}),
		BatchTxns: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dialsync_batch_transactions",
			Help:    "Source transactions per apply batch.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000},
		}),
		BatchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dialsync_batch_rows",
			Help:    "Source row changes per apply batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 11), // 1 .. 1,048,576
		}),
		StageSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dialsync_stage_duration_seconds",
			Help:    "Time one apply batch spent in a stage: lookup (source reads), postgres (queue recompute), redis (key deletes), nats (publish and acks), checkpoint (position write).",
			Buckets: StageBuckets,
		}, []string{"stage"}),

		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_lag_seconds",
			Help: "Seconds since the commit of the newest applied source transaction while the binlog holds more to apply; 0 when caught up.",
		}),
		BehindBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_behind_bytes",
			Help: "Binlog bytes between the applied position and the source's current head.",
		}),
		CheckpointAgeSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_checkpoint_age_seconds",
			Help: "Seconds since the checkpoint was last written.",
		}),
		RetentionHeadroomSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_retention_headroom_seconds",
			Help: "Estimated seconds before the source purges the binlog file holding the checkpoint (retention minus the checkpoint file's age).",
		}),
		LastAppliedTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_last_applied_timestamp_seconds",
			Help: "Unix time (seconds) of the source commit of the newest applied transaction.",
		}),
		CheckpointTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_checkpoint_timestamp_seconds",
			Help: "Unix time (seconds) of the last checkpoint write.",
		}),

		QueueSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_queue_size",
			Help: "Users currently in the call queue table.",
		}),
		QueueChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_queue_changes_total",
			Help: "Call queue changes by kind: entered (user added), left (user removed), updated (queued row changed).",
		}, []string{"kind"}),
		NoticesPublished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_notices_published_total",
			Help: "Notices acknowledged by JetStream, by CloudEvents type.",
		}, []string{"type"}),
		KeysDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialsync_keys_deleted_total",
			Help: "Redis cache keys sent in DEL commands (whether or not they existed).",
		}),

		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_retries_total",
			Help: "Operations retried after a transient failure, by stage and server.",
		}, []string{"stage", "server"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_errors_total",
			Help: "Failed operations (each failed attempt, retried or not), by stage and server.",
		}, []string{"stage", "server"}),
		Reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_reconnects_total",
			Help: "Connections re-established after a loss, by server.",
		}, []string{"server"}),
		UnresolvedChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_unresolved_changes_total",
			Help: "Row changes whose user could not be resolved (logged with their position, never dropped silently), by table.",
		}, []string{"table"}),
		SkippedDDL: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialsync_skipped_ddl_total",
			Help: "DDL statements seen in the binlog and not acted on beyond refreshing table metadata.",
		}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_dead_letters_total",
			Help: "Row changes written to the dead-letter table instead of being applied, by table.",
		}, []string{"table"}),
		Replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialsync_replayed_transactions_total",
			Help: "Transactions the source sent again although they lie at or before the stream's start position; skipped, not applied twice. Non-zero means the server ignores the requested start position.",
		}),

		ReconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dialsync_reconcile_duration_seconds",
			Help:    "Duration of full queue reconciles.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600},
		}),
		ReconcileDrift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dialsync_reconcile_drift",
			Help: "Queue rows the last reconcile had to fix, by kind (entered, left, changed). Non-zero means a bug or an outside writer.",
		}, []string{"kind"}),
		ReconcileRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialsync_reconcile_runs_total",
			Help: "Completed full reconciles, by trigger (bootstrap, schedule, manual, purged).",
		}, []string{"trigger"}),
		ReconcileLast: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dialsync_reconcile_last_timestamp_seconds",
			Help: "Unix time the last full reconcile of this process finished, by trigger (0: none yet).",
		}, []string{"trigger"}),
		PurgedRecoveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialsync_purged_recoveries_total",
			Help: "Automatic recoveries from a binlog purged past the checkpoint (jump to head plus full reconcile).",
		}),

		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_leader",
			Help: "1 while this instance holds the leader lease and applies changes, 0 on standby.",
		}),
		Epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialsync_epoch",
			Help: "Fencing epoch of the lease this instance last held (0 before it first led).",
		}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dialsync_build_info",
			Help: "Always 1; labels carry the dialsync version and the Go version it was built with.",
		}, []string{"version", "go_version"}),
	}

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.reg.MustRegister(m.collectors()...)

	for _, k := range []string{KindEntered, KindLeft, KindUpdated} {
		m.QueueChanges.WithLabelValues(k)
	}
	for _, k := range []string{KindEntered, KindLeft, KindChanged} {
		m.ReconcileDrift.WithLabelValues(k)
	}
	for _, t := range []string{TriggerBootstrap, TriggerSchedule, TriggerManual, TriggerPurged} {
		m.ReconcileRuns.WithLabelValues(t)
		m.ReconcileLast.WithLabelValues(t)
	}
	m.SetBuildInfo(moduleVersion())
	return m
}

// collectors lists every dialsync metric; New registers exactly these.
func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.RowChanges, m.Transactions, m.IgnoredTransactions, m.BatchTxns, m.BatchRows, m.StageSeconds,
		m.LagSeconds, m.BehindBytes, m.CheckpointAgeSeconds, m.RetentionHeadroomSeconds,
		m.LastAppliedTimestamp, m.CheckpointTimestamp,
		m.QueueSize, m.QueueChanges, m.NoticesPublished, m.KeysDeleted,
		m.Retries, m.Errors, m.Reconnects, m.UnresolvedChanges, m.SkippedDDL, m.DeadLetters, m.Replayed,
		m.ReconcileSeconds, m.ReconcileDrift, m.ReconcileRuns, m.ReconcileLast, m.PurgedRecoveries,
		m.Leader, m.Epoch, m.BuildInfo,
	}
}

// InitTables creates the per-table series of the tracked tables at zero, so
// that alerts on increase(dialsync_dead_letters_total[...]) fire on the
// first dead letter too. Call it once with the configured table names.
func (m *Metrics) InitTables(tables ...string) {
	for _, t := range tables {
		for _, op := range []string{OpInsert, OpUpdate, OpDelete} {
			m.RowChanges.WithLabelValues(t, op)
		}
		m.DeadLetters.WithLabelValues(t)
		m.UnresolvedChanges.WithLabelValues(t)
	}
}

// InitStages creates the StageSeconds series of these stage label values
// at zero (the apply stages' names). Call it once with every stage a batch
// is timed in.
func (m *Metrics) InitStages(stages ...string) {
	for _, s := range stages {
		m.StageSeconds.WithLabelValues(s)
	}
}

// SetBuildInfo replaces the dialsync_build_info series with one for version
// (the binary's -ldflags version) and the running Go version.
func (m *Metrics) SetBuildInfo(version string) {
	if version == "" {
		version = "unknown"
	}
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
}

// ObserveStage records the time since start in StageSeconds. Use it in a
// defer so failed attempts are timed too:
//
//	defer m.ObserveStage(apply.StageRedis.String(), time.Now())
func (m *Metrics) ObserveStage(stage string, start time.Time) {
	m.StageSeconds.WithLabelValues(stage).Observe(time.Since(start).Seconds())
}

// Registry returns the registry holding every metric, for tests and for
// callers that want to gather directly.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// Count scrape failures in promhttp_metric_handler_errors_total
		// on our own registry, not the global one.
		Registry: m.reg,
		// A gather error (for example one collector failing) still serves
		// what could be collected rather than failing the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// moduleVersion is the main module's version as recorded by the Go tool,
// "(devel)" for a local build; the binary overrides it with SetBuildInfo.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return ""
}

package benchkit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Report is one benchmark run: every scenario, the machine, the versions
// and the targets. It is written as JSON and rendered as Markdown.
type Report struct {
	Date       string           `json:"date"`
	Command    string           `json:"command"`
	Short      bool             `json:"short"`
	Runs       int              `json:"runs"`
	ElapsedSec float64          `json:"elapsed_sec"`
	Machine    Machine          `json:"machine"`
	Versions   []Version        `json:"versions"`
	Data       DataSize         `json:"data"`
	Reconcile  *ReconcileResult `json:"reconcile,omitempty"`
	Latency    []LatencyResult  `json:"latency,omitempty"`
	CatchUp    *CatchUpResult   `json:"catch_up,omitempty"`
	Targets    []Target         `json:"targets"`
	Notes      []string         `json:"notes,omitempty"`
}

// Version names one component's version.
type Version struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// DataSize is the seeded source data.
type DataSize struct {
	Users           int `json:"users"`
	Addresses       int `json:"addresses"`
	Claims          int `json:"claims"`
	Requirements    int `json:"requirements"`
	VehiclePackages int `json:"vehicle_packages"`
}

// LatencySpread is a latency distribution summarised over runs: each
// percentile is the median of the runs' percentiles, with their range.
type LatencySpread struct {
	P50     Spread `json:"p50_ms"`
	P95     Spread `json:"p95_ms"`
	P99     Spread `json:"p99_ms"`
	Max     Spread `json:"max_ms"`
	Samples int    `json:"samples"` // over all runs
	Missing int    `json:"missing"` // over all runs: commits never seen
}

// SpreadLatency summarises per-run distributions.
func SpreadLatency(runs []Latency, missing []int) LatencySpread {
	var p50, p95, p99, mx []float64
	var ls LatencySpread
	for _, r := range runs {
		p50, p95, p99, mx = append(p50, r.P50), append(p95, r.P95), append(p99, r.P99), append(mx, r.Max)
		ls.Samples += r.N
	}
	for _, m := range missing {
		ls.Missing += m
	}
	ls.P50, ls.P95, ls.P99, ls.Max = SpreadOf(p50), SpreadOf(p95), SpreadOf(p99), SpreadOf(mx)
	return ls
}

// ResourceSpread summarises a scenario's Resources over runs.
type ResourceSpread struct {
	PeakRSSMB   Spread `json:"peak_rss_mb"`
	SteadyRSSMB Spread `json:"steady_rss_mb"`
	CPUSec      Spread `json:"cpu_sec"`
	// CPUPer1k is CPU seconds per 1,000 units of work (Unit says which).
	CPUPer1k Spread `json:"cpu_sec_per_1k"`
	Unit     string `json:"unit"`
}

// SpreadResources summarises runs; work[i] is the units of work of run i.
func SpreadResources(rs []Resources, work []int, unit string) ResourceSpread {
	var peak, steady, cpu, per []float64
	for i, r := range rs {
		peak = append(peak, mb(r.PeakRSS))
		steady = append(steady, mb(r.SteadyRSS))
		cpu = append(cpu, r.CPU.Seconds())
		if i < len(work) && work[i] > 0 {
			per = append(per, r.CPU.Seconds()/float64(work[i])*1000)
		}
	}
	return ResourceSpread{PeakRSSMB: SpreadOf(peak), SteadyRSSMB: SpreadOf(steady), CPUSec: SpreadOf(cpu), CPUPer1k: SpreadOf(per), Unit: unit}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// LatencyRun is one window of the latency scenario.
type LatencyRun struct {
	Writes        int       `json:"writes"`
	AchievedRate  float64   `json:"achieved_tx_per_sec"`
	Notice        Latency   `json:"notice"`
	NoticeMissing int       `json:"notice_missing"`
	NoticeExtra   int       `json:"notice_extra"`
	Redis         Latency   `json:"redis"`
	RedisMissing  int       `json:"redis_missing"`
	First20MS     float64   `json:"first20_p50_ms"`
	Last20MS      float64   `json:"last20_p50_ms"`
	Growth        float64   `json:"lag_growth_ms_per_sec"`
	Flat          bool      `json:"flat"`
	Resources     Resources `json:"resources"`
	Stages        *Stages   `json:"stages,omitempty"`
}

// LatencyResult is the latency scenario at one offered rate.
type LatencyResult struct {
	Name      string         `json:"name"`
	Rate      int            `json:"rate"` // offered tx/s; 0 = as fast as the source goes
	Writers   int            `json:"writers"`
	WindowSec float64        `json:"window_sec"`
	Achieved  Spread         `json:"achieved_tx_per_sec"`
	Notice    LatencySpread  `json:"notice"`
	Redis     LatencySpread  `json:"redis"`
	First20   Spread         `json:"first20_p50_ms"`
	Last20    Spread         `json:"last20_p50_ms"`
	Growth    Spread         `json:"lag_growth_ms_per_sec"`
	Flat      bool           `json:"flat"` // every run flat
	Resources ResourceSpread `json:"resources"`
	Stages    *Stages        `json:"stages,omitempty"` // all runs together
	Runs      []LatencyRun   `json:"runs"`
}

// CatchUpRun is one backlog drained by dialsync and read by a no-op reader.
type CatchUpRun struct {
	Rows         int     `json:"rows"` // row changes of tracked tables, counted by the no-op reader
	Txns         int     `json:"txns"`
	WriteSec     float64 `json:"write_sec"`
	DrainSec     float64 `json:"drain_sec"` // dialsync process start -> checkpoint at head
	NoopSec      float64 `json:"noop_sec"`
	DialsyncRate float64 `json:"dialsync_rows_per_sec"`
	NoopRate     float64 `json:"noop_rows_per_sec"`
	Ratio        float64 `json:"ratio"` // dialsync / no-op reader
	// The sink-limit reference: the notices dialsync published for this
	// backlog, sent again by a bare publisher to a fresh stream.
	Notices     int       `json:"notices"`
	NoticeBytes int64     `json:"notice_bytes"`
	SinkSec     float64   `json:"sink_sec"`
	SinkRate    float64   `json:"sink_rows_per_sec"` // backlog rows / SinkSec
	SinkRatio   float64   `json:"sink_ratio"`        // dialsync / sink limit
	Resources   Resources `json:"resources"`
	Stages      *Stages   `json:"stages,omitempty"`
}

// CatchUpResult summarises the catch-up runs.
type CatchUpResult struct {
	Rows         int            `json:"rows"`
	Txns         int            `json:"txns"`
	Mix          string         `json:"mix"`
	DrainSec     Spread         `json:"drain_sec"`
	NoopSec      Spread         `json:"noop_sec"`
	DialsyncRate Spread         `json:"dialsync_rows_per_sec"`
	NoopRate     Spread         `json:"noop_rows_per_sec"`
	Ratio        Spread         `json:"ratio"` // dialsync / no-op reader
	Notices      int            `json:"notices"`
	SinkSec      Spread         `json:"sink_sec"`
	SinkRate     Spread         `json:"sink_rows_per_sec"`
	SinkRatio    Spread         `json:"sink_ratio"` // dialsync / sink limit
	Resources    ResourceSpread `json:"resources"`
	Stages       *Stages        `json:"stages,omitempty"` // all runs together
	Runs         []CatchUpRun   `json:"runs"`
}

// ReconcileRun is one bootstrap reconcile of the seeded data.
type ReconcileRun struct {
	TookSec   float64   `json:"took_sec"` // the binary's own "bootstrap reconcile done" took=
	WallSec   float64   `json:"wall_sec"` // process start -> that log line
	Users     int       `json:"users"`
	Entered   int       `json:"entered"`
	Resources Resources `json:"resources"`
}

// ReconcileResult summarises the reconcile runs.
type ReconcileResult struct {
	Took      Spread         `json:"took_sec"`
	Wall      Spread         `json:"wall_sec"`
	Users     int            `json:"users"`
	Entered   int            `json:"entered"`
	Resources ResourceSpread `json:"resources"`
	Runs      []ReconcileRun `json:"runs"`
}

// Target is one of the performance targets (docs/design.md) and whether this run met it.
type Target struct {
	Name     string `json:"name"`
	Want     string `json:"want"`
	Got      string `json:"got"`
	Met      bool   `json:"met"`
	Measured bool   `json:"measured"` // false when the scenario did not run or short mode
}

// F formats a float with d decimals.
func F(x float64, d int) string { return strconv.FormatFloat(x, 'f', d, 64) }

// Cell renders a spread as "median (min..max)", or just the median when
// every run gave the same figure.
func (s Spread) Cell(d int) string {
	m := F(s.Median, d)
	lo, hi := F(s.Min, d), F(s.Max, d)
	if lo == hi {
		return m
	}
	return m + " (" + lo + ".." + hi + ")"
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# dialsync benchmark\n\n")
	p("- date: %s\n- command: `%s`\n", r.Date, r.Command)
	if r.Short {
		p("- mode: SHORT (small sizes, targets not judged)\n")
	}
	var runs []string
	if len(r.Latency) > 0 {
		runs = append(runs, fmt.Sprintf("latency %d per rate", len(r.Latency[0].Runs)))
	}
	if r.CatchUp != nil {
		runs = append(runs, fmt.Sprintf("catch-up %d", len(r.CatchUp.Runs)))
	}
	if r.Reconcile != nil {
		runs = append(runs, fmt.Sprintf("reconcile %d", len(r.Reconcile.Runs)))
	}
	p("- runs: %s (cells are median (min..max) over the runs)\n", strings.Join(runs, ", "))
	p("- machine: %d CPUs (%s), %.1f GiB memory, kernel %s\n", r.Machine.NProc, r.Machine.CPUModel, float64(r.Machine.MemBytes)/(1<<30), r.Machine.Kernel)
	var vs []string
	for _, v := range r.Versions {
		vs = append(vs, v.Name+" "+v.Version)
	}
	p("- load average (1/5/15 min): %s at the start, %s at the end\n", r.Machine.LoadStart, r.Machine.LoadEnd)
	p("- versions: %s\n", strings.Join(vs, ", "))
	d := r.Data
	p("- source data: %d users, %d claims, %d requirements, %d addresses, %d vehicle packages\n", d.Users, d.Claims, d.Requirements, d.Addresses, d.VehiclePackages)
	p("- elapsed: %s\n\n", (time.Duration(r.ElapsedSec) * time.Second).String())

	p("## Targets\n\n| target | want | measured | met |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		met := "not met"
		switch {
		case !t.Measured:
			met = "n/a"
		case t.Met:
			met = "met"
		}
		p("| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, met)
	}

	if len(r.Latency) > 0 {
		p("\n## Latency: commit on the source -> notice received / cache key deleted (ms)\n\n")
		p("| offered | achieved tx/s | notice p50 | notice p95 | notice p99 | notice max | cache p50 | cache p95 | cache p99 | cache max | lag p50 first 20%% -> last 20%% | lag growth ms/s | flat | missing (notice/cache) |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range r.Latency {
			flat := "yes"
			if !l.Flat {
				flat = "NO"
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s -> %s | %s | %s | %d/%d |\n", l.Name, l.Achieved.Cell(0),
				l.Notice.P50.Cell(1), l.Notice.P95.Cell(1), l.Notice.P99.Cell(1), l.Notice.Max.Cell(1),
				l.Redis.P50.Cell(1), l.Redis.P95.Cell(1), l.Redis.P99.Cell(1), l.Redis.Max.Cell(1),
				l.First20.Cell(1), l.Last20.Cell(1), l.Growth.Cell(1), flat, l.Notice.Missing, l.Redis.Missing)
		}
	}
	if c := r.CatchUp; c != nil {
		p("\n## Catch-up: backlog of %d row changes (%d transactions) written while dialsync was stopped\n\n", c.Rows, c.Txns)
		p("Mix: %s.\n\n", c.Mix)
		p("| reader | time s | rows/s |\n|---|---|---|\n")
		p("| dialsync, every effect on (process start -> checkpoint at head) | %s | %s |\n", c.DrainSec.Cell(2), c.DialsyncRate.Cell(0))
		p("| no-op canal reader (canal.Stream, same decode path) | %s | %s |\n", c.NoopSec.Cell(2), c.NoopRate.Cell(0))
		p("| sink limit: a bare publisher (internal/publish) sending dialsync's %d notices to a fresh stream | %s | %s |\n", c.Notices, c.SinkSec.Cell(2), c.SinkRate.Cell(0))
		p("\nRatio dialsync / sink limit: %s; dialsync / no-op reader: %s\n", c.SinkRatio.Cell(3), c.Ratio.Cell(3))
	}
	if c := r.Reconcile; c != nil {
		p("\n## Reconcile: bootstrap of %d users into an empty queue (%d entered)\n\n", c.Users, c.Entered)
		p("| figure | seconds |\n|---|---|\n")
		p("| reconcile (the binary's took=) | %s |\n| process start -> reconcile done | %s |\n", c.Took.Cell(3), c.Wall.Cell(3))
	}
	p("\n## Resources of the dialsync process\n\n| scenario | peak RSS MB | steady RSS MB | CPU s | CPU s per 1k |\n|---|---|---|---|---|\n")
	res := func(name string, rs ResourceSpread) {
		p("| %s | %s | %s | %s | %s %s |\n", name, rs.PeakRSSMB.Cell(1), rs.SteadyRSSMB.Cell(1), rs.CPUSec.Cell(2), rs.CPUPer1k.Cell(3), rs.Unit)
	}
	if c := r.Reconcile; c != nil {
		res("reconcile", c.Resources)
	}
	for _, l := range r.Latency {
		res("latency "+l.Name, l.Resources)
	}
	if c := r.CatchUp; c != nil {
		res("catch-up", c.Resources)
	}
	var stageRows []string
	stage := func(name string, s *Stages) {
		if s == nil || s.Batches == 0 {
			return
		}
		row := fmt.Sprintf("| %s | %d | %s |", name, s.Batches, F(s.TxnsPerBatch, 1))
		for _, st := range StageNames {
			row += " " + F(s.PerBatchMS[st], 2) + " |"
		}
		row += fmt.Sprintf(" %s%% | %d | %d |", F(100*s.Busy, 0), s.Rows, s.Notices)
		stageRows = append(stageRows, row)
	}
	for _, l := range r.Latency {
		stage("latency "+l.Name, l.Stages)
	}
	if c := r.CatchUp; c != nil {
		stage("catch-up", c.Stages)
	}
	if len(stageRows) > 0 {
		p("\n## Where dialsync's apply loop spends its time (from its /metrics)\n\n")
		p("Mean milliseconds per batch in each stage; busy is the share of the scenario's wall time the loop spent in lookup+postgres+redis+nats (near 100%%: the apply loop is the bottleneck; the checkpoint write overlaps the next batch and is not counted).\n\n")
		p("| scenario | batches | txns/batch |")
		for _, st := range StageNames {
			p(" %s ms |", st)
		}
		p(" busy | row changes | notices |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		p("%s\n", strings.Join(stageRows, "\n"))
	}
	if len(r.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	return b.String()
}

package main

import (
	"encoding/json"
	"fmt"
	"os"

	"dialsync/internal/dev/benchkit"
	"dialsync/internal/dev/demo"
)

// The performance targets (docs/design.md), judged against one report.
// The reference size is demo.DefaultSize (50k users); a run at 10x
// (-users 500000, `make bench-10x`) is judged against the 10x targets, and
// its catch-up rate against the reference-size report in -baseline.

// loadBaseline reads the reference-size report a scaled run compares its
// catch-up with; nil (logged) when there is none fit for it.
func (b *bench) loadBaseline() *benchkit.Report {
	if b.o.short || b.o.size.Users == demo.DefaultSize.Users || b.o.baseline == "" {
		return nil
	}
	raw, err := os.ReadFile(b.o.baseline)
	if err != nil {
		b.log.Warn("no reference-size baseline to compare the catch-up with", "baseline", b.o.baseline, "error", err)
		return nil
	}
	var r benchkit.Report
	if err := json.Unmarshal(raw, &r); err != nil {
		b.log.Warn("baseline is not a bench report", "baseline", b.o.baseline, "error", err)
		return nil
	}
	if r.Short || r.Data.Users != demo.DefaultSize.Users || r.CatchUp == nil || r.CatchUp.DialsyncRate.Median <= 0 {
		b.log.Warn("baseline is not a full reference-size run with a catch-up", "baseline", b.o.baseline)
		return nil
	}
	return &r
}

// targets judges the performance targets against r; base is the
// reference-size report of a scaled run (or nil).
func targets(r *benchkit.Report, base *benchkit.Report) []benchkit.Target {
	var ts []benchkit.Target
	judge := !r.Short
	scaled := r.Data.Users >= 10*demo.DefaultSize.Users
	find := func(rate int) *benchkit.LatencyResult {
		for i := range r.Latency {
			if r.Latency[i].Rate == rate {
				return &r.Latency[i]
			}
		}
		return nil
	}
	t := benchkit.Target{Name: "latency at 1,000 tx/s", Want: "commit -> notice p50 <= 2.5 ms, p99 <= 10 ms, none missing", Got: "not run"}
	if l := find(1000); l != nil {
		t.Got = fmt.Sprintf("p50 %s, p99 %s ms at %s tx/s, %d missing", l.Notice.P50.Cell(1), l.Notice.P99.Cell(1), l.Achieved.Cell(0), l.Notice.Missing)
		t.Met, t.Measured = l.Notice.P50.Median <= 2.5 && l.Notice.P99.Median <= 10 && l.Notice.Missing == 0 && l.Achieved.Median >= 950, judge
	}
	ts = append(ts, t)
	t = benchkit.Target{Name: "latency at the source's fastest rate", Want: "p99 <= 100 ms, lag flat", Got: "not run"}
	if l := find(0); l != nil {
		flat := "flat"
		if !l.Flat {
			flat = "NOT flat"
		}
		t.Got = fmt.Sprintf("p99 %s ms at %s tx/s, lag %s (p50 %s -> %s ms, %s ms/s)", l.Notice.P99.Cell(1), l.Achieved.Cell(0), flat, l.First20.Cell(1), l.Last20.Cell(1), l.Growth.Cell(1))
		t.Met, t.Measured = l.Notice.P99.Median <= 100 && l.Flat, judge
	}
	ts = append(ts, t)
	t = benchkit.Target{Name: "catch-up", Want: ">= 0.8x the sink limit (a bare publisher of the same notices); the no-op canal reader beside", Got: "not run"}
	if c := r.CatchUp; c != nil {
		t.Got = fmt.Sprintf("%sx the sink limit, %sx the no-op reader (dialsync %s, sink %s, no-op %s rows/s; %d rows, %d notices)",
			c.SinkRatio.Cell(3), c.Ratio.Cell(3), c.DialsyncRate.Cell(0), c.SinkRate.Cell(0), c.NoopRate.Cell(0), c.Rows, c.Notices)
		t.Met, t.Measured = c.SinkRatio.Median >= 0.8, judge && c.Rows >= 1_000_000
	}
	ts = append(ts, t)
	if scaled {
		t = benchkit.Target{Name: "catch-up at 10x data", Want: "rows/s within 20% of the reference-size run", Got: "not run"}
		switch c := r.CatchUp; {
		case c == nil:
		case base == nil:
			t.Got = fmt.Sprintf("%s rows/s; no reference-size report to compare with (-baseline)", c.DialsyncRate.Cell(0))
		default:
			ref := base.CatchUp.DialsyncRate.Median
			t.Got = fmt.Sprintf("%s rows/s vs %s at 50k users (%s, %s): %sx", c.DialsyncRate.Cell(0), benchkit.F(ref, 0), base.Date, base.Machine.CPUModel, benchkit.F(c.DialsyncRate.Median/ref, 3))
			t.Met, t.Measured = c.DialsyncRate.Median >= 0.8*ref, judge && c.Rows >= 1_000_000
		}
		ts = append(ts, t)
	}
	t = benchkit.Target{Name: "reconcile 50k/150k/300k", Want: "< 1 s", Got: "not run"}
	want := 1.0
	if scaled {
		t.Name, t.Want, want = "reconcile 500k/1.5M/3M (10x)", "< 10 s", 10
	}
	if c := r.Reconcile; c != nil {
		t.Got = fmt.Sprintf("%s s (%d users)", c.Took.Cell(3), c.Users)
		t.Met, t.Measured = c.Took.Median < want, judge && c.Users >= demo.DefaultSize.Users
	}
	ts = append(ts, t)
	t = benchkit.Target{Name: "memory", Want: "peak RSS < 64 MB in every scenario (steady included)", Got: "not run"}
	var worst, peak float64
	var worstName, peakName string
	check := func(name string, rs benchkit.ResourceSpread) {
		if rs.SteadyRSSMB.Median >= worst {
			worst, worstName = rs.SteadyRSSMB.Median, name
		}
		if rs.PeakRSSMB.Max >= peak {
			peak, peakName = rs.PeakRSSMB.Max, name
		}
		t.Measured = judge
	}
	if c := r.Reconcile; c != nil {
		check("reconcile", c.Resources)
	}
	for _, l := range r.Latency {
		check("latency "+l.Name, l.Resources)
	}
	if c := r.CatchUp; c != nil {
		check("catch-up", c.Resources)
	}
	if worstName != "" {
		t.Got = fmt.Sprintf("highest peak %s MB (%s); worst steady %s MB (%s)", benchkit.F(peak, 1), peakName, benchkit.F(worst, 1), worstName)
		t.Met = peak < 64
	}
	return append(ts, t)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dialsync/internal/dev/benchkit"
	"dialsync/internal/dev/dstest"
)

// TestShortMode runs the whole harness in -short mode (what `make
// bench-short` runs in CI) against a freshly built binary, so the harness
// cannot rot: every scenario must produce figures from real measurements.
func TestShortMode(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "dialsync")
	if err := dstest.BuildDialsync(bin); err != nil {
		t.Fatal(err)
	}
	jsonPath, mdPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.md")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-short", "-bin", bin, "-json", jsonPath, "-md", mdPath}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench -short: %v\n%s", err, stderr.String())
	}

	var rep benchkit.Report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results are not JSON: %v", err)
	}
	if !rep.Short || rep.Machine.NProc < 1 || len(rep.Versions) < 5 {
		t.Errorf("header: short %v machine %+v versions %v", rep.Short, rep.Machine, rep.Versions)
	}
	if len(rep.Latency) != 3 {
		t.Fatalf("latency results for %d rates, want 3", len(rep.Latency))
	}
	for _, l := range rep.Latency {
		// Every write must come back as a notice and a deleted key.
		if l.Notice.Samples == 0 || l.Notice.Missing != 0 || l.Redis.Missing != 0 {
			t.Errorf("latency %s: %d samples, %d notices and %d deletions missing", l.Name, l.Notice.Samples, l.Notice.Missing, l.Redis.Missing)
		}
		if l.Notice.P50.Median <= 0 || l.Notice.P99.Median < l.Notice.P50.Median {
			t.Errorf("latency %s: implausible percentiles %+v", l.Name, l.Notice)
		}
		if l.Resources.SteadyRSSMB.Median <= 0 || l.Resources.CPUSec.Median <= 0 {
			t.Errorf("latency %s: resources not measured: %+v", l.Name, l.Resources)
		}
		if l.Stages == nil || l.Stages.Batches == 0 {
			t.Errorf("latency %s: no apply stage breakdown from /metrics", l.Name)
		}
	}
	if r := rep.Latency[1]; r.Rate != 1000 || r.Achieved.Median < 900 {
		t.Errorf("1000/s window achieved %v tx/s", r.Achieved.Median)
	}
	c := rep.CatchUp
	if c == nil || c.Rows < 20_000 || c.DialsyncRate.Median <= 0 || c.NoopRate.Median <= 0 || c.Ratio.Median <= 0 {
		t.Fatalf("catch-up: %+v", c)
	}
	// The sink-limit reference republished every notice of the backlog.
	if c.Notices < c.Rows/10 || c.SinkSec.Median <= 0 || c.SinkRate.Median <= 0 || c.SinkRatio.Median <= 0 {
		t.Errorf("catch-up sink reference: %d notices, %v s, %v rows/s, ratio %v", c.Notices, c.SinkSec.Median, c.SinkRate.Median, c.SinkRatio.Median)
	}
	for _, r := range c.Runs {
		if r.Stages != nil && r.Stages.Notices != r.Notices {
			t.Errorf("catch-up run: dialsync counted %d published notices, the reference sent %d", r.Stages.Notices, r.Notices)
		}
		if want := r.DialsyncRate / r.SinkRate; r.SinkRatio != want || r.NoticeBytes <= int64(r.Notices) {
			t.Errorf("catch-up run: sink ratio %v, want %v; %d notice bytes", r.SinkRatio, want, r.NoticeBytes)
		}
	}
	rc := rep.Reconcile
	if rc == nil || rc.Users != 2000 || rc.Took.Median <= 0 || rc.Wall.Median < rc.Took.Median {
		t.Fatalf("reconcile: %+v", rc)
	}
	if len(rep.Targets) != 5 {
		t.Errorf("%d targets, want 5", len(rep.Targets))
	}
	for _, tg := range rep.Targets {
		if tg.Measured {
			t.Errorf("short mode judged target %q", tg.Name)
		}
	}
	md, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), string(md)) || !strings.Contains(string(md), "## Targets") || !strings.Contains(string(md), "Ratio dialsync / sink limit") {
		t.Errorf("the Markdown table was not printed or is incomplete:\n%s", stdout.String())
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-short", "-runs", "2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	// -short shrinks what was not set explicitly.
	if o.runs != 2 || o.backlog != 20_000 || o.size.Users != 2000 || o.window != time.Second || !strings.HasSuffix(o.jsonPath, "short.json") {
		t.Errorf("short options %+v", o)
	}
	o, err = parseOptions(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.runs != 3 || o.catchUpRuns != 3 || o.reconcileRuns != 5 || o.backlog != 1_000_000 || o.size.Users != 50_000 || len(o.rates) != 3 || o.rates[2] != 0 {
		t.Errorf("default options %+v", o)
	}
	// A 10x run writes its own results, never over the reference size's.
	o, err = parseOptions([]string{"-users", "500000", "-scenarios", "reconcile,catchup"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c := o.size.Counts(); c.Users != 500_000 || c.Claims != 1_500_000 || c.Requirements != 3_000_000 ||
		!strings.HasSuffix(o.jsonPath, "10x.json") || !strings.HasSuffix(o.mdPath, "10x.md") || o.scenarios["latency"] || !o.scenarios["catchup"] {
		t.Errorf("10x options %+v counts %+v", o, c)
	}
	if bufferPoolMB(50_000) != 1024 || bufferPoolMB(500_000) < 1900 {
		t.Errorf("buffer pool %d MB at 1x, %d MB at 10x", bufferPoolMB(50_000), bufferPoolMB(500_000))
	}
	for _, bad := range [][]string{{"-rates", "x"}, {"-scenarios", "nope"}, {"-runs", "0"}} {
		if _, err := parseOptions(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestTargets judges hand-made reports: the reference size against the
// 1x targets, a 10x run against the 10x ones and its baseline.
func TestTargets(t *testing.T) {
	sp := func(x float64) benchkit.Spread { return benchkit.Spread{Median: x, Min: x, Max: x} }
	catchUp := func(rate float64) *benchkit.CatchUpResult {
		return &benchkit.CatchUpResult{Rows: 1_000_000, DialsyncRate: sp(rate), SinkRatio: sp(0.9), Ratio: sp(0.3),
			Resources: benchkit.ResourceSpread{PeakRSSMB: sp(60), SteadyRSSMB: sp(50)}}
	}
	recon := func(users int, took float64) *benchkit.ReconcileResult {
		return &benchkit.ReconcileResult{Users: users, Took: sp(took), Resources: benchkit.ResourceSpread{PeakRSSMB: sp(70), SteadyRSSMB: sp(50)}}
	}
	byName := func(ts []benchkit.Target) map[string]benchkit.Target {
		m := map[string]benchkit.Target{}
		for _, tg := range ts {
			m[tg.Name] = tg
		}
		return m
	}
	one := &benchkit.Report{Data: benchkit.DataSize{Users: 50_000}, CatchUp: catchUp(100_000), Reconcile: recon(50_000, 1.5)}
	ts := byName(targets(one, nil))
	if len(ts) != 5 || !ts["catch-up"].Met || !ts["catch-up"].Measured || ts["reconcile 50k/150k/300k"].Met || ts["memory"].Met {
		t.Errorf("1x targets: %+v", ts)
	}
	ten := &benchkit.Report{Data: benchkit.DataSize{Users: 500_000}, CatchUp: catchUp(85_000), Reconcile: recon(500_000, 9.5)}
	ts = byName(targets(ten, one))
	if len(ts) != 6 || !ts["catch-up at 10x data"].Met || !ts["reconcile 500k/1.5M/3M (10x)"].Met || !ts["reconcile 500k/1.5M/3M (10x)"].Measured {
		t.Errorf("10x targets: %+v", ts)
	}
	ten.CatchUp = catchUp(75_000)
	if tg := byName(targets(ten, one))["catch-up at 10x data"]; tg.Met || !tg.Measured {
		t.Errorf("catch-up at 0.75x the 1x rate judged %+v", tg)
	}
	if tg := byName(targets(ten, nil))["catch-up at 10x data"]; tg.Measured || !strings.Contains(tg.Got, "no reference-size report") {
		t.Errorf("10x without a baseline: %+v", tg)
	}
}

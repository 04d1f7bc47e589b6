package benchkit

import (
	"os"
	"strings"
	"testing"
	"time"
)

func ms2d(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	// With few samples p99 is the maximum, never an interpolation below it.
	if got := Percentile(ms2d(1, 2, 3), 99); got != 3*time.Millisecond {
		t.Errorf("p99 of 3 samples = %v, want 3ms", got)
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty percentile not zero")
	}
}

func TestSummarizeDoesNotReorderInput(t *testing.T) {
	in := ms2d(30, 10, 20)
	l := Summarize(in)
	if l.N != 3 || l.P50 != 20 || l.Max != 30 {
		t.Errorf("summary %+v", l)
	}
	if in[0] != 30*time.Millisecond {
		t.Error("input was sorted in place")
	}
}

func TestSpreadOf(t *testing.T) {
	s := SpreadOf([]float64{5, 1, 3})
	if s != (Spread{Median: 3, Min: 1, Max: 5}) {
		t.Errorf("odd: %+v", s)
	}
	s = SpreadOf([]float64{4, 1, 2, 3})
	if s.Median != 2.5 {
		t.Errorf("even median %v, want 2.5", s.Median)
	}
	if got := (Spread{Median: 2, Min: 2, Max: 2}).Cell(1); got != "2.0" {
		t.Errorf("single-valued cell %q", got)
	}
	if got := (Spread{Median: 2, Min: 1, Max: 3}).Cell(0); got != "2 (1..3)" {
		t.Errorf("cell %q", got)
	}
}

func TestMatchFIFO(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	commits := []Event{{1, at(0)}, {2, at(1)}, {1, at(10)}, {3, at(20)}}
	// User 1's two notices arrive in order; user 3's never; user 9's was not ours.
	arrivals := []Event{{1, at(15)}, {2, at(4)}, {1, at(5)}, {9, at(6)}}
	samples, missing, extra := MatchFIFO(commits, arrivals)
	if missing != 1 || extra != 1 {
		t.Fatalf("missing %d extra %d, want 1 and 1", missing, extra)
	}
	want := []time.Duration{5 * time.Millisecond, 3 * time.Millisecond, 5 * time.Millisecond}
	if len(samples) != len(want) {
		t.Fatalf("samples %v", samples)
	}
	for i, s := range samples {
		if s.Latency != want[i] {
			t.Errorf("sample %d latency %v, want %v", i, s.Latency, want[i])
		}
	}
}

func TestMatchFirst(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	commits := []Event{{1, at(0)}, {1, at(10)}, {2, at(5)}}
	dels := []Event{{1, at(3)}}
	s, missing := MatchFirst(commits, dels)
	if missing != 1 || len(s) != 1 || s[0].Latency != 3*time.Millisecond {
		t.Errorf("samples %v missing %d", s, missing)
	}
}

func TestTrendAndFlat(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var growing, steady []Sample
	for i := 0; i < 100; i++ {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		growing = append(growing, Sample{At: at, Latency: time.Duration(i+1) * 5 * time.Millisecond})
		steady = append(steady, Sample{At: at, Latency: time.Duration(3+i%4) * time.Millisecond})
	}
	// Growing: 5 ms more lag per 1 ms of window = 5000 ms/s.
	f, l, g := Trend(growing)
	if Flat(f, l, g) || g < 4900 || g > 5100 {
		t.Errorf("growing lag: %v -> %v, %v ms/s, judged flat %v", f, l, g, Flat(f, l, g))
	}
	f, l, g = Trend(steady)
	if !Flat(f, l, g) {
		t.Errorf("steady lag judged growing: %v -> %v (%v ms/s)", f, l, g)
	}
}

func TestGTIDCovers(t *testing.T) {
	for _, c := range []struct {
		have, want string
		ok         bool
	}{
		{"0-1-10", "0-1-10", true},
		{"0-1-11", "0-1-10", true},
		{"0-1-9", "0-1-10", false},
		{"0-1-10,1-2-5", "1-2-5", true},
		{"0-1-10", "0-1-10,1-2-5", false},
		{"", "", true},
		{"", "0-1-1", false},
	} {
		if got := GTIDCovers(c.have, c.want); got != c.ok {
			t.Errorf("GTIDCovers(%q, %q) = %v", c.have, c.want, got)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command with spaces and parentheses, utime 150 and stime 50 ticks.
	line := "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 8 0 100 1000 200"
	d, err := parseStatCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if d != 2*time.Second {
		t.Errorf("cpu %v, want 2s", d)
	}
}

func TestReadProcAndSamplerOnSelf(t *testing.T) {
	st, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.RSS <= 0 || st.HWM < st.RSS {
		t.Errorf("rss %d hwm %d", st.RSS, st.HWM)
	}
	s, err := StartSampler(os.Getpid(), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ballast := make([]byte, 32<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // burn some CPU
		ballast[0]++
	}
	r := s.Stop()
	if r.Samples < 2 || r.PeakRSS < 32<<20 || r.SteadyRSS <= 0 || r.CPU <= 0 {
		t.Errorf("resources %+v", r)
	}
	_ = ballast[len(ballast)-1]
}

func TestParseMetricsAndStages(t *testing.T) {
	text := `# HELP dialsync_stage_duration_seconds x
# TYPE dialsync_stage_duration_seconds histogram
dialsync_stage_duration_seconds_bucket{stage="lookup",le="0.001"} 3
dialsync_stage_duration_seconds_sum{stage="lookup"} 0.5
dialsync_stage_duration_seconds_sum{stage="postgres"} 1.5
dialsync_stage_duration_seconds_sum{stage="checkpoint"} 9
dialsync_batch_transactions_sum 400
dialsync_batch_transactions_count 100
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	before := Metrics{`dialsync_stage_duration_seconds_sum{stage="lookup"}`: 0.1, "dialsync_batch_transactions_count": 20, "dialsync_batch_transactions_sum": 80}
	s := StagesBetween(before, m, 4*time.Second)
	if s.Batches != 80 || s.Txns != 320 || s.TxnsPerBatch != 4 {
		t.Errorf("batches %d txns %d per batch %v", s.Batches, s.Txns, s.TxnsPerBatch)
	}
	if got := s.PerBatchMS["lookup"]; got < 4.99 || got > 5.01 {
		t.Errorf("lookup per batch %v ms, want 5", got)
	}
	if s.Busy < 0.474 || s.Busy > 0.476 { // (0.4 + 1.5) / 4; the checkpoint is off the critical path
		t.Errorf("busy %v", s.Busy)
	}
	c := CombineStages([]*Stages{s, nil, s})
	if c.Batches != 160 || c.Busy < 0.474 || c.Busy > 0.476 {
		t.Errorf("combined %+v", c)
	}
	if _, err := ParseMetrics(strings.NewReader("x{a=\"b\"} notanumber\n")); err == nil {
		t.Error("bad value accepted")
	}
}

func TestMarkdownHasEverySection(t *testing.T) {
	r := &Report{
		Date: "2026-01-01T00:00:00Z", Command: "go run ./cmd/bench", Runs: 3,
		Machine:  Machine{NProc: 2, MemBytes: 4 << 30, Kernel: "6.1", CPUModel: "cpu"},
		Versions: []Version{{Name: "go", Version: "go1.26"}},
		Latency: []LatencyResult{{Name: "1000/s", Rate: 1000, Flat: true,
			Notice:    LatencySpread{P99: Spread{Median: 12.5, Min: 11, Max: 14}},
			Resources: ResourceSpread{Unit: "row changes"},
			Stages:    &Stages{Batches: 10, TxnsPerBatch: 3, PerBatchMS: map[string]float64{"lookup": 1}, Busy: 0.5}}},
		CatchUp:   &CatchUpResult{Rows: 1000, Ratio: Spread{Median: 0.6, Min: 0.6, Max: 0.6}},
		Reconcile: &ReconcileResult{Users: 50000, Took: Spread{Median: 1.2, Min: 1.1, Max: 1.3}},
		Targets:   []Target{{Name: "t", Want: "w", Got: "g", Met: true, Measured: true}, {Name: "u", Want: "w", Got: "g"}},
	}
	md := r.Markdown()
	for _, want := range []string{"## Targets", "| t | w | g | met |", "| u | w | g | n/a |", "## Latency", "12.5 (11.0..14.0)",
		"## Catch-up", "0.600", "## Reconcile", "1.200 (1.100..1.300)", "## Resources", "## Where dialsync's apply loop", "| latency 1000/s | 10 | 3.0 | 1.00 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Stage label values as internal/apply names them (apply.Stage.String;
// this package does not import apply). The deploy files use them.
const (
	stagePostgres = "postgres"
	stageRedis    = "redis"
)

var stages = []string{"lookup", stagePostgres, stageRedis, "nats", "checkpoint"}

// touchAll gives every vector at least one child, so that Gather reports
// every metric family (a vector with no child exports nothing).
func touchAll(tb testing.TB, m *Metrics) {
	tb.Helper()
	m.InitTables("users")
	m.InitStages(stages...)
	m.NoticesPublished.WithLabelValues("user.changed")
	m.Retries.WithLabelValues(stagePostgres, "postgres")
	m.Errors.WithLabelValues(stagePostgres, "postgres")
	m.Reconnects.WithLabelValues("postgres")
}

func gatheredNames(tb testing.TB, m *Metrics) map[string]string {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	got := make(map[string]string, len(mfs))
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetHelp()
	}
	return got
}

// TestNamesMatchRegistry holds Names and the registry to each other both
// ways: every listed name is registered with a help string, and every
// registered dialsync_ metric is listed.
func TestNamesMatchRegistry(t *testing.T) {
	m := New()
	touchAll(t, m)
	got := gatheredNames(t, m)

	names := Names()
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("Names lists %q twice", n)
		}
		seen[n] = true
		help, ok := got[n]
		if !ok {
			t.Errorf("Names lists %q but the registry does not export it", n)
			continue
		}
		if len(help) < 15 {
			t.Errorf("%s: help %q is too short to explain the metric", n, help)
		}
	}
	for n := range got {
		if strings.HasPrefix(n, "dialsync_") && !seen[n] {
			t.Errorf("registry exports %q but Names does not list it", n)
		}
	}
	// The RSS panel and the runtime collectors come with New.
	for _, n := range []string{"process_resident_memory_bytes", "go_goroutines"} {
		if _, ok := got[n]; !ok {
			t.Errorf("registry lacks %s", n)
		}
	}
	if len(m.collectors()) != len(names) {
		t.Errorf("collectors() has %d entries, Names has %d", len(m.collectors()), len(names))
	}
}

// TestEveryFieldRegistered catches a metric field added to the struct but
// not to collectors(): registering it again must report it as present.
func TestEveryFieldRegistered(t *testing.T) {
	m := New()
	v := reflect.ValueOf(m).Elem()
	collectorType := reflect.TypeFor[prometheus.Collector]()
	n := 0
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() || !f.Type.Implements(collectorType) {
			continue
		}
		n++
		c := v.Field(i).Interface().(prometheus.Collector)
		err := m.Registry().Register(c)
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			t.Errorf("field %s is not registered (Register returned %v)", f.Name, err)
		}
	}
	if n != len(Names()) {
		t.Errorf("Metrics has %d metric fields, Names lists %d", n, len(Names()))
	}
}

// TestIndependentInstances proves two New calls share nothing, which tests
// in other packages rely on.
func TestIndependentInstances(t *testing.T) {
	a, b := New(), New()
	a.Transactions.Add(3)
	if got := value(t, b.Transactions); got != 0 {
		t.Fatalf("second instance sees %v transactions, want 0", got)
	}
	if got := value(t, a.Transactions); got != 3 {
		t.Fatalf("first instance has %v transactions, want 3", got)
	}
}

func TestPreinitialisedSeries(t *testing.T) {
	m := New()
	m.InitStages(stages...)
	// Known label values exist at zero before any event.
	for _, c := range []struct {
		c    prometheus.Collector
		want int
	}{
		{m.StageSeconds, 5},
		{m.QueueChanges, 3},
		{m.ReconcileDrift, 3},
		{m.ReconcileRuns, 4},
		{m.BuildInfo, 1},
		{m.DeadLetters, 0},
	} {
		if got := count(c.c); got != c.want {
			t.Errorf("%T: %d series, want %d", c.c, got, c.want)
		}
	}
	m.InitTables("users", "claims")
	if got := count(m.DeadLetters); got != 2 {
		t.Errorf("dead letters after InitTables: %d series, want 2", got)
	}
	if got := count(m.RowChanges); got != 6 {
		t.Errorf("row changes after InitTables: %d series, want 6", got)
	}
}

func TestBuildInfoAndStageTimer(t *testing.T) {
	m := New()
	m.SetBuildInfo("v1.2.3")
	ms := collect(m.BuildInfo)
	if len(ms) != 1 {
		t.Fatalf("build info has %d series, want 1 (SetBuildInfo must replace, not add)", len(ms))
	}
	labels := map[string]string{}
	for _, l := range ms[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "v1.2.3" || labels["go_version"] != runtime.Version() || ms[0].GetGauge().GetValue() != 1 {
		t.Fatalf("build info = %v %v", labels, ms[0].GetGauge().GetValue())
	}

	m.ObserveStage(stageRedis, time.Now().Add(-20*time.Millisecond))
	found := false
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dialsync_stage_duration_seconds" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			if metric.GetLabel()[0].GetValue() == stageRedis {
				found = true
				if c := metric.GetHistogram().GetSampleCount(); c != 1 {
					t.Errorf("redis sample count %d, want 1", c)
				}
				if s := metric.GetHistogram().GetSampleSum(); s < 0.02 {
					t.Errorf("redis sample sum %v, want >= 0.02", s)
				}
			}
		}
	}
	if !found {
		t.Fatal("no redis stage sample gathered")
	}
}

func TestHandlerServesExposition(t *testing.T) {
	m := New()
	m.Transactions.Add(7)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !strings.Contains(string(body), "dialsync_transactions_total 7\n") {
		t.Fatalf("exposition lacks the counter:\n%s", body)
	}
}

// TestDeployFilesUseKnownNames checks every dialsync_ metric that the alert
// rules, their tests and the dashboard mention exists, so a rename here
// cannot silently break an alert or a panel.
func TestDeployFilesUseKnownNames(t *testing.T) {
	known := map[string]bool{}
	for _, n := range Names() {
		known[n] = true
		// Histogram series suffixes.
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			known[n+s] = true
		}
	}
	ref := regexp.MustCompile(`dialsync_[a-z0-9_]+`)
	files := []string{
		"../../deploy/prometheus/alerts.yml",
		"../../deploy/prometheus/alerts_test.yml",
		"../../deploy/grafana/dialsync.json",
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		var refs []string
		for _, n := range ref.FindAllString(string(data), -1) {
			if !known[n] {
				t.Errorf("%s references unknown metric %s", filepath.Base(f), n)
			}
			refs = append(refs, n)
		}
		sort.Strings(refs)
		if len(slices.Compact(refs)) < 5 {
			t.Errorf("%s references only %v; expected the dialsync metrics", f, refs)
		}
	}
}

// collect returns the current series of c.
func collect(c prometheus.Collector) []*dto.Metric {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	var out []*dto.Metric
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			panic(err)
		}
		out = append(out, &d)
	}
	return out
}

func count(c prometheus.Collector) int { return len(collect(c)) }

// value returns the value of a single-series counter or gauge.
func value(tb testing.TB, c prometheus.Collector) float64 {
	tb.Helper()
	ms := collect(c)
	if len(ms) != 1 {
		tb.Fatalf("%d series, want 1", len(ms))
	}
	if ms[0].Counter != nil {
		return ms[0].GetCounter().GetValue()
	}
	return ms[0].GetGauge().GetValue()
}

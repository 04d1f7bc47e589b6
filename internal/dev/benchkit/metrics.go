package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics is a scrape of a Prometheus text exposition: sample name with
// its labels exactly as exposed ("name{a=\"b\"}") -> value.
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format (comments skipped; a
// timestamp after the value is ignored).
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the last space outside the label set.
		var name, rest string
		if end := strings.LastIndexByte(line, '}'); end >= 0 {
			name, rest = line[:end+1], line[end+1:]
		} else {
			name, rest, _ = strings.Cut(line, " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("parse metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("parse metrics: value of %q: %w", name, err)
		}
		m[name] = v
	}
	return m, sc.Err()
}

// Scrape fetches and parses url.
func Scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// Sum adds every sample of the metric name whose labels contain all of
// the label="value" pairs given.
func (m Metrics) Sum(name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		base, lbl, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(lbl, l) {
				ok = false
				break
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

// StageNames are dialsync's apply stages (internal/apply.StageNames).
var StageNames = []string{"lookup", "postgres", "redis", "nats", "checkpoint"}

// Stages is where dialsync's apply loop spent its time between two
// scrapes of /metrics.
type Stages struct {
	Batches      int                `json:"batches"`
	Txns         int                `json:"txns"`
	TxnsPerBatch float64            `json:"txns_per_batch"`
	Rows         int                `json:"rows"`         // source row changes applied
	Notices      int                `json:"notices"`      // notices acknowledged by JetStream
	Keys         int                `json:"keys"`         // keys sent in DELs
	Seconds      map[string]float64 `json:"seconds"`      // stage -> total seconds
	PerBatchMS   map[string]float64 `json:"per_batch_ms"` // stage -> mean ms per batch
	// WallSec is the scenario time the stages ran in; Busy is the share of
	// it the loop spent in the stages on its critical path (lookup,
	// postgres, redis, nats; near 1: the apply loop is the bottleneck).
	// The checkpoint write is left out: dialsync's saver goroutine does it
	// while the loop applies the next batch.
	WallSec float64 `json:"wall_sec"`
	Busy    float64 `json:"busy"`
}

// StagesBetween computes the stage times from two scrapes (before may be
// nil: counters from zero).
func StagesBetween(before, after Metrics, wall time.Duration) *Stages {
	d := func(name string, labels ...string) float64 {
		v := after.Sum(name, labels...)
		if before != nil {
			v -= before.Sum(name, labels...)
		}
		return v
	}
	s := &Stages{Seconds: map[string]float64{}, PerBatchMS: map[string]float64{}, WallSec: wall.Seconds()}
	s.Batches = int(d("dialsync_batch_transactions_count"))
	s.Txns = int(d("dialsync_batch_transactions_sum"))
	s.Rows = int(d("dialsync_row_changes_total"))
	s.Notices = int(d("dialsync_notices_published_total"))
	s.Keys = int(d("dialsync_keys_deleted_total"))
	if s.Batches > 0 {
		s.TxnsPerBatch = float64(s.Txns) / float64(s.Batches)
	}
	for _, st := range StageNames {
		sec := d("dialsync_stage_duration_seconds_sum", `stage="`+st+`"`)
		s.Seconds[st] = sec
		if s.Batches > 0 {
			s.PerBatchMS[st] = sec / float64(s.Batches) * 1000
		}
	}
	if s.WallSec > 0 {
		s.Busy = s.CriticalPath() / s.WallSec
	}
	return s
}

// CriticalPath is the time spent in the stages the apply loop waits for
// (all but the checkpoint, which overlaps the next batch).
func (s Stages) CriticalPath() float64 {
	var t float64
	for k, v := range s.Seconds {
		if k != "checkpoint" {
			t += v
		}
	}
	return t
}

// CombineStages adds up several runs' stage times (and their wall time, for
// the busy fraction).
func CombineStages(runs []*Stages) *Stages {
	var out *Stages
	for _, r := range runs {
		if r == nil {
			continue
		}
		if out == nil {
			out = &Stages{Seconds: map[string]float64{}, PerBatchMS: map[string]float64{}}
		}
		out.Batches += r.Batches
		out.Txns += r.Txns
		out.Rows += r.Rows
		out.Notices += r.Notices
		out.Keys += r.Keys
		out.WallSec += r.WallSec
		for k, v := range r.Seconds {
			out.Seconds[k] += v
		}
	}
	if out == nil {
		return nil
	}
	if out.Batches > 0 {
		out.TxnsPerBatch = float64(out.Txns) / float64(out.Batches)
		for k, v := range out.Seconds {
			out.PerBatchMS[k] = v / float64(out.Batches) * 1000
		}
	}
	if out.WallSec > 0 {
		out.Busy = out.CriticalPath() / out.WallSec
	}
	return out
}

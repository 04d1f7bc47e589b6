// Package benchkit holds the measuring parts of the benchmark harness
// (cmd/bench): latency matching and percentiles, medians with their spread,
// process resource sampling from /proc, machine facts, and the report with
// its Markdown rendering. Nothing here talks to the servers.
package benchkit

import (
	"cmp"
	"slices"
	"time"
)

// Latency is a latency distribution in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Summarize computes the distribution of ds (not modified). Percentiles are
// nearest-rank: the smallest value with at least p% of the samples at or
// below it, so p99 of 100 samples is the 99th, not an interpolation.
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Latency{
		N:   len(s),
		P50: ms(Percentile(s, 50)),
		P95: ms(Percentile(s, 95)),
		P99: ms(Percentile(s, 99)),
		Max: ms(s[len(s)-1]),
	}
}

// Percentile is the nearest-rank p-th percentile of sorted (ascending);
// zero when empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), 1-based.
	rank := int(p / 100 * float64(len(sorted)))
	if float64(rank) < p/100*float64(len(sorted)) {
		rank++
	}
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Spread is the median of several runs' figures with their range.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// SpreadOf summarises xs (not modified); the median of an even count is the
// mean of the two middle values.
func SpreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Spread{Median: med, Min: s[0], Max: s[n-1]}
}

// Event is something that happened to a key (a user id) at a time: a
// commit on the source, a notice received, a cache key deleted.
type Event struct {
	Key uint64
	At  time.Time
}

// Sample is one matched commit: when it committed and how long its effect
// took to show.
type Sample struct {
	At      time.Time
	Latency time.Duration
}

// MatchFIFO pairs every commit with an arrival of the same key, in order
// per key: the k-th commit of a key with the k-th arrival of that key. That
// is exact when each key's commits are serialised on the source (one writer
// owns a key) and the pipeline emits exactly one arrival per commit in
// commit order, which dialsync promises for user.changed notices (one per
// transaction and user, in binlog order). Samples come back sorted by
// commit time; missing counts commits without an arrival, extra arrivals
// without a commit (for example from an earlier window).
func MatchFIFO(commits, arrivals []Event) (samples []Sample, missing, extra int) {
	byKey := make(map[uint64][]time.Time, len(arrivals))
	for _, a := range sortedByTime(arrivals) {
		byKey[a.Key] = append(byKey[a.Key], a.At)
	}
	samples = make([]Sample, 0, len(commits))
	for _, c := range sortedByTime(commits) {
		q := byKey[c.Key]
		if len(q) == 0 {
			missing++
			continue
		}
		samples = append(samples, Sample{At: c.At, Latency: q[0].Sub(c.At)})
		byKey[c.Key] = q[1:]
	}
	for _, q := range byKey {
		extra += len(q)
	}
	return samples, missing, extra
}

// MatchFirst pairs the FIRST commit of each key with the first arrival of
// that key, ignoring later commits: for effects that happen once per key in
// a window, like the deletion of a cache key set before the window.
func MatchFirst(commits, arrivals []Event) (samples []Sample, missing int) {
	first := make(map[uint64]time.Time, len(arrivals))
	for _, a := range sortedByTime(arrivals) {
		if _, ok := first[a.Key]; !ok {
			first[a.Key] = a.At
		}
	}
	seen := make(map[uint64]bool, len(commits))
	for _, c := range sortedByTime(commits) {
		if seen[c.Key] {
			continue
		}
		seen[c.Key] = true
		at, ok := first[c.Key]
		if !ok {
			missing++
			continue
		}
		samples = append(samples, Sample{At: c.At, Latency: at.Sub(c.At)})
	}
	return samples, missing
}

func sortedByTime(es []Event) []Event {
	s := slices.Clone(es)
	slices.SortStableFunc(s, func(a, b Event) int { return a.At.Compare(b.At) })
	return s
}

// Latencies extracts the latencies of samples.
func Latencies(samples []Sample) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = s.Latency
	}
	return out
}

// Trend compares the median latency of the first and the last 20% of the
// samples (by commit time), and turns the difference into a growth rate:
// milliseconds of lag gained per second of the window. A pipeline that
// keeps up has the two close and no growth; one that falls behind gains lag
// at (1 - its rate / the offered rate) seconds per second.
func Trend(samples []Sample) (first, last time.Duration, growthMSPerSec float64) {
	s := slices.Clone(samples)
	slices.SortFunc(s, func(a, b Sample) int { return cmp.Compare(a.At.UnixNano(), b.At.UnixNano()) })
	n := len(s) / 5
	if n == 0 {
		return 0, 0, 0
	}
	med := func(part []Sample) (time.Duration, time.Time) {
		d := Latencies(part)
		slices.Sort(d)
		return Percentile(d, 50), part[len(part)/2].At
	}
	first, t1 := med(s[:n])
	last, t2 := med(s[len(s)-n:])
	if span := t2.Sub(t1).Seconds(); span > 0 {
		growthMSPerSec = float64((last - first).Microseconds()) / 1000 / span
	}
	return first, last, growthMSPerSec
}

// Flat decides whether lag stayed flat: the last fifth's median is within
// 10 ms of the first fifth's (scheduling noise on a busy two-core box), or
// lag grew by at most 50 ms per second of window (the pipeline kept up with
// at least ~95% of the offered rate).
func Flat(first, last time.Duration, growthMSPerSec float64) bool {
	return last <= first+10*time.Millisecond || growthMSPerSec <= 50
}

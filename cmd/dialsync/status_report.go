package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"dialsync/internal/config"
	"dialsync/internal/metrics"
)

// Health values of statusReport.
const (
	healthHealthy  = "healthy"
	healthDegraded = "degraded"
	healthNoLeader = "no leader"
)

// Roles an instance reports.
const (
	roleLeader  = "leader"
	roleStandby = "standby"
)

// statusReport is dialsync status's output (its JSON form is documented by
// the field tags; durations are seconds).
type statusReport struct {
	Pipeline   string            `json:"pipeline"`
	Health     string            `json:"health"`            // healthy | degraded | no leader
	Reasons    []string          `json:"reasons,omitempty"` // why not healthy
	Notes      []string          `json:"notes,omitempty"`   // worth knowing, not unhealthy
	Schema     schemaStatus      `json:"schema"`
	Leader     *leaderStatus     `json:"leader"`     // null: unknown
	Checkpoint *checkpointStatus `json:"checkpoint"` // null: none stored (or unknown)
	Queue      *queueStatus      `json:"queue"`      // null: unknown
	Instance   instanceStatus    `json:"instance"`

	noLeader bool
}

type schemaStatus struct {
	Name    string `json:"name"`
	Version int    `json:"version"` // 0: does not exist
	Latest  int    `json:"latest"`  // this binary's
}

type leaderStatus struct {
	Held                bool       `json:"held"`   // an instance holds the lease now
	Holder              string     `json:"holder"` // the last one to take it
	Epoch               int64      `json:"epoch"`
	AcquiredAt          *time.Time `json:"acquired_at,omitempty"`
	HeartbeatAgeSeconds float64    `json:"heartbeat_age_seconds"`
	HeartbeatStale      bool       `json:"heartbeat_stale"` // older than ha.lease_ttl
}

type checkpointStatus struct {
	GTIDSet    string    `json:"gtid_set"`
	File       string    `json:"file"`
	Pos        uint32    `json:"pos"`
	Epoch      int64     `json:"epoch"`
	UpdatedAt  time.Time `json:"updated_at"`
	AgeSeconds float64   `json:"age_seconds"`
}

type queueStatus struct {
	Queued           int64      `json:"queued"`
	Outbox           int64      `json:"outbox"`               // notices not yet acknowledged by JetStream
	DeadLetters      int64      `json:"dead_letters_pending"` // not yet retried
	OldestDeadLetter *time.Time `json:"oldest_dead_letter,omitempty"`
}

// instanceStatus is what the instance at http.listen said. Pointers are
// null when unknown.
type instanceStatus struct {
	Addr        string           `json:"addr"`            // "" when http.listen is empty
	Error       string           `json:"error,omitempty"` // unreachable: why
	Ready       *bool            `json:"ready"`
	Role        string           `json:"role,omitempty"`    // leader | standby
	Failing     []string         `json:"failing,omitempty"` // the /readyz checks that failed, "name: detail"
	Version     string           `json:"version,omitempty"`
	LagSeconds  *float64         `json:"lag_seconds"`
	BehindBytes *float64         `json:"behind_bytes"`
	Reconcile   *reconcileStatus `json:"reconcile"`
}

// reconcileStatus is the running instance's last reconcile (it is not
// stored in PostgreSQL).
type reconcileStatus struct {
	LastAt *time.Time `json:"last_at"` // null: none since the instance started
	// Trigger of the last one: bootstrap (its "drift" is the whole
	// queue it built), schedule, manual or purged.
	Trigger string             `json:"trigger,omitempty"`
	Runs    float64            `json:"runs"`  // since the instance started
	Drift   map[string]float64 `json:"drift"` // of the last one: entered, left, changed
}

func (r *statusReport) degrade(format string, a ...any) {
	r.Reasons = append(r.Reasons, fmt.Sprintf(format, a...))
}

func (r *statusReport) note(format string, a ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, a...))
}

func (r *statusReport) print(w io.Writer) {
	fmt.Fprintf(w, "pipeline %s: %s\n", r.Pipeline, r.Health)
	for _, s := range r.Reasons {
		fmt.Fprintf(w, "  ! %s\n", s)
	}
	for _, s := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", s)
	}
	row := func(name, format string, a ...any) { fmt.Fprintf(w, "  %-11s %s\n", name, fmt.Sprintf(format, a...)) }
	switch l := r.Leader; {
	case l == nil:
		row("leader", "unknown")
	case l.Held:
		row("leader", "%s, epoch %d, heartbeat %s ago", l.Holder, l.Epoch, dur(l.HeartbeatAgeSeconds))
	case l.Holder != "":
		row("leader", "none (last: %s, epoch %d)", l.Holder, l.Epoch)
	default:
		row("leader", "none")
	}
	if c := r.Checkpoint; c != nil {
		pos := c.GTIDSet
		if c.File != "" {
			pos = strings.TrimSpace(fmt.Sprintf("%s %s:%d", pos, c.File, c.Pos))
		}
		row("checkpoint", "%s, written %s ago", pos, dur(c.AgeSeconds))
	} else if r.Schema.Version > 0 {
		row("checkpoint", "none stored yet (the first run bootstraps)")
	}
	in := r.Instance
	switch {
	case in.LagSeconds != nil:
		behind := ""
		if in.BehindBytes != nil && *in.BehindBytes >= 0 {
			behind = fmt.Sprintf(", %.0f binlog bytes not yet read", *in.BehindBytes)
		}
		row("lag", "%s%s", dur(*in.LagSeconds), behind)
	default:
		row("lag", "unknown")
	}
	if q := r.Queue; q != nil {
		row("queue", "%d queued, %d notice(s) in the outbox, %d dead letter(s) not retried", q.Queued, q.Outbox, q.DeadLetters)
	}
	switch rc := in.Reconcile; {
	case rc == nil:
		row("reconcile", "unknown")
	case rc.LastAt == nil:
		row("reconcile", "none since the instance started")
	default:
		what := "drift"
		if rc.Trigger == metrics.TriggerBootstrap {
			what = "built the queue:" // not drift: the queue started empty
		}
		row("reconcile", "last %s (%s, %s ago), %s %.0f entered, %.0f left, %.0f changed",
			rc.LastAt.Format(time.RFC3339), rc.Trigger, time.Since(*rc.LastAt).Round(time.Second), what,
			rc.Drift[metrics.KindEntered], rc.Drift[metrics.KindLeft], rc.Drift[metrics.KindChanged])
	}
	switch {
	case in.Addr == "":
		row("instance", "unknown: http.listen is empty (no endpoint to ask)")
	case in.Error != "":
		row("instance", "%s: unreachable (%s)", in.Addr, in.Error)
	default:
		ready := "not ready"
		if in.Ready != nil && *in.Ready {
			ready = "ready"
		}
		ver := ""
		if in.Version != "" {
			ver = ", version " + in.Version
		}
		row("instance", "%s: %s, %s%s", in.Addr, ready, in.Role, ver)
	}
}

// probeInstance asks the instance at http.listen for /readyz and /metrics.
func probeInstance(ctx context.Context, cfg *config.Config) instanceStatus {
	var in instanceStatus
	if cfg.HTTP.Listen == "" {
		return in
	}
	in.Addr = dialAddr(cfg.HTTP.Listen)
	base := "http://" + in.Addr
	hc := &http.Client{Timeout: 3 * time.Second}
	get := func(path string) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		return resp.StatusCode, b, err
	}
	code, body, err := get("/readyz")
	if err != nil {
		in.Error = shortNetErr(err)
		return in
	}
	var rb struct {
		Status string `json:"status"`
		Checks map[string]struct {
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &rb); err != nil || (code != http.StatusOK && code != http.StatusServiceUnavailable) {
		in.Error = fmt.Sprintf("/readyz answered %d, not dialsync's readiness document: is another program on http.listen?", code)
		return in
	}
	ready := code == http.StatusOK
	in.Ready = &ready
	in.Role = roleLeader
	if strings.HasPrefix(rb.Checks["role"].Detail, roleStandby) {
		in.Role = roleStandby
	}
	for name, c := range rb.Checks {
		if !c.OK {
			in.Failing = append(in.Failing, name+": "+c.Detail)
		}
	}
	slices.Sort(in.Failing)

	code, body, err = get("/metrics")
	if err != nil || code != http.StatusOK {
		return in // readiness is known; the figures stay unknown
	}
	m := parseMetrics(body)
	for labels := range m["dialsync_build_info"] {
		in.Version = labelValue(labels, "version")
	}
	if in.Role == roleLeader {
		if v, ok := m.one("dialsync_lag_seconds"); ok {
			in.LagSeconds = &v
		}
		if v, ok := m.one("dialsync_behind_bytes"); ok {
			in.BehindBytes = &v
		}
		in.Reconcile = &reconcileStatus{Drift: map[string]float64{}}
		for _, v := range m["dialsync_reconcile_runs_total"] {
			in.Reconcile.Runs += v
		}
		var last float64
		for labels, v := range m["dialsync_reconcile_last_timestamp_seconds"] {
			if v > last {
				last, in.Reconcile.Trigger = v, labelValue(labels, "trigger")
			}
		}
		if last > 0 {
			t := time.Unix(int64(last), 0).UTC()
			in.Reconcile.LastAt = &t
		}
		for labels, v := range m["dialsync_reconcile_drift"] {
			in.Reconcile.Drift[labelValue(labels, "kind")] = v
		}
	}
	return in
}

// dialAddr turns a listen address into one to connect to: an unspecified
// host (":9120", "0.0.0.0:9120", "[::]:9120") is this host's loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// shortNetErr drops the request line net/http puts before the cause.
func shortNetErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s, "Get ") {
		return s[i+2:]
	}
	return s
}

// promSamples is a Prometheus text exposition: name -> label set (as
// written, `kind="left"`) -> value.
type promSamples map[string]map[string]float64

// parseMetrics reads the text format (the only one dialsync serves); lines
// it cannot read are skipped.
func parseMetrics(b []byte) promSamples {
	out := promSamples{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(line[:i], "{")
		if out[name] == nil {
			out[name] = map[string]float64{}
		}
		out[name][strings.TrimSuffix(labels, "}")] = v
	}
	return out
}

// one is the value of an unlabelled metric.
func (p promSamples) one(name string) (float64, bool) {
	v, ok := p[name][""]
	return v, ok
}

// labelValue finds key's value in a label set written as `a="x",b="y"`.
func labelValue(labels, key string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == key {
			if s, err := strconv.Unquote(v); err == nil {
				return s
			}
		}
	}
	return ""
}

func joinOr(list []string, none string) string {
	if len(list) == 0 {
		return none
	}
	return strings.Join(list, "; ")
}

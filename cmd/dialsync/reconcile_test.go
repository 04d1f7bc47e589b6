package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/proc"
	"dialsync/internal/dev/testenv"
	"dialsync/notice"
)

// The batch side: bootstrap under writes, `dialsync reconcile` (dry run,
// repair, --user, --since, bad arguments), a reconcile killed midway, and
// scheduled reconciles racing streamed changes. Every check compares the
// queue with the rule evaluated directly on MariaDB (pipe.queueDrift).

// setReconcile sets [reconcile] interval (0: off) and chunk_size.
func (p *pipe) setReconcile(interval time.Duration, chunk int) {
	p.t.Helper()
	p.editConfig(func(c *config.Config) {
		c.Reconcile.Interval = config.Dur(interval)
		c.Reconcile.ChunkSize = chunk
	})
}

// reconcileCmd runs `dialsync reconcile` to completion.
func (p *pipe) reconcileCmd(args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	return runCLI(p.t, 0, nil, append([]string{"reconcile", "--config", p.cfgPath}, args...)...)
}

// reconcileJSON runs `dialsync reconcile --json args...`, which must
// succeed, and decodes its result.
func (p *pipe) reconcileJSON(args ...string) reconcileResult {
	p.t.Helper()
	out, errOut, code := p.reconcileCmd(append([]string{"--json"}, args...)...)
	if code != 0 {
		p.t.Fatalf("reconcile %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, lastLines(errOut, 20))
	}
	var r reconcileResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		p.t.Fatalf("reconcile %v: stdout is not the JSON result: %v\n%s", args, err, out)
	}
	return r
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// wantIDs compares a result's ids with the expected ones (any order).
func wantIDs(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got %v, want %v", what, g, w)
	}
}

func wantDrift(t *testing.T, r reconcileResult, entered, left, changed []uint64) {
	t.Helper()
	wantIDs(t, "entered ids", r.EnteredIDs, entered)
	wantIDs(t, "left ids", r.LeftIDs, left)
	wantIDs(t, "changed ids", r.ChangedIDs, changed)
	if r.Entered != int64(len(entered)) || r.Left != int64(len(left)) || r.Changed != int64(len(changed)) ||
		r.Drift != int64(len(entered)+len(left)+len(changed)) {
		t.Fatalf("counts entered %d left %d changed %d drift %d; want %d %d %d", r.Entered, r.Left, r.Changed, r.Drift,
			len(entered), len(left), len(changed))
	}
}

// corruption is a hand-made queue drift.
type corruption struct {
	deleted, bogus, altered []uint64
}

// corruptQueue deletes the rows of n queued users, alters the counts or
// time of n others, and adds rows for a user that does not exist and for
// users the rule does not queue.
func (p *pipe) corruptQueue(n int) corruption {
	p.t.Helper()
	ctx := context.Background()
	want := p.expectedQueue()
	queued := slices.Sorted(maps.Keys(want))
	if len(queued) < 2*n {
		p.t.Fatalf("only %d queued users", len(queued))
	}
	var c corruption
	for i := range n {
		c.deleted = append(c.deleted, queued[i*2])
		c.altered = append(c.altered, queued[i*2+1])
	}
	var notQueued []uint64
	rows, err := p.src.Query("SELECT id FROM users ORDER BY id")
	if err != nil {
		p.t.Fatal(err)
	}
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			p.t.Fatal(err)
		}
		if _, ok := want[id]; !ok && len(notQueued) < n {
			notQueued = append(notQueued, id)
		}
	}
	rows.Close()
	c.bogus = append(notQueued, 9_000_000_001)
	exec := func(q string, args ...any) {
		if _, err := p.pg.Exec(ctx, q, args...); err != nil {
			p.t.Fatalf("corrupt queue: %s: %v", q, err)
		}
	}
	exec(`DELETE FROM dialsync.call_queue WHERE user_id = ANY($1)`, toInt64s(c.deleted))
	exec(`UPDATE dialsync.call_queue SET pending_requirements = pending_requirements + 7 WHERE user_id = $1`, int64(c.altered[0]))
	for _, u := range c.altered[1:] {
		exec(`UPDATE dialsync.call_queue SET oldest_pending_at = oldest_pending_at - interval '3 days', open_claims = open_claims + 1 WHERE user_id = $1`, int64(u))
	}
	for _, u := range c.bogus {
		exec(`INSERT INTO dialsync.call_queue (user_id, open_claims, pending_requirements, oldest_pending_at, entered_at, updated_at)
			VALUES ($1, 1, 2, now() - interval '1 day', now(), now())`, int64(u))
	}
	if d := p.queueDrift(); len(d) != len(c.deleted)+len(c.altered)+len(c.bogus) {
		p.t.Fatalf("corruption made %d differences, want %d: %v", len(d), len(c.deleted)+len(c.altered)+len(c.bogus), d)
	}
	return c
}

func toInt64s(ids []uint64) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// A bootstrap while writers change rows the whole time: afterwards the
// queue equals the rule, a reconcile finds nothing to fix, and every
// transaction committed after the bootstrap has its notices.
func TestBootstrapUnderWrites(t *testing.T) {
	p := newPipe(t, pipeOpt{size: demo.Size{Users: 3000, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 5}})
	// Small chunks: the bootstrap takes many loop jobs, with writes between.
	p.setReconcile(0, 100)

	load := dstest.StartLoad(t, p.src, 3, 200, 0)

	time.Sleep(300 * time.Millisecond) // the writers are busy before dialsync starts
	started := time.Now()
	p.start()
	var ckptAt time.Time
	waitFor(t, 120*time.Second, "bootstrap checkpoint", func() bool {
		if p.exited() {
			t.Fatalf("dialsync exited:\n%s", p.logTail(40))
		}
		if p.checkpointGTID() != "" {
			ckptAt = time.Now()
			return true
		}
		return false
	})
	time.Sleep(time.Second) // streaming under writes
	ops := load.Stop()
	p.waitCaughtUp(60 * time.Second)

	var during, after []demo.Op
	for _, o := range ops {
		if o.End.After(started) && o.Start.Before(ckptAt) {
			during = append(during, o.Op)
		}
		// Started after the checkpoint was stored, so committed after the
		// recorded bootstrap position: streamed, so it must have notices.
		// (Earlier ones are covered by the bootstrap reconcile.)
		if o.Start.After(ckptAt) {
			after = append(after, o.Op)
		}
	}
	t.Logf("%d transactions: %d during the bootstrap (%s), %d after it", len(ops), len(during), ckptAt.Sub(started).Round(time.Millisecond), len(after))
	if !strings.Contains(p.allLogs(), "no checkpoint: bootstrapping") {
		t.Fatal("dialsync did not bootstrap")
	}
	if len(during) < 5 || len(after) < 20 {
		t.Fatalf("the workload did not overlap the bootstrap enough to prove anything: %d during, %d after", len(during), len(after))
	}
	p.assertNoDrift()
	assertNoLoss(t, p, after)

	if code := p.stop(); code != 0 {
		t.Fatalf("run exit code %d", code)
	}
	dry := p.reconcileJSON("--dry-run")
	wantDrift(t, dry, nil, nil, nil)
	r := p.reconcileJSON()
	wantDrift(t, r, nil, nil, nil)
	if r.Users < 3000 || r.Queued != int64(len(p.expectedQueue())) {
		t.Fatalf("reconcile saw %d users, %d queued; want >= 3000 and %d", r.Users, r.Queued, len(p.expectedQueue()))
	}
}

// A queue corrupted by hand: the dry run reports exactly the corruption and
// changes nothing; the reconcile repairs exactly it, with notices and cache
// deletions; then nothing is left.
func TestReconcileRepairsCorruption(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	if code := p.stop(); code != 0 {
		t.Fatalf("run exit code %d", code)
	}
	c := p.corruptQueue(3)
	before := p.actualQueue()
	nBefore := len(p.notices())

	dry := p.reconcileJSON("--dry-run")
	if !dry.DryRun || dry.Mode != "all" {
		t.Fatalf("dry run result %+v", dry)
	}
	wantDrift(t, dry, c.deleted, c.bogus, c.altered)
	if after := p.actualQueue(); !maps.Equal(before, after) {
		t.Fatal("the dry run changed the queue")
	}
	if n := len(p.notices()); n != nBefore {
		t.Fatalf("the dry run published %d notices", n-nBefore)
	}
	// The text form lists the same ids.
	out, _, code := p.reconcileCmd("--dry-run")
	if code != 0 {
		t.Fatalf("dry run exit %d", code)
	}
	for _, want := range []string{
		"dry run (nothing changed): all users",
		fmt.Sprintf("drift %d: %d entered, %d left, %d changed", 10, 3, 4, 3),
		"entered: " + joinIDs(c.deleted),
		"left:    " + joinIDs(c.bogus),
		"changed: " + joinIDs(c.altered),
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("dry run output lacks %q:\n%s", want, out)
		}
	}

	p.setKeys(c.deleted[0], c.bogus[0], c.altered[0])
	unrelated := p.expectedQueue()
	var other uint64
	for u := range unrelated {
		if !slices.Contains(c.deleted, u) && !slices.Contains(c.altered, u) {
			other = u
			break
		}
	}
	p.setKeys(other)
	r := p.reconcileJSON()
	if r.DryRun {
		t.Fatal("dry_run set on a real reconcile")
	}
	wantDrift(t, r, c.deleted, c.bogus, c.altered)
	p.assertNoDrift()
	for _, u := range []uint64{c.deleted[0], c.bogus[0], c.altered[0]} {
		for _, k := range p.userKeys(u) {
			if p.keyExists(k) {
				t.Fatalf("cache key %s of corrected user %d still present", k, u)
			}
		}
	}
	for _, k := range p.userKeys(other) {
		if !p.keyExists(k) {
			t.Fatalf("cache key %s of an untouched user was deleted", k)
		}
	}
	// Notices: one queue notice per correction, and the summary.
	kinds := map[string][]uint64{}
	var summaries []notice.ReconcileCompleted
	for _, ev := range p.notices()[nBefore:] {
		switch {
		case ev.IsQueue():
			u, _ := strconv.ParseUint(ev.Subject, 10, 64)
			kinds[ev.QueueKind()] = append(kinds[ev.QueueKind()], u)
		case ev.Type == notice.TypeReconcileCompleted:
			s, err := ev.ReconcileCompleted()
			if err != nil {
				t.Fatal(err)
			}
			summaries = append(summaries, s)
		}
	}
	wantIDs(t, "queue.entered notices", kinds["entered"], c.deleted)
	wantIDs(t, "queue.left notices", kinds["left"], c.bogus)
	wantIDs(t, "queue.updated notices", kinds["updated"], c.altered)
	if len(summaries) != 1 || summaries[0].Reason != "manual" || summaries[0].Entered != 3 || summaries[0].Left != 4 || summaries[0].Updated != 3 {
		t.Fatalf("reconcile summaries %+v, want one manual with 3/4/3", summaries)
	}

	again := p.reconcileJSON()
	wantDrift(t, again, nil, nil, nil)
	out, _, code = p.reconcileCmd()
	if code != 0 || !strings.Contains(out, "reconciled: all users") || !strings.Contains(out, "drift 0:") {
		t.Fatalf("exit %d, summary %q", code, out)
	}
}

func joinIDs(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range slices.Sorted(slices.Values(ids)) {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, " ")
}

// kill -9 of a reconcile midway, then a rerun: it completes, fixes exactly
// what the first did not reach, and leaves no drift.
func TestReconcileResumesAfterKill(t *testing.T) {
	p := newPipe(t, pipeOpt{size: demo.Size{Users: 8_000, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 9}})
	// 320 chunks: the run lasts long enough to be killed midway.
	p.setReconcile(0, 25)
	want := len(p.expectedQueue())

	var errb proc.Buffer
	rc, err := proc.Start(binPath, proc.Options{Args: []string{"reconcile", "--config", p.cfgPath}, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		// Zero until the command has migrated the schema.
		if err := p.pg.QueryRow(context.Background(), `SELECT CASE WHEN to_regclass('dialsync.call_queue') IS NULL THEN 0
			ELSE (xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM dialsync.call_queue', false, true, '')))[1]::text::int END`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Kill once about a third of the queue is written.
	waitFor(t, 60*time.Second, "reconcile to write part of the queue", func() bool {
		if rc.Exited() {
			t.Fatalf("reconcile finished before it could be killed; make the data set bigger:\n%s", lastLines(errb.String(), 10))
		}
		return count() >= want/3
	})
	rc.Kill()
	partial := count()
	t.Logf("killed with %d of %d queue rows written", partial, want)
	if partial >= want {
		t.Fatalf("the reconcile was complete (%d rows) when killed", partial)
	}

	r := p.reconcileJSON()
	if r.Entered != int64(want-partial) || r.Left != 0 || r.Changed != 0 {
		t.Fatalf("rerun: entered %d left %d changed %d; want %d 0 0", r.Entered, r.Left, r.Changed, want-partial)
	}
	p.assertNoDrift()
	wantDrift(t, p.reconcileJSON("--dry-run"), nil, nil, nil)
}

// Scheduled reconciles (every second) racing streamed changes to the same
// users never leave an older value: whenever the stream has caught up the
// queue equals the rule. Meanwhile the command refuses to reconcile (an
// instance holds the lease) but a dry run may run alongside.
func TestScheduledReconcileRacingStream(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	p.setReconcile(time.Second, 20)
	startCaughtUp(t, p)
	queued := slices.Sorted(maps.Keys(p.expectedQueue()))[:10]
	var reqs []uint64
	rows, err := p.src.Query(`SELECT r.id FROM claim_requirements r JOIN claims c ON c.id = r.claim_id
		WHERE c.user_id IN (` + joinComma(queued) + `) ORDER BY r.id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, id)
	}
	rows.Close()

	out, errOut, code := p.reconcileCmd()
	if code != 1 || !strings.Contains(errOut, "refusing: instance ") ||
		!strings.Contains(errOut, "holds the lease for pipeline p_"+p.name) ||
		!strings.Contains(errOut, "reconciles on its schedule ([reconcile] interval)") {
		t.Fatalf("reconcile beside a running instance: exit %d, stdout %q, stderr:\n%s", code, out, lastLines(errOut, 5))
	}
	// A dry run alongside works (it may see transient differences while
	// the stream catches up; right now nothing is being written).
	wantDrift(t, p.reconcileJSON("--dry-run"), nil, nil, nil)

	r := rand.New(rand.NewPCG(4, 2))
	statuses := []string{"PENDING", "COMPLETE", "PENDING", "REJECTED"}
	deadline := time.Now().Add(5 * time.Second)
	rounds := 0
	for time.Now().Before(deadline) {
		for range 20 {
			p.exec(fmt.Sprintf("UPDATE claim_requirements SET status = '%s', updated_at = NOW() WHERE id = %d",
				statuses[r.IntN(len(statuses))], reqs[r.IntN(len(reqs))]))
		}
		p.waitCaughtUp(20 * time.Second)
		p.assertNoDrift()
		rounds++
		time.Sleep(time.Duration(r.IntN(200)) * time.Millisecond)
	}
	scheduledRuns := 0
	for _, line := range strings.Split(p.allLogs(), "\n") {
		if strings.Contains(line, `"msg":"reconcile done"`) && strings.Contains(line, `"trigger":"schedule"`) {
			scheduledRuns++
		}
	}
	t.Logf("%d rounds of writes, %d scheduled reconciles", rounds, scheduledRuns)
	if scheduledRuns < 3 {
		t.Fatalf("only %d scheduled reconciles ran during the writes: the race was not exercised", scheduledRuns)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("run exit code %d", code)
	}
	p.assertNoDrift()
	// The lease is free again: the command now runs, and finds nothing.
	wantDrift(t, p.reconcileJSON(), nil, nil, nil)
}

func joinComma(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ",")
}

// --user repairs only the listed users; --since only users whose rows
// changed since then.
func TestReconcileUserAndSince(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	if code := p.stop(); code != 0 {
		t.Fatalf("run exit code %d", code)
	}
	c := p.corruptQueue(2)
	a, nonexistent, notQueued := c.deleted[0], c.bogus[len(c.bogus)-1], c.bogus[0]
	b := c.altered[0]
	total := len(p.queueDrift())

	dry := p.reconcileJSON("--dry-run", "--user", fmt.Sprint(a), "--user", fmt.Sprintf("%d,%d", notQueued, nonexistent))
	if dry.Mode != "users" || dry.Users != 3 {
		t.Fatalf("dry run over 3 users: %+v", dry)
	}
	wantDrift(t, dry, []uint64{a}, []uint64{notQueued, nonexistent}, nil)
	if n := len(p.queueDrift()); n != total {
		t.Fatalf("dry run changed the queue: %d differences, want %d", n, total)
	}
	r := p.reconcileJSON("--user", fmt.Sprint(a), "--user", fmt.Sprintf("%d,%d", notQueued, nonexistent))
	wantDrift(t, r, []uint64{a}, []uint64{notQueued, nonexistent}, nil)
	if n := len(p.queueDrift()); n != total-3 {
		t.Fatalf("after --user: %d differences, want %d (only the listed users repaired)", n, total-3)
	}

	// Nothing in the seed changed in the last hour; b's claim changes now.
	p.exec(fmt.Sprintf("UPDATE claims SET updated_at = NOW() WHERE user_id = %d", b))
	dry = p.reconcileJSON("--dry-run", "--since", "1h")
	if dry.Mode != "since" || dry.Users != 1 || dry.Since == "" {
		t.Fatalf("--since 1h should select exactly user %d: %+v", b, dry)
	}
	wantDrift(t, dry, nil, nil, []uint64{b})
	r = p.reconcileJSON("--since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	wantDrift(t, r, nil, nil, []uint64{b})
	if n := len(p.queueDrift()); n != total-4 {
		t.Fatalf("after --since: %d differences, want %d", n, total-4)
	}
	// A requirement change is seen through its claim's user too.
	p.exec(fmt.Sprintf("UPDATE claim_requirements r JOIN claims c ON c.id = r.claim_id SET r.updated_at = NOW() WHERE c.user_id = %d", c.altered[1]))
	dry = p.reconcileJSON("--dry-run", "--since", "30m")
	if dry.Users != 2 {
		t.Fatalf("--since 30m: %d users, want 2 (%d and %d)", dry.Users, b, c.altered[1])
	}
	wantDrift(t, dry, nil, nil, []uint64{c.altered[1]})
	// The rest needs the full pass.
	full := p.reconcileJSON()
	if full.Drift != int64(total-4) {
		t.Fatalf("full reconcile fixed %d, want %d", full.Drift, total-4)
	}
	p.assertNoDrift()
}

// Bad arguments: one clear line on stderr and exit 2, before any server is
// contacted (the config path does not even exist).
func TestReconcileBadArguments(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--user", "abc"}, `--user "abc": not a user id`},
		{[]string{"--user", "0"}, `--user "0": not a user id`},
		{[]string{"--user", "5,-1"}, `--user "-1": not a user id`},
		{[]string{"--user", "99999999999999999999"}, "not a user id"},
		{[]string{"--since", "yesterday"}, `--since "yesterday": want an RFC 3339 time`},
		{[]string{"--since", "-2h"}, "must be positive"},
		{[]string{"--since", "2999-01-01T00:00:00Z"}, "is in the future"},
		{[]string{"--since", "2h", "--user", "3"}, "--user and --since cannot be combined"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		out, errb, code := runCLI(t, 0, nil, append([]string{"reconcile", "--config", "/nonexistent/config.toml"}, c.args...)...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", c.args, code, errb)
		}
		if !strings.Contains(errb, c.want) || strings.Count(errb, "\n") != 1 || out != "" {
			t.Errorf("%v: want one line containing %q on stderr, got stdout %q stderr %q", c.args, c.want, out, errb)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2h":                          now.Add(-2 * time.Hour),
		"90m":                         now.Add(-90 * time.Minute),
		"2025-05-31T09:00:00Z":        time.Date(2025, 5, 31, 9, 0, 0, 0, time.UTC),
		"2025-05-31T10:00:00.5+01:00": time.Date(2025, 5, 31, 9, 0, 0, 500_000_000, time.UTC),
		"2025-06-01T12:00:00Z":        now,
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0s", "-1h", "2025-06-02T00:00:00Z", "2025-05-31", "2d"} {
		if _, err := parseSince(in, now); err == nil {
			t.Errorf("parseSince(%q): want an error", in)
		}
	}
}

// TestMeasureReconcile measures the full reconcile of the reference data set
// (demo.DefaultSize: 50k users, 150k claims, 300k requirements): five runs from an empty
// queue and five at steady state, median of each, as the command reports
// it (its own time, excluding process start and connecting). Not a timed
// test: set DIALSYNC_MEASURE_RECONCILE=1 to run it.
func TestMeasureReconcile(t *testing.T) {
	if os.Getenv("DIALSYNC_MEASURE_RECONCILE") == "" {
		t.Skip("set DIALSYNC_MEASURE_RECONCILE=1 to measure")
	}
	// A private server with a buffer pool that holds the data set, like a
	// production replica (the shared test server has 32 MB).
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Args: []string{"--innodb-buffer-pool-size=512M"}})
	p := newPipe(t, pipeOpt{my: my, size: demo.DefaultSize})
	want := len(p.expectedQueue())
	// Warm-up: migrates the schema, fills the server caches.
	if r := p.reconcileJSON("--dry-run"); r.Entered != int64(want) {
		t.Fatalf("warm-up dry run: %+v", r)
	}
	measure := func(empty bool) (med time.Duration, all []time.Duration) {
		for range 5 {
			if empty {
				if _, err := p.pg.Exec(context.Background(), "TRUNCATE dialsync.call_queue"); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			r := p.reconcileJSON()
			wall := time.Since(start)
			if empty && r.Entered != int64(want) || !empty && r.Drift != 0 {
				t.Fatalf("unexpected result %+v", r)
			}
			took := time.Duration(r.TookMS * float64(time.Millisecond))
			t.Logf("empty=%v: reconcile %s (rule %.0fms, queue %.0fms, cache+notices %.0fms; process wall time %s), %d users, %d queued, %d chunks",
				empty, took.Round(time.Millisecond), r.RuleMS, r.WriteMS, r.NotifyMS, wall.Round(time.Millisecond), r.Users, r.Queued, r.Chunks)
			all = append(all, took)
		}
		s := slices.Sorted(slices.Values(all))
		return s[len(s)/2], all
	}
	fromEmpty, _ := measure(true)
	steady, _ := measure(false)
	t.Logf("MEASURED full reconcile of %d users: median %s from an empty queue (%d rows written), median %s at steady state (no drift)",
		demo.DefaultSize.Users, fromEmpty.Round(time.Millisecond), want, steady.Round(time.Millisecond))
	p.assertNoDrift()
}

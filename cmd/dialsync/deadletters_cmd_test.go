package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
	"dialsync/notice"
)

// deadLettersJSON runs `deadletters list --json`, which must succeed.
func deadLettersJSON(t *testing.T, p *pipe) []deadLetterJSON {
	t.Helper()
	out := opsOK(t, p, "deadletters", "list", "--json")
	var dls []deadLetterJSON
	if err := json.Unmarshal([]byte(out), &dls); err != nil {
		t.Fatalf("deadletters list --json: not JSON: %v\n%s", err, out)
	}
	return dls
}

// A dead-lettered row is listed (while run runs, too), a retry is refused
// while run holds the lease, and once the row is fixed on the source a
// retry recomputes exactly its user through the apply loop (queue, cache
// keys, notice) and marks it retried.
func TestDeadLettersListAndRetry(t *testing.T) {
	p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.Tables.ClaimRequirements.OnError = config.OnErrorDeadLetter }})
	startCaughtUp(t, p)
	user, claim, _ := queuedUser(t, p)
	p.exec("ALTER TABLE claim_requirements MODIFY claim_id BIGINT UNSIGNED NULL",
		"INSERT INTO claim_requirements (claim_id, type, status, created_at, updated_at) VALUES (NULL, 'x', 'PENDING', NOW(), NOW())")
	p.waitCaughtUp(20 * time.Second)
	var req uint64
	if err := p.src.QueryRow("SELECT id FROM claim_requirements WHERE claim_id IS NULL").Scan(&req); err != nil {
		t.Fatal(err)
	}

	// Listing only reads: it works while run holds the lease.
	dls := deadLettersJSON(t, p)
	if len(dls) != 1 {
		t.Fatalf("dead letters = %+v; want 1", dls)
	}
	dl := dls[0]
	if dl.Table != "claim_requirements" || dl.PrimaryKey != strconv.FormatUint(req, 10) || dl.File == "" || dl.Pos == 0 ||
		dl.GTID == "" || dl.Error == "" || dl.RetriedAt != nil || dl.At.IsZero() {
		t.Fatalf("dead letter %+v; want claim_requirements %d with position, error and no retried_at", dl, req)
	}
	id := strconv.FormatInt(dl.ID, 10)
	text := opsOK(t, p, "deadletters", "list")
	line := ""
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, id+" ") {
			line = l
		}
	}
	for _, want := range []string{"claim_requirements", " " + dl.PrimaryKey + " ", dl.File + ":" + strconv.FormatUint(uint64(dl.Pos), 10), dl.GTID, " - "} {
		if !strings.Contains(line, want) {
			t.Fatalf("list line for %s lacks %q:\n%s", id, want, text)
		}
	}

	// Retrying while run holds the lease is refused and changes nothing.
	opsFails(t, p, exitFailure, "refusing: instance", "deadletters", "retry", "--id", id, "--reason", "fixed")
	if dls := deadLettersJSON(t, p); dls[0].RetriedAt != nil {
		t.Fatal("a refused retry marked the dead letter retried")
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("run exited %d", code)
	}

	// Bad ids: one line, exit 2, nothing done.
	opsFails(t, p, exitUsage, "no dead letter 999999", "deadletters", "retry", "--id", "999999", "--reason", "fixed")
	opsFails(t, p, exitUsage, `--id "abc"`, "deadletters", "retry", "--id", "abc", "--reason", "fixed")
	opsFails(t, p, exitUsage, "--reason is required", "deadletters", "retry", "--id", id)

	// Fix the row on the source (run is stopped, so nothing streams it):
	// the user now has one more pending requirement than the queue says.
	p.exec("UPDATE claim_requirements SET claim_id = " + strconv.FormatUint(claim, 10) + " WHERE claim_id IS NULL")
	if d := p.queueDrift(); len(d) != 1 || !strings.HasPrefix(d[0], "user "+strconv.FormatUint(user, 10)+":") {
		t.Fatalf("drift before the retry = %v; want user %d only", d, user)
	}
	p.setKeys(user)
	before := len(p.notices())

	out := opsOK(t, p, "deadletters", "retry", "--id", id, "--reason", "fixed")
	want := "dead letter " + id + " (claim_requirements " + dl.PrimaryKey + " @ "
	if !strings.Contains(out, want) || !strings.Contains(out, "recomputed users "+strconv.FormatUint(user, 10)+": 0 entered, 0 left, 1 changed; marked retried") {
		t.Fatalf("retry output:\n%s", out)
	}
	p.assertNoDrift()
	for _, k := range p.userKeys(user) {
		if p.keyExists(k) {
			t.Fatalf("cache key %s survived the retry", k)
		}
	}
	var updated bool
	for _, ev := range p.notices()[before:] {
		updated = updated || (ev.Type == notice.TypeQueueUpdated && ev.Subject == strconv.FormatUint(user, 10))
	}
	if !updated {
		t.Fatalf("no %s notice for user %d after the retry", notice.TypeQueueUpdated, user)
	}
	dls = deadLettersJSON(t, p)
	if dls[0].RetriedAt == nil || time.Since(*dls[0].RetriedAt) > time.Minute {
		t.Fatalf("after the retry: %+v; want retried_at set to now", dls[0])
	}
	if text := opsOK(t, p, "deadletters", "list"); !strings.Contains(text, dls[0].RetriedAt.Format(time.RFC3339)) {
		t.Fatalf("list does not show retried_at:\n%s", text)
	}
	// --all skips dead letters already retried.
	if out := opsOK(t, p, "deadletters", "retry", "--all", "--reason", "again"); !strings.Contains(out, "nothing to retry") {
		t.Fatalf("retry --all after the retry:\n%s", out)
	}
}

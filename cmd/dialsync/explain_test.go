package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
	"dialsync/internal/explain"
	"dialsync/notice"
)

// explainCLI runs `dialsync <args...>` to completion with extra environment
// variables and returns its stdout, stderr and exit code.
func explainCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCLI(t, 60*time.Second, env, args...)
}

// explainJSON runs `explain --json` for user and decodes the report.
func explainJSON(t *testing.T, p *pipe, user uint64) explain.Report {
	t.Helper()
	out, errOut, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, "--json", fmt.Sprint(user))
	if code != 0 {
		t.Fatalf("explain %d: exit %d\nstdout:\n%s\nstderr:\n%s", user, code, out, errOut)
	}
	var r explain.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("explain --json output does not parse: %v\n%s", err, out)
	}
	if r.UserID != user {
		t.Fatalf("report for user %d, want %d", r.UserID, user)
	}
	return r
}

// pii returns the personal values of a user's source row, which explain
// must never print.
func pii(t *testing.T, p *pipe, user uint64) []string {
	t.Helper()
	var first, last, email string
	var phone sql.NullString
	if err := p.src.QueryRow(`SELECT first_name, last_name, email, phone_number FROM users WHERE id = ?`, user).
		Scan(&first, &last, &email, &phone); err != nil {
		t.Fatal(err)
	}
	vals := []string{email, first + " " + last}
	if len(first) > 3 {
		vals = append(vals, first)
	}
	if len(last) > 3 {
		vals = append(vals, last)
	}
	if strings.TrimSpace(phone.String) != "" {
		vals = append(vals, phone.String)
	}
	var addrs []string
	rows, err := p.src.Query(`SELECT full_address, post_code FROM user_addresses WHERE user_id = ?`, user)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a, pc string
		if err := rows.Scan(&a, &pc); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a, pc)
	}
	return append(vals, addrs...)
}

func assertNoPII(t *testing.T, p *pipe, user uint64, outputs ...string) {
	t.Helper()
	for _, v := range pii(t, p, user) {
		for _, out := range outputs {
			if v != "" && strings.Contains(out, v) {
				t.Fatalf("explain output for user %d contains the row value %q:\n%s", user, v, out)
			}
		}
	}
}

// queuedUsers lists n users the rule queues, each with exactly one open
// claim so a test can make its requirements non-pending.
func queuedUsers(t *testing.T, p *pipe, n int) []uint64 {
	t.Helper()
	rows, err := p.src.Query(`
SELECT u.id FROM users u
JOIN claims c ON c.user_id = u.id AND c.deleted_at IS NULL AND c.status NOT IN ('closed','rejected','paid')
JOIN claim_requirements r ON r.claim_id = c.id AND r.status = 'PENDING'
WHERE u.deleted_at IS NULL AND u.is_enabled = 1 AND u.status = 'active' AND u.phone_number <> ''
GROUP BY u.id ORDER BY u.id LIMIT ?`, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if len(out) < n {
		t.Fatalf("only %d queued users in the seed, need %d", len(out), n)
	}
	return out
}

func TestExplain(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	users := queuedUsers(t, p, 6)
	queued := users[0]
	p.setKeys(queued)

	t.Run("queued", func(t *testing.T) {
		out, errOut, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, fmt.Sprint(queued))
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		t.Logf("explain output:\n%s", out)
		for _, want := range []string{
			fmt.Sprintf("user %d: QUEUED (built-in rule)", queued), "phone", "present", "[pass]",
			"agrees with the rule: yes", fmt.Sprintf("%suser:%d:context", p.prefix, queued), "exists",
			"queue.entered", fmt.Sprintf("on %s.*.%d in stream %s", p.subjects, queued, p.stream),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		r := explainJSON(t, p, queued)
		if !r.Found || !r.Rule.Queued || len(r.Rule.Failing) != 0 || r.Rule.Row == nil || r.Queue.Row == nil || !r.Queue.Agrees {
			t.Fatalf("report %+v", r)
		}
		if *r.Rule.Row != (explain.Row{OpenClaims: r.Queue.Row.OpenClaims, PendingRequirements: r.Queue.Row.PendingRequirements,
			OldestPendingAt: r.Rule.Row.OldestPendingAt}) || r.Queue.Row.EnteredAt == nil {
			t.Fatalf("rule row %+v, call_queue row %+v", r.Rule.Row, r.Queue.Row)
		}
		var pending int64
		for _, c := range r.Claims {
			if c.Open {
				pending += c.PendingRequirements
			}
		}
		if pending != r.Rule.Row.PendingRequirements || len(r.Claims) != r.ClaimsTotal {
			t.Fatalf("claims %+v do not add up to the rule row %+v", r.Claims, r.Rule.Row)
		}
		if len(r.Cache.Keys) != 4 || !r.Cache.Keys[0].Exists || !r.Cache.Keys[1].Exists {
			t.Fatalf("cache keys %+v", r.Cache.Keys)
		}
		if len(r.Notices.Latest) == 0 || r.Notices.Latest[len(r.Notices.Latest)-1].Type != notice.TypeQueueEntered {
			t.Fatalf("notices %+v", r.Notices)
		}
		raw, _, _ := explainCLI(t, nil, "explain", "--config", p.cfgPath, "--json", fmt.Sprint(queued))
		assertNoPII(t, p, queued, out, raw)
	})

	clauses := []struct {
		clause string
		sql    string
	}{
		{explain.ClauseEnabled, "UPDATE users SET is_enabled = 0 WHERE id = %d"},
		{explain.ClauseActive, "UPDATE users SET status = 'inactive' WHERE id = %d"},
		{explain.ClauseHasPhone, "UPDATE users SET phone_number = NULL WHERE id = %d"},
		{explain.ClauseNotSoftDeleted, "UPDATE users SET deleted_at = NOW() WHERE id = %d"},
		{explain.ClausePendingClaim, "UPDATE claim_requirements r JOIN claims c ON c.id = r.claim_id SET r.status = 'DONE' WHERE c.user_id = %d"},
	}
	for i, c := range clauses {
		p.exec(fmt.Sprintf(c.sql, users[i+1]))
	}
	p.waitCaughtUp(30 * time.Second)
	for i, c := range clauses {
		user := users[i+1]
		t.Run("fails "+c.clause, func(t *testing.T) {
			r := explainJSON(t, p, user)
			if r.Rule.Queued || !slices.Equal(r.Rule.Failing, []string{c.clause}) || r.Rule.Row != nil {
				t.Fatalf("verdict %+v", r.Rule)
			}
			if r.Queue.Row != nil || !r.Queue.Agrees {
				t.Fatalf("call_queue %+v (dialsync caught up: the user must have left)", r.Queue)
			}
			if r.User == nil || (c.clause == explain.ClauseHasPhone) == r.User.PhonePresent {
				t.Fatalf("user facts %+v", r.User)
			}
			out, _, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, fmt.Sprint(user))
			if code != 0 || !strings.Contains(out, "NOT QUEUED") || !strings.Contains(out, "[FAIL]  "+c.clause) ||
				!strings.Contains(out, "failing: "+c.clause) {
				t.Fatalf("exit %d, text:\n%s", code, out)
			}
			// The latest notices show the user leaving the queue, and the
			// change that made it leave.
			left, changed := false, false
			for _, n := range r.Notices.Latest {
				left = left || n.Type == notice.TypeQueueLeft
				changed = changed || n.Type == notice.TypeUserChanged
			}
			if !left || !changed {
				t.Fatalf("latest notices %+v", r.Notices.Latest)
			}
			assertNoPII(t, p, user, out)
		})
	}

	t.Run("not found", func(t *testing.T) {
		out, errOut, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, "987654321")
		if code != 0 || !strings.Contains(out, "not found: no users row with id 987654321") || !strings.Contains(out, "NOT QUEUED") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		// The largest id is valid (users.id is BIGINT UNSIGNED; call_queue's
		// bigint cannot hold it, so no row there either).
		for _, id := range []uint64{987654321, 1<<64 - 1} {
			r := explainJSON(t, p, id)
			if r.Found || r.User != nil || r.Rule.Queued || r.Queue.Row != nil || !r.Queue.Agrees || r.Incomplete() != "" {
				t.Fatalf("report %+v", r)
			}
		}
	})

	t.Run("invalid ids", func(t *testing.T) {
		for _, id := range []string{"abc", "0", "-5", "18446744073709551616", "1.5", "", "12abc"} {
			out, errOut, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, id)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if code != 2 || out != "" || len(lines) != 1 || !strings.Contains(errOut, "invalid user id") {
				t.Errorf("id %q: exit %d, stdout %q, stderr %q", id, code, out, errOut)
			}
		}
		for _, args := range [][]string{{}, {"1", "2"}} {
			_, errOut, code := explainCLI(t, nil, append([]string{"explain", "--config", p.cfgPath}, args...)...)
			if code != 2 || !strings.Contains(errOut, "exactly one USER_ID") {
				t.Errorf("args %v: exit %d, stderr %q", args, code, errOut)
			}
		}
		// Flags after the id work too.
		out, _, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, fmt.Sprint(queued), "--json", "--notices", "1")
		var r explain.Report
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil || len(r.Notices.Latest) != 1 {
			t.Fatalf("flags after the id: exit %d\n%s", code, out)
		}
	})

	t.Run("unreachable redis", func(t *testing.T) {
		out, errOut, code := explainCLI(t, []string{"DIALSYNC_REDIS_ADDR=127.0.0.1:1"}, "explain", "--config", p.cfgPath, fmt.Sprint(queued))
		if code != 1 || !strings.Contains(out, "QUEUED") || !strings.Contains(out, "ERROR: redis at 127.0.0.1:1") ||
			!strings.Contains(errOut, "incomplete report: cache") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})

	// Last: with dialsync stopped, a source change is not applied, and
	// explain reports the drift.
	t.Run("drift", func(t *testing.T) {
		if code := p.stop(); code != 0 {
			t.Fatalf("dialsync exited %d", code)
		}
		p.exec(fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id = %d", queued))
		r := explainJSON(t, p, queued)
		if r.Rule.Queued || r.Queue.Row == nil || r.Queue.Agrees ||
			!strings.Contains(r.Queue.Drift, "call_queue has a row but the rule does not queue the user") {
			t.Fatalf("report %+v", r.Queue)
		}
		out, _, _ := explainCLI(t, nil, "explain", "--config", p.cfgPath, fmt.Sprint(queued))
		if !strings.Contains(out, "agrees with the rule: NO, DRIFT") {
			t.Fatalf("text:\n%s", out)
		}
	})
}

// A custom rule gets its verdict from the rule and no clauses.
func TestExplainCustomRule(t *testing.T) {
	// Queue every enabled user, whatever else.
	rule := `SELECT u.id AS user_id, 1 AS open_claims, 1 AS pending_requirements, NULL AS oldest_pending_at FROM users AS u WHERE {users} AND u.is_enabled = 1`
	p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.Rules.QueueSQL = rule }})
	startCaughtUp(t, p)
	var enabled, disabled uint64
	if err := p.src.QueryRow(`SELECT id FROM users WHERE is_enabled = 1 AND status <> 'active' ORDER BY id LIMIT 1`).Scan(&enabled); err != nil {
		t.Fatal(err)
	}
	if err := p.src.QueryRow(`SELECT id FROM users WHERE is_enabled = 0 ORDER BY id LIMIT 1`).Scan(&disabled); err != nil {
		t.Fatal(err)
	}
	r := explainJSON(t, p, enabled)
	if r.Rule.Rule != explain.RuleCustom || !r.Rule.Queued || len(r.Rule.Clauses) != 0 || len(r.Rule.Failing) != 0 ||
		!strings.Contains(r.Rule.Note, "only available for the built-in rule") || r.Queue.Row == nil || !r.Queue.Agrees {
		t.Fatalf("report %+v %+v", r.Rule, r.Queue)
	}
	r = explainJSON(t, p, disabled)
	if r.Rule.Queued || r.Queue.Row != nil || !r.Queue.Agrees || r.User == nil || r.User.Enabled {
		t.Fatalf("report %+v %+v", r.Rule, r.Queue)
	}
	out, _, code := explainCLI(t, nil, "explain", "--config", p.cfgPath, fmt.Sprint(enabled))
	if code != 0 || !strings.Contains(out, "QUEUED (custom rule)") || strings.Contains(out, "[pass]") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

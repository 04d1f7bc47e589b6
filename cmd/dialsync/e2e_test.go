package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/notice"
)

// startCaughtUp starts dialsync and waits until the bootstrap is done and
// the checkpoint covers the source head.
func startCaughtUp(t *testing.T, p *pipe) {
	t.Helper()
	p.start()
	waitFor(t, 60*time.Second, "bootstrap checkpoint", func() bool {
		if p.exited() {
			t.Fatalf("dialsync exited:\n%s", p.logTail(40))
		}
		return p.checkpointGTID() != ""
	})
	// The bootstrap stores its checkpoint before the binlog reader starts
	// (and loads the tracked tables' schemas): wait for the reader, then
	// for one transaction through it, so a test's next statement (a DDL,
	// say) is read as streamed, not as lagged.
	waitFor(t, 30*time.Second, "binlog reader", func() bool {
		if p.exited() {
			t.Fatalf("dialsync exited:\n%s", p.logTail(40))
		}
		return strings.Contains(p.allLogs(), "binlog stream starting")
	})
	p.exec("INSERT INTO audit_log (actor, action, subject_id, created_at) VALUES ('test', 'started', 0, NOW())")
	p.waitCaughtUp(30 * time.Second)
}

// queuedUser finds a user the rule queues, and one of its pending
// requirements and their claim.
func queuedUser(t *testing.T, p *pipe) (user, claim, req uint64) {
	t.Helper()
	err := p.src.QueryRow(`
SELECT u.id, c.id, r.id FROM users u
JOIN claims c ON c.user_id = u.id AND c.deleted_at IS NULL AND c.status NOT IN ('closed','rejected','paid')
JOIN claim_requirements r ON r.claim_id = c.id AND r.status = 'PENDING'
WHERE u.deleted_at IS NULL AND u.is_enabled = 1 AND u.status = 'active' AND u.phone_number <> ''
ORDER BY u.id LIMIT 1`).Scan(&user, &claim, &req)
	if err != nil {
		t.Fatal(err)
	}
	return
}

// For each table, an INSERT/UPDATE/DELETE gives the right queue change, the
// right Redis keys deleted and the right notices.
func TestEndToEndPerTable(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	p.assertNoDrift()
	user, claim, req := queuedUser(t, p)
	var other uint64
	if err := p.src.QueryRow(`SELECT id FROM users WHERE id <> ? ORDER BY id DESC LIMIT 1`, user).Scan(&other); err != nil {
		t.Fatal(err)
	}
	var addr uint64
	if err := p.src.QueryRow(`SELECT current_user_address_id FROM users WHERE id = ?`, user).Scan(&addr); err != nil {
		// some users have no address: make one
		p.exec(fmt.Sprintf(`INSERT INTO user_addresses (user_id, full_address, post_code, county, created_at, updated_at)
			VALUES (%d, 'x', 'AB1 2CD', 'Kent', NOW(), NOW())`, user))
		if err := p.src.QueryRow(`SELECT MAX(id) FROM user_addresses WHERE user_id = ?`, user).Scan(&addr); err != nil {
			t.Fatal(err)
		}
		p.exec(fmt.Sprintf(`UPDATE users SET current_user_address_id = %d WHERE id = %d`, addr, user))
		p.waitCaughtUp(10 * time.Second)
	}

	type step struct {
		name   string
		sql    []string
		users  []uint64 // users that must get a user.changed notice
		tables []string // their notice's tables
		queued *bool    // the user's queue membership afterwards
	}
	yes, no := true, false
	steps := []step{
		{"users update", []string{fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id = %d", user)}, []uint64{user}, []string{"users"}, &no},
		{"users update back", []string{fmt.Sprintf("UPDATE users SET status = 'active' WHERE id = %d", user)}, []uint64{user}, []string{"users"}, &yes},
		{"requirement update", []string{fmt.Sprintf("UPDATE claim_requirements SET status = 'COMPLETE' WHERE claim_id = %d", claim)}, []uint64{user}, []string{"claim_requirements"}, nil},
		{"requirement insert", []string{fmt.Sprintf("INSERT INTO claim_requirements (claim_id, type, status, claim_requirement_reason, created_at, updated_at) VALUES (%d, 'id_check', 'PENDING', 'r', NOW(), NOW())", claim)}, []uint64{user}, []string{"claim_requirements"}, &yes},
		{"requirement delete", []string{fmt.Sprintf("DELETE FROM claim_requirements WHERE id = %d", req)}, []uint64{user}, []string{"claim_requirements"}, &yes},
		{"package insert", []string{fmt.Sprintf("INSERT INTO claim_vehicle_packages (claim_id, vehicle_registration, vehicle_make, vehicle_model, dealership_name, monthly_payment, created_at, updated_at) VALUES (%d, 'AB12CDE', 'Ford', 'Focus', 'D', 199.99, NOW(), NOW())", claim)}, []uint64{user}, []string{"claim_vehicle_packages"}, &yes},
		{"package update", []string{fmt.Sprintf("UPDATE claim_vehicle_packages SET monthly_payment = 250.00 WHERE claim_id = %d", claim)}, []uint64{user}, []string{"claim_vehicle_packages"}, &yes},
		{"package delete", []string{fmt.Sprintf("DELETE FROM claim_vehicle_packages WHERE claim_id = %d", claim)}, []uint64{user}, []string{"claim_vehicle_packages"}, &yes},
		{"address update (pointed to by current_user_address_id)", []string{fmt.Sprintf("UPDATE user_addresses SET post_code = 'ZZ9 9ZZ' WHERE id = %d", addr)}, []uint64{user}, []string{"user_addresses"}, &yes},
		{"claim moves to another user", []string{fmt.Sprintf("UPDATE claims SET user_id = %d WHERE id = %d", other, claim)}, []uint64{user, other}, []string{"claims"}, nil},
		{"claim moves back", []string{fmt.Sprintf("UPDATE claims SET user_id = %d WHERE id = %d", user, claim)}, []uint64{user, other}, []string{"claims"}, &yes},
		{"claim soft delete", []string{fmt.Sprintf("UPDATE claims SET deleted_at = NOW() WHERE user_id = %d", user)}, []uint64{user}, []string{"claims"}, &no},
		{"claim restore", []string{fmt.Sprintf("UPDATE claims SET deleted_at = NULL WHERE user_id = %d", user)}, []uint64{user}, []string{"claims"}, &yes},
		{"user soft delete", []string{fmt.Sprintf("UPDATE users SET deleted_at = NOW() WHERE id = %d", user)}, []uint64{user}, []string{"users"}, &no},
		{"user restore", []string{fmt.Sprintf("UPDATE users SET deleted_at = NULL WHERE id = %d", user)}, []uint64{user}, []string{"users"}, &yes},
		{"address insert", []string{fmt.Sprintf("INSERT INTO user_addresses (user_id, full_address, post_code, county, created_at, updated_at) VALUES (%d, 'y', 'AB1 2CD', 'Kent', NOW(), NOW())", user)}, []uint64{user}, []string{"user_addresses"}, &yes},
		{"claim hard delete", []string{fmt.Sprintf("DELETE FROM claim_requirements WHERE claim_id = %d", claim), fmt.Sprintf("DELETE FROM claims WHERE id = %d", claim)}, []uint64{user}, nil, nil},
		{"user insert", []string{"INSERT INTO users (first_name, last_name, email, phone_number, status, is_enabled, created_at, updated_at) VALUES ('A', 'B', 'a@b.c', '0700', 'active', 1, NOW(), NOW())"}, nil, []string{"users"}, &no},
	}
	for _, s := range steps {
		before := p.notices()
		p.setKeys(append(s.users, user)...)
		p.exec(s.sql...)
		p.waitCaughtUp(10 * time.Second)
		after := p.notices()[len(before):]
		byUser := p.userNotices(after)
		for _, u := range s.users {
			got := byUser[u]
			if len(got) == 0 {
				t.Fatalf("%s: no user.changed notice for user %d (got %d notices)", s.name, u, len(after))
			}
			if s.tables != nil && !slices.Equal(got[len(got)-1].Tables, s.tables) {
				t.Fatalf("%s: notice tables %v, want %v", s.name, got[len(got)-1].Tables, s.tables)
			}
			for _, k := range p.userKeys(u) {
				if p.keyExists(k) {
					t.Fatalf("%s: cache key %s still present", s.name, k)
				}
			}
		}
		if s.queued != nil {
			_, in := p.actualQueue()[user]
			if in != *s.queued {
				t.Fatalf("%s: user %d queued = %v, want %v", s.name, user, in, *s.queued)
			}
		}
		p.assertNoDrift()
	}
	// Queue notices: the user left and entered the queue above.
	var kinds []string
	for _, ev := range p.notices() {
		if ev.IsQueue() && ev.Subject == fmt.Sprint(user) {
			kinds = append(kinds, ev.QueueKind())
		}
	}
	if !slices.Contains(kinds, "left") || !slices.Contains(kinds, "entered") {
		t.Fatalf("queue notices for user %d: %v, want left and entered", user, kinds)
	}
	// Notices and logs carry no row values.
	for _, ev := range p.notices() {
		if strings.Contains(string(ev.Data), "ZZ9 9ZZ") || strings.Contains(string(ev.Data), "AB12CDE") {
			t.Fatalf("notice carries a row value: %s", ev.Data)
		}
	}
	for _, v := range []string{"ZZ9 9ZZ", "AB12CDE", "a@b.c"} {
		if strings.Contains(p.allLogs(), v) {
			t.Fatalf("logs carry the row value %q", v)
		}
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
}

// A transaction touching only ignored tables still advances the checkpoint.
func TestIgnoredTablesAdvanceCheckpoint(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	n := len(p.notices())
	before := p.checkpointGTID()
	p.exec("INSERT INTO audit_log (actor, action, subject_id, created_at) VALUES ('t', 'viewed', 1, NOW())")
	head := p.head()
	p.waitCaughtUp(10 * time.Second)
	if after := p.checkpointGTID(); after == before || !gtidCovers(after, head) {
		t.Fatalf("checkpoint %q -> %q, want it to reach %q", before, after, head)
	}
	if got := len(p.notices()); got != n {
		t.Fatalf("ignored table produced %d notices", got-n)
	}
}

// Stop dialsync, make changes, start it: every change applied exactly once,
// no duplicate notices in the stream.
func TestRestartAppliesOnce(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	w := demo.NewWorkload(p.src, 11)
	ops := runOps(t, w, 50)
	p.waitCaughtUp(20 * time.Second)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	ops = append(ops, runOps(t, w, 100)...)
	p.start()
	p.waitCaughtUp(30 * time.Second)
	assertExact(t, p, ops)
	p.assertNoDrift()
}

// kill -9 in the middle of a stream of changes, again and again: zero lost,
// zero duplicate notices, queue equal to the rule.
func TestCrashMidStream(t *testing.T) {
	p := newPipe(t, pipeOpt{size: demo.Size{Users: 1000, ClaimsPerUser: 3, RequirementsPerClaim: 2, VehiclePackagePercent: 50, RandSeed: 3}})
	startCaughtUp(t, p)
	load := dstest.StartLoad(t, p.src, 3, 100, 0)
	r := rand.New(rand.NewPCG(1, 2))
	kills := 0
	for range 4 {
		time.Sleep(time.Duration(300+r.IntN(700)) * time.Millisecond)
		p.kill()
		kills++
		time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
		p.start()
	}
	time.Sleep(500 * time.Millisecond)
	ops := dstest.Ops(load.Stop())
	p.waitCaughtUp(60 * time.Second)
	t.Logf("%d source transactions, %d kills, %d runs", len(ops), kills, p.runs)
	if len(ops) < 100 {
		t.Fatalf("workload too small to prove anything: %d ops", len(ops))
	}
	assertExact(t, p, ops)
	p.assertNoDrift()
}

func runOps(t *testing.T, w *demo.Workload, n int) []demo.Op {
	t.Helper()
	ops := make([]demo.Op, 0, n)
	for range n {
		op, err := w.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
	}
	return ops
}

// assertNoLoss checks every user a source transaction touched has at least
// as many user.changed notices as transactions that touched it (one per
// (transaction, user); userNotices fails on duplicates).
func assertNoLoss(t *testing.T, p *pipe, ops []demo.Op) {
	t.Helper()
	want := map[uint64]int{}
	for _, op := range ops {
		for _, u := range op.Users {
			want[u]++
		}
	}
	evs := p.notices()
	got := p.userNotices(evs)
	p.queueNotices(evs)
	lost := 0
	for u, n := range want {
		if len(got[u]) < n {
			lost += n - len(got[u])
			if lost < 10 {
				var kinds, seen []string
				for _, op := range ops {
					if slices.Contains(op.Users, u) {
						kinds = append(kinds, op.Kind+strings.Join(op.Tables, "+")+fmt.Sprint(op.Users))
					}
				}
				for _, uc := range got[u] {
					seen = append(seen, strings.Join(uc.Tables, "+")+"@"+uc.Source.Txn)
				}
				t.Errorf("user %d: %d notices, %d transactions touched it\n  transactions: %v\n  notices: %v", u, len(got[u]), n, kinds, seen)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d (transaction, user) notices lost", lost)
	}
	total := 0
	for _, v := range got {
		total += len(v)
	}
	t.Logf("%d users touched, %d user.changed notices, none lost or doubled", len(want), total)
}

// assertExact is assertNoLoss plus the other direction, for tests whose ops
// are every source transaction of the run: attribution is exact (claims and
// address pointers resolve as of the change's binlog position), so no user
// gets a notice for a transaction that did not touch it either.
func assertExact(t *testing.T, p *pipe, ops []demo.Op) {
	t.Helper()
	assertNoLoss(t, p, ops)
	want := map[uint64]int{}
	for _, op := range ops {
		for _, u := range op.Users {
			want[u]++
		}
	}
	got := p.userNotices(p.notices())
	// Attribution is exact (claims and address pointers resolve as of the
	// change's binlog position), so no user gets a notice for a transaction
	// that did not touch it either.
	extra := 0
	for u, n := range got {
		if len(n) > want[u] {
			extra += len(n) - want[u]
			if extra < 10 {
				t.Errorf("user %d: %d notices, only %d transactions touched it", u, len(n), want[u])
			}
		}
	}
	if extra > 0 {
		t.Fatalf("%d notices for users the transactions did not touch", extra)
	}
}

var _ = notice.TypeUserChanged

// A crash after a transaction's queue write but before its checkpoint
// write, while the source moves on: the replay must not recompute that
// transaction's queue row from the newer source rows and announce them a
// second time under the old transaction (the chaos suite's duplicate
// (transaction, user) count found this). The later transaction announces
// its own values instead. The crash is reproduced exactly by putting the
// checkpoint back where it was before the transaction, which is the state
// a kill -9 between the two writes leaves.
func TestReplayDoesNotReannounceQueueRows(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	user, claim, _ := queuedUser(t, p)
	ctx := context.Background()
	var file string
	var pos int64
	var gset string
	if err := p.pg.QueryRow(ctx, `SELECT file, pos, gtid_set FROM dialsync.checkpoints WHERE pipeline = $1`,
		"p_"+p.name).Scan(&file, &pos, &gset); err != nil {
		t.Fatal(err)
	}
	addRequirement := fmt.Sprintf("INSERT INTO claim_requirements (claim_id, type, status, claim_requirement_reason, created_at, updated_at) VALUES (%d, 'id_check', 'PENDING', 'r', NOW(), NOW())", claim)

	p.exec(addRequirement) // T1: one more pending requirement
	t1 := p.head()
	p.waitCaughtUp(20 * time.Second)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := p.pg.Exec(ctx, `UPDATE dialsync.checkpoints SET file = $2, pos = $3, gtid_set = $4 WHERE pipeline = $1`,
		"p_"+p.name, file, pos, gset); err != nil {
		t.Fatal(err)
	}
	p.exec(addRequirement) // T2, while dialsync is down
	t2 := p.head()
	p.start()
	p.waitCaughtUp(30 * time.Second)

	byTxn := map[string][]int64{}
	for _, qc := range p.queueNotices(p.notices())[user] {
		byTxn[qc.Source.GTID] = append(byTxn[qc.Source.GTID], qc.PendingRequirements)
	}
	if len(byTxn[t1]) != 1 || len(byTxn[t2]) != 1 || byTxn[t2][0] != byTxn[t1][0]+1 {
		t.Fatalf("queue notices of user %d by transaction: %v; want one for %s and one for %s with one more pending requirement",
			user, byTxn, t1, t2)
	}
	if !strings.Contains(p.allLogs(), "replay passed the queue mark") {
		t.Fatalf("no replay of a marked transaction in the logs:\n%s", p.logTail(30))
	}
	p.assertNoDrift()
}

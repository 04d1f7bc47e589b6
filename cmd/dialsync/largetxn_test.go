package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"dialsync/internal/dev/benchkit"
	"dialsync/internal/dev/testenv"
)

// Invariant 7 of docs/design.md (bounded memory): one source transaction of
// many row changes is applied in pieces (apply.max_txn_bytes) with bounded
// memory, the checkpoint moves only at its end, and a crash in the middle
// replays it with exactly one user.changed notice per touched user.
//
// 100k row changes by default (about 5 s); DIALSYNC_TEST_LARGE=1 runs 1M
// (about 40 s, a third of it filling the table).
func TestLargeTransaction(t *testing.T) {
	rows := 100_000
	if os.Getenv("DIALSYNC_TEST_LARGE") == "1" {
		rows = 1_000_000
	}
	// A private server: a 1M-row UPDATE wants a bigger buffer pool than the
	// shared one has, and would slow the tests beside it.
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Args: []string{"--innodb-buffer-pool-size=512M", "--max-allowed-packet=64M"}})
	p := newPipe(t, pipeOpt{my: my})
	fillRequirements(t, p, rows)

	// 1 MiB pieces: several pieces even at 100k rows
	// (DIALSYNC_TEST_MAX_TXN_BYTES=8MiB measures the shipped default).
	piece := "1MiB"
	if v := os.Getenv("DIALSYNC_TEST_MAX_TXN_BYTES"); v != "" {
		piece = v
	}
	env := []string{"DIALSYNC_APPLY_MAX_TXN_BYTES=" + piece}
	p.startEnv(env...)
	waitFor(t, 120*time.Second, "bootstrap", func() bool {
		if p.exited() {
			t.Fatalf("dialsync exited:\n%s", p.logTail(40))
		}
		return p.checkpointGTID() != ""
	})
	p.waitCaughtUp(60 * time.Second)
	users := touchedUsers(t, p)
	t.Logf("claim_requirements: %d rows; %d users touched by an UPDATE of all of them", rows, len(users))

	// 1. One transaction, watched: RSS and the checkpoint.
	skip := len(p.notices())
	start := p.ckptRow()
	g1 := p.execTxn(`UPDATE claim_requirements SET updated_at = updated_at + INTERVAL 1 SECOND`)
	end := p.ckptPosAtHead()
	w := p.watch(start, end)
	t0 := time.Now()
	p.waitCaughtUp(5 * time.Minute)
	took := time.Since(t0)
	st := w.stop()
	t.Logf("%d row changes in one transaction applied in %s (%.0f rows/s); RSS: peak (VmHWM) %.1f MiB, median while applying %.1f MiB, after %.1f MiB; %d checkpoint reads, all at the transaction's start or end",
		rows, took.Round(time.Millisecond), float64(rows)/took.Seconds(), mib(st.hwm), mib(st.median()), mib(p.rss().rss), st.polls)
	if st.bad != "" {
		t.Fatalf("checkpoint inside the transaction: %s", st.bad)
	}
	const bound = 256 << 20
	if st.hwm > bound {
		t.Fatalf("peak RSS %.1f MiB exceeds %d MiB", mib(st.hwm), bound>>20)
	}
	p.assertOneNoticeEach(skip, g1, users)
	p.assertNoDrift()

	// 2. The same again, killed (-9) while the pieces are being applied.
	keys := make([]string, 0, 2*len(users))
	for _, u := range users {
		keys = append(keys, p.userKeys(u)...)
	}
	p.setKeys(users...)
	skip = len(p.notices())
	before := p.checkpointGTID()
	g2 := p.execTxn(`UPDATE claim_requirements SET updated_at = updated_at + INTERVAL 1 SECOND`)
	// A piece's effects include deleting its users' cache keys: the first
	// key gone means pieces are being applied.
	waitFor(t, 2*time.Minute, "the first piece to be applied", func() bool {
		n, err := p.rdb.Exists(context.Background(), keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n < int64(len(keys))
	})
	p.kill()
	ck := p.checkpointGTID()
	if gtidCovers(ck, g2) {
		t.Skipf("the transaction finished before the kill (checkpoint %s): nothing mid-way to prove; make it larger", ck)
	}
	if ck != before {
		t.Fatalf("checkpoint %s moved from %s inside the transaction", ck, before)
	}
	t.Logf("killed mid-transaction: checkpoint still %s", ck)
	if got := p.userChangedAfter(skip); len(got) != 0 {
		t.Fatalf("%d user.changed notices published before the transaction's last piece", len(got))
	}
	p.startEnv(env...)
	p.waitCaughtUp(5 * time.Minute)
	p.assertOneNoticeEach(skip, g2, users)
	for _, k := range keys {
		if p.keyExists(k) {
			t.Fatalf("cache key %s survived the replay", k)
		}
	}
	p.assertNoDrift()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// fillRequirements replaces claim_requirements with n rows spread over
// every claim (MariaDB's SEQUENCE engine makes the rows; a self INSERT ...
// SELECT would go through a temporary table).
func fillRequirements(t *testing.T, p *pipe, n int) {
	t.Helper()
	t0 := time.Now()
	var claims, maxID int
	if err := p.src.QueryRow(`SELECT COUNT(*), MAX(id) FROM claims`).Scan(&claims, &maxID); err != nil {
		t.Fatal(err)
	}
	if claims != maxID {
		t.Fatalf("claim ids are not 1..%d (max %d)", claims, maxID)
	}
	p.exec(`DELETE FROM claim_requirements`)
	const chunk = 200_000
	for done := 0; done < n; done += chunk {
		p.exec(fmt.Sprintf(`INSERT INTO claim_requirements (claim_id, type, status, claim_requirement_reason, created_at, updated_at)
			SELECT 1 + seq %% %d, 'id_check', IF(seq %% 3 = 0, 'PENDING', 'COMPLETE'), 'r', NOW() - INTERVAL seq SECOND, NOW()
			FROM seq_%d_to_%d`, claims, done+1, min(done+chunk, n)))
	}
	t.Logf("filled claim_requirements with %d rows in %s", n, time.Since(t0).Round(time.Millisecond))
}

func touchedUsers(t *testing.T, p *pipe) []uint64 {
	t.Helper()
	rows, err := p.src.Query(`SELECT DISTINCT c.user_id FROM claim_requirements r JOIN claims c ON c.id = r.claim_id ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var us []uint64
	for rows.Next() {
		var u uint64
		if err := rows.Scan(&u); err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	return us
}

// assertOneNoticeEach: every user gets exactly one user.changed notice for
// the transaction g (claim_requirements, update, updated_at), nobody else
// gets one.
func (p *pipe) assertOneNoticeEach(skip int, g string, users []uint64) {
	p.t.Helper()
	got := map[uint64]int{}
	for _, uc := range p.userChangedAfter(skip) {
		if uc.Source.Txn != g {
			p.t.Fatalf("notice for another transaction %s (want %s)", uc.Source.Txn, g)
		}
		if !slices.Equal(uc.Tables, []string{"claim_requirements"}) || !slices.Equal(uc.Columns, []string{"updated_at"}) {
			p.t.Fatalf("user %d: tables %v columns %v", uc.UserID, uc.Tables, uc.Columns)
		}
		got[uc.UserID]++
	}
	for _, u := range users {
		if got[u] != 1 {
			p.t.Fatalf("user %d: %d user.changed notices for transaction %s, want 1", u, got[u], g)
		}
	}
	if len(got) != len(users) {
		p.t.Fatalf("%d users notified, %d touched", len(got), len(users))
	}
}

type ckptPos struct {
	gtid, file string
	pos        int64
}

func (c ckptPos) String() string { return fmt.Sprintf("%s:%d gtid=%s", c.file, c.pos, c.gtid) }

func (p *pipe) ckptRow() ckptPos {
	p.t.Helper()
	var c ckptPos
	err := p.pg.QueryRow(context.Background(), `SELECT COALESCE(gtid_set, ''), COALESCE(file, ''), COALESCE(pos, 0) FROM dialsync.checkpoints WHERE pipeline = $1`, "p_"+p.name).
		Scan(&c.gtid, &c.file, &c.pos)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// ckptPosAtHead is the source head as a checkpoint would store it.
func (p *pipe) ckptPosAtHead() ckptPos {
	p.t.Helper()
	var c ckptPos
	var x1, x2 any
	if err := p.src.QueryRow(`SHOW MASTER STATUS`).Scan(&c.file, &c.pos, &x1, &x2); err != nil {
		p.t.Fatal(err)
	}
	c.gtid = p.head()
	return c
}

type memSample struct{ rss, hwm int64 }

// rss reads the dialsync process's VmRSS and VmHWM (bytes).
func (p *pipe) rss() memSample {
	p.mu.Lock()
	pr := p.proc
	p.mu.Unlock()
	if pr == nil {
		return memSample{}
	}
	st, err := benchkit.ReadProc(pr.Pid())
	if err != nil {
		return memSample{}
	}
	return memSample{rss: st.RSS, hwm: st.HWM}
}

type watchStats struct {
	samples []int64
	hwm     int64
	polls   int
	bad     string
}

func (s *watchStats) median() int64 {
	if len(s.samples) == 0 {
		return 0
	}
	x := slices.Clone(s.samples)
	slices.Sort(x)
	return x[len(x)/2]
}

type memWatcher struct {
	stop func() watchStats
}

// watch samples the process's memory and the stored checkpoint every 10ms
// until stopped; a checkpoint other than start or end is recorded as bad.
func (p *pipe) watch(start, end ckptPos) memWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	var st watchStats
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			m := p.rss()
			if m.rss > 0 {
				st.samples = append(st.samples, m.rss)
				st.hwm = max(st.hwm, m.hwm)
			}
			var c ckptPos
			err := p.pg.QueryRow(ctx, `SELECT COALESCE(gtid_set, ''), COALESCE(file, ''), COALESCE(pos, 0) FROM dialsync.checkpoints WHERE pipeline = $1`, "p_"+p.name).
				Scan(&c.gtid, &c.file, &c.pos)
			if err == nil {
				st.polls++
				if c != start && c != end && st.bad == "" {
					st.bad = fmt.Sprintf("%s (start %s, end %s)", c, start, end)
				}
				if c == end {
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return memWatcher{stop: func() watchStats { cancel(); wg.Wait(); return st }}
}

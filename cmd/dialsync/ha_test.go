package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dialsync/internal/dev/demo"
	"dialsync/internal/dev/dstest"
	"dialsync/internal/dev/proc"
)

// HA end-to-end tests: two real dialsync processes on one pipeline (same
// config file), a PostgreSQL advisory lock plus heartbeat electing the
// leader (checkpoint.Lease). The pipe's own process slot is not used: each
// instance is an haInstance.

// haInstance is one `dialsync run` process of a pipe.
type haInstance struct {
	t    testing.TB
	name string
	p    *proc.Proc
}

// haStart starts another dialsync process on p's config, with extra
// environment variables (config overrides) if any.
func haStart(t testing.TB, p *pipe, name string, env ...string) *haInstance {
	t.Helper()
	pr, err := proc.Start(binPath, proc.Options{Args: []string{"run", "--config", p.cfgPath}, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	in := &haInstance{t: t, name: name, p: pr}
	t.Cleanup(func() {
		in.kill()
		if t.Failed() {
			t.Logf("%s (pid %d) logs:\n%s", in.name, in.pid(), in.logTail(60))
		}
	})
	return in
}

func (in *haInstance) pid() int { return in.p.Pid() }

func (in *haInstance) exited() bool { return in.p.Exited() }

// kill sends SIGKILL (works on a stopped process too) and waits.
func (in *haInstance) kill() { in.p.Kill() }

func (in *haInstance) signal(sig syscall.Signal) {
	in.t.Helper()
	if err := in.p.Signal(sig); err != nil {
		in.t.Fatalf("%s: signal %v: %v", in.name, sig, err)
	}
}

// exitCode waits for the process to end by itself and returns its code.
func (in *haInstance) exitCode(within time.Duration) int {
	in.t.Helper()
	code, ok := in.p.Wait(within)
	if !ok {
		in.t.Fatalf("%s did not exit within %s:\n%s", in.name, within, in.logTail(30))
	}
	return code
}

func (in *haInstance) logText() string { return in.p.Logs().String() }

func (in *haInstance) logTail(n int) string { return in.p.Logs().Tail(n) }

// waitStandingBy waits until the instance reports it is a standby.
func (in *haInstance) waitStandingBy() {
	in.t.Helper()
	waitFor(in.t, 30*time.Second, in.name+" standing by", func() bool {
		if in.exited() {
			in.t.Fatalf("%s exited while it should stand by:\n%s", in.name, in.logTail(30))
		}
		return strings.Contains(in.logText(), "standing by")
	})
}

// haLease reads the pipeline's leases row (epoch 0 when none).
func haLease(p *pipe) (epoch int64, holder string) {
	_ = p.pg.QueryRow(context.Background(), `SELECT epoch, holder FROM dialsync.leases WHERE pipeline = $1`, "p_"+p.name).Scan(&epoch, &holder)
	return epoch, holder
}

// haCheckpointEpoch is the epoch of the last checkpoint write (-1 when none).
func haCheckpointEpoch(p *pipe) int64 {
	e := int64(-1)
	_ = p.pg.QueryRow(context.Background(), `SELECT epoch FROM dialsync.checkpoints WHERE pipeline = $1`, "p_"+p.name).Scan(&e)
	return e
}

func (in *haInstance) isHolder(holder string) bool {
	return strings.HasSuffix(holder, fmt.Sprintf("/pid-%d", in.pid()))
}

// haWorkload runs writers on the source until the returned stop is called,
// which returns every committed transaction.
func haWorkload(t *testing.T, p *pipe, writers int, seed int64) (stop func() []demo.Op) {
	l := dstest.StartLoad(t, p.src, writers, seed, 2*time.Millisecond) // a steady stream, not a flood
	return func() []demo.Op { return dstest.Ops(l.Stop()) }
}

// haLeader starts instance-a on p and waits until it has bootstrapped and
// caught up.
func haLeader(t *testing.T, p *pipe) *haInstance {
	t.Helper()
	a := haStart(t, p, "instance-a")
	waitFor(t, 60*time.Second, "bootstrap checkpoint", func() bool {
		if a.exited() {
			t.Fatalf("leader exited:\n%s", a.logTail(40))
		}
		return p.checkpointGTID() != ""
	})
	p.waitCaughtUp(30 * time.Second)
	return a
}

// haTakeover waits for the lease to move past epoch and then for the first
// checkpoint written under the new epoch; both measured from `from`.
func haTakeover(t *testing.T, p *pipe, epoch int64, from time.Time, within time.Duration) (newEpoch int64, holder string, toLease, toCheckpoint time.Duration) {
	t.Helper()
	deadline := from.Add(within)
	for {
		if newEpoch, holder = haLease(p); newEpoch > epoch {
			toLease = time.Since(from)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no takeover within %s (epoch still %d)", within, epoch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for tick := 0; haCheckpointEpoch(p) != newEpoch; tick++ {
		// The new leader writes its first checkpoint with its first
		// transaction: make sure one comes even if the workload is over.
		if tick%40 == 0 {
			p.exec("INSERT INTO audit_log (actor, action, subject_id, created_at) VALUES ('ha', 'tick', 1, NOW())")
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("new leader (epoch %d) wrote no checkpoint", newEpoch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return newEpoch, holder, toLease, time.Since(from)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// kill -9 the leader mid-stream, five times over: the standby takes over
// within seconds and finishes the stream; nothing lost or doubled, the
// queue equals the rule.
func TestHAKillLeaderTakeover(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	a := haLeader(t, p)
	epoch, holder := haLease(p)
	if !a.isHolder(holder) {
		t.Fatalf("lease holder %q is not instance-a (pid %d)", holder, a.pid())
	}
	b := haStart(t, p, "instance-b")
	b.waitStandingBy()

	stop := haWorkload(t, p, 3, 500)
	leader, standby := a, b
	var toLease, toCkpt []time.Duration
	for i := range 5 {
		time.Sleep(time.Duration(400+100*i) * time.Millisecond)
		// The standby must not have written anything while standing by.
		if ce := haCheckpointEpoch(p); ce != epoch {
			t.Fatalf("checkpoint epoch %d before takeover %d; want the leader's %d", ce, i+1, epoch)
		}
		killed := time.Now()
		leader.kill()
		var dl, dc time.Duration
		epoch, holder, dl, dc = haTakeover(t, p, epoch, killed, 5*time.Second)
		if !standby.isHolder(holder) {
			t.Fatalf("takeover %d: holder %q is not %s (pid %d)", i+1, holder, standby.name, standby.pid())
		}
		if dl > 5*time.Second {
			t.Fatalf("takeover %d took %s; want within 5s", i+1, dl)
		}
		t.Logf("takeover %d: lease %s, first checkpoint %s after kill -9 (epoch %d)", i+1, dl.Round(time.Millisecond), dc.Round(time.Millisecond), epoch)
		toLease, toCkpt = append(toLease, dl), append(toCkpt, dc)
		// The killed instance comes back as the new standby.
		restarted := haStart(t, p, fmt.Sprintf("%s-r%d", leader.name, i+1))
		restarted.waitStandingBy()
		leader, standby = standby, restarted
	}
	time.Sleep(300 * time.Millisecond)
	ops := stop()
	p.waitCaughtUp(60 * time.Second)
	t.Logf("HA takeover after kill -9, median of %d: lease acquired %s, first checkpoint %s",
		len(toLease), median(toLease).Round(time.Millisecond), median(toCkpt).Round(time.Millisecond))
	t.Logf("%d source transactions", len(ops))
	if len(ops) < 100 {
		t.Fatalf("workload too small to prove anything: %d ops", len(ops))
	}
	assertNoLoss(t, p, ops)
	p.assertNoDrift()
	if leader.exited() || standby.exited() {
		t.Fatal("an instance exited unexpectedly")
	}
}

// SIGSTOP the leader past its TTL: it keeps its TCP connection and so its
// advisory lock, but its heartbeat goes stale; the standby terminates its
// session and takes over. SIGCONT the old leader: it cannot move the
// checkpoint (the epoch stays the new leader's) and it exits non-zero.
func TestHAPausedLeaderIsFenced(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	a := haLeader(t, p)
	epoch, _ := haLease(p)
	b := haStart(t, p, "instance-b")
	b.waitStandingBy()

	stop := haWorkload(t, p, 3, 700)
	time.Sleep(700 * time.Millisecond)
	paused := time.Now()
	a.signal(syscall.SIGSTOP)
	newEpoch, holder, dl, dc := haTakeover(t, p, epoch, paused, 8*time.Second)
	t.Logf("paused leader replaced: lease %s, first checkpoint %s after SIGSTOP", dl.Round(time.Millisecond), dc.Round(time.Millisecond))
	if !b.isHolder(holder) {
		t.Fatalf("holder %q is not instance-b (pid %d)", holder, b.pid())
	}
	if dl > 5*time.Second {
		t.Fatalf("takeover of a paused leader took %s; want within 5s", dl)
	}
	if !strings.Contains(b.logText(), "heartbeat is stale") {
		t.Fatal("standby did not report deposing a stale leader")
	}

	// Watch the checkpoint's epoch from before the old leader wakes until
	// the end: it must never be the old one again.
	var regress sync.Once
	var regressed int64
	watch, endWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watch.Err() == nil {
			if e := haCheckpointEpoch(p); e != newEpoch {
				regress.Do(func() { regressed = e })
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	a.signal(syscall.SIGCONT)
	code := a.exitCode(15 * time.Second)
	if code == 0 {
		t.Fatalf("deposed leader exited 0; want non-zero:\n%s", a.logTail(20))
	}
	if logs := a.logText(); !strings.Contains(logs, "lost the pipeline lease") && !strings.Contains(logs, "checkpoint: fenced") {
		t.Fatalf("deposed leader's exit names neither the lost lease nor fencing:\n%s", a.logTail(20))
	}
	for _, line := range strings.Split(a.logText(), "\n") {
		if strings.Contains(line, "lost the pipeline lease") || strings.Contains(line, "checkpoint: fenced") || strings.Contains(line, "lease lost") {
			t.Logf("deposed leader: %s", line)
		}
	}
	time.Sleep(500 * time.Millisecond)
	ops := stop()
	p.waitCaughtUp(60 * time.Second)
	endWatch()
	<-watched
	if regressed != 0 {
		t.Fatalf("checkpoint epoch went back to %d after the deposed leader woke; want %d throughout", regressed, newEpoch)
	}
	if e, h := haLease(p); e != newEpoch || !b.isHolder(h) {
		t.Fatalf("lease = epoch %d holder %q; want %d held by instance-b", e, h, newEpoch)
	}
	t.Logf("deposed leader exited with code %d; %d source transactions", code, len(ops))
	assertNoLoss(t, p, ops)
	if d := p.queueDrift(); len(d) > 0 {
		// See checkpoint/lease.go: a queue write the deposed leader computed
		// before its pause and committed after waking is not fenced.
		t.Fatalf("queue drift after the deposed leader woke (%d):\n%s", len(d), strings.Join(d[:min(len(d), 20)], "\n"))
	}
	if b.exited() {
		t.Fatalf("new leader exited:\n%s", b.logTail(30))
	}
}

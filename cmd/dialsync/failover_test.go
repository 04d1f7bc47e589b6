package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"dialsync/internal/dev/testenv"
)

// GTID failover (MariaDB): a primary with two replicas that log what they
// replicate (--log-slave-updates), so all three binlogs carry the primary's
// GTIDs (domain-server-seq keeps the primary's server_id). dialsync reads
// replica A; mid-stream it is stopped and pointed at replica B: it resumes
// from the same GTID position on B, and nothing is lost or doubled.

// fxReplica makes r replicate from primary by GTID (slave_pos) and waits
// until it runs.
func fxReplica(t *testing.T, primary, r *testenv.MariaDB) {
	t.Helper()
	r.Exec(t, fmt.Sprintf(`CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='',
		MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1`, primary.Port()), "START SLAVE")
	waitFor(t, 30*time.Second, fmt.Sprintf("replica %s to follow %s", r.Addr(), primary.Addr()), func() bool {
		return gtidCovers(r.QueryString(t, "SELECT @@gtid_binlog_pos"), primary.QueryString(t, "SELECT @@gtid_binlog_pos"))
	})
}

// fxWaitReplica waits until replica r has applied (and logged) want.
func fxWaitReplica(t *testing.T, r *testenv.MariaDB, want string) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("replica %s to reach %s", r.Addr(), want), func() bool {
		return gtidCovers(r.QueryString(t, "SELECT @@gtid_binlog_pos"), want)
	})
}

// fxStart runs dialsync on p's config with the source (binlog and lookups)
// overridden to addr through the environment.
func fxStart(t *testing.T, p *pipe, name, addr string) *haInstance {
	t.Helper()
	return haStart(t, p, name, "DIALSYNC_SOURCE_ADDR="+addr)
}

func TestGTIDFailoverToOtherReplica(t *testing.T) {
	primary := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 2101})
	replicaArgs := []string{"--log-slave-updates", "--read-only"}
	ra := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 2102, Args: replicaArgs})
	rb := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 2103, Args: replicaArgs})
	fxReplica(t, primary, ra)
	fxReplica(t, primary, rb)

	// The pipe's source connection (workload, expected queue) is the
	// primary; dialsync itself reads a replica.
	p := newPipe(t, pipeOpt{my: primary})
	fxWaitReplica(t, ra, p.head())
	fxWaitReplica(t, rb, p.head())

	a := fxStart(t, p, "dialsync-on-replica-a", ra.Addr())
	waitFor(t, 60*time.Second, "bootstrap checkpoint", func() bool {
		if a.exited() {
			t.Fatalf("dialsync exited:\n%s", a.logTail(40))
		}
		return p.checkpointGTID() != ""
	})
	p.waitCaughtUp(30 * time.Second)
	// The checkpoint carries the primary's GTIDs, which both replicas share.
	if cp := p.checkpointGTID(); !strings.Contains(cp, fmt.Sprintf("-%d-", primary.ServerID())) {
		t.Fatalf("checkpoint %q does not name the primary's server_id %d", cp, primary.ServerID())
	}

	stop := haWorkload(t, p, 3, 900)
	time.Sleep(1500 * time.Millisecond)
	// Failover mid-stream: the workload keeps running on the primary.
	a.signal(syscall.SIGTERM)
	if code := a.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("dialsync on replica A exited %d after SIGTERM", code)
	}
	cp := p.checkpointGTID()
	t.Logf("stopped on replica A at %s; primary at %s", cp, p.head())
	// An operator fails over to a replica that has what was read from A.
	fxWaitReplica(t, rb, cp)
	b := fxStart(t, p, "dialsync-on-replica-b", rb.Addr())
	waitFor(t, 30*time.Second, "a checkpoint written from replica B", func() bool {
		if b.exited() {
			t.Fatalf("dialsync on replica B exited:\n%s", b.logTail(40))
		}
		return p.checkpointGTID() != cp
	})
	time.Sleep(1500 * time.Millisecond)
	ops := stop()
	fxWaitReplica(t, rb, p.head())
	p.waitCaughtUp(60 * time.Second)
	if !strings.Contains(b.logText(), cp) {
		t.Errorf("dialsync on replica B did not log resuming from %s", cp)
	}
	t.Logf("%d primary transactions across the failover", len(ops))
	if len(ops) < 100 {
		t.Fatalf("workload too small to prove anything: %d ops", len(ops))
	}
	assertNoLoss(t, p, ops) // fails on a duplicate (transaction, user) too
	p.assertNoDrift()
	if code := b.stop(); code != 0 {
		t.Fatalf("dialsync on replica B exited %d after SIGTERM", code)
	}
}

// stop sends SIGTERM and returns the exit code.
func (in *haInstance) stop() int {
	in.signal(syscall.SIGTERM)
	return in.exitCode(30 * time.Second)
}

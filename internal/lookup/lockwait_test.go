package lookup

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// A server that refuses innodb_lock_wait_timeout (some MySQL-protocol
// servers accept only 1, others none) still gets a lookup session, says so
// once, and the commit barrier's wait is bounded by its query deadline.
func TestRefusedLockWaitFallsBackToDeadline(t *testing.T) {
	saved := lockWaitSetup
	lockWaitSetup = []string{"SET SESSION innodb_lock_wait_timeout = 'refused'", "SET SESSION no_such_variable_here = 1"}
	t.Cleanup(func() { lockWaitSetup = saved })

	name, db := sourceDB(t, small)
	var logs syncBuffer
	l, err := Open(context.Background(), Config{Addr: mariaAddr, User: "root", Database: name},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Open with a refused lock wait: %v", err)
	}
	defer l.Close()

	// Hold a row lock in another session; the barrier must give up by its
	// deadline (the server's own wait, 50 s by default, is not ours).
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("UPDATE users SET status = status WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.CommitBarrier(context.Background(), map[string][]uint64{"users": {1}}); err != nil {
		t.Fatalf("CommitBarrier: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second || l.BarrierTimeouts() != 1 {
		t.Fatalf("barrier took %s with %d timeouts, want the deadline (~%ds) and 1", took, l.BarrierTimeouts(), barrierWaitSeconds+2)
	}
	if n := strings.Count(logs.String(), "refuses to set innodb_lock_wait_timeout"); n != 1 {
		t.Fatalf("the refusal was logged %d times, want once:\n%s", n, logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

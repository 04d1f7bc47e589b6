package main

import (
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
	"dialsync/internal/dev/testenv"
)

// With recovery.on_purged = "reconcile", a checkpoint whose binlog was
// purged makes dialsync jump to the head and reconcile by itself, loudly,
// with the queue right afterwards (zero drift) and the jump in the
// checkpoint history.
func TestPurgedAutoReconcile(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	p := newPipe(t, pipeOpt{my: my, config: func(c *config.Config) { c.Recovery.OnPurged = "reconcile" }})
	startCaughtUp(t, p)
	if code := p.stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	// Changes the stopped pipeline will never read from the binlog...
	p.exec("UPDATE users SET status = 'inactive' WHERE id % 7 = 0",
		"UPDATE claim_requirements SET status = 'PENDING' WHERE id % 5 = 0")
	// ...because the binlogs holding them are purged.
	my.Exec(t, "FLUSH BINARY LOGS")
	file := lastBinlog(t, p)
	// PURGE skips a file a (just closed) dump thread still reads: repeat
	// until the old files are really gone.
	waitFor(t, 20*time.Second, "binlogs purged", func() bool {
		my.Exec(t, "PURGE BINARY LOGS TO '"+file+"'")
		return firstBinlog(t, p) == file
	})
	p.start()
	p.waitCaughtUp(60 * time.Second)
	logs := p.allLogs()
	if !strings.Contains(logs, "AUTOMATIC RECOVERY") {
		t.Fatalf("no loud log line about the automatic recovery:\n%s", p.logTail(20))
	}
	p.assertNoDrift()
	var n int
	if err := p.pg.QueryRow(t.Context(), `SELECT count(*) FROM dialsync.checkpoint_history WHERE reason LIKE '%binlog purged%'`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("history entries for the recovery = %d, %v", n, err)
	}
	// And it streams on normally afterwards.
	p.exec("UPDATE users SET status = 'active' WHERE id % 7 = 0")
	p.waitCaughtUp(20 * time.Second)
	p.assertNoDrift()
}

func firstBinlog(t *testing.T, p *pipe) string { return binlogs(t, p)[0] }

func lastBinlog(t *testing.T, p *pipe) string {
	b := binlogs(t, p)
	return b[len(b)-1]
}

// binlogs lists the binlog files of the pipe's server, oldest first.
func binlogs(t *testing.T, p *pipe) []string {
	t.Helper()
	rows, err := p.src.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var names []string
	for rows.Next() {
		dest := make([]any, len(cols))
		var n string
		dest[0] = &n
		for i := 1; i < len(cols); i++ {
			dest[i] = new(any)
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		t.Fatal("no binlogs")
	}
	return names
}

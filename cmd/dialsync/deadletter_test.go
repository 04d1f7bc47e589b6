package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"dialsync/internal/config"
)

// A row the handlers cannot process (a requirement with a NULL claim_id,
// possible once the column allows NULL) halts the pipeline at its position
// by default, with nothing after it applied.
func TestPoisonRowHalts(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	before := p.checkpointGTID()
	p.exec("ALTER TABLE claim_requirements MODIFY claim_id BIGINT UNSIGNED NULL",
		"INSERT INTO claim_requirements (claim_id, type, status, created_at, updated_at) VALUES (NULL, 'x', 'PENDING', NOW(), NOW())")
	waitFor(t, 30*time.Second, "dialsync to halt", p.exited)
	logs := p.allLogs()
	if !strings.Contains(logs, "poison row") || !strings.Contains(logs, "claim_requirements") {
		t.Fatalf("halt message does not name the poison row and table:\n%s", p.logTail(5))
	}
	if after := p.checkpointGTID(); !gtidCovers(p.head(), after) || gtidCovers(after, p.head()) {
		t.Fatalf("checkpoint moved past the poison row: %s -> %s (head %s)", before, after, p.head())
	}
}

// With tables.<name>.on_error = "dead_letter" the row is recorded (once,
// even across a restart) and announced, and the stream goes on.
func TestPoisonRowDeadLetter(t *testing.T) {
	p := newPipe(t, pipeOpt{config: func(c *config.Config) { c.Tables.ClaimRequirements.OnError = config.OnErrorDeadLetter }})
	startCaughtUp(t, p)
	p.exec("ALTER TABLE claim_requirements MODIFY claim_id BIGINT UNSIGNED NULL",
		"INSERT INTO claim_requirements (claim_id, type, status, created_at, updated_at) VALUES (NULL, 'x', 'PENDING', NOW(), NOW())",
		"UPDATE users SET status = 'inactive' WHERE id = 1")
	p.waitCaughtUp(20 * time.Second)
	var n int
	if err := p.pg.QueryRow(context.Background(), `SELECT count(*) FROM dialsync.dead_letters WHERE table_name = 'claim_requirements'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("dead letters = %d, %v; want 1", n, err)
	}
	var sawDL, sawUser bool
	for _, ev := range p.notices() {
		sawDL = sawDL || ev.Type == "dialsync.deadletter"
		sawUser = sawUser || (ev.Type == "dialsync.user.changed" && ev.Subject == "1")
	}
	if !sawDL || !sawUser {
		t.Fatalf("dead letter notice %v, later change's notice %v", sawDL, sawUser)
	}
	// A crash replay meets the row again: still recorded once.
	p.kill()
	if _, err := p.pg.Exec(context.Background(), `UPDATE dialsync.checkpoints SET gtid_set = $1, file = '', pos = 0`, "0-1000-1"); err != nil {
		t.Fatal(err)
	}
	p.start()
	p.waitCaughtUp(30 * time.Second)
	if err := p.pg.QueryRow(context.Background(), `SELECT count(*) FROM dialsync.dead_letters`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after replay dead letters = %d, %v; want 1", n, err)
	}
}

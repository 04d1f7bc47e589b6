package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"dialsync/internal/config"
	"dialsync/internal/dev/proc"
)

// No command hangs: against a server that accepts TCP and then says nothing
// (a black hole: no MySQL greeting, no PostgreSQL startup reply, no Redis
// or NATS answer) the first SIGTERM stops every command within 10 s, with
// the exit code documented in the README ("Commands and exit codes") and a
// line naming the server; and a stop with a PostgreSQL write that cannot
// finish abandons the batch without moving the checkpoint past it
// (docs/design.md, "Deadlines and signals").

const stopLimit = 10 * time.Second

// codeInterrupted is exitInterrupted, spelt out: the exit code is the
// interface under test.
const codeInterrupted = 130

// blackHole listens on a free port, accepts every connection and never
// writes a byte; it closes them at the end of the test.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// hangCase is one command against one black hole.
type hangCase struct {
	args []string // after the command name's --config is added
	code int      // the exit code after SIGTERM
}

// signalAfter starts dialsync with args, sends sig after wait and wants
// the process to end within stopLimit; it returns the exit code and the
// output (stdout and stderr together).
func signalAfter(t *testing.T, sig os.Signal, wait time.Duration, args ...string) (int, string) {
	t.Helper()
	var out proc.Buffer
	pr, err := proc.Start(binPath, proc.Options{Args: args, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(wait)
	if pr.Exited() {
		t.Fatalf("dialsync %v ended before the signal (exit %d): it did not wait for the black hole:\n%s", args, pr.ExitCode(), out.String())
	}
	sent := time.Now()
	code, killed := pr.Stop(sig, stopLimit)
	if killed {
		t.Fatalf("dialsync %v still running %s after %v (killed):\n%s", args, stopLimit, sig, out.String())
	}
	t.Logf("dialsync %v: exit %d, %s after %v", args, code, time.Since(sent).Round(time.Millisecond), sig)
	return code, out.String()
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

func runHangCases(t *testing.T, p *pipe, hole string, cases []hangCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			args := append([]string{c.args[0]}, append(c.args[1:], "--config", p.cfgPath)...)
			if c.args[0] == "checkpoint" || c.args[0] == "deadletters" {
				// The subcommand comes before the flags.
				args = append([]string{c.args[0], c.args[1]}, append(c.args[2:], "--config", p.cfgPath)...)
			}
			code, out := signalAfter(t, syscall.SIGTERM, time.Second, args...)
			t.Logf("last line: %s", lastLine(out))
			if code != c.code {
				t.Fatalf("exit %d, want %d:\n%s", code, c.code, out)
			}
			if !strings.Contains(out, hole) {
				t.Fatalf("the output does not name the server %s:\n%s", hole, out)
			}
			switch c.code {
			case codeInterrupted:
				if l := lastLine(out); !strings.HasPrefix(l, "dialsync: ") || !strings.Contains(l, "interrupted by SIGTERM") {
					t.Fatalf("last line %q, want \"dialsync: ... interrupted by SIGTERM ...\"", l)
				}
			case exitOK:
				if c.args[0] == "run" && !strings.Contains(out, "stopped by a signal before start-up finished") {
					t.Fatalf("run did not log its stop during start-up:\n%s", out)
				}
			}
		})
	}
}

// Every command that contacts MySQL, against a MySQL black hole as
// source.addr (the lookup server inherits it).
func TestHangMySQLBlackHole(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	hole := blackHole(t)
	p.editConfig(func(c *config.Config) { c.Source.Addr = hole })
	runHangCases(t, p, hole, []hangCase{
		{[]string{"run"}, exitOK},
		{[]string{"check"}, codeInterrupted},
		{[]string{"explain", "7"}, codeInterrupted},
		{[]string{"reconcile", "--dry-run"}, codeInterrupted},
		{[]string{"reconcile"}, codeInterrupted},
		{[]string{"checkpoint", "show"}, codeInterrupted},
		{[]string{"checkpoint", "reset", "--to-head", "--reason", "hang test"}, codeInterrupted},
	})
}

// Without a signal, the connect gives up by itself: the MySQL handshake
// and the PostgreSQL startup each have a deadline.
func TestHangBlackHoleWithoutSignal(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	hole := blackHole(t)
	for _, tc := range []struct {
		name string
		edit func(c *config.Config)
		want string
	}{
		{"mysql", func(c *config.Config) { c.Source.Addr = hole }, "no MySQL handshake within 10s"},
		{"postgres", func(c *config.Config) {
			c.Postgres.DSN = fmt.Sprintf("postgres://postgres@%s/x?sslmode=disable", hole)
		}, "postgres at " + hole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := *p.cfg
			defer p.editConfig(func(c *config.Config) { *c = saved })
			p.editConfig(tc.edit)
			start := time.Now()
			_, stderr, code := runCLI(t, 30*time.Second, nil, "run", "--config", p.cfgPath)
			took := time.Since(start)
			if code != exitFailure || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, hole) {
				t.Fatalf("run: exit %d after %s, want 1 naming %q and %s:\n%s", code, took, tc.want, hole, stderr)
			}
			if took > 20*time.Second {
				t.Fatalf("run gave up after %s, want about 10s", took)
			}
			t.Logf("after %s: %s", took.Round(time.Millisecond), lastLine(stderr))
		})
	}
}

// The commands that contact PostgreSQL, against a listener that never
// answers the startup message.
func TestHangPostgresBlackHole(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	hole := blackHole(t)
	p.editConfig(func(c *config.Config) {
		c.Postgres.DSN = fmt.Sprintf("postgres://postgres@%s/x?sslmode=disable", hole)
	})
	runHangCases(t, p, hole, []hangCase{
		{[]string{"run"}, exitOK},
		{[]string{"check"}, codeInterrupted},
		{[]string{"explain", "7"}, codeInterrupted},
		{[]string{"reconcile", "--dry-run"}, codeInterrupted},
		{[]string{"checkpoint", "show"}, codeInterrupted},
		{[]string{"deadletters", "list"}, codeInterrupted},
	})
}

// The commands that contact Redis (run deletes keys; check and explain
// read), against a Redis black hole.
func TestHangRedisBlackHole(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	hole := blackHole(t)
	p.editConfig(func(c *config.Config) { c.Redis.Addr = hole })
	runHangCases(t, p, hole, []hangCase{
		{[]string{"run"}, exitOK},
		{[]string{"check"}, codeInterrupted},
		{[]string{"explain", "7"}, codeInterrupted},
	})
}

// The commands that contact NATS, against a NATS black hole (no INFO).
// watch ends on a signal as it always does: exit 0.
func TestHangNATSBlackHole(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	hole := blackHole(t)
	p.editConfig(func(c *config.Config) { c.NATS.URL = "nats://" + hole })
	runHangCases(t, p, hole, []hangCase{
		{[]string{"run"}, exitOK},
		{[]string{"check"}, codeInterrupted},
		{[]string{"explain", "7"}, codeInterrupted},
	})
	t.Run("watch", func(t *testing.T) {
		code, out := signalAfter(t, syscall.SIGTERM, time.Second, "watch", "--config", p.cfgPath)
		if code != exitOK {
			t.Fatalf("watch: exit %d, want 0:\n%s", code, out)
		}
	})
}

// SIGHUP (a closed terminal) stops watch like Ctrl-C (exit 0) and a one-shot
// command like SIGTERM (exit 130, one line); it used to kill them with the
// Go default (exit 129, nothing said). run logs and ignores it.
func TestHangup(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	t.Run("run", func(t *testing.T) {
		p.start()
		p.waitCaughtUp(60 * time.Second)
		if err := p.last.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the SIGHUP log line", func() bool { return strings.Contains(p.allLogs(), "SIGHUP: nothing to reload; ignoring") })
		if p.exited() {
			t.Fatalf("run ended after SIGHUP (exit %d)", p.last.ExitCode())
		}
		if code := p.stop(); code != exitOK {
			t.Fatalf("run after SIGTERM: exit %d, want 0", code)
		}
	})
	// The stream exists now (run made it).
	t.Run("watch", func(t *testing.T) {
		code, out := signalAfter(t, syscall.SIGHUP, 2*time.Second, "watch", "--config", p.cfgPath)
		if code != exitOK {
			t.Fatalf("watch after SIGHUP: exit %d, want 0:\n%s", code, out)
		}
	})
	t.Run("explain", func(t *testing.T) {
		hole := blackHole(t)
		saved := *p.cfg
		defer p.editConfig(func(c *config.Config) { *c = saved })
		p.editConfig(func(c *config.Config) { c.Source.Addr = hole })
		code, out := signalAfter(t, syscall.SIGHUP, time.Second, "explain", "7", "--config", p.cfgPath)
		if l := lastLine(out); code != codeInterrupted || !strings.Contains(l, "interrupted by SIGHUP") || !strings.Contains(l, hole) {
			t.Fatalf("explain after SIGHUP: exit %d, last line %q; want 130 and \"interrupted by SIGHUP\" naming %s", code, l, hole)
		}
	})
}

// A stop while a PostgreSQL write cannot finish: another session holds
// call_queue (the queue write blocks) or checkpoints (the checkpoint write
// blocks) in ACCESS EXCLUSIVE mode. SIGTERM ends run within 10 s (exit 0:
// the batch is abandoned after the stop grace period), the checkpoint
// does not cover the unapplied change, and the next run applies it.
func TestHangStuckPostgresWrite(t *testing.T) {
	for _, table := range []string{"call_queue", "checkpoints"} {
		t.Run(table, func(t *testing.T) {
			p := newPipe(t, pipeOpt{})
			p.start()
			p.waitCaughtUp(90 * time.Second)
			p.assertNoDrift()
			var user uint64
			for u := range p.expectedQueue() {
				user = u
				break
			}
			if user == 0 {
				t.Fatal("the seeded data queues nobody")
			}

			ctx := context.Background()
			tx, err := p.pg.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "LOCK TABLE dialsync."+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			before := p.checkpointGTIDVia(tx)
			p.exec(fmt.Sprintf("UPDATE users SET is_enabled = 0 WHERE id = %d", user))
			changed := p.head()
			waitFor(t, 30*time.Second, "dialsync's write to wait for the lock", func() bool {
				var n int
				err := p.pg.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass`, "dialsync."+table).Scan(&n)
				return err == nil && n > 0
			})

			start := time.Now()
			code, killed := p.last.Stop(syscall.SIGTERM, stopLimit)
			took := time.Since(start)
			p.mu.Lock()
			p.proc = nil
			p.mu.Unlock()
			if killed {
				t.Fatalf("run still running %s after SIGTERM with the %s write blocked", stopLimit, table)
			}
			if code != exitOK {
				t.Fatalf("run: exit %d after SIGTERM, want 0", code)
			}
			t.Logf("run stopped %s after SIGTERM", took.Round(time.Millisecond))
			if !strings.Contains(p.allLogs(), "did not finish within the stop grace period") {
				t.Fatal("run did not log that it abandoned the batch in hand")
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			after := p.checkpointGTID()
			if gtidCovers(after, changed) {
				t.Fatalf("checkpoint %s covers the unapplied change %s (before the stop: %s)", after, changed, before)
			}

			p.start()
			p.waitCaughtUp(60 * time.Second)
			p.assertNoDrift()
			if _, queued := p.actualQueue()[user]; queued {
				t.Fatalf("user %d is still queued after the restart", user)
			}
			if code := p.stop(); code != exitOK {
				t.Fatalf("run: exit %d", code)
			}
		})
	}
}

// checkpointGTIDVia reads the stored checkpoint in tx (the session that
// may hold the checkpoints table locked).
func (p *pipe) checkpointGTIDVia(tx interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) string {
	var g *string
	err := tx.QueryRow(context.Background(), `SELECT gtid_set FROM dialsync.checkpoints WHERE pipeline = $1`, "p_"+p.name).Scan(&g)
	if err != nil || g == nil {
		return ""
	}
	return *g
}

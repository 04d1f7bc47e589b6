package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"dialsync/internal/dev/proc"
	"dialsync/notice"
)

// watcher is a `dialsync watch` child process whose stdout lines are
// collected as they arrive.
type watcher struct {
	t      *testing.T
	p      *proc.Proc
	lines  proc.Lines
	stderr proc.Buffer
}

func startWatch(t *testing.T, p *pipe, args ...string) *watcher {
	t.Helper()
	w := &watcher{t: t}
	var err error
	w.p, err = proc.Start(binPath, proc.Options{Args: append([]string{"watch", "--config", p.cfgPath}, args...), Stdout: &w.lines, Stderr: &w.stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.p.Kill)
	return w
}

func (w *watcher) snapshot() []string { return w.lines.Lines() }

// events decodes every line as a notice (JSON lines mode).
func (w *watcher) events() []notice.Event {
	w.t.Helper()
	var out []notice.Event
	for _, l := range w.snapshot() {
		ev, err := notice.Decode([]byte(l))
		if err != nil {
			w.t.Fatalf("watch printed a line that is not a notice: %v\n%s", err, l)
		}
		out = append(out, ev)
	}
	return out
}

// waitEvent waits for a notice matching cond.
func (w *watcher) waitEvent(what string, cond func(notice.Event) bool) notice.Event {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range w.events() {
			if cond(ev) {
				return ev
			}
		}
		select {
		case <-w.p.Done():
			w.t.Fatalf("watch exited while waiting for %s: %s", what, w.stderrText())
		case <-time.After(20 * time.Millisecond):
		}
	}
	w.t.Fatalf("no %s within 20s; watch printed %d lines; stderr: %s", what, len(w.snapshot()), w.stderrText())
	return notice.Event{}
}

func (w *watcher) stderrText() string { return w.stderr.String() }

// interrupt sends SIGINT (Ctrl-C) and returns the exit code.
func (w *watcher) interrupt() int {
	w.t.Helper()
	_ = w.p.Signal(syscall.SIGINT)
	code, ok := w.p.Wait(10 * time.Second)
	if !ok {
		w.t.Fatal("watch did not exit within 10s of SIGINT")
	}
	return code
}

func TestWatch(t *testing.T) {
	p := newPipe(t, pipeOpt{})
	startCaughtUp(t, p)
	users := queuedUsers(t, p, 2)
	u, v := users[0], users[1]
	isUser := func(id uint64, typ string) func(notice.Event) bool {
		return func(ev notice.Event) bool { return ev.Type == typ && ev.Subject == fmt.Sprint(id) }
	}

	all := startWatch(t, p, "--since", "1h")
	// The replay shows the bootstrap's queue.entered notices...
	all.waitEvent("replayed queue.entered", isUser(u, notice.TypeQueueEntered))
	filtered := startWatch(t, p, "--since", "1h", "--user", fmt.Sprint(u), "--type", "queue.left")
	userOnly := startWatch(t, p, "--since", "1h", "--user", fmt.Sprint(u))
	text := startWatch(t, p, "--since", "1h", "--format", "text", "--type", "dialsync.user.changed")
	userOnly.waitEvent("replayed queue.entered of the user", isUser(u, notice.TypeQueueEntered))

	// ...and live changes follow.
	p.exec(fmt.Sprintf("UPDATE users SET status = 'inactive' WHERE id IN (%d, %d)", u, v))
	p.waitCaughtUp(20 * time.Second)
	ev := all.waitEvent("live user.changed", isUser(u, notice.TypeUserChanged))
	uc, err := ev.UserChanged()
	if err != nil || uc.UserID != u || strings.Join(uc.Columns, ",") != "status" || strings.Join(uc.Tables, ",") != "users" {
		t.Fatalf("user.changed %+v %v", uc, err)
	}
	all.waitEvent("live queue.left", isUser(u, notice.TypeQueueLeft))
	all.waitEvent("live queue.left of the other user", isUser(v, notice.TypeQueueLeft))
	filtered.waitEvent("filtered queue.left", isUser(u, notice.TypeQueueLeft))
	userOnly.waitEvent("user's user.changed", isUser(u, notice.TypeUserChanged))

	// JSON lines are the notices as published: the same ids as the stream's.
	stored := map[string]bool{}
	for _, e := range p.notices() {
		stored[e.ID] = true
	}
	for _, e := range all.events() {
		if !stored[e.ID] {
			t.Fatalf("watch printed a notice the stream does not hold: %s", e.ID)
		}
	}
	// Filters: only what was asked for.
	for _, e := range filtered.events() {
		if e.Type != notice.TypeQueueLeft || e.Subject != fmt.Sprint(u) {
			t.Fatalf("--user %d --type queue.left printed %s for %s", u, e.Type, e.Subject)
		}
	}
	for _, e := range userOnly.events() {
		if e.Subject != fmt.Sprint(u) {
			t.Fatalf("--user %d printed a notice of %q", u, e.Subject)
		}
	}

	// Text mode: one human line per user.changed notice.
	want := fmt.Sprintf("user.changed user %d tables=users operations=update columns=status", u)
	waitFor(t, 20*time.Second, "text line", func() bool {
		for _, l := range text.snapshot() {
			if strings.Contains(strings.Join(strings.Fields(l), " "), want) {
				return true
			}
		}
		return false
	})
	for _, l := range text.snapshot() {
		if strings.HasPrefix(l, "{") || !strings.Contains(l, "user.changed") {
			t.Fatalf("text mode printed %q", l)
		}
	}

	for name, w := range map[string]*watcher{"all": all, "filtered": filtered, "user": userOnly, "text": text} {
		if code := w.interrupt(); code != 0 {
			t.Errorf("watch (%s) exited %d after Ctrl-C; stderr: %s", name, code, w.stderrText())
		}
	}
}

func TestWatchBadArguments(t *testing.T) {
	cfg := t.TempDir() + "/none.toml" // never read: arguments are checked first where possible
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "abc"}, "--since"},
		{[]string{"--since", "-5m"}, "positive duration"},
		{[]string{"--since", "0s"}, "positive duration"},
		{[]string{"--format", "xml"}, "--format"},
		{[]string{"extra"}, "takes no arguments"},
	} {
		out, errOut, code := explainCLI(t, nil, append([]string{"watch", "--config", cfg}, c.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("watch %v: exit %d, stdout %q, stderr %q", c.args, code, out, errOut)
		}
	}
	// Type and user are checked against the configuration's prefix.
	p := newPipe(t, pipeOpt{})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "queue.bogus"}, "unknown notice type"},
		{[]string{"--user", "0"}, "invalid user id"},
		{[]string{"--user", "x1"}, "invalid user id"},
		{[]string{"--user", "5", "--type", "reconcile.completed"}, "not per user"},
	} {
		out, errOut, code := explainCLI(t, nil, append([]string{"watch", "--config", p.cfgPath}, c.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("watch %v: exit %d, stdout %q, stderr %q", c.args, code, out, errOut)
		}
	}
}

// Unit: the subject each filter asks the server for.
func TestWatchFilterSubjects(t *testing.T) {
	for _, c := range []struct{ user, typ, subject string }{
		{"", "", "ds.>"},
		{"7", "", "ds.*.7"},
		{"", "queue.entered", "ds.queue.*"},
		{"7", "dialsync.queue.left", "ds.queue.7"},
		{"7", "user.changed", "ds.user.7"},
		{"", "reconcile.completed", "ds.reconcile"},
		{"7", "deadletter", "ds.deadletter"},
	} {
		f, err := newWatchFilter("ds", c.user, c.typ)
		if err != nil || f.subject != c.subject {
			t.Errorf("user %q type %q: subject %q (%v), want %q", c.user, c.typ, f.subject, err, c.subject)
		}
	}
	// A dead letter matches --user through its user_ids.
	f, _ := newWatchFilter("ds", "7", "deadletter")
	m, err := notice.NewDeadLetter("dialsync/x", "ds", time.Now(), notice.DeadLetter{Table: "claims", UserIDs: []uint64{3, 7},
		Source: notice.SourcePosition{Txn: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	var ev notice.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if !f.match(ev) {
		t.Fatal("dead letter naming user 7 not matched")
	}
	f, _ = newWatchFilter("ds", "8", "deadletter")
	if f.match(ev) {
		t.Fatal("dead letter not naming user 8 matched")
	}
}

package progress

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeClock advances only when told, so output is deterministic.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newBar(w *bytes.Buffer, terminal bool, total int64) (*Bar, *fakeClock) {
	c := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := New(w, "reconcile", "users", total)
	b.Now = c.now
	b.start, b.last = c.t, c.t
	b.Terminal = terminal
	return b, c
}

func TestPlainLinesEveryInterval(t *testing.T) {
	var out bytes.Buffer
	b, c := newBar(&out, false, 1000)
	b.Every = 5 * time.Second
	for i := 1; i <= 10; i++ {
		c.add(time.Second)
		b.Set(int64(i * 100))
	}
	b.Finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// Lines at 5s and 10s, then the final one.
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), out.String())
	}
	if want := "reconcile:  50% 500/1000 users 100/s ETA 5s elapsed 5s"; lines[0] != want {
		t.Fatalf("first line %q, want %q", lines[0], want)
	}
	if strings.ContainsAny(out.String(), "\r\x1b") {
		t.Fatalf("plain output carries terminal control characters: %q", out.String())
	}
	if !strings.Contains(lines[2], "100% 1000/1000") || strings.Contains(lines[2], "ETA") {
		t.Fatalf("final line %q: want 100%% and no ETA", lines[2])
	}
}

func TestQuickPlainRunPrintsNothing(t *testing.T) {
	var out bytes.Buffer
	b, c := newBar(&out, false, 10)
	c.add(time.Second)
	b.Set(10)
	b.Finish()
	if out.Len() != 0 {
		t.Fatalf("a run shorter than the interval printed %q", out.String())
	}
}

func TestTerminalRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	b, c := newBar(&out, true, 200)
	b.Width = 10
	c.add(time.Second)
	b.Set(50)
	c.add(10 * time.Millisecond) // within Redraw: not drawn
	b.Set(60)
	c.add(time.Second)
	b.Done(100)
	b.Finish() // a second end draws nothing
	s := out.String()
	if n := strings.Count(s, "\r"); n != 2 {
		t.Fatalf("%d redraws, want 2 (the throttled one skipped): %q", n, s)
	}
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Fatalf("want exactly one newline, at the end: %q", s)
	}
	if !strings.Contains(s, "\rreconcile [==>       ]  25% 50/200 users 50/s ETA 3s elapsed 1s\x1b[K") {
		t.Fatalf("first frame missing or wrong: %q", s)
	}
	if !strings.Contains(s, "[=====>    ]  50% 100/200 users") {
		t.Fatalf("bar at 50%% wrong: %q", s)
	}
}

func TestUnknownTotal(t *testing.T) {
	b, c := newBar(&bytes.Buffer{}, false, 0)
	c.add(2 * time.Second)
	b.Set(40)
	if got, want := b.Line(c.now()), "reconcile: 40 users 20/s elapsed 2s"; got != want {
		t.Fatalf("line %q, want %q", got, want)
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Fatal("a buffer is not a terminal")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// /dev/null is a character device, but no terminal.
	if runtime.GOOS == "linux" && IsTerminal(f) {
		t.Fatal("/dev/null reported as a terminal")
	}
}

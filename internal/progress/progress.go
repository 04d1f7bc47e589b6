// Package progress shows how far a long command is: on a terminal, one line
// with a bar, the rate and the ETA, redrawn in place with \r; otherwise
// (a log file, a pipe, CI) a plain line every few seconds, so logs do not
// fill with control characters.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Bar reports progress towards a total. Not safe for concurrent use: call
// it from the goroutine doing the work.
type Bar struct {
	// Terminal: redraw one line in place. New sets it from the writer.
	Terminal bool
	// Every is the interval between plain lines (not a terminal); default 5s.
	Every time.Duration
	// Redraw is the minimum interval between terminal redraws; default
	// 100ms (redrawing on every update would cost more than the work).
	Redraw time.Duration
	// Width of the bar in characters; default 30.
	Width int
	// Now is the clock (tests replace it); default time.Now.
	Now func() time.Time

	w     io.Writer
	label string
	unit  string
	total int64
	done  int64
	start time.Time
	last  time.Time // last output
	ended bool
}

// New starts a bar for total units (0: unknown, shown without percentage
// or ETA) labelled label, e.g. New(os.Stderr, "reconcile", "users", 50000).
func New(w io.Writer, label, unit string, total int64) *Bar {
	b := &Bar{Terminal: IsTerminal(w), w: w, label: label, unit: unit, total: total, Now: time.Now}
	b.start = b.Now()
	b.last = b.start
	return b
}

// IsTerminal reports whether w is a terminal (not merely a character
// device: /dev/null is one too).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isTerminal(f)
}

// SetTotal changes the total (when it becomes known or grows).
func (b *Bar) SetTotal(total int64) { b.total = total }

// Set records that done units are complete and shows it when due.
func (b *Bar) Set(done int64) {
	if b.ended {
		return
	}
	b.done = done
	now := b.Now()
	every := b.Every
	if b.Terminal {
		every = b.Redraw
		if every <= 0 {
			every = 100 * time.Millisecond
		}
	} else if every <= 0 {
		every = 5 * time.Second
	}
	if now.Sub(b.last) < every {
		return
	}
	b.last = now
	b.draw(now)
}

// Done records the final count and finishes (one last draw, not two).
func (b *Bar) Done(done int64) {
	if !b.ended {
		b.done = done
	}
	b.Finish()
}

// Finish shows the final state and ends the terminal line. Later calls
// (of Finish or Set) do nothing.
func (b *Bar) Finish() {
	if b.ended {
		return
	}
	b.ended = true
	now := b.Now()
	if b.Terminal {
		b.draw(now)
		fmt.Fprintln(b.w)
		return
	}
	// A plain line only when the run was long enough to print any: a
	// quick run's summary says it all.
	if b.last != b.start {
		b.draw(now)
	}
}

func (b *Bar) draw(now time.Time) {
	line := b.Line(now)
	if b.Terminal {
		// \r returns to the line start; \x1b[K clears what a longer
		// previous line left behind.
		fmt.Fprintf(b.w, "\r%s\x1b[K", line)
		return
	}
	fmt.Fprintln(b.w, line)
}

// Line renders the current state, e.g.
// "reconcile [=========>          ] 45% 22500/50000 users 12345/s ETA 2s".
func (b *Bar) Line(now time.Time) string {
	elapsed := now.Sub(b.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(b.done) / elapsed.Seconds()
	}
	var sb strings.Builder
	sb.WriteString(b.label)
	if b.total > 0 {
		frac := min(max(float64(b.done)/float64(b.total), 0), 1)
		if b.Terminal {
			width := b.Width
			if width <= 0 {
				width = 30
			}
			n := int(frac * float64(width))
			sb.WriteString(" [")
			sb.WriteString(strings.Repeat("=", n))
			if n < width {
				sb.WriteString(">")
				sb.WriteString(strings.Repeat(" ", width-n-1))
			}
			sb.WriteString("]")
		} else {
			sb.WriteString(":")
		}
		fmt.Fprintf(&sb, " %3.0f%% %d/%d %s", frac*100, b.done, b.total, b.unit)
	} else {
		fmt.Fprintf(&sb, ": %d %s", b.done, b.unit)
	}
	fmt.Fprintf(&sb, " %.0f/s", rate)
	if b.total > 0 && rate > 0 && b.done < b.total {
		eta := time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
		fmt.Fprintf(&sb, " ETA %s", roundETA(eta))
	}
	fmt.Fprintf(&sb, " elapsed %s", roundETA(elapsed))
	return sb.String()
}

// roundETA keeps durations readable: 1m5s, 12s, 800ms.
func roundETA(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(10 * time.Millisecond)
	}
}

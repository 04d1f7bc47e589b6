package preflight

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Status is a check's verdict.
type Status string

// Verdicts, from good to bad.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

func (s Status) rank() int {
	switch s {
	case OK:
		return 0
	case Warn:
		return 1
	}
	return 2
}

// Result is one check's outcome.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix is the exact remedy (an SQL statement, a server or RDS parameter,
	// a config key or a dialsync command) when Status is not OK.
	Fix string `json:"fix"`
}

func ok(name, format string, a ...any) Result {
	return Result{Name: name, Status: OK, Detail: fmt.Sprintf(format, a...)}
}

func warn(name, fix, format string, a ...any) Result {
	return Result{Name: name, Status: Warn, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

func fail(name, fix, format string, a ...any) Result {
	return Result{Name: name, Status: Fail, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

// Report is every check's outcome, in the order run.
type Report []Result

// Worst is the worst status in the report (OK when empty).
func (r Report) Worst() Status {
	w := OK
	for _, x := range r {
		if x.Status.rank() > w.rank() {
			w = x.Status
		}
	}
	return w
}

// ExitCode is 0 when every check passed, 1 with warnings, 2 with a failure.
func (r Report) ExitCode() int { return r.Worst().rank() }

// Print writes one line per check and, under each non-OK one, its fix.
func (r Report) Print(w io.Writer) {
	width := 0
	for _, x := range r {
		width = max(width, len(x.Name))
	}
	for _, x := range r {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", x.Status, width, x.Name, x.Detail)
		if x.Status != OK && x.Fix != "" {
			for _, line := range strings.Split(x.Fix, "\n") {
				fmt.Fprintf(w, "      %-*s  fix: %s\n", width, "", line)
			}
		}
	}
}

// timed runs one check with its own timeout, so a server that stops
// answering costs one check, not the whole run.
func timed(ctx context.Context, d time.Duration, f func(context.Context) []Result) []Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

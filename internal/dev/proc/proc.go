// Package proc runs a program as a child process for the harnesses (the
// end-to-end tests, the fault-injection suite, the bench): start it with
// arguments and environment, capture its output in a buffer that is safe
// to read while it runs, send it a signal, kill -9 it, wait for it with a
// timeout and read its exit code.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options say how to start the process.
type Options struct {
	Args []string // after the program name
	// Env is added to the environment: os.Environ() unless Environ is set.
	Env     []string
	Environ []string // the base environment instead of os.Environ()
	Dir     string   // working directory ("" = the caller's)
	// Stdout and Stderr receive the output; where both are nil, both go to
	// the Proc's Logs. An *os.File is handed to the child as its own
	// descriptor (no copying goroutine; what it wrote survives a kill -9).
	Stdout, Stderr io.Writer
	// SysProcAttr is passed on as it is (e.g. Pdeathsig).
	SysProcAttr *syscall.SysProcAttr
}

// setup applies o to a command made by exec.Command(Context).
func (o Options) setup(cmd *exec.Cmd) *exec.Cmd {
	if o.Environ != nil || len(o.Env) > 0 {
		base := o.Environ
		if base == nil {
			base = os.Environ()
		}
		cmd.Env = append(append([]string(nil), base...), o.Env...)
	}
	cmd.Dir = o.Dir
	cmd.SysProcAttr = o.SysProcAttr
	return cmd
}

// Proc is one started process.
type Proc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	logs    *Buffer
}

// Start starts bin. The process is reaped in the background; Done is closed
// when it has exited.
func Start(bin string, o Options) (*Proc, error) {
	cmd := o.setup(exec.Command(bin, o.Args...))
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	if o.Stdout == nil && o.Stderr == nil {
		p.logs = &Buffer{}
		cmd.Stdout, cmd.Stderr = p.logs, p.logs
	} else {
		cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.started = time.Now()
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Started is when the process was started.
func (p *Proc) Started() time.Time { return p.started }

// Logs is the output buffer (nil when Options named writers).
func (p *Proc) Logs() *Buffer { return p.logs }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit code of an ended process: -1 while it runs, or when
// a signal ended it.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig without waiting.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to within for the process to end by itself and returns its
// exit code; ok is false when it is still running.
func (p *Proc) Wait(within time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.ExitCode(), true
	case <-time.After(within):
		return -1, false
	}
}

// Stop sends sig and waits up to within; a process still running then is
// killed (SIGKILL) and waited for, and killed says so. It returns the exit
// code (-1 when a signal ended it).
func (p *Proc) Stop(sig os.Signal, within time.Duration) (code int, killed bool) {
	_ = p.cmd.Process.Signal(sig)
	if code, ok := p.Wait(within); ok {
		return code, false
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return p.ExitCode(), true
}

// Kill is kill -9 (it also ends a stopped process) and waits; a no-op on
// a process that has ended.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Result is a process run to its end.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// ErrTimeout is returned by Run when the process was still running at the
// deadline (it is killed).
var ErrTimeout = errors.New("proc: did not exit in time")

// Run runs bin to its end, at most within (0: no limit), and returns its
// exit code and output (Options.Stdout/Stderr are ignored). An exit code
// other than 0 is not an error; failing to start, or ErrTimeout, is.
func Run(bin string, within time.Duration, o Options) (Result, error) {
	ctx := context.Background()
	if within > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, within)
		defer cancel()
	}
	cmd := o.setup(exec.CommandContext(ctx, bin, o.Args...))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if cmd.ProcessState != nil {
		res.Code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%w: %s within %s", ErrTimeout, bin, within)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return res, err
	}
	return res, nil
}

// Buffer collects output; it is safe to write and read at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tail is the last n lines written so far.
func (b *Buffer) Tail(n int) string {
	lines := strings.Split(b.String(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Lines collects output as complete lines (without the newline), for a
// program that prints one record a line; safe to write and read at once.
// A last line without a newline is not kept.
type Lines struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
}

// Write appends p, splitting it into lines.
func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(bytes.TrimSuffix(l.partial[:i], []byte("\r"))))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// Lines is a copy of the complete lines written so far.
func (l *Lines) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

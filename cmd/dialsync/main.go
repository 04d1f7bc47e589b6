// Command dialsync tails a MySQL/MariaDB binlog and keeps a dialler's call
// queue (PostgreSQL), cache (Redis) and fleet (NATS JetStream) in step.
//
// main is a router: each subcommand lives in its own file with its flags,
// usage and run function.
//
// Why a hand-written router rather than a CLI library (spf13/cobra,
// urfave/cli, kong): the standard flag package already gives each command
// its flags, -h and typed errors; what a library would add is help layout
// and completion scripts, which here are about 300 lines (usage, subUsage
// and completion.go, generated from the same flag sets the commands parse,
// so they cannot drift). Against that, cobra's pflag changes the flag
// syntax the docs, scripts and tests use (-json and -config as single-dash
// long flags stop working), every command file would be rewritten, and the
// binary would take two more dependencies. Revisit if commands grow nested
// groups or need flag inheritance.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"dialsync/internal/config"
)

// Exit codes. They are part of the interface (documented in the README).
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure: a server, the binlog, a fenced checkpoint
	exitUsage   = 2 // bad command line or configuration
)

// usageError marks errors caused by the command line or the configuration
// (the packages below cmd make them with config.Usagef).
type usageError = config.UsageError

func usagef(format string, a ...any) error { return config.Usagef(format, a...) }

type command struct {
	order         int // position in the help list
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is filled by register calls in each command's file (init), so
// adding a command touches only its own file.
var commands []command

func register(c command) {
	commands = append(commands, c)
	slices.SortFunc(commands, func(a, b command) int { return a.order - b.order })
}

func init() {
	register(command{10, "run", "stream binlog changes into the queue, cache and notices", runRun})
	register(command{100, "version", "print the version, commit, build date, Go and library versions (--json)", runVersion})
}

// defaultMemoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT
// says otherwise: the garbage collector works harder near it instead of
// letting the heap double, which keeps a busy pipeline's RSS bounded (under
// 64 MB: docs/design.md, invariant 7) without any effect on a quiet one.
const defaultMemoryLimit = 48 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs a command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-v" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		ctx, stop := stopOnSignal(c.name, stderr)
		err := c.run(ctx, args[1:], stdout, stderr)
		stop()
		if sig := signalOf(ctx); sig != "" {
			if !signalEnds[c.name] {
				return interruptedExit(sig, err, stderr)
			}
			if errors.Is(err, context.Canceled) {
				return exitOK // stopped while it connected: its normal end
			}
		}
		return exitCode(err, stderr)
	}
	fmt.Fprintf(stderr, "dialsync: unknown command %q; run 'dialsync help' for the list\n", args[0])
	return exitUsage
}

// Signals (README, "Commands and exit codes"; docs/troubleshooting.md).
// The first SIGINT or SIGTERM cancels the command's context with an
// interruptedBy cause: every connect, handshake, query and retry is tied to
// it, so the command ends within seconds (docs/design.md, "Deadlines and
// signals"). run and watch then stop as usual (exit 0: run stores the
// checkpoint of what it applied; replay covers the rest); any other
// command was cut short and exits exitInterrupted with one line. A second
// signal exits exitInterrupted at once (replay from the stored checkpoint
// makes that safe too).
//
// SIGHUP (a closed terminal) stops the one-shot commands and watch like
// SIGTERM; run logs and ignores it (ignoreHangups: there is nothing to
// reload). Started with SIGHUP ignored (nohup), it stays ignored.
const exitInterrupted = 130

// signalEnds are the commands for which a stop signal is their normal end.
var signalEnds = map[string]bool{"run": true, "watch": true}

// interruptedBy is the cause of a context cancelled by a signal. It is
// context.Canceled to errors.Is, so code that treats cancellation as a
// stop keeps doing so.
type interruptedBy string

func (s interruptedBy) Error() string        { return "interrupted by " + string(s) }
func (s interruptedBy) Is(target error) bool { return target == context.Canceled }

func signalName(sig os.Signal) string {
	switch sig {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return sig.String()
}

// stopOnSignal returns the context of command name, cancelled by the
// first stop signal; a second one exits the process. stop releases the
// signals.
func stopOnSignal(name string, stderr io.Writer) (ctx context.Context, stop func()) {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if name != "run" && !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			cancel(interruptedBy(signalName(sig)))
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			fmt.Fprintf(stderr, "dialsync: second signal (%s), exiting now (the checkpoint makes this safe)\n", signalName(sig))
			os.Exit(exitInterrupted)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// signalOf names the signal that cancelled ctx; "" when none did.
func signalOf(ctx context.Context) string {
	var sig interruptedBy
	if errors.As(context.Cause(ctx), &sig) {
		return string(sig)
	}
	return ""
}

// interruptedExit reports a one-shot command cut short by a signal: one
// line naming what it was doing (err, which names the server it was
// waiting for), exit 130, whatever the command returned (its output may
// be incomplete).
func interruptedExit(sig string, err error, stderr io.Writer) int {
	msg := "the command did not finish; run it again"
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		msg = oneLine(err.Error())
	}
	if !strings.Contains(msg, "interrupted by "+sig) {
		msg = "interrupted by " + sig + ": " + msg
	}
	fmt.Fprintf(stderr, "dialsync: %s\n", msg)
	return exitInterrupted
}

// oneLine is s on one line, always: wrapped driver errors may carry
// newlines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	// One line, always: wrapped driver errors may carry newlines.
	fmt.Fprintf(stderr, "dialsync: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

// exitCoder lets a command choose its exit code after printing its own
// output (check's 0/1/2).
type exitCoder interface{ ExitCode() int }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dialsync <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, `
run 'dialsync <command> -h' for a command's flags and exit codes;
'dialsync --version' (or -v) is 'dialsync version'.

Exit codes: 0 success; 1 a runtime failure, or a server that could not be
read (what could be read is still printed); 2 a bad command line or
configuration. check: 0 all OK, 1 warnings, 2 failures.`)
}

// subcommand splits "<command> <sub> [flags]" arguments (choices names
// the subcommands for the error) and makes the flag
// set of sub, with --config. ok is false when there is nothing to run: the
// usage was printed for a help request (err nil) or a missing subcommand
// (err set).
func subcommand(name, choices, usage string, args []string, stderr io.Writer) (sub string, rest []string, fs *flag.FlagSet, cfgPath *string, ok bool, err error) {
	if capturing {
		capturedSubs = splitChoices(choices)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, usage)
		if len(args) == 0 {
			return "", nil, nil, nil, false, usagef("%s: a subcommand is required (%s)", name, choices)
		}
		return "", nil, nil, nil, false, nil
	}
	sub, rest = args[0], args[1:]
	fs = newFlags(name+" "+sub, stderr)
	fs.Usage = func() { subUsage(stderr, name, sub, usage, fs) }
	cfgPath = fs.String("config", "config.toml", "configuration file")
	return sub, rest, fs, cfgPath, true, nil
}

// subUsage prints one subcommand's usage (on -h and after a flag error):
// its synopsis and description from the group's usage text (the lines under
// "subcommands:" that start with "  <sub> ", and their continuation lines),
// its flags, and the group's exit status paragraph.
func subUsage(w io.Writer, name, sub, groupUsage string, fs *flag.FlagSet) {
	var synopsis string
	var desc []string
	lines := strings.Split(groupUsage, "\n")
	for i, l := range lines {
		rest, found := strings.CutPrefix(l, "  "+sub+" ")
		if !found {
			continue
		}
		parts := wideGap.Split(strings.TrimSpace(rest), 2)
		synopsis = parts[0]
		if len(parts) > 1 {
			desc = append(desc, parts[1])
		}
		for _, c := range lines[i+1:] {
			if !strings.HasPrefix(c, "   ") || strings.TrimSpace(c) == "" {
				break
			}
			desc = append(desc, strings.TrimSpace(c))
		}
		break
	}
	fmt.Fprintf(w, "usage: dialsync %s %s [--config PATH] %s\n", name, sub, synopsis)
	if len(desc) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(desc, " "))
	}
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
	if i := strings.Index(groupUsage, "Exit status"); i >= 0 {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(groupUsage[i:]))
	}
	fmt.Fprintf(w, "\n'dialsync %s -h' lists the other subcommands\n", name)
}

// wideGap separates a synopsis from its description in a usage line.
var wideGap = regexp.MustCompile(`\s{2,}`)

// parseNoArgs parses flags for a command that takes no positional
// arguments: an unexpected one is a usage error naming it (it would
// otherwise be ignored silently, along with any flag after it).
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		name := strings.TrimPrefix(fs.Name(), "dialsync ")
		return usagef("%s: unexpected argument %q: %s takes no arguments (see 'dialsync %s -h')", name, fs.Arg(0), name, name)
	}
	return nil
}

// newFlags makes a flag set that reports errors as usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dialsync "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	capture(fs) // completion reads the flags
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{Err: err}
	}
	return nil
}

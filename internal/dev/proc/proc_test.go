package proc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartCapturesAndExits(t *testing.T) {
	p, err := Start("/bin/sh", Options{Args: []string{"-c", "echo out; echo err >&2; echo $PROC_X; exit 3"}, Env: []string{"PROC_X=set"}})
	if err != nil {
		t.Fatal(err)
	}
	code, ok := p.Wait(10 * time.Second)
	if !ok || code != 3 || !p.Exited() || p.ExitCode() != 3 {
		t.Fatalf("wait: code %d ok %v", code, ok)
	}
	for _, w := range []string{"out", "err", "set"} {
		if !strings.Contains(p.Logs().String(), w) {
			t.Errorf("logs %q lack %q", p.Logs().String(), w)
		}
	}
	if tail := p.Logs().Tail(2); tail != "set\n" {
		t.Errorf("tail %q", tail)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	// The shell ignores SIGTERM: Stop must fall back to SIGKILL.
	p, err := Start("/bin/sh", Options{Args: []string{"-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"}})
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(p.Logs().String(), "ready") {
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := p.Wait(50 * time.Millisecond); ok {
		t.Fatal("exited by itself")
	}
	code, killed := p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	if !killed || code != -1 || !p.Exited() {
		t.Fatalf("stop: code %d killed %v", code, killed)
	}
	p.Kill() // no-op once ended
}

func TestStopAndKill(t *testing.T) {
	p, err := Start("/bin/sleep", Options{Args: []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	if code, killed := p.Stop(syscall.SIGTERM, 10*time.Second); killed || code != -1 {
		t.Fatalf("stop: code %d killed %v", code, killed)
	}
	q, err := Start("/bin/sleep", Options{Args: []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = q.Signal(syscall.SIGSTOP)
	q.Kill() // ends a stopped process too
	if !q.Exited() {
		t.Fatal("kill did not end the process")
	}
}

func TestFileOutput(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := Start("/bin/sh", Options{Args: []string{"-c", "echo to-file"}, Stdout: f, Stderr: f})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Logs() != nil {
		t.Error("logs kept although writers were given")
	}
	b, _ := os.ReadFile(f.Name())
	if string(b) != "to-file\n" {
		t.Errorf("file has %q", b)
	}
}

func TestRun(t *testing.T) {
	res, err := Run("/bin/sh", 10*time.Second, Options{Args: []string{"-c", "echo o; echo e >&2; exit 2"}, Environ: []string{}})
	if err != nil || res.Code != 2 || res.Stdout != "o\n" || res.Stderr != "e\n" {
		t.Fatalf("run: %+v %v", res, err)
	}
	if _, err := Run("/bin/sleep", 100*time.Millisecond, Options{Args: []string{"30"}}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("timeout: %v", err)
	}
	if _, err := Run("/no/such/binary", 0, Options{}); err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("missing binary: %v", err)
	}
}

func TestLines(t *testing.T) {
	var l Lines
	for _, s := range []string{"a\nb", "c\r\n", "\n", "d"} {
		if _, err := l.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(l.Lines(), "|"); got != "a|bc|" {
		t.Fatalf("lines %q", got)
	}
}

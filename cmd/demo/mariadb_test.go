package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The demo stops the MariaDB it started, reuses (and never stops) one that
// was already running, and the stop used by 'make clean' stops only the
// server of its state directory.
func TestDemoMariaDBLifecycle(t *testing.T) {
	if err := os.Chdir("../.."); err != nil { // the scripts run from the repository root
		t.Fatal(err)
	}
	port := freePort(t)
	stateA, stateB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a := &demoMariaDB{port: port, state: stateA}
	t.Cleanup(func() { a.started = true; _ = a.stop(false) })
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	if !a.started || !a.answers() {
		t.Fatalf("first start: started %v, answers %v", a.started, a.answers())
	}

	// A second demo (another state directory) finds the port taken: it
	// reuses the server and leaves it running.
	b := &demoMariaDB{port: port, state: stateB}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	if b.started {
		t.Fatal("a server already answering was reported as started by this demo")
	}
	if err := b.stop(false); err != nil {
		t.Fatal(err)
	}
	// make clean's stop for stateB: not its server, left alone.
	b.started = true
	if err := b.stop(false); err != nil {
		t.Fatal(err)
	}
	if !a.answers() {
		t.Fatal("stopping another state directory's server stopped this one")
	}

	// -keep leaves it running; the stop then ends it.
	if err := a.stop(true); err != nil {
		t.Fatal(err)
	}
	if !a.answers() {
		t.Fatal("-keep stopped the server")
	}
	if err := a.stop(false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.answers() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if a.answers() {
		t.Fatal("the demo MariaDB still answers after stop")
	}
}

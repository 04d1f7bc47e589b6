// Package natstest starts private nats-server processes (with JetStream) for
// integration tests, so a test can stop, kill and restart its own server
// without touching the machine's shared one.
package natstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Binary is the nats-server used (Debian's 2.9.10 on this machine).
var Binary = "/usr/sbin/nats-server"

// Server is a private nats-server on 127.0.0.1 with JetStream storing in a
// test temp dir. The port and store survive Restart.
type Server struct {
	t    testing.TB
	Port int
	URL  string
	Dir  string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *syncBuffer
}

// syncBuffer collects the server's output; exec writes it from its own
// goroutine while Log may read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Start runs a new private server and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("nats-server not available: %v", err)
	}
	s := &Server{t: t, Port: freePort(t), Dir: t.TempDir()}
	s.URL = "nats://127.0.0.1:" + strconv.Itoa(s.Port)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("natstest: server already running")
	}
	out := &syncBuffer{}
	cmd := exec.Command(Binary, "-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-js", "-sd", s.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("natstest: start %s: %v", Binary, err)
	}
	s.cmd, s.out = cmd, out
	if err := waitReady(s.URL, 10*time.Second); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		s.cmd = nil
		s.t.Fatalf("natstest: server on %s not ready: %v\n%s", s.URL, err, out.String())
	}
}

// waitReady polls until the server accepts a connection and JetStream
// answers (JetStream comes up after the client port opens).
func waitReady(url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			js, jerr := jetstream.New(nc)
			if jerr == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, jerr = js.AccountInfo(ctx)
				cancel()
			}
			nc.Close()
			if jerr == nil {
				return nil
			}
			err = jerr
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func (s *Server) halt(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Stop shuts the server down cleanly (SIGTERM); a no-op when not running.
func (s *Server) Stop() { s.halt(syscall.SIGTERM) }

// Kill kills the server abruptly (SIGKILL).
func (s *Server) Kill() { s.halt(syscall.SIGKILL) }

// Restart starts a stopped or killed server again on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}

// Log returns the server's output so far, for failure messages.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Connect opens a client connection that reconnects forever (tests restart
// servers) and is closed in t.Cleanup.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// String names the server in messages.
func (s *Server) String() string { return fmt.Sprintf("nats-server %s (%s)", s.URL, s.Dir) }

package myconn

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
)

// The machine's MariaDB (docs: PREAMBLE of the repository's test setup):
// the tests below need a server that completes the handshake.
const machineMariaDB = "127.0.0.1:3306"

// blackHole accepts TCP connections and never writes a byte: the MySQL
// client waits for a greeting that never comes.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestConnectCancelStopsHandshake(t *testing.T) {
	addr := blackHole(t)
	stop := errors.New("interrupted by SIGTERM")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(200*time.Millisecond, func() { cancel(stop) })
	start := time.Now()
	_, err := Connect(ctx, addr, "root", "", "")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Connect returned %s after the cancel, want at once", took)
	}
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the context's cause", err)
	}
}

func TestConnectDeadlineStopsHandshake(t *testing.T) {
	addr := blackHole(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Connect(ctx, addr, "root", "", "")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Connect returned after %s, want at the 300ms deadline", took)
	}
	if !errors.Is(err, ErrNoHandshake) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoHandshake and DeadlineExceeded", err)
	}
	t.Log(err)
}

func TestConnectedConnOutlivesItsConnect(t *testing.T) {
	conn, err := Connect(context.Background(), machineMariaDB, "root", "", "")
	if err != nil {
		t.Fatalf("machine MariaDB: %v", err)
	}
	defer conn.Close()
	time.Sleep(100 * time.Millisecond) // the connect's own context is gone
	if _, err := conn.Execute("SELECT 1"); err != nil {
		t.Fatalf("query after the connect returned: %v", err)
	}
}

func TestDialerLifeClosesHandshake(t *testing.T) {
	addr := blackHole(t)
	life, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	// As go-mysql's canal and binlog syncer connect: their own context,
	// with no cancel of ours.
	_, err := client.ConnectWithDialer(context.Background(), "", addr, "root", "", "", Dialer(life))
	if took := time.Since(start); took > 2*time.Second || err == nil {
		t.Fatalf("connect returned after %s with %v, want an error at the cancel", took, err)
	}
}

func TestDialerDeadlineClosesHandshake(t *testing.T) {
	addr := blackHole(t)
	dctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.ConnectWithDialer(dctx, "", addr, "root", "", "", Dialer(context.Background()))
	if took := time.Since(start); took > 2*time.Second || err == nil {
		t.Fatalf("connect returned after %s with %v, want an error at the 300ms deadline", took, err)
	}
}

func TestDialerConnLivesUntilLifeEnds(t *testing.T) {
	life, cancelLife := context.WithCancel(context.Background())
	defer cancelLife()
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := client.ConnectWithDialer(dctx, "", machineMariaDB, "root", "", "", Dialer(life))
	cancel() // go-mysql cancels its connect context when the connect returns
	if err != nil {
		t.Fatalf("machine MariaDB: %v", err)
	}
	defer conn.Close()
	time.Sleep(100 * time.Millisecond)
	if _, err := conn.Execute("SELECT 1"); err != nil {
		t.Fatalf("query after the connect's context ended: %v", err)
	}
	// A query blocked on the server ends when life does.
	time.AfterFunc(200*time.Millisecond, cancelLife)
	start := time.Now()
	if _, err := conn.Execute("SELECT SLEEP(30)"); err == nil {
		t.Fatal("SELECT SLEEP(30) succeeded after life ended")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("blocked query returned %s after life ended", took)
	}
}

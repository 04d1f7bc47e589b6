package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// demoMariaDB is the demo's private MariaDB, run by scripts/demo-mariadb.sh
// with its data under state (.state by default).
type demoMariaDB struct {
	port  int
	state string
	// started: this demo started the server (nothing answered on the port
	// before), so it stops it on exit unless asked to keep it.
	started bool
}

// answers reports whether something accepts connections on the port.
func (m *demoMariaDB) answers() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (m *demoMariaDB) script(arg string) error {
	c := exec.Command("bash", "scripts/demo-mariadb.sh", arg)
	c.Env = append(os.Environ(), "DEMO_MYSQL_PORT="+strconv.Itoa(m.port), "DEMO_STATE="+m.state)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("scripts/demo-mariadb.sh %s: %w", arg, err)
	}
	return nil
}

// start starts the server, or reuses what already answers on the port (the
// script says whose it is).
func (m *demoMariaDB) start() error {
	m.started = !m.answers()
	return m.script("start")
}

// stop stops the server of the state directory (never another one). keep
// leaves a server this demo started running.
func (m *demoMariaDB) stop(keep bool) error {
	addr := fmt.Sprintf("127.0.0.1:%d", m.port)
	switch {
	case !m.started:
		fmt.Printf("   the MariaDB on %s was running before the demo: left running\n", addr)
		return nil
	case keep:
		fmt.Printf("   the demo MariaDB on %s keeps running (-keep); 'make clean' stops it\n", addr)
		return nil
	}
	return m.script("stop")
}

package chaos

import "syscall"

// childAttr kills a child process when the test binary dies (a panic or a
// timeout skips cleanups), so no server outlives the run.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

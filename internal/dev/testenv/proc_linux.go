package testenv

import "syscall"

// sysProcAttr makes the kernel kill a server when the test binary dies
// (a killed or timed-out `go test`), so no orphan mariadbd keeps running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

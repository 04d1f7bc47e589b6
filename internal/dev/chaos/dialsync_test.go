package chaos

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"dialsync/internal/dev/proc"
)

// dialsync runs `dialsync run` as a child process under a small supervisor:
// when the process exits by itself (it does so when a dependency is down at
// start-up, or when it loses its lease), it is started again after a short
// pause, as systemd's Restart=always or a Kubernetes restart would. Such
// exits are counted and reported; they are not failures in themselves.
type dialsync struct {
	bin, cfg, logPath string
	logf              *os.File

	mu        sync.Mutex
	p         *proc.Proc // the running process, nil when none
	wantUp    bool
	runs      int
	selfExits []string // "exit code N after Ts"
	startErrs int
}

func newDialsync(bin, cfg, logPath string) (*dialsync, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open dialsync log: %w", err)
	}
	return &dialsync{bin: bin, cfg: cfg, logPath: logPath, logf: f}, nil
}

// start launches the process and keeps it up until kill or stop.
func (d *dialsync) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wantUp = true
	if d.p == nil {
		d.launchLocked()
	}
}

func (d *dialsync) launchLocked() {
	fmt.Fprintf(d.logf, "{\"chaos\":\"start run %d\",\"time\":%q}\n", d.runs+1, time.Now().Format(time.RFC3339Nano))
	// An *os.File is handed to the child as its fd: no copying goroutine,
	// and the output survives a kill -9.
	p, err := proc.Start(d.bin, proc.Options{Args: []string{"run", "--config", d.cfg}, Stdout: d.logf, Stderr: d.logf, SysProcAttr: childAttr()})
	if err != nil {
		d.startErrs++
		time.AfterFunc(300*time.Millisecond, d.relaunch)
		return
	}
	d.runs++
	d.p = p
	offset, _ := d.logf.Seek(0, io.SeekCurrent)
	go func() {
		<-p.Done()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.p != p {
			return // killed or stopped on purpose
		}
		d.p = nil
		d.selfExits = append(d.selfExits, fmt.Sprintf("exit code %d (%s) after %s", p.ExitCode(),
			d.lastError(offset), time.Since(p.Started()).Round(time.Millisecond)))
		if d.wantUp {
			time.AfterFunc(300*time.Millisecond, d.relaunch)
		}
	}()
}

func (d *dialsync) relaunch() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wantUp && d.p == nil {
		d.launchLocked()
	}
}

// signal sends sig to the running process (if any), waits for it to exit
// and leaves it down; it returns the exit code (-1 when none was running).
func (d *dialsync) signal(sig syscall.Signal) int {
	d.mu.Lock()
	d.wantUp = false
	p := d.p
	d.p = nil
	d.mu.Unlock()
	if p == nil {
		return -1
	}
	code, _ := p.Stop(sig, 60*time.Second) // SIGKILL after 60s
	return code
}

// kill is kill -9: a crash at a random moment.
func (d *dialsync) kill() { d.signal(syscall.SIGKILL) }

// stop is a clean shutdown (SIGTERM); it returns the exit code.
func (d *dialsync) stop() int { return d.signal(syscall.SIGTERM) }

func (d *dialsync) stats() (runs int, selfExits []string, startErrs int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runs, append([]string(nil), d.selfExits...), d.startErrs
}

// lastError is the command's final error line ("dialsync: ...") written
// since offset, shortened, with port numbers masked so equal causes group.
func (d *dialsync) lastError(offset int64) string {
	b, err := os.ReadFile(d.logPath)
	if err != nil || int64(len(b)) < offset {
		return "?"
	}
	msg := "no error line"
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		if strings.HasPrefix(line, "dialsync: ") {
			msg = strings.TrimPrefix(line, "dialsync: ")
		}
	}
	msg = portRE.ReplaceAllString(msg, ":PORT")
	if len(msg) > 110 {
		msg = msg[:110] + "..."
	}
	return msg
}

var portRE = regexp.MustCompile(`:\d{2,5}\b`)

func (d *dialsync) close() { _ = d.logf.Close() }

// logTail is the end of the combined log of every run.
func (d *dialsync) logTail(lines int) string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(string(b), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

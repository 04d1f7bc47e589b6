package benchkit

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports (the kernel fixes it for the
// user ABI regardless of CONFIG_HZ; see proc(5)).
const clockTick = 100

// ProcStat is one reading of a process's memory and CPU.
type ProcStat struct {
	RSS int64         // VmRSS, bytes
	HWM int64         // VmHWM (peak RSS since start or the last ResetPeak), bytes
	CPU time.Duration // utime + stime
}

// ReadProc reads /proc/<pid>/status and /proc/<pid>/stat.
func ReadProc(pid int) (ProcStat, error) {
	var st ProcStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("read proc status: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			st.RSS = parseKB(v)
		case "VmHWM":
			st.HWM = parseKB(v)
		}
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("read proc stat: %w", err)
	}
	st.CPU, err = parseStatCPU(string(b))
	return st, err
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. Field 2, the command, is in parentheses and may hold
// spaces, so counting starts after the last ')'.
func parseStatCPU(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse proc stat: no command field")
	}
	f := strings.Fields(line[i+1:])
	// f[0] is field 3 (state); utime is field 14 -> f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse proc stat: %d fields", len(f)+2)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse proc stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clockTick, nil
}

func parseKB(v string) int64 {
	f := strings.Fields(v) // "  12345 kB"
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n << 10
}

// ResetPeak resets the process's VmHWM to its current RSS (writing 5 to
// clear_refs, Linux >= 4.0; see proc(5)), so a peak can be read per
// scenario of a long-running process. It needs to own the process (or
// root).
func ResetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss: %w", err)
	}
	return nil
}

// Resources is what a process used during one scenario run.
type Resources struct {
	PeakRSS   int64         `json:"peak_rss_bytes"`   // VmHWM at the end
	SteadyRSS int64         `json:"steady_rss_bytes"` // median of the VmRSS samples
	CPU       time.Duration `json:"cpu_ns"`           // utime+stime used during the run
	Samples   int           `json:"samples"`
}

// Sampler samples a process's RSS at a fixed interval between Start and
// Stop.
type Sampler struct {
	pid   int
	start ProcStat
	stop  chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	rss  []int64
	last ProcStat
}

// StartSampler resets the process's peak, takes a first reading and
// samples every interval until Stop.
func StartSampler(pid int, every time.Duration) (*Sampler, error) {
	if err := ResetPeak(pid); err != nil {
		return nil, err
	}
	st, err := ReadProc(pid)
	if err != nil {
		return nil, err
	}
	s := &Sampler{pid: pid, start: st, last: st, stop: make(chan struct{}), done: make(chan struct{}), rss: []int64{st.RSS}}
	go s.loop(every)
	return s, nil
}

func (s *Sampler) loop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		st, err := ReadProc(s.pid)
		if err != nil {
			return // the process ended: keep what was sampled
		}
		s.mu.Lock()
		s.rss = append(s.rss, st.RSS)
		s.last = st
		s.mu.Unlock()
	}
}

// Stop ends sampling and returns the run's resources. If the process is
// still alive, a final reading is taken; otherwise the last sample counts.
func (s *Sampler) Stop() Resources {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, err := ReadProc(s.pid); err == nil {
		s.rss = append(s.rss, st.RSS)
		s.last = st
	}
	r := slices.Clone(s.rss)
	slices.Sort(r)
	return Resources{
		PeakRSS:   max(s.last.HWM, r[len(r)-1]),
		SteadyRSS: r[len(r)/2],
		CPU:       s.last.CPU - s.start.CPU,
		Samples:   len(r),
	}
}

package benchkit

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes the box a report was measured on.
type Machine struct {
	NProc    int    `json:"nproc"`
	MemBytes int64  `json:"mem_bytes"`
	Kernel   string `json:"kernel"`
	CPUModel string `json:"cpu_model"`
	// LoadStart and LoadEnd are /proc/loadavg's 1/5/15-minute load
	// averages when the run started and ended: other work on the box
	// competes with every figure.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// LoadAvg returns the 1, 5 and 15 minute load averages ("" if unreadable).
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Busy reports whether a load average string's 1-minute figure exceeds
// half the CPUs: other work was competing for them.
func (m Machine) Busy(load string) bool {
	f := strings.Fields(load)
	if len(f) == 0 {
		return false
	}
	l, err := strconv.ParseFloat(f[0], 64)
	return err == nil && l > float64(m.NProc)/2
}

// ReadMachine reads the machine's facts from /proc (best effort: a field it
// cannot read stays empty).
func ReadMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), LoadStart: LoadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.MemBytes = procField("/proc/meminfo", "MemTotal", func(v string) int64 { return parseKB(v) })
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func procField(path, key string, parse func(string) int64) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
			return parse(v)
		}
	}
	return 0
}

// GTIDCovers reports whether the MariaDB GTID position have includes every
// domain of want at a sequence number at least as high ("0-1-42,1-2-7").
// An empty want is covered by anything.
func GTIDCovers(have, want string) bool {
	if strings.TrimSpace(want) == "" {
		return true
	}
	h := map[string]uint64{}
	for _, g := range strings.Split(have, ",") {
		dom, seq, ok := splitGTID(g)
		if ok {
			h[dom] = max(h[dom], seq)
		}
	}
	for _, g := range strings.Split(want, ",") {
		dom, seq, ok := splitGTID(g)
		if !ok || h[dom] < seq {
			return false
		}
	}
	return true
}

func splitGTID(g string) (domain string, seq uint64, ok bool) {
	parts := strings.Split(strings.TrimSpace(g), "-")
	if len(parts) != 3 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(parts[2], 10, 64)
	return parts[0], seq, err == nil
}

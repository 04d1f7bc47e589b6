package preflight

import "testing"

func TestCheckHTTPListen(t *testing.T) {
	cases := []struct {
		listen string
		pprof  bool
		want   Status
	}{
		{"", true, OK},
		{"127.0.0.1:9120", false, OK},
		{"127.0.0.1:9120", true, OK},
		{"localhost:9120", true, OK},
		{"[::1]:9120", true, OK},
		{"0.0.0.0:9120", false, Warn},
		{":9120", false, Warn},
		{"10.0.0.5:9120", false, Warn},
		{"[::]:9120", false, Warn},
		{"metrics.internal:9120", false, Warn},
		{"0.0.0.0:9120", true, Fail},
		{":9120", true, Fail},
	}
	for _, c := range cases {
		r := CheckHTTPListen(c.listen, c.pprof)
		if r.Status != c.want {
			t.Errorf("CheckHTTPListen(%q, pprof=%v) = %s (%s), want %s", c.listen, c.pprof, r.Status, r.Detail, c.want)
		}
		if r.Status != OK && r.Fix == "" {
			t.Errorf("CheckHTTPListen(%q): %s without a fix", c.listen, r.Status)
		}
	}
}

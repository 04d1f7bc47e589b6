package preflight

import (
	"net"
	"net/netip"
	"strings"
)

// CheckHTTPListen looks at where the http server (http.listen) listens:
// /metrics, /healthz and /readyz are read-only but tell anyone who can
// reach them about the pipeline (positions, lag, servers); http.pprof adds
// heap and goroutine dumps and CPU profiles, which must never be reachable
// from the network. A loopback address is OK; another address is a
// warning (expected in a container whose probes and scraper come from
// outside, see deploy/kubernetes: keep it behind a network policy); pprof
// on another address fails.
func CheckHTTPListen(listen string, pprof bool) Result {
	const name = "http.listen"
	if listen == "" {
		return ok(name, "disabled (no /metrics, /healthz, /readyz)")
	}
	if LoopbackListen(listen) {
		if pprof {
			return ok(name, "%s: loopback only (with http.pprof)", listen)
		}
		return ok(name, "%s: loopback only", listen)
	}
	if pprof {
		return fail(name, "set http.pprof = false, or http.listen = \"127.0.0.1:9120\" and reach it through a tunnel",
			"%s is not a loopback address and http.pprof = true: anyone who can reach it can read heap and goroutine dumps and run CPU profiles", listen)
	}
	return warn(name, "set http.listen = \"127.0.0.1:9120\" unless a scraper or probe must reach it from outside; then keep the port on a private network (a network policy, a firewall)",
		"%s is not a loopback address: /metrics, /healthz and /readyz are reachable from the network (read-only)", listen)
}

// LoopbackListen reports whether a listen address (host:port) accepts only
// local connections: a loopback IP or "localhost". An empty host (":9120")
// or 0.0.0.0 means every interface; another name may resolve anywhere.
func LoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

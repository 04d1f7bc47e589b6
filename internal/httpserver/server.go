// Package httpserver serves dialsync's read-only operations endpoints:
// /metrics (Prometheus), /healthz (liveness) and /readyz (readiness).
//
// Nothing here changes state: only GET and HEAD are routed, every other
// method gets 405, so exposing the port (as Kubernetes probes require) gives
// nobody a lever on the pipeline.
package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"syscall"
	"time"

	"dialsync/internal/metrics"
)

// DefaultListen is the address the config defaults to: loopback only, so a
// host install exposes nothing unless the operator asks for it.
const DefaultListen = "127.0.0.1:9120"

// ReadyTimeout bounds one call of the ready function, so a hung dependency
// check answers 503 before a probe's own timeout rather than piling up.
const ReadyTimeout = 3 * time.Second

// ReadyFunc reports whether the process is ready and a JSON-encodable body
// explaining each check (for example a map of check name to status).
type ReadyFunc func(ctx context.Context) (ok bool, body any)

// Server is the operations HTTP server. Build it with New, then Start and
// Close it.
type Server struct {
	listen string
	srv    *http.Server

	mu       sync.Mutex
	ln       net.Listener
	serveWG  sync.WaitGroup
	serveErr error
}

// ReadyBody is the JSON document /readyz answers with.
type ReadyBody struct {
	// Status is "ready" or "not ready", matching the 200/503 status code.
	Status string `json:"status"`
	// Checks is the body the ready function returned; omitted when nil.
	Checks any `json:"checks,omitempty"`
}

// New builds a server for listen ("host:port"; port 0 picks a free one).
// ready may be nil, meaning always ready. pprofOn adds /debug/pprof/.
func New(listen string, m *metrics.Metrics, ready func(ctx context.Context) (ok bool, body any), pprofOn bool) *Server {
	mux := http.NewServeMux()
	// Method patterns (Go 1.22+): "GET" also matches HEAD, and a request to a
	// known path with another method gets 405 with an Allow header.
	// https://pkg.go.dev/net/http#hdr-Patterns-ServeMux
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("GET /readyz", readyz(ready))
	if pprofOn {
		// Go's profiler (https://pkg.go.dev/net/http/pprof), for finding
		// where the time goes under a real load. Off by default: profiles
		// reveal internals and cost CPU while they run.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}

	return &Server{
		listen: listen,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
		},
	}
}

// healthz answers 200 while the process can serve HTTP at all: liveness
// must not depend on dependencies, or an outage of PostgreSQL would get
// every replica restarted for nothing.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func readyz(ready ReadyFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, checks := true, any(nil)
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
			ok, checks = ready(ctx)
			cancel()
		}
		body := ReadyBody{Status: "ready", Checks: checks}
		code := http.StatusOK
		if !ok {
			body.Status, code = "not ready", http.StatusServiceUnavailable
		}
		data, err := json.Marshal(body)
		if err != nil {
			// The checks are ours; failing to encode them is a bug, but the
			// probe still deserves the right status code.
			data, _ = json.Marshal(ReadyBody{Status: body.Status, Checks: "encode checks: " + err.Error()})
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_, _ = w.Write(append(data, '\n'))
	})
}

// Start listens on the configured address and serves in the background. It
// returns once the socket is bound, so a taken port is reported here.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("http listen on %s: address already in use (another dialsync or service holds it; change [http] listen or DIALSYNC_HTTP_LISTEN): %w", s.listen, err)
		}
		return fmt.Errorf("http listen on %s: %w", s.listen, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()

	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.mu.Lock()
			s.serveErr = fmt.Errorf("http serve on %s: %w", ln.Addr(), err)
			s.mu.Unlock()
		}
	}()
	return nil
}

// Addr is the bound address after Start (useful with port 0), or nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, waits for in-flight requests until ctx ends, and
// returns any error the serving goroutine met. Safe to call without Start.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		// Deadline passed with requests still running: cut them off.
		_ = s.srv.Close()
		err = fmt.Errorf("http shutdown: %w", err)
	}
	s.serveWG.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.serveErr)
}

package httpserver

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dialsync/internal/metrics"
)

// startServer runs a Server on a free loopback port and closes it at the
// end of the test.
func startServer(tb testing.TB, m *metrics.Metrics, ready ReadyFunc) (*Server, string) {
	tb.Helper()
	s := New("127.0.0.1:0", m, ready, false)
	if err := s.Start(); err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s, "http://" + s.Addr().String()
}

func do(tb testing.TB, method, url string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, string(body)
}

func TestHealthzAndMetrics(t *testing.T) {
	m := metrics.New()
	m.Transactions.Add(42)
	_, base := startServer(t, m, nil)

	resp, body := do(t, http.MethodGet, base+"/healthz")
	if resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}

	resp, body = do(t, http.MethodGet, base+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{"dialsync_transactions_total 42", "dialsync_build_info{", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics body lacks %q", want)
		}
	}

	resp, body = do(t, http.MethodHead, base+"/healthz")
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Fatalf("HEAD healthz: %d %q", resp.StatusCode, body)
	}
}

func TestReadyz(t *testing.T) {
	var ok atomic.Bool
	var sawDeadline atomic.Bool
	ready := func(ctx context.Context) (bool, any) {
		_, has := ctx.Deadline()
		sawDeadline.Store(has)
		status := "ok"
		if !ok.Load() {
			status = "postgres: connection refused"
		}
		return ok.Load(), map[string]string{"postgres": status, "lease": "standby"}
	}
	_, base := startServer(t, metrics.New(), ready)

	check := func(wantCode int, wantStatus, wantPG string) {
		t.Helper()
		resp, body := do(t, http.MethodGet, base+"/readyz")
		if resp.StatusCode != wantCode {
			t.Fatalf("readyz code %d, want %d (body %s)", resp.StatusCode, wantCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("content type %q", ct)
		}
		var got struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("readyz body %q: %v", body, err)
		}
		if got.Status != wantStatus || got.Checks["postgres"] != wantPG || got.Checks["lease"] != "standby" {
			t.Fatalf("readyz body = %+v", got)
		}
	}
	check(http.StatusServiceUnavailable, "not ready", "postgres: connection refused")
	ok.Store(true)
	check(http.StatusOK, "ready", "ok")
	if !sawDeadline.Load() {
		t.Error("ready func got a context without a deadline")
	}
}

func TestReadyzNilFuncIsReady(t *testing.T) {
	_, base := startServer(t, metrics.New(), nil)
	resp, body := do(t, http.MethodGet, base+"/readyz")
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != `{"status":"ready"}` {
		t.Fatalf("readyz: %d %q", resp.StatusCode, body)
	}
}

// TestReadOnly: no endpoint accepts a method that could change state, and
// unknown paths are 404.
func TestReadOnly(t *testing.T) {
	_, base := startServer(t, metrics.New(), func(context.Context) (bool, any) { return true, nil })
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			resp, _ := do(t, method, base+path)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", method, path, resp.StatusCode)
			}
			if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") || strings.Contains(allow, method) {
				t.Errorf("%s %s: Allow %q", method, path, allow)
			}
		}
	}
	for _, path := range []string{"/", "/debug/pprof/", "/checkpoint"} {
		resp, _ := do(t, http.MethodGet, base+path)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestStartAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()

	s := New(addr, metrics.New(), nil, false)
	err = s.Start()
	if err == nil {
		t.Fatal("Start on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("error does not name the address and cause: %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("close after failed start: %v", err)
	}
}

// TestCloseStopsServing: after Close the port no longer answers.
func TestCloseStopsServing(t *testing.T) {
	s := New("127.0.0.1:0", metrics.New(), nil, false)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	resp, _ := do(t, http.MethodGet, "http://"+addr+"/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Fatal("server still answers after Close")
	}
}

func TestPprofOptIn(t *testing.T) {
	s := New("127.0.0.1:0", metrics.New(), nil, true)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	resp, body := do(t, http.MethodGet, "http://"+s.Addr().String()+"/debug/pprof/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("GET /debug/pprof/: %d %.80q", resp.StatusCode, body)
	}
}

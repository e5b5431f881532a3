package worker

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// TestReadyAndConnectAPI checks the worker's ready endpoint against an exec probe, and that
// its connect endpoint lets the server reach only a sandbox's declared ports.
func TestReadyAndConnectAPI(t *testing.T) {
	rt := newFakeRuntime()
	w, _ := newTestWorker(t, rt, Config{})
	flag := filepath.Join(t.TempDir(), "ready")
	probe := func(s *workerproto.ContainerSpec) {
		s.Ports = []int{8000}
		s.ReadinessProbe = &sandbox.Probe{ExecArgv: []string{"test-file", flag}, IntervalMS: 10}
	}
	w.create(sandboxSpec("sb-1", probe))
	w.create(sandboxSpec("sb-2"))
	w.create(sandboxSpec("sb-3", func(s *workerproto.ContainerSpec) {
		s.ReadinessProbe = &sandbox.Probe{ExecArgv: []string{"exit", "1"}, IntervalMS: 10}
	}))
	w.create(sandboxSpec("sb-4", func(s *workerproto.ContainerSpec) { s.Isolation, s.Ports = sandbox.IsolationGVisor, []int{8000} }))
	api := httptest.NewServer(w.routes())
	defer api.Close()
	get := func(path string, upgrade bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", api.URL+path, nil)
		if upgrade {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", workerproto.ConnectUpgrade)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	for _, tc := range []struct {
		path     string
		upgrade  bool
		status   int
		contains string
	}{
		{"/v1/sandboxes/sb-2/ready?timeout=0", false, 200, `{"ready":true}`},
		{"/v1/sandboxes/sb-1/ready?timeout=0.1", false, 200, `{"ready":false}`},
		{"/v1/sandboxes/sb-1/ready?timeout=abc", false, 400, "timeout"},
		{"/v1/sandboxes/sb-1/ready?timeout=61", false, 400, "timeout"},
		{"/v1/sandboxes/sb-9/ready?timeout=1", false, 404, "sb-9"},
		{"/v1/sandboxes/sb-1/ports/8000/connect", false, 400, "Upgrade"},
		{"/v1/sandboxes/sb-1/ports/0/connect", true, 400, "port"},
		{"/v1/sandboxes/sb-1/ports/9000/connect", true, 404, "does not expose port 9000"},
		{"/v1/sandboxes/sb-2/ports/8000/connect", true, 404, "does not expose port 8000"},
		// A declared port gets as far as the dial, which a fake container cannot do.
		{"/v1/sandboxes/sb-1/ports/8000/connect", true, 409, "network namespace"},
		{"/v1/sandboxes/sb-4/ports/8000/connect", true, 400, "gVisor"},
	} {
		if status, body := get(tc.path, tc.upgrade); status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %d %s, want %d with %q", tc.path, status, body, tc.status, tc.contains)
		}
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if status, body := get("/v1/sandboxes/sb-1/ready?timeout=5", false); status != 200 || body != `{"ready":true}` {
		t.Errorf("after the probe's file appeared: %d %s", status, body)
	}
	w.terminate("sb-3", sandbox.Terminated, "")
	if status, body := get("/v1/sandboxes/sb-3/ready?timeout=5", false); status != 409 || !strings.Contains(body, "ended before") {
		t.Errorf("a sandbox that ended unready: %d %s", status, body)
	}
}

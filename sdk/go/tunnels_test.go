package gust

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestCreateSandboxWithPorts(t *testing.T) {
	f, c := newFakeAPI(t)
	probe, err := NewTCPProbe(8000, &TCPProbeParams{Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"app_id": "ap-1", "image_id": "im-1", "encrypted_ports": []any{8000.0}, "unencrypted_ports": []any{9000.0},
		"h2_ports": []any{8443.0}, "inbound_cidr_allowlist": []any{"10.0.0.0/8"}, "readiness_probe": map[string]any{"tcp_port": 8000.0, "interval_ms": 50.0}}
	f.handle("POST /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		if b := decodeBody(t, r); !reflect.DeepEqual(b, want) {
			t.Errorf("body %v\nwant %v", b, want)
		}
		writeJSON(w, http.StatusCreated, sandboxJSON("sb-7", "running"))
	})
	f.handle("GET /v1/sandboxes/sb-7/tunnels", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("timeout") != "50" {
			t.Errorf("timeout = %q", r.URL.Query().Get("timeout"))
		}
		writeJSON(w, http.StatusOK, map[string]any{"tunnels": []map[string]any{
			{"container_port": 8000, "host": "abc.gust.localhost", "port": 443},
			{"container_port": 9000, "host": "def.gust.localhost", "port": 8443, "unencrypted_host": "127.0.0.1", "unencrypted_port": 40000},
		}})
	})
	calls := 0
	f.handle("GET /v1/sandboxes/sb-7/ready", func(w http.ResponseWriter, r *http.Request) {
		calls++
		writeJSON(w, http.StatusOK, map[string]any{"ready": calls > 1})
	})
	sb, err := c.CreateSandbox(t.Context(), SandboxOptions{App: "ap-1", Image: "im-1", EncryptedPorts: []int{8000}, UnencryptedPorts: []int{9000},
		H2Ports: []int{8443}, InboundCIDRAllowlist: []string{"10.0.0.0/8"}, ReadinessProbe: probe})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.WaitUntilReady(t.Context(), time.Minute); err != nil || calls != 2 {
		t.Fatalf("WaitUntilReady = %v after %d calls", err, calls)
	}
	tuns, err := sb.Tunnels(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if u := tuns[8000].URL(); u != "https://abc.gust.localhost" {
		t.Errorf("URL = %s", u)
	}
	if u := tuns[9000].URL(); u != "https://def.gust.localhost:8443" {
		t.Errorf("URL = %s", u)
	}
	if h, p, err := tuns[9000].TCPSocket(); err != nil || h != "127.0.0.1" || p != 40000 {
		t.Errorf("TCPSocket = %s %d %v", h, p, err)
	}
	if _, _, err := tuns[8000].TCPSocket(); err == nil {
		t.Error("an encrypted port has a TCP socket")
	}
}

func TestWaitUntilReadyTimesOut(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/sandboxes/sb-1/ready", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ready": false})
	})
	sb := &Sandbox{ID: "sb-1", c: c}
	if err := sb.WaitUntilReady(t.Context(), time.Millisecond); !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v, want ErrNotReady", err)
	}
}

func TestProbeConstructors(t *testing.T) {
	if _, err := NewTCPProbe(0, nil); err == nil {
		t.Error("port 0 accepted")
	}
	if _, err := NewExecProbe(nil, nil); err == nil {
		t.Error("an empty command accepted")
	}
	p, err := NewExecProbe([]string{"curl", "-f", "localhost:8000"}, nil)
	if err != nil || !reflect.DeepEqual(p.wire(), map[string]any{"exec_argv": []string{"curl", "-f", "localhost:8000"}}) {
		t.Errorf("exec probe = %v, %v", p, err)
	}
}

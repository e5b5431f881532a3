package worker

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/tlsconf"
)

// runWorker runs w.Run until the test ends and returns once it registered.
func runWorker(t *testing.T, w *Worker, srv *fakeServer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "the worker to register", func() bool { return srv.WorkerID() != "" })
}

// TestWorkerServesTLS: a worker given a certificate serves its API over TLS and reports the
// certificate's fingerprint when it registers; a client pinning it gets through, plain HTTP
// does not.
func TestWorkerServesTLS(t *testing.T) {
	id, err := tlsconf.LoadOrCreate(t.TempDir(), "worker", nil)
	if err != nil {
		t.Fatal(err)
	}
	w, srv := newTestWorker(t, newFakeRuntime(), Config{TLS: id})
	runWorker(t, w, srv)
	srv.mu.Lock()
	reg := srv.lastReg
	srv.mu.Unlock()
	if !strings.HasPrefix(reg.Addr, "https://") || reg.TLSFingerprint != id.Fingerprint {
		t.Fatalf("registered with addr %q fingerprint %q, want https and %s", reg.Addr, reg.TLSFingerprint, id.Fingerprint)
	}
	tc, err := tlsconf.ClientConfig(id.Fingerprint, "")
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 5 * time.Second}
	resp, err := c.Get(reg.Addr + "/v1/sandboxes/sb-x")
	if err != nil {
		t.Fatalf("a client pinning the worker's certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without the API token: %d, want 401", resp.StatusCode)
	}
	plain := "http://" + strings.TrimPrefix(reg.Addr, "https://")
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(plain + "/v1/sandboxes/sb-x"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d", resp.StatusCode)
		}
	}
}

// TestWorkerAPIHeaderTimeout: a client that sends half a request's headers (or half a TLS
// handshake) is cut off, not served forever (slowloris).
func TestWorkerAPIHeaderTimeout(t *testing.T) {
	saved := apiHeaderTimeout
	apiHeaderTimeout = 200 * time.Millisecond
	t.Cleanup(func() { apiHeaderTimeout = saved })
	id, err := tlsconf.LoadOrCreate(t.TempDir(), "worker", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{"http": {}, "tls": {TLS: id}} {
		t.Run(name, func(t *testing.T) {
			w, srv := newTestWorker(t, newFakeRuntime(), cfg)
			runWorker(t, w, srv)
			srv.mu.Lock()
			addr := srv.lastReg.Addr
			srv.mu.Unlock()
			hostport := addr[strings.Index(addr, "://")+3:]
			conn, err := net.Dial("tcp", hostport)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if name == "http" {
				conn.Write([]byte("GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\n"))
			} // over TLS: not even a ClientHello
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			buf := make([]byte, 1024)
			for {
				if _, err := conn.Read(buf); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatal("the worker still holds a connection whose headers never ended after 5 s")
					}
					break
				}
			}
			t.Logf("cut off after %v", time.Since(start).Round(10*time.Millisecond))
		})
	}
}

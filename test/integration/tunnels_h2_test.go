package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// h2Server is a sandbox's server for TestTunnelsH2, built static by the test: HTTP/1.1 and
// HTTP/2 without TLS (prior knowledge, as the ingress passes an h2 client's bytes on after
// ending TLS) on 8000 and 8001, answering with the protocol it was spoken to in.
const h2Server = `package main

import (
	"fmt"
	"net/http"
)

func main() {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "proto %s", r.Proto) })
	go (&http.Server{Addr: ":8001", Handler: h, Protocols: p}).ListenAndServe()
	panic((&http.Server{Addr: ":8000", Handler: h, Protocols: p}).ListenAndServe())
}
`

// TestTunnelsH2: a port in h2_ports is offered HTTP/2 by ALPN at the ingress, and an h2 client
// (Go's net/http) speaks HTTP/2 end to end through it, several requests at once on one
// connection; a port in encrypted_ports is not offered h2, so the same client speaks HTTP/1.1.
func TestTunnelsH2(t *testing.T) {
	needGust(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(h2Server), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module h2server\n\ngo 1.24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", "h2server", ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the sandbox's h2 server: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "h2server"))
	if err != nil {
		t.Fatal(err)
	}
	id := createRaw(t, map[string]any{
		"command":         []string{"sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.1; done; chmod +x /tmp/h2server; exec /tmp/h2server"},
		"h2_ports":        []int{8000},
		"encrypted_ports": []int{8001},
		"readiness_probe": map[string]any{"tcp_port": 8000},
	})
	if code, body := raw(t, "PUT", "/v1/sandboxes/"+id+"/files?path=/tmp/h2server", bin); code/100 != 2 {
		t.Fatalf("writing the server into the sandbox: %d %s", code, body)
	}
	if code, body := raw(t, "PUT", "/v1/sandboxes/"+id+"/files?path=/tmp/go", []byte("go")); code/100 != 2 {
		t.Fatalf("writing /tmp/go: %d %s", code, body)
	}
	if !waitReady(t, id, 30) {
		t.Fatal("the h2 server did not come up within 30 s")
	}
	tuns := tunnelsOf(t, id)
	pool, _ := ingressCA(t)
	for _, tc := range []struct {
		port  int
		proto string
	}{{8000, "HTTP/2.0"}, {8001, "HTTP/1.1"}} {
		t.Run(strconv.Itoa(tc.port), func(t *testing.T) {
			tu := tuns[tc.port]
			client := tunnelClient(pool, net.JoinHostPort("127.0.0.1", strconv.Itoa(tu.Port)))
			client.Transport.(*http.Transport).ForceAttemptHTTP2 = true // as with TLSClientConfig set, h2 must be asked for
			defer client.CloseIdleConnections()
			url := fmt.Sprintf("https://%s:%d/", tu.Host, tu.Port)
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Get(url)
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.Proto != tc.proto || string(b) != "proto "+tc.proto {
						errs <- fmt.Errorf("the client spoke %s, the sandbox heard %q (want %s both)", resp.Proto, b, tc.proto)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

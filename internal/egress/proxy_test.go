package egress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testProxy serves a proxy for policy whose dial sends "mirror.test" to the given address and
// refuses every other name, as if it did not resolve.
func testProxy(t *testing.T, hosts []string, routes map[string]string) (*Proxy, string) {
	t.Helper()
	pol, err := ParsePolicy(hosts)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(pol, t.Logf)
	real := p.dial
	p.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := routes[addr]; ok {
			var d net.Dialer
			return d.DialContext(ctx, network, to)
		}
		return real(ctx, network, addr)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() { srv.Close(); p.Close() })
	return p, srv.Listener.Addr().String()
}

// roundTrip sends raw lines to the proxy and returns the status line and the rest.
func roundTrip(t *testing.T, proxy, req string) (status, rest string) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(req)[0]})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b)
}

func TestProxyHTTP(t *testing.T) {
	var hits atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "host=%s path=%s via=%q", r.Host, r.URL.Path, r.Header.Get("Proxy-Connection"))
	}))
	defer origin.Close()
	_, proxy := testProxy(t, []string{"mirror.test"}, map[string]string{"mirror.test:80": origin.Listener.Addr().String()})

	for _, tc := range []struct {
		name, req, status, body string
		hit                     bool
	}{
		{"allowed", "GET http://mirror.test/debian/Release HTTP/1.1\r\nHost: mirror.test\r\nProxy-Connection: keep-alive\r\n\r\n",
			"200 OK", `host=mirror.test path=/debian/Release via=""`, true},
		{"the Host header cannot name another site", "GET http://mirror.test/x HTTP/1.1\r\nHost: internal.test\r\n\r\n",
			"200 OK", "host=mirror.test path=/x", true},
		{"host not listed", "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
			"403 Forbidden", "evil.test is not a package mirror this worker lets image builds reach; an operator can add it to the worker's --build-egress list (allowed now: mirror.test)", false},
		{"port not open", "GET http://mirror.test:8080/ HTTP/1.1\r\nHost: mirror.test:8080\r\n\r\n",
			"403 Forbidden", "port 8080 of mirror.test is closed", false},
		{"the worker's port", "GET http://127.0.0.1:7420/v1/health HTTP/1.1\r\nHost: 127.0.0.1:7420\r\n\r\n",
			"403 Forbidden", "127.0.0.1 is not a package mirror", false},
		{"not a proxy request", "GET /debian/Release HTTP/1.1\r\nHost: mirror.test\r\n\r\n",
			"400 Bad Request", "is an HTTP proxy", false},
		{"https in absolute form", "GET https://mirror.test/ HTTP/1.1\r\nHost: mirror.test\r\n\r\n",
			"400 Bad Request", "use CONNECT", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			status, body := roundTrip(t, proxy, tc.req)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("got %s %q, want %s with %q", status, body, tc.status, tc.body)
			}
			if hit := hits.Load() > before; hit != tc.hit {
				t.Fatalf("the origin was reached: %v, want %v", hit, tc.hit)
			}
		})
	}
}

func TestProxyConnect(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	p, proxy := testProxy(t, []string{"mirror.test", "other.test:8443"}, map[string]string{
		"mirror.test:443": echo.Addr().String(), "other.test:8443": echo.Addr().String()})

	for _, tc := range []struct{ target, status, body string }{
		{"mirror.test:22", "403 Forbidden", "port 22 of mirror.test is closed"},
		{"other.test:443", "403 Forbidden", "port 443 of other.test is closed"},
		{"evil.test:443", "403 Forbidden", "evil.test is not a package mirror"},
		{"169.254.169.254:80", "403 Forbidden", "169.254.169.254 is not a package mirror"},
		{"mirror.test", "400 Bad Request", "host:port"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			status, body := roundTrip(t, proxy, "CONNECT "+tc.target+" HTTP/1.1\r\nHost: "+tc.target+"\r\n\r\n")
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("got %s %q, want %s with %q", status, body, tc.status, tc.body)
			}
		})
	}

	for _, target := range []string{"mirror.test:443", "other.test:8443"} {
		t.Run("tunnel to "+target, func(t *testing.T) {
			c, err := net.Dial("tcp", proxy)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			// The first bytes of the tunnel come with the request, as a TLS hello may.
			io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nhello ")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			io.WriteString(c, "world")
			buf := make([]byte, 11)
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "hello world" {
				t.Fatalf("through the tunnel: %q %v", buf, err)
			}
		})
	}

	// Close ends a tunnel that is still open.
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT mirror.test:443 HTTP/1.1\r\nHost: mirror.test:443\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	p.Close()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after Close the tunnel should end, read gave %v", err)
	}
}

// TestProxyRefusesLocalAddresses: a listed name that resolves to this machine (here
// "localhost") is refused at the dial, with a 403 that says why.
func TestProxyRefusesLocalAddresses(t *testing.T) {
	var hits atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer origin.Close()
	_, port, _ := net.SplitHostPort(origin.Listener.Addr().String())
	_, proxy := testProxy(t, []string{"localhost:" + port, "127.0.0.1:" + port}, nil)
	for _, host := range []string{"localhost", "127.0.0.1"} {
		status, body := roundTrip(t, proxy, "GET http://"+host+":"+port+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
		if status != "403 Forbidden" || !strings.Contains(body, "which image builds may never reach") || !strings.Contains(body, "loopback") {
			t.Errorf("%s: %s %q", host, status, body)
		}
		status, body = roundTrip(t, proxy, "CONNECT "+host+":"+port+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if status != "403 Forbidden" || !strings.Contains(body, "loopback") {
			t.Errorf("CONNECT %s: %s %q", host, status, body)
		}
	}
	if hits.Load() != 0 {
		t.Fatal("the proxy reached a loopback address")
	}
}

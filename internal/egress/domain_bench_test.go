package egress

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkDomainProxyThroughput downloads the same body from the test "internet" through the
// domain proxy (http://allowed.test/, redirected by nat to the proxy, which resolves the name
// and splices) and directly (routed through the same worker namespace, on a port the nat rule
// leaves alone), alternating in one run, and reports both rates and their ratio. Run it with
//
//	go test -run '^$' -bench DomainProxyThroughput -benchtime 20x ./internal/egress
func BenchmarkDomainProxyThroughput(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to make network namespaces")
	}
	const size = 64 << 20
	n := newTestNet(b)
	if out, err := exec.Command("ip", "netns", "exec", n.w, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward").CombinedOutput(); err != nil {
		b.Fatalf("forwarding in %s: %v %s", n.w, err, out)
	}
	body := make([]byte, 1<<20)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for range size / len(body) {
			if _, err := w.Write(body); err != nil {
				return
			}
		}
	})}
	for _, port := range []string{"80", "8080"} {
		var ln net.Listener
		in(b, n.ins, func() (err error) {
			ln, err = net.Listen("tcp4", net.JoinHostPort(tnInternet, port))
			return err
		})
		go srv.Serve(ln)
	}
	b.Cleanup(func() { srv.Close() })

	up, _ := n.upstream(b, map[string][]string{"allowed.test": {tnInternet}})
	pol, _ := ParseDomainAllowlist([]string{"allowed.test"})
	proxy := NewDomainProxy(up, func(netip.Addr) (Client, bool) { return Client{ID: "bench", Domains: pol, Restricted: true}, true }, b.Logf)
	proxy.Dial = dialIn(n.wns)
	var proxyLn net.Listener
	in(b, n.wns, func() (err error) {
		proxyLn, err = net.Listen("tcp4", tnGateway+":0")
		return err
	})
	go proxy.Serve(proxyLn)
	b.Cleanup(func() { proxy.Close() })
	n.redirect(b, uint16(proxyLn.Addr().(*net.TCPAddr).Port))

	cns, err := os.Open("/run/netns/" + n.c)
	if err != nil {
		b.Fatal(err)
	}
	defer cns.Close()
	// The client lives in C; a fresh connection each time, as a pip download would open.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var c net.Conn
			err := inNS(cns, func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, tnInternet+":"+fmt.Sprint(ctx.Value(portKey{})))
				return err
			})
			return c, err
		}}}
	get := func(url string, port int) time.Duration {
		ctx := context.WithValue(context.Background(), portKey{}, port)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		m, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || m != size {
			b.Fatalf("%s: %d bytes, %v", url, m, err)
		}
		return time.Since(start)
	}
	get("http://allowed.test/", 80) // warm: the first resolution
	var direct, proxied time.Duration
	b.ResetTimer()
	for range b.N {
		direct += get("http://"+tnInternet+":8080/", 8080)
		proxied += get("http://allowed.test/", 80)
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(direct), "direct-MB/s")
	b.ReportMetric(mbps(proxied), "proxy-MB/s")
	b.ReportMetric(mbps(proxied)/mbps(direct), "proxy/direct")
	b.ReportMetric(0, "ns/op")
}

type portKey struct{}

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/worker"
)

func init() {
	register(&command{name: "bench tunnel", summary: "benchmark tunnels into a sandbox (HTTPS and raw TCP) against a direct connection", run: runBenchTunnel})
}

// tunnelBenchServer runs in the sandbox: HTTP/1.1 on 8000 and 8001 (/ok: a 2-byte answer;
// /big/N: N MiB), the same over TLS on 8443 with the certificate and key in argv[1:3] (PEM;
// the sandbox serving HTTPS itself, the HTTPS tunnel's fair baseline) and raw TCP on 9000
// (first byte "b": an endless stream; otherwise an echo). The others listen before 8000,
// whose readiness probe then says all are up.
const tunnelBenchServer = `
import http.server, socket, socketserver, ssl, sys, threading
BUF = b"x" * (1 << 20)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/big/"):
            n = int(self.path[5:])
            self.send_response(200); self.send_header("Content-Length", str(n << 20)); self.end_headers()
            for _ in range(n): self.wfile.write(BUF)
            return
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    mode = c.recv(1)
    try:
        if mode == b"b":
            while True: c.sendall(BUF)
        c.sendall(mode)
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError: pass
    c.close()
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("0.0.0.0", 9000)); ls.listen(64)
def tcp():
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
plain = S(("0.0.0.0", 8001), H)
threading.Thread(target=plain.serve_forever, daemon=True).start()
open("/tmp/cert.pem", "w").write(sys.argv[1]); open("/tmp/key.pem", "w").write(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("/tmp/cert.pem", "/tmp/key.pem")
secure = S(("0.0.0.0", 8443), H)
secure.socket = ctx.wrap_socket(secure.socket, server_side=True)
threading.Thread(target=secure.serve_forever, daemon=True).start()
S(("0.0.0.0", 8000), H).serve_forever()
`

// runBenchTunnel starts gust in this process, runs tunnelBenchServer in a sandbox behind an
// encrypted port (8000) and unencrypted ones (8001, 9000), and measures latency and throughput
// through the ingress beside a direct connection to the same ports at the sandbox's address
// from this machine, interleaved in the same run; and, for reference, beside one made in the
// sandbox's network namespace to its loopback (no veth).
func runBenchTunnel(ctx context.Context, args []string) error {
	fs := newFlags("bench tunnel")
	n := fs.Int("n", 2000, "round trips per latency measurement")
	mib := fs.Int("mib", 256, "MiB per throughput measurement")
	rounds := fs.Int("rounds", 5, "throughput measurements per path (the median is reported)")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache (the base image is built there if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("gust bench tunnel runs containers and enters their network namespace: run it as root")
	}
	b, stop, err := startSandboxBench(ctx, *imageCache, *n)
	if err != nil {
		return err
	}
	defer stop()
	certPEM, keyPEM, err := benchCertPEM()
	if err != nil {
		return err
	}
	id, err := b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "command": []string{"python3", "-c", tunnelBenchServer, certPEM, keyPEM},
		"encrypted_ports": []int{8000}, "unencrypted_ports": []int{8001, 9000}, "readiness_probe": map[string]any{"tcp_port": 8000}, "cpu": 1})
	if err != nil {
		return err
	}
	defer func() {
		if err := b.c.terminate(id); err != nil {
			benchWarn("%v", err)
		}
	}()
	p, err := newTunnelPaths(b.c, id)
	if err != nil {
		return err
	}
	defer p.close()

	fmt.Printf("\ngust bench tunnel: %d round trips, %d MiB × %d, 2-core machine shared with other work, %s\n", *n, *mib, *rounds, time.Now().Format(time.RFC3339))
	fmt.Printf("tunnel: through the ingress (raw ports: %s); direct: this machine to the sandbox's address %s (the baseline);\n", p.rawPath(), p.addr)
	fmt.Printf("in-ns: a connection made in the sandbox's network namespace to its loopback (no veth), for reference\n\n")
	fmt.Printf("%-40s %12s %12s %7s %12s\n", "measurement", "tunnel", "direct", "ratio", "in-ns")
	for _, m := range []struct {
		name                 string
		tunnel, direct, inNS func() (time.Duration, error)
	}{
		{"HTTPS round trip p50 (keep-alive)", p.httpLatency(p.tunnelHTTP, "https://"+p.host, *n), p.httpLatency(p.addrHTTP, "http://sandbox:8000", *n), p.httpLatency(p.nsHTTP, "http://sandbox:8000", *n)},
		{"HTTP round trip p50 (unencrypted port)", p.httpLatency(p.rawHTTP, "http://sandbox:8001", *n), p.httpLatency(p.addrHTTP, "http://sandbox:8001", *n), p.httpLatency(p.nsHTTP, "http://sandbox:8001", *n)},
		{"TCP round trip p50 (1 byte)", p.tcpLatency(p.dialTunnel(p.tcpAddr), *n), p.tcpLatency(p.dialAddr(9000), *n), p.tcpLatency(p.dialInNS(9000), *n)},
	} {
		tun, dir, in, err := measure3(m.name, m.tunnel, m.direct, m.inNS)
		if err != nil {
			return err
		}
		fmt.Printf("%-40s %12s %12s %6.2f× %12s   (added %s; target ≤ 0.50 ms)\n", m.name, ms(tun), ms(dir), float64(tun)/float64(dir), ms(in), ms(tun-dir))
	}
	for _, m := range []struct {
		name                 string
		tunnel, direct, inNS func() (float64, error)
	}{
		{"HTTPS download (vs HTTPS direct)", p.httpThroughput(p.tunnelHTTP, "https://"+p.host+"/big/", *mib), p.httpThroughput(p.addrHTTP, "https://sandbox:8443/big/", *mib), p.httpThroughput(p.nsHTTP, "https://sandbox:8443/big/", *mib)},
		{"HTTPS download (vs plain HTTP direct)", p.httpThroughput(p.tunnelHTTP, "https://"+p.host+"/big/", *mib), p.httpThroughput(p.addrHTTP, "http://sandbox:8000/big/", *mib), p.httpThroughput(p.nsHTTP, "http://sandbox:8000/big/", *mib)},
		{"HTTP download (unencrypted port)", p.httpThroughput(p.rawHTTP, "http://sandbox:8001/big/", *mib), p.httpThroughput(p.addrHTTP, "http://sandbox:8001/big/", *mib), p.httpThroughput(p.nsHTTP, "http://sandbox:8001/big/", *mib)},
		{"TCP stream throughput", p.tcpThroughput(p.dialTunnel(p.tcpAddr), *mib), p.tcpThroughput(p.dialAddr(9000), *mib), p.tcpThroughput(p.dialInNS(9000), *mib)},
	} {
		var tuns, dirs, ins []float64
		for range *rounds { // interleaved, so that the machine's other load falls on all
			t, d, in, err := measure3(m.name, m.tunnel, m.direct, m.inNS)
			if err != nil {
				return err
			}
			tuns, dirs, ins = append(tuns, t), append(dirs, d), append(ins, in)
		}
		tun, dir, in := median(tuns), median(dirs), median(ins)
		fmt.Printf("%-40s %7.0f MB/s %7.0f MB/s %6.2f× %7.0f MB/s   (target ≥ 0.80×)\n", m.name, tun/1e6, dir/1e6, tun/dir, in/1e6)
		if m.name == "HTTPS download (vs HTTPS direct)" {
			// TLS by itself, beside the HTTPS tunnel: how much of the gap is encryption.
			var alone []float64
			for range *rounds {
				a, err := tlsAlone(*mib)()
				if err != nil {
					return err
				}
				alone = append(alone, a)
			}
			a := median(alone)
			fmt.Printf("%-40s %7.0f MB/s %12s %6.2f×   (HTTPS tunnel ÷ TLS alone: Go server → client on loopback, no relay)\n", "  TLS alone (the HTTPS ceiling)", a/1e6, "", tun/a)
		}
	}
	return nil
}

// tunnelPaths are the ways to the sandbox's ports.
type tunnelPaths struct {
	id                   string
	host                 string // the HTTPS tunnel's host:port
	ingressAddr, tcpAddr string
	rawHTTPAddr          string // the unencrypted tunnel of 8001
	ns                   string // the sandbox's network namespace
	addr                 netip.Addr
	// tunnelHTTP: HTTPS through the ingress; rawHTTP: HTTP through the unencrypted tunnel;
	// addrHTTP: HTTP to the sandbox's address; nsHTTP: HTTP in its namespace to loopback.
	tunnelHTTP, rawHTTP, addrHTTP, nsHTTP *http.Client
}

func newTunnelPaths(c *benchClient, id string) (*tunnelPaths, error) {
	if err := c.json("GET", "/v1/sandboxes/"+id+"/ready?timeout=60", nil, nil); err != nil {
		return nil, err
	}
	var resp struct {
		Tunnels []ingress.Tunnel `json:"tunnels"`
	}
	if err := c.json("GET", "/v1/sandboxes/"+id+"/tunnels", nil, &resp); err != nil {
		return nil, err
	}
	p := &tunnelPaths{id: id}
	for _, t := range resp.Tunnels {
		switch t.ContainerPort {
		case 8000:
			p.host = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
			p.ingressAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
		case 8001:
			p.rawHTTPAddr = net.JoinHostPort(t.UnencryptedHost, strconv.Itoa(t.UnencryptedPort))
		case 9000:
			p.tcpAddr = net.JoinHostPort(t.UnencryptedHost, strconv.Itoa(t.UnencryptedPort))
		}
	}
	if p.host == "" || p.tcpAddr == "" || p.rawHTTPAddr == "" {
		return nil, fmt.Errorf("the sandbox's tunnels are %+v", resp.Tunnels)
	}
	pid, err := pidOfSandbox(id)
	if err != nil {
		return nil, err
	}
	p.ns = fmt.Sprintf("/proc/%d/ns/net", pid)
	if p.addr, err = addrIn(p.ns); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(c.tmp, "data", ingress.CAFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	var d net.Dialer
	p.tunnelHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: false,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", p.ingressAddr)
		}}}
	p.rawHTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", p.rawHTTPAddr)
	}}}
	// The sandbox's own HTTPS (8443) has a certificate the bench just made: not checked.
	insecure := &tls.Config{InsecureSkipVerify: true}
	p.addrHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: insecure, DialContext: func(ctx context.Context, _, hostPort string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(hostPort)
		return d.DialContext(ctx, "tcp", net.JoinHostPort(p.addr.String(), port))
	}}}
	p.nsHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: insecure, DialContext: func(ctx context.Context, _, hostPort string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(hostPort)
		return worker.DialIn(ctx, p.ns, "127.0.0.1:"+port)
	}}}
	// A relayed connection asks for the kernel forward at once (internal/ingress/forward.go).
	for _, a := range []string{p.tcpAddr, p.rawHTTPAddr} {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
		}
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && p.rawPath() != "kernel-forwarded"; {
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

// rawPath says how the raw TCP tunnels go: forwarded in the kernel, or relayed.
func (p *tunnelPaths) rawPath() string {
	if in := benchIngress.Load(); in != nil && in.Forwarded(p.id, 9000) && in.Forwarded(p.id, 8001) {
		return "kernel-forwarded"
	}
	return "relayed by the ingress"
}

// benchIngress is the ingress of the gust the bench started (startBenchGust).
var benchIngress atomic.Pointer[ingress.Ingress]

// addrIn is eth0's IPv4 address in the network namespace at path.
func addrIn(path string) (netip.Addr, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netip.Addr{}, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("the sandbox has no eth0 (is the worker's network off?): %w", err)
	}
	addrs, err := h.AddrList(eth, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("the sandbox's eth0 has no IPv4 address: %v", err)
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	return a, nil
}

func (p *tunnelPaths) close() {
	for _, c := range []*http.Client{p.tunnelHTTP, p.rawHTTP, p.addrHTTP, p.nsHTTP} {
		c.CloseIdleConnections()
	}
}

// pidOfSandbox finds the host pid of a process of the sandbox (its command carries
// GUST_SANDBOX_ID in its environment).
func pidOfSandbox(id string) (int, error) { return pidWithEnv("GUST_SANDBOX_ID=" + id) }

// pidWithEnv finds the host pid of a process whose environment holds the entry kv.
func pidWithEnv(kv string) (int, error) {
	want := []byte(kv + "\x00")
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ")); err == nil && bytes.Contains(env, want) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process with %s found in /proc", kv)
}

func (p *tunnelPaths) dialInNS(port int) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		return worker.DialIn(context.Background(), p.ns, "127.0.0.1:"+strconv.Itoa(port))
	}
}

func (p *tunnelPaths) dialAddr(port int) func() (net.Conn, error) {
	return p.dialTunnel(netip.AddrPortFrom(p.addr, uint16(port)).String())
}

func (p *tunnelPaths) dialTunnel(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.Dial("tcp", addr) }
}

// measure3 runs a measurement on the three paths, one after the other.
func measure3[T any](name string, tunnel, direct, inNS func() (T, error)) (tun, dir, in T, err error) {
	if tun, err = tunnel(); err != nil {
		return tun, dir, in, fmt.Errorf("%s through the tunnel: %w", name, err)
	}
	if dir, err = direct(); err != nil {
		return tun, dir, in, fmt.Errorf("%s to the sandbox's address: %w", name, err)
	}
	if in, err = inNS(); err != nil {
		return tun, dir, in, fmt.Errorf("%s in the sandbox's namespace: %w", name, err)
	}
	return tun, dir, in, nil
}

// httpLatency is the p50 of n GETs of a 2-byte answer (base + "/ok") on one kept-alive
// connection.
func (p *tunnelPaths) httpLatency(c *http.Client, base string, n int) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		url := base + "/ok"
		var ds []time.Duration
		for i := range n + 20 {
			start := time.Now()
			resp, err := c.Get(url)
			if err != nil {
				return 0, err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return 0, err
			}
			if i >= 20 { // the first ones warm the connection up
				ds = append(ds, time.Since(start))
			}
		}
		return pct(ds, 50), nil
	}
}

// tcpLatency is the p50 of n one-byte echoes on one connection.
func (p *tunnelPaths) tcpLatency(dial func() (net.Conn, error), n int) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		c, err := dial()
		if err != nil {
			return 0, err
		}
		defer c.Close()
		b := []byte{'e'}
		var ds []time.Duration
		for i := range n + 20 {
			start := time.Now()
			if _, err := c.Write(b); err != nil {
				return 0, err
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return 0, err
			}
			if i >= 20 {
				ds = append(ds, time.Since(start))
			}
		}
		return pct(ds, 50), nil
	}
}

// httpThroughput downloads mib MiB in one answer and returns bytes per second.
func (p *tunnelPaths) httpThroughput(c *http.Client, base string, mib int) func() (float64, error) {
	return func() (float64, error) {
		start := time.Now()
		resp, err := c.Get(base + strconv.Itoa(mib))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.CopyBuffer(discard{}, resp.Body, make([]byte, readBuf))
		if err != nil {
			return 0, err
		}
		if n != int64(mib)<<20 {
			return 0, fmt.Errorf("got %d bytes of %d MiB", n, mib)
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
}

// tcpThroughput reads mib MiB of the sandbox's endless stream and returns bytes per second.
func (p *tunnelPaths) tcpThroughput(dial func() (net.Conn, error), mib int) func() (float64, error) {
	return func() (float64, error) {
		c, err := dial()
		if err != nil {
			return 0, err
		}
		defer c.Close()
		start := time.Now()
		if _, err := c.Write([]byte{'b'}); err != nil {
			return 0, err
		}
		n, err := io.CopyBuffer(discard{}, io.LimitReader(c, int64(mib)<<20), make([]byte, readBuf))
		if err == nil && n < int64(mib)<<20 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", n, err)
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
}

// readBuf is how much a throughput measurement reads at a time, on both paths: 64 KiB, as
// curl and most clients do (io.Discard's own 8 KiB reads made the reader the bottleneck).
const readBuf = 64 << 10

// discard is io.Discard without its ReadFrom, so that io.CopyBuffer uses the buffer given.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

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
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/worker"
)

func init() {
	register(&command{name: "bench tunnel", summary: "benchmark tunnels into a sandbox (HTTPS and raw TCP) against a direct connection", run: runBenchTunnel})
}

// tunnelBenchServer runs in the sandbox: HTTP/1.1 on 8000 (/ok: a 2-byte answer; /big/N: N MiB)
// and raw TCP on 9000 (first byte "b": an endless stream; otherwise an echo). 9000 listens
// before 8000, whose readiness probe then says both are up.
const tunnelBenchServer = `
import http.server, socket, socketserver, threading
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
S(("0.0.0.0", 8000), H).serve_forever()
`

// runBenchTunnel starts gust in this process, runs tunnelBenchServer in a sandbox behind an
// encrypted and an unencrypted port, and measures latency and throughput through the ingress
// beside a direct connection to the same ports from this machine (made in the sandbox's
// network namespace, as the worker's last hop is), interleaved in the same run.
func runBenchTunnel(ctx context.Context, args []string) error {
	fs := newFlags("bench tunnel")
	n := fs.Int("n", 2000, "round trips per latency measurement")
	mib := fs.Int("mib", 256, "MiB per throughput measurement")
	rounds := fs.Int("rounds", 3, "throughput measurements per path (the median is reported)")
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
	id, err := b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "command": []string{"python3", "-c", tunnelBenchServer},
		"encrypted_ports": []int{8000}, "unencrypted_ports": []int{9000}, "readiness_probe": map[string]any{"tcp_port": 8000}, "cpu": 1})
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
	fmt.Printf("direct: a connection made in the sandbox's network namespace (the worker's last hop); tunnel: through the ingress and the worker\n\n")
	fmt.Printf("%-36s %14s %14s %10s\n", "measurement", "tunnel", "direct", "ratio")
	for _, m := range []struct {
		name            string
		tunnel, direct  func() (time.Duration, error)
		latency, higher bool
	}{
		{"HTTP round trip p50 (keep-alive)", p.httpLatency(p.tunnelHTTP, *n), p.httpLatency(p.directHTTP, *n), true, false},
		{"TCP round trip p50 (1 byte)", p.tcpLatency(p.dialTunnelTCP, *n), p.tcpLatency(p.dialDirect(9000), *n), true, false},
	} {
		tun, err := m.tunnel()
		if err != nil {
			return fmt.Errorf("%s through the tunnel: %w", m.name, err)
		}
		dir, err := m.direct()
		if err != nil {
			return fmt.Errorf("%s direct: %w", m.name, err)
		}
		fmt.Printf("%-36s %14s %14s %9.2f×   (added %s; target ≤ 0.50 ms)\n", m.name, ms(tun), ms(dir), float64(tun)/float64(dir), ms(tun-dir))
	}
	for _, m := range []struct {
		name           string
		tunnel, direct func() (float64, error)
	}{
		{"HTTP download throughput", p.httpThroughput(p.tunnelHTTP, "https://"+p.host+"/big/", *mib), p.httpThroughput(p.directHTTP, "http://sandbox/big/", *mib)},
		{"TCP stream throughput", p.tcpThroughput(p.dialTunnelTCP, *mib), p.tcpThroughput(p.dialDirect(9000), *mib)},
	} {
		var tuns, dirs []float64
		for range *rounds { // interleaved, so that the machine's other load falls on both
			t, err := m.tunnel()
			if err != nil {
				return fmt.Errorf("%s through the tunnel: %w", m.name, err)
			}
			d, err := m.direct()
			if err != nil {
				return fmt.Errorf("%s direct: %w", m.name, err)
			}
			tuns, dirs = append(tuns, t), append(dirs, d)
		}
		tun, dir := median(tuns), median(dirs)
		fmt.Printf("%-36s %9.0f MB/s %9.0f MB/s %9.2f×   (target ≥ 0.80×)\n", m.name, tun/1e6, dir/1e6, tun/dir)
	}
	return nil
}

// tunnelPaths are the two ways to the sandbox's ports.
type tunnelPaths struct {
	host                   string // the HTTPS tunnel's host:port
	ingressAddr, tcpAddr   string
	ns                     string // the sandbox's network namespace
	tunnelHTTP, directHTTP *http.Client
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
	p := &tunnelPaths{}
	for _, t := range resp.Tunnels {
		switch t.ContainerPort {
		case 8000:
			p.host = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
			p.ingressAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
		case 9000:
			p.tcpAddr = net.JoinHostPort(t.UnencryptedHost, strconv.Itoa(t.UnencryptedPort))
		}
	}
	if p.host == "" || p.tcpAddr == "" {
		return nil, fmt.Errorf("the sandbox's tunnels are %+v", resp.Tunnels)
	}
	pid, err := pidOfSandbox(id)
	if err != nil {
		return nil, err
	}
	p.ns = fmt.Sprintf("/proc/%d/ns/net", pid)
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
	p.directHTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return p.dialDirect(8000)()
	}}}
	return p, nil
}

func (p *tunnelPaths) close() {
	p.tunnelHTTP.CloseIdleConnections()
	p.directHTTP.CloseIdleConnections()
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

func (p *tunnelPaths) dialDirect(port int) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		return worker.DialIn(context.Background(), p.ns, "127.0.0.1:"+strconv.Itoa(port))
	}
}

func (p *tunnelPaths) dialTunnelTCP() (net.Conn, error) { return net.Dial("tcp", p.tcpAddr) }

// httpLatency is the p50 of n GETs of a 2-byte answer on one kept-alive connection.
func (p *tunnelPaths) httpLatency(c *http.Client, n int) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		url := "http://sandbox/ok"
		if c == p.tunnelHTTP {
			url = "https://" + p.host + "/ok"
		}
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

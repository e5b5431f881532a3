package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tunnelServer is a sandbox's server for the tunnel tests: HTTP/1.1 on 8000 (/, a chunked
// /stream, a websocket echo at /ws) and a raw TCP echo on 9000, started after argv[1] seconds.
const tunnelServer = `
import base64, hashlib, http.server, socket, socketserver, sys, threading, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200); self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
            for i in range(3):
                c = ("chunk%d\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c)); self.wfile.flush(); time.sleep(0.4)
            self.wfile.write(b"0\r\n\r\n"); return
        if self.path == "/ws":
            acc = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101); self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", acc); self.end_headers(); self.wfile.flush()
            r = self.rfile
            while True:
                h = r.read(2)
                if len(h) < 2: return
                n = h[1] & 0x7f
                mask = r.read(4) if h[1] & 0x80 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(n)))
                if h[0] & 0x0f == 8: return
                out = b"echo:" + data
                self.wfile.write(bytes([0x81, len(out)]) + out); self.wfile.flush()
        body = b"hello from the sandbox\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
def echo():
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("0.0.0.0", 9000)); ls.listen(64)
    while True:
        c, _ = ls.accept()
        def serve(c):
            while True:
                d = c.recv(65536)
                if not d: break
                c.sendall(d)
            c.close()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=echo, daemon=True).start()
S(("0.0.0.0", 8000), H).serve_forever()
`

type tunnel struct {
	ContainerPort   int    `json:"container_port"`
	Host            string `json:"host"`
	Port            int    `json:"port"`
	UnencryptedHost string `json:"unencrypted_host"`
	UnencryptedPort int    `json:"unencrypted_port"`
}

func tunnelsOf(t *testing.T, id string) map[int]tunnel {
	t.Helper()
	var resp struct {
		Tunnels []tunnel `json:"tunnels"`
	}
	if err := api("GET", "/v1/sandboxes/"+id+"/tunnels?timeout=50", nil, &resp); err != nil {
		t.Fatalf("tunnels of %s: %v", id, err)
	}
	out := map[int]tunnel{}
	for _, tu := range resp.Tunnels {
		out[tu.ContainerPort] = tu
	}
	return out
}

// ingressCA is gust's CA, which the ingress's certificate chains to.
func ingressCA(t *testing.T) (*x509.CertPool, string) {
	t.Helper()
	path := filepath.Join(gust.dataDir, "data", "ingress-ca.pem")
	pem, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("gust wrote no CA for its ingress: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", path)
	}
	return pool, path
}

// tunnelClient speaks HTTPS to the ingress for every tunnel host, trusting gust's CA (the
// host names need not resolve: the client dials the ingress and sends the name by SNI).
func tunnelClient(pool *x509.CertPool, ingressAddr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", ingressAddr)
		},
	}}
}

func waitReady(t *testing.T, id string, timeout float64) bool {
	t.Helper()
	var r struct {
		Ready bool `json:"ready"`
	}
	if err := api("GET", fmt.Sprintf("/v1/sandboxes/%s/ready?timeout=%v", id, timeout), nil, &r); err != nil {
		t.Fatalf("ready: %v", err)
	}
	return r.Ready
}

func TestTunnels(t *testing.T) {
	needGust(t)
	id := createRaw(t, map[string]any{
		"command":         []string{"python3", "-c", tunnelServer, "0"},
		"encrypted_ports": []int{8000}, "unencrypted_ports": []int{9000},
		"readiness_probe": map[string]any{"tcp_port": 8000},
	})
	if !waitReady(t, id, 30) {
		t.Fatal("the server did not come up within 30 s")
	}
	tuns := tunnelsOf(t, id)
	https, raw := tuns[8000], tuns[9000]
	if len(tuns) != 2 || https.Host == "" || https.Port == 0 || https.UnencryptedPort != 0 || raw.UnencryptedPort == 0 {
		t.Fatalf("tunnels = %+v", tuns)
	}
	pool, caPath := ingressCA(t)
	ingressAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(https.Port))
	url := fmt.Sprintf("https://%s:%d", https.Host, https.Port)
	client := tunnelClient(pool, ingressAddr)

	t.Run("https", func(t *testing.T) {
		resp, err := client.Get(url + "/")
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello from the sandbox\n" {
			t.Fatalf("GET %s = %d %q", url, resp.StatusCode, b)
		}
	})

	t.Run("curl", func(t *testing.T) {
		// curl trusts gust's CA (its name constraint included) and reaches the host by name:
		// --resolve stands in for a wildcard DNS record of the base domain.
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", caPath,
			"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", https.Host, https.Port), url+"/").CombinedOutput()
		if err != nil || string(out) != "hello from the sandbox\n" {
			t.Fatalf("curl %s: %v: %s", url, err, out)
		}
	})

	t.Run("streamed", func(t *testing.T) {
		start := time.Now()
		resp, err := client.Get(url + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		firstAt := time.Since(start)
		if err != nil || first != "chunk0\n" {
			t.Fatalf("first chunk = %q, %v", first, err)
		}
		rest, _ := io.ReadAll(br)
		total := time.Since(start)
		if string(rest) != "chunk1\nchunk2\n" {
			t.Fatalf("rest = %q", rest)
		}
		// The server sleeps 0.4 s after each chunk: the first must arrive before the rest.
		if total-firstAt < 600*time.Millisecond {
			t.Fatalf("the stream arrived at once (first chunk after %v, all after %v): something buffered it", firstAt, total)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		c, err := tls.Dial("tcp", ingressAddr, &tls.Config{ServerName: https.Host, RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		key := make([]byte, 16)
		rand.Read(key)
		k := base64.StdEncoding.EncodeToString(key)
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", https.Host, k)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("websocket handshake: %v %v", resp, err)
		}
		sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
			t.Fatal("wrong Sec-WebSocket-Accept")
		}
		for _, msg := range []string{"hello", "again"} {
			mask := []byte{1, 2, 3, 4}
			frame := append([]byte{0x81, 0x80 | byte(len(msg))}, mask...)
			for i := range msg {
				frame = append(frame, msg[i]^mask[i%4])
			}
			c.Write(frame)
			h := make([]byte, 2)
			if _, err := io.ReadFull(br, h); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, h[1]&0x7f)
			io.ReadFull(br, data)
			if string(data) != "echo:"+msg {
				t.Fatalf("websocket echo = %q", data)
			}
		}
	})

	rawConn, err := net.Dial("tcp", net.JoinHostPort(raw.UnencryptedHost, strconv.Itoa(raw.UnencryptedPort)))
	if err != nil {
		t.Fatalf("raw TCP tunnel: %v", err)
	}
	defer rawConn.Close()
	t.Run("raw tcp", func(t *testing.T) {
		rawConn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := strings.Repeat("x", 100_000)
		go io.WriteString(rawConn, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(rawConn, got); err != nil || string(got) != msg {
			t.Fatalf("raw echo: %v", err)
		}
	})

	t.Run("closed at the end", func(t *testing.T) {
		if err := api("POST", "/v1/sandboxes/"+id+"/terminate", nil, nil); err != nil {
			t.Fatal(err)
		}
		rawConn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := rawConn.Read(make([]byte, 1)); err == nil {
			t.Error("an open raw TCP tunnel survived its sandbox")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(raw.UnencryptedPort)), time.Second)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatal("the raw TCP port still accepts connections after the sandbox ended")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if c, err := tls.Dial("tcp", ingressAddr, &tls.Config{ServerName: https.Host, RootCAs: pool}); err == nil {
			c.Close()
			t.Error("the tunnel's host name still answers after the sandbox ended")
		}
		if err := api("GET", "/v1/sandboxes/"+id+"/tunnels", nil, nil); err == nil {
			t.Error("an ended sandbox still lists tunnels")
		}
	})
}

func TestReadinessProbe(t *testing.T) {
	needGust(t)
	t.Run("tcp", func(t *testing.T) {
		t.Parallel()
		id := createRaw(t, map[string]any{
			"command":         []string{"python3", "-c", tunnelServer, "2"},
			"encrypted_ports": []int{8000},
			"readiness_probe": map[string]any{"tcp_port": 8000, "interval_ms": 50},
		})
		created := time.Now()
		if waitReady(t, id, 0.5) {
			t.Fatal("ready before the server (which starts after 2 s) listened")
		}
		if !waitReady(t, id, 30) {
			t.Fatal("not ready within 30 s")
		}
		if d := time.Since(created); d < 1200*time.Millisecond {
			t.Fatalf("ready %v after create; the server starts 2 s after the sandbox", d)
		}
		// Ready means reachable: the first request through the tunnel succeeds.
		tu := tunnelsOf(t, id)[8000]
		pool, _ := ingressCA(t)
		resp, err := tunnelClient(pool, net.JoinHostPort("127.0.0.1", strconv.Itoa(tu.Port))).Get(fmt.Sprintf("https://%s:%d/", tu.Host, tu.Port))
		if err != nil {
			t.Fatalf("GET right after ready: %v", err)
		}
		resp.Body.Close()
	})
	t.Run("exec", func(t *testing.T) {
		t.Parallel()
		id := createRaw(t, map[string]any{
			"readiness_probe": map[string]any{"exec_argv": []string{"sh", "-c", "test -f /tmp/ready"}},
		})
		if waitReady(t, id, 1) {
			t.Fatal("ready before /tmp/ready existed")
		}
		if code := execExit(t, id, "touch", "/tmp/ready").ExitCode; code != 0 {
			t.Fatalf("touch: exit %d", code)
		}
		if !waitReady(t, id, 10) {
			t.Fatal("not ready 10 s after /tmp/ready appeared")
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		id := createRaw(t, nil)
		if !waitReady(t, id, 5) {
			t.Fatal("a running sandbox without a probe is not ready")
		}
	})
}

func TestTunnelBadInput(t *testing.T) {
	needGust(t)
	many := make([]int, 17)
	for i := range many {
		many[i] = 8000 + i
	}
	for name, fields := range map[string]map[string]any{
		"port 0":                  {"encrypted_ports": []int{0}},
		"port 65536":              {"unencrypted_ports": []int{65536}},
		"negative port":           {"h2_ports": []int{-1}},
		"duplicate":               {"encrypted_ports": []int{8000, 8000}},
		"duplicate across":        {"encrypted_ports": []int{8000}, "unencrypted_ports": []int{8000}},
		"too many":                {"encrypted_ports": many},
		"block_network + ports":   {"encrypted_ports": []int{8000}, "block_network": true},
		"gvisor, blocked + ports": {"encrypted_ports": []int{8000}, "isolation": "gvisor", "block_network": true},
		"bad cidr":                {"encrypted_ports": []int{8000}, "inbound_cidr_allowlist": []string{"10.0.0.0/33"}},
		"probe both":              {"readiness_probe": map[string]any{"tcp_port": 8000, "exec_argv": []string{"true"}}},
		"probe neither":           {"readiness_probe": map[string]any{}},
		"probe bad port":          {"readiness_probe": map[string]any{"tcp_port": 70000}},
		"probe bad interval":      {"readiness_probe": map[string]any{"tcp_port": 8000, "interval_ms": 1}},
		"ports as strings":        {"encrypted_ports": []string{"8000"}},
	} {
		t.Run(name, func(t *testing.T) {
			req := map[string]any{"app_id": gust.appID, "image_id": gust.imageID}
			for k, v := range fields {
				req[k] = v
			}
			code, body := raw(t, "POST", "/v1/sandboxes", js(req))
			if code != 400 || !strings.Contains(body, `"error"`) {
				t.Fatalf("HTTP %d %s, want a 400 JSON error", code, body)
			}
		})
	}
	t.Run("forward from outside a container", func(t *testing.T) {
		id := createRaw(t, nil)
		code, body := raw(t, "POST", "/v1/sandboxes/"+id+"/tunnels", js(map[string]any{"port": 8000}))
		if code != 400 {
			t.Fatalf("HTTP %d %s, want 400: only a function container forwards its own ports", code, body)
		}
		code, body = raw(t, "GET", "/v1/sandboxes/"+id+"/ready?timeout=abc", nil)
		if code != 400 {
			t.Fatalf("ready?timeout=abc: HTTP %d %s", code, body)
		}
	})
}

// TestPythonTunnels runs testdata/tunnels_sdk.py: Sandbox.create with ports and a readiness
// probe, wait_until_ready and tunnels() through the Python SDK, and modal.forward in a function
// container, each reached over HTTPS (trusting gust's CA) and raw TCP.
func TestPythonTunnels(t *testing.T) {
	needGust(t)
	_, caPath := ingressCA(t)
	dir := filepath.Join(repoRoot(), "sdk", "python")
	cmd := exec.Command("python3", filepath.Join(repoRoot(), "test", "integration", "testdata", "tunnels_sdk.py"))
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+dir, "GUST_INGRESS_CA="+caPath)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("tunnels through the Python SDK: %v", err)
	}
}

// TestCLITunnels drives the CLI (and through it the Go SDK): a sandbox created with a port and
// a TCP probe, `gust sandbox tunnels` listing its URL, curl fetching it.
func TestCLITunnels(t *testing.T) {
	needGust(t)
	out, err := exec.Command(gust.bin, "sandbox", "create", "--app", "integration", "--unencrypted-port", "8000", "--h2-port", "8001",
		"--probe-tcp", "8000", "--wait-ready", "--timeout", "120", "--workdir", "/etc", "--", "python3", "-m", "http.server", "8000").Output()
	if err != nil {
		t.Fatalf("gust sandbox create: %v: %s", err, out)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() { api("POST", "/v1/sandboxes/"+id+"/terminate", nil, nil) })
	createdMu.Lock()
	created = append(created, id)
	createdMu.Unlock()
	out, err = exec.Command(gust.bin, "sandbox", "tunnels", id).CombinedOutput()
	if err != nil {
		t.Fatalf("gust sandbox tunnels: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "PORT") {
		t.Fatalf("gust sandbox tunnels printed:\n%s", out)
	}
	f := strings.Fields(lines[1]) // 8000 URL HOST:PORT
	g := strings.Fields(lines[2]) // 8001 URL -
	if len(f) != 3 || f[0] != "8000" || !strings.HasPrefix(f[2], "127.0.0.1:") || len(g) != 3 || g[0] != "8001" || g[2] != "-" {
		t.Fatalf("gust sandbox tunnels printed:\n%s", out)
	}
	host, port, _ := strings.Cut(strings.TrimPrefix(f[1], "https://"), ":")
	_, caPath := ingressCA(t)
	body, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", caPath, "--resolve", host+":"+port+":127.0.0.1", f[1]+"/os-release").CombinedOutput()
	if err != nil || !strings.Contains(string(body), "Debian") {
		t.Fatalf("curl %s: %v: %s", f[1], err, body)
	}
	body, err = exec.Command("curl", "-sS", "--max-time", "10", "http://"+f[2]+"/os-release").CombinedOutput()
	if err != nil || !strings.Contains(string(body), "Debian") {
		t.Fatalf("curl over the raw TCP tunnel %s: %v: %s", f[2], err, body)
	}
}

// TestTunnelsGVisor reaches a gVisor sandbox's port through the ingress: gVisor's loopback
// lives in its own netstack, so the worker dials the sandbox's address on its bridge (runsc
// runs its netstack in the container's namespace), and the TCP probe does the same.
func TestTunnelsGVisor(t *testing.T) {
	needGust(t)
	id := createRaw(t, map[string]any{
		"command":         []string{"python3", "-c", tunnelServer, "0"},
		"isolation":       "gvisor",
		"encrypted_ports": []int{8000},
		"readiness_probe": map[string]any{"tcp_port": 8000},
	})
	if !waitReady(t, id, 60) {
		t.Fatalf("the gVisor sandbox's server was not ready within 60 s\n%s", gustLog())
	}
	tu := tunnelsOf(t, id)[8000]
	pool, _ := ingressCA(t)
	url := fmt.Sprintf("https://%s:%d/", tu.Host, tu.Port)
	resp, err := tunnelClient(pool, net.JoinHostPort("127.0.0.1", strconv.Itoa(tu.Port))).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello from the sandbox\n" {
		t.Fatalf("GET %s = %d %q", url, resp.StatusCode, b)
	}
}

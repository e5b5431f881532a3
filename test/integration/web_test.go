package integration

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runWebPy runs a testdata program with the Python SDK and returns its output.
func runWebPy(t *testing.T, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("python3", append([]string{filepath.Join(repoRoot(), "test", "integration", "testdata", script)}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+filepath.Join(repoRoot(), "sdk", "python"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// webDeploy deploys testdata/web_app.py as app name and returns its web endpoints' URLs; the
// app is stopped at the test's end.
func webDeploy(t *testing.T, name string) (wsgiID string, urls map[string]string) {
	t.Helper()
	out := runWebPy(t, "web_app.py", name)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res struct {
		AppID string            `json:"app_id"`
		URLs  map[string]string `json:"urls"`
		WSGI  string            `json:"wsgi_id"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("web_app.py printed no URLs: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = api("POST", "/v1/apps/"+res.AppID+"/stop", map[string]any{}, nil) })
	return res.WSGI, res.URLs
}

// TestWebEndpoints deploys Modal-style web endpoints written with the standard library only and
// calls them with plain HTTPS requests through the ingress: methods, bodies, headers and status
// codes; a streamed answer whose events arrive as produced; a websocket echo; a web_server;
// proxy auth; scale from zero; a label that another app holds; bad input.
func TestWebEndpoints(t *testing.T) {
	needGust(t)
	pool, _ := ingressCA(t)
	wsgiID, urls := webDeploy(t, "web-test")
	t.Logf("URLs: %v", urls)
	u, err := url.Parse(urls["wsgi"])
	if err != nil || !strings.HasPrefix(u.Host, "default--echo.") {
		t.Fatalf("wsgi URL %q: want https://default--echo.<domain>:<port> (%v)", urls["wsgi"], err)
	}
	if a, _ := url.Parse(urls["asgi"]); a == nil || !strings.HasPrefix(a.Host, "default--web-test-asgi.") {
		t.Fatalf("asgi URL %q: want the default label <app>-<function>", urls["asgi"])
	}
	if !strings.Contains(urls["remote_error"], "cannot be invoked for remote execution") {
		t.Fatalf(".remote() on a web endpoint: want Modal's InvalidError, got %q", urls["remote_error"])
	}
	ingressAddr := net.JoinHostPort("127.0.0.1", u.Port())
	client := tunnelClient(pool, ingressAddr)
	client.Timeout = 60 * time.Second // the first request starts a container

	t.Run("wsgi", func(t *testing.T) {
		req, _ := http.NewRequest("POST", urls["wsgi"]+"/some/path?x=1", strings.NewReader("the body"))
		req.Header.Set("X-Test", "header-value")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got map[string]string
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil {
			t.Fatalf("POST: %d %s", resp.StatusCode, b)
		}
		want := map[string]string{"method": "POST", "path": "/some/path", "query": "x=1", "body": "the body", "x_test": "header-value"}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("POST: %s = %q, want %q (%s)", k, got[k], v, b)
			}
		}
		if resp.Header.Get("X-Served-By") != "wsgi" {
			t.Fatalf("response header lost: %v", resp.Header)
		}
		resp, err = client.Get(urls["wsgi"] + "/teapot")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 418 || string(b) != "short and stout" {
			t.Fatalf("GET /teapot: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("streaming", func(t *testing.T) {
		for _, tc := range []struct{ name, url, method, last string }{
			{"server-sent events (wsgi)", urls["wsgi"] + "/stream", "GET", "data: event 2\n\n"},
			{"chunked (asgi)", urls["asgi"] + "/", "POST", "end\n"},
		} {
			start := time.Now()
			req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader("x"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			firstAt := time.Since(start)
			rest, _ := io.ReadAll(br)
			resp.Body.Close()
			total := time.Since(start)
			t.Logf("%s: status %d %s, first line %q after %v, all after %v (rest %q)", tc.name, resp.StatusCode, resp.Proto, first, firstAt, total, rest)
			if err != nil || resp.StatusCode/100 != 2 || !strings.HasSuffix(string(rest), tc.last) {
				t.Fatalf("%s: %d %v %q", tc.name, resp.StatusCode, err, rest)
			}
			if total-firstAt < 800*time.Millisecond {
				t.Fatalf("%s: the stream arrived at once (first line after %v, all after %v): something buffered it", tc.name, firstAt, total)
			}
		}
	})

	t.Run("websocket", func(t *testing.T) {
		for _, name := range []string{"asgi", "wsserver"} { // asgi_app, and a server of its own under web_server
			a, _ := url.Parse(urls[name])
			got := wsEcho(t, pool, ingressAddr, a.Hostname(), []string{"hello", "again"})
			if len(got) != 2 || got[0] != "echo: hello" || got[1] != "echo: again" {
				t.Fatalf("%s: websocket echo = %q", name, got)
			}
		}
	})

	t.Run("web_server", func(t *testing.T) {
		resp, b := webGet(t, client, urls["files"]+"/hello.txt")
		if resp.StatusCode != 200 || b != "hello from http.server\n" {
			t.Fatalf("http.server under web_server: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("proxy auth", func(t *testing.T) {
		var tok struct {
			ID     string `json:"token_id"`
			Secret string `json:"token_secret"`
		}
		if err := api("POST", "/v1/tokens", map[string]any{"name": "web-proxy-auth"}, &tok); err != nil || tok.ID == "" {
			t.Fatalf("token: %v %+v", err, tok)
		}
		other, _ := newWorkspace(t, "web-other")
		otherID, otherSecret, _ := strings.Cut(other, ":")
		for _, tc := range []struct {
			name, key, secret string
			want              int
		}{
			{"no headers", "", "", 401},
			{"wrong secret", tok.ID, "nope", 401},
			{"another workspace's token", otherID, otherSecret, 401},
			{"the workspace's token", tok.ID, tok.Secret, 200},
		} {
			req, _ := http.NewRequest("GET", urls["private"]+"/", nil)
			if tc.key != "" {
				req.Header.Set("Modal-Key", tc.key)
				req.Header.Set("Modal-Secret", tc.secret)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s: %d %s, want %d", tc.name, resp.StatusCode, b, tc.want)
			}
			if tc.want == 200 && strings.Contains(string(b), tok.ID) {
				t.Fatalf("the Modal-Key header reached the app: %s", b)
			}
		}
	})

	t.Run("scale from zero", func(t *testing.T) {
		// scaledown_window=2: the wsgi endpoint's container goes after 2 s idle.
		deadline := time.Now().Add(30 * time.Second)
		for functionContainers(t, wsgiID) > 0 {
			if time.Now().After(deadline) {
				t.Fatal("the wsgi endpoint did not scale to zero")
			}
			time.Sleep(200 * time.Millisecond)
		}
		start := time.Now()
		resp, err := client.Get(urls["wsgi"] + "/cold")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("cold request: %d in %v", resp.StatusCode, time.Since(start))
		if resp.StatusCode != 200 {
			t.Fatalf("cold request: %d", resp.StatusCode)
		}
		if n := functionContainers(t, wsgiID); n != 1 {
			t.Fatalf("after a request to the scaled-to-zero endpoint it has %d containers, want 1", n)
		}
	})

	t.Run("concurrency and timeout", func(t *testing.T) {
		get := func(u string) (int, time.Duration) {
			start := time.Now()
			resp, err := client.Get(u)
			if err != nil {
				t.Error(err)
				return 0, 0
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode, time.Since(start)
		}
		if code, _ := get(urls["serial"] + "/sleep/0"); code != 200 { // warm
			t.Fatalf("serial: %d", code)
		}
		for _, tc := range []struct {
			name, url string
			maxWall   time.Duration
			minWall   time.Duration
		}{
			// @concurrent(max_inputs=20): four requests share the one warm container at once.
			{"concurrent", urls["wsgi"] + "/sleep/1", 1900 * time.Millisecond, 0},
			// max_inputs 1, max_containers 1: each waits for the one before.
			{"serial", urls["serial"] + "/sleep/0.5", 0, 1900 * time.Millisecond},
		} {
			start := time.Now()
			done := make(chan int, 4)
			for range 4 {
				go func() { code, _ := get(tc.url); done <- code }()
			}
			for range 4 {
				if code := <-done; code != 200 {
					t.Fatalf("%s: %d", tc.name, code)
				}
			}
			wall := time.Since(start)
			t.Logf("%s: four requests in %v", tc.name, wall)
			if tc.maxWall > 0 && wall > tc.maxWall || wall < tc.minWall {
				t.Fatalf("%s: four requests took %v (want between %v and %v)", tc.name, wall, tc.minWall, tc.maxWall)
			}
			if n := functionContainers(t, wsgiID); tc.name == "concurrent" && n != 1 {
				t.Fatalf("four concurrent requests to a @concurrent endpoint made %d containers, want 1", n)
			}
		}
		code, took := get(urls["serial"] + "/sleep/5")
		if code != http.StatusGatewayTimeout || took > 4*time.Second {
			t.Fatalf("a request past the function's timeout of 2 s: %d after %v, want 504 after about 2 s", code, took)
		}
	})

	t.Run("fastapi missing", func(t *testing.T) {
		resp, err := client.Post(urls["needs_fastapi"], "application/json", strings.NewReader(`{"a": 1}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "needs FastAPI in the function's image") {
			t.Fatalf("fastapi_endpoint without FastAPI: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("logs", func(t *testing.T) {
		var fn struct {
			AppID string `json:"app_id"`
		}
		if err := api("GET", "/v1/functions/"+wsgiID, nil, &fn); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			req, _ := http.NewRequest("GET", gust.url+"/v1/apps/"+fn.AppID+"/logs", nil)
			req.Header.Set("Authorization", "Bearer "+gust.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "wsgi request POST /some/path") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the app's print in a request is not in its logs: %d %s", resp.StatusCode, b)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("label clash", func(t *testing.T) {
		out := runWebPy(t, "web_clash.py")
		if !strings.Contains(out, "refused: ConflictError") || !strings.Contains(out, `"echo" is already used`) {
			t.Fatalf("a second app took the label echo: %s", out)
		}
		resp, err := client.Post(urls["wsgi"]+"/", "text/plain", strings.NewReader("still mine"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "still mine") {
			t.Fatalf("after the refused clash: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("class", func(t *testing.T) {
		if urls["model_ping"] != "2" || !strings.Contains(urls["model"], "--web-test-model-web.") {
			t.Fatalf("class Model: ping.remote(1) = %q, web URL %q (want 2, and the label <app>-<class>-<method>)", urls["model_ping"], urls["model"])
		}
		resp, b := webGet(t, client, urls["model"])
		if resp.StatusCode != 200 || b != "loaded by @enter" {
			t.Fatalf("a class's web endpoint: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("gust app show", func(t *testing.T) {
		cmd := exec.Command(gust.bin, "app", "show", "web-test")
		cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "wsgi => "+urls["wsgi"]) {
			t.Fatalf("gust app show: %v\n%s", err, out)
		}
	})

	t.Run("unknown host", func(t *testing.T) {
		resp, b := webGet(t, client, strings.Replace(urls["wsgi"], "--echo.", "--nothing-here.", 1))
		if resp.StatusCode != 404 || !strings.Contains(b, "no web endpoint") {
			t.Fatalf("unknown label: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct{ web map[string]any }{
			{map[string]any{"type": "wsgi", "label": "Bad_Label"}},
			{map[string]any{"type": "web_server"}},
			{map[string]any{"type": "nope"}},
		} {
			err := api("POST", "/v1/apps/publish", map[string]any{"name": "web-bad", "mode": "deployed", "code": map[string]any{"blob": "x", "module": "m"},
				"functions": []map[string]any{{"name": "f", "image_id": gust.imageID, "web": tc.web}}}, nil)
			if ae, ok := err.(*apiError); !ok || ae.Status != 400 {
				t.Fatalf("publish %v: %v, want 400", tc.web, err)
			}
		}
		out := runWebPy(t, "web_bad.py")
		for _, want := range []string{
			"InvalidError: Invalid label: 'Not_A_Label'",
			"InvalidError: The first argument of `@web_server` must be the local port",
			"InvalidError: Positional arguments are not allowed",
		} {
			if !strings.Contains(out, want) {
				t.Fatalf("want %q in:\n%s", want, out)
			}
		}
	})
}

// functionContainers is how many live containers a function has.
func functionContainers(t *testing.T, id string) int {
	t.Helper()
	var out struct {
		Stats struct {
			Containers int `json:"containers"`
		} `json:"stats"`
	}
	if err := api("GET", "/v1/functions/"+id, nil, &out); err != nil {
		t.Fatal(err)
	}
	return out.Stats.Containers
}

// wsEcho opens a websocket to host through the ingress, sends each message as a text frame
// and returns the text frames that come back, one per message.
func wsEcho(t *testing.T, pool *x509.CertPool, ingressAddr, host string, msgs []string) []string {
	t.Helper()
	c, err := tlsDialHost(pool, ingressAddr, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	key := make([]byte, 16)
	rand.Read(key)
	k := base64.StdEncoding.EncodeToString(key)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, k)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("websocket handshake: %v %v", resp, err)
	}
	accept := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(accept[:]) {
		t.Fatal("wrong Sec-WebSocket-Accept")
	}
	var got []string
	for _, msg := range msgs {
		mask := [4]byte{7, 8, 9, 10}
		frame := []byte{0x81, 0x80 | byte(len(msg)), mask[0], mask[1], mask[2], mask[3]}
		for i := 0; i < len(msg); i++ {
			frame = append(frame, msg[i]^mask[i%4])
		}
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		var head [2]byte
		if _, err := io.ReadFull(br, head[:]); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, head[1]&0x7f)
		if _, err := io.ReadFull(br, data); err != nil {
			t.Fatal(err)
		}
		got = append(got, string(data))
	}
	return got
}

func tlsDialHost(pool *x509.CertPool, addr, host string) (net.Conn, error) {
	return tls.Dial("tcp", addr, &tls.Config{ServerName: host, RootCAs: pool})
}

// TestWebServe runs `gust serve --modal-compat` on a program written with `import modal`: it
// prints the endpoint's -dev URL, serves it, serves the new code after the file changes, and
// stops the app at Ctrl-C.
func TestWebServe(t *testing.T) {
	needGust(t)
	pool, _ := ingressCA(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "served.py")
	write := func(version string) {
		src := `import modal

app = modal.App("serve-test")


@app.function()
@modal.wsgi_app()
def web():
    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"` + version + `"]
    return wsgi
`
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("version one")
	cmd := exec.Command(gust.bin, "serve", "--modal-compat", "--timeout", "120", file)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	urlCh := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Logf("gust serve: %s", sc.Text())
			if _, u, ok := strings.Cut(sc.Text(), "web => "); ok {
				urlCh <- strings.TrimSpace(u)
			}
		}
		close(urlCh)
	}()
	var webURL string
	select {
	case webURL = <-urlCh:
	case <-time.After(60 * time.Second):
		t.Fatalf("gust serve printed no URL; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(webURL, "--serve-test-web-dev.") {
		t.Fatalf("gust serve URL %q: want the -dev label", webURL)
	}
	u, _ := url.Parse(webURL)
	client := tunnelClient(pool, net.JoinHostPort("127.0.0.1", u.Port()))
	body := func() (int, string) {
		resp, err := client.Get(webURL)
		if err != nil {
			return 0, err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	waitFor := func(want string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			code, b := body()
			if code == 200 && b == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want %q, got %d %q; stderr:\n%s", want, code, b, stderr.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("version one")
	write("version two")
	waitFor("version two")
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gust serve at Ctrl-C: %v\n%s", err, stderr.String())
	}
	if code, b := body(); code != 404 {
		t.Fatalf("after gust serve stopped, the endpoint answers %d %q, want 404", code, b)
	}
}

// TestWebSplitWorker serves a web endpoint with `gust server` and `gust worker` apart: the
// ingress on the server machine reaches the container through the worker's connect endpoint
// (the same path as tunnels), and the answer streams back.
func TestWebSplitWorker(t *testing.T) {
	needGust(t)
	dir := t.TempDir()
	addr := freePort()
	env := cleanEnv("GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN="+gust.joinToken, "GUST_CONFIG="+filepath.Join(dir, "config.json"))
	server, _ := startDaemon(t, env, "server", "--addr", addr, "--tls", "off", "--data-dir", filepath.Join(dir, "server"),
		"--image-cache", imageCache, "--no-install")
	worker, workerOut := startDaemon(t, env, "worker", "--server", "http://"+addr, "--data-dir", filepath.Join(dir, "worker"),
		"--image-cache", imageCache, "--no-install", "--sandbox-disk", "256", "--warm-pool", "0")
	for i := 0; !strings.Contains(workerOut.String(), "registered as"); i++ {
		if i > 600 {
			t.Fatalf("the worker did not register:\n%s", workerOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	prog := filepath.Join(dir, "split_web.py")
	src := `import time
import gust as modal

app = modal.App("web-split")


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(3):
        yield b"part %d\n" % i
        time.sleep(0.4)


@app.function()
@modal.wsgi_app()
def web():
    return stream


if __name__ == "__main__":
    app.deploy()
    print("URL", web.get_web_url())
`
	if err := os.WriteFile(prog, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	py := exec.Command("python3", prog)
	py.Env = append(cleanEnv("GUST_SERVER_URL=http://"+addr, "GUST_TOKEN="+gust.token), "PYTHONPATH="+filepath.Join(repoRoot(), "sdk", "python"))
	out, err := py.CombinedOutput()
	_, webURL, ok := strings.Cut(strings.TrimSpace(string(out)), "URL ")
	if err != nil || !ok {
		t.Fatalf("deploying: %v\n%s", err, out)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "server", "ingress-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	u, _ := url.Parse(webURL)
	client := tunnelClient(pool, net.JoinHostPort("127.0.0.1", u.Port()))
	client.Timeout = 60 * time.Second
	start := time.Now()
	resp, err := client.Get(webURL)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	first, _ := br.ReadString('\n')
	firstAt := time.Since(start)
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	t.Logf("through a worker of its own: %d, %q after %v, all after %v", resp.StatusCode, first, firstAt, time.Since(start))
	if resp.StatusCode != 200 || first+string(rest) != "part 0\npart 1\npart 2\n" || time.Since(start)-firstAt < 600*time.Millisecond {
		t.Fatalf("through a worker of its own: %d %q %q (first after %v, all after %v)", resp.StatusCode, first, rest, firstAt, time.Since(start))
	}
	stopDaemon(worker)
	stopDaemon(server)
	if err := checkNoLeftovers(filepath.Join(dir, "worker")); err != nil {
		t.Error(err)
	}
}

// webGet GETs url and returns the answer and its body.
func webGet(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

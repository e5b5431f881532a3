package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/gust-run/gust/sdk/go"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// cleanEnv is the test's environment without the variables that point clients at the shared
// gust, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GUST_SERVER_URL", "GUST_TOKEN", "GUST_TOKEN_ID", "GUST_TOKEN_SECRET", "GUST_PROFILE", "GUST_CONFIG",
			"GUST_TLS_FINGERPRINT", "GUST_TLS_CA_FILE", "GUST_SERVER_FINGERPRINT", "GUST_SERVER_CA":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startDaemon starts gust with args and returns it with its output; the test stops it.
func startDaemon(t *testing.T, env []string, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(gust.bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr, cmd.Env = out, out, env
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	})
	return cmd, out
}

func stopDaemon(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
}

// TestTLSSplit runs `gust server` and `gust worker` apart over TLS, with certificates each
// makes at first start: the server writes its fingerprint into the client config, the worker
// pins it (--server-fingerprint) and serves its own API over TLS, whose fingerprint the
// server pins at registration. Through it: a sandbox with an exec (relayed server → worker
// over TLS) and a function call, from the Python SDK, the Go SDK and the CLI, all reading the
// client config. Refused: a client with a wrong fingerprint (both SDKs, the CLI), a worker
// with a wrong one, a plain-HTTP worker, and the registration of a worker whose API is plain
// HTTP.
func TestTLSSplit(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	addr := freePort()
	url := "https://" + addr
	cfgPath := filepath.Join(dir, "config.json")
	env := cleanEnv("GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN="+gust.joinToken, "GUST_CONFIG="+cfgPath)
	server, serverOut := startDaemon(t, env, "server", "--addr", addr, "--tls", "on", "--data-dir", filepath.Join(dir, "server"),
		"--image-cache", imageCache, "--no-install")

	// The client config: the https URL and the certificate's fingerprint.
	p := waitClientConfig(t, cfgPath, serverOut)
	if p.ServerURL != url || len(p.TLSFingerprint) != 64 {
		t.Fatalf("client config profile: %+v", p)
	}
	fp := p.TLSFingerprint
	if !strings.Contains(serverOut.String(), fp) {
		t.Errorf("the server's log does not show its fingerprint:\n%s", serverOut)
	}
	if fi, err := os.Stat(filepath.Join(dir, "server", "tls", "server.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the server's key: %v %v", fi, err)
	}
	c := clientFor(t, cfgPath, env)
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("health over TLS with the pinned fingerprint: %v", err)
	}

	// Plain HTTP to the TLS server gets nowhere.
	if resp, err := http.Get("http://" + addr + "/v1/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d", resp.StatusCode)
		}
	}
	// A registration over TLS for a worker whose own API is plain HTTP is refused.
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	body, _ := json.Marshal(map[string]any{"name": "plain-worker", "addr": "http://127.0.0.1:9", "cpu": 1, "memory": 1024,
		"isolation": []string{"runc"}, "api_token": strings.Repeat("x", 40)})
	req, _ := http.NewRequest("POST", url+"/v1/workers/register", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gust.joinToken)
	resp, err := pinned.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "must too") {
		t.Fatalf("registering a plain-HTTP worker with a TLS server: %d %s", resp.StatusCode, b)
	}
	// Workers that cannot join: one that speaks plain HTTP to the server, one with a wrong pin.
	wrongPin := strings.Repeat("ab", 32)
	plainWorker, plainOut := startDaemon(t, env, "worker", "--server", "http://"+addr, "--data-dir", filepath.Join(dir, "plain"),
		"--image-cache", imageCache, "--no-install", "--warm-pool", "0")
	badWorker, badOut := startDaemon(t, env, "worker", "--server", url, "--server-fingerprint", wrongPin, "--data-dir", filepath.Join(dir, "bad"),
		"--image-cache", imageCache, "--no-install", "--warm-pool", "0")
	waitLog := func(out *lockedBuffer, what string) {
		t.Helper()
		for i := 0; !strings.Contains(out.String(), what); i++ {
			if i > 400 {
				t.Fatalf("want %q in the worker's log:\n%s", what, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLog(plainOut, "HTTP request to an HTTPS server")
	waitLog(badOut, "pinned fingerprint")
	stopDaemon(plainWorker)
	stopDaemon(badWorker)
	if strings.Contains(serverOut.String(), "registered (") {
		t.Fatalf("a worker registered:\n%s", serverOut)
	}

	// The real worker.
	worker, workerOut := startDaemon(t, env, "worker", "--server", url, "--server-fingerprint", fp, "--data-dir", filepath.Join(dir, "worker"),
		"--image-cache", imageCache, "--no-install", "--sandbox-disk", "256", "--warm-pool", "0")
	waitLog(workerOut, "registered as")
	if !strings.Contains(serverOut.String(), "at https://") {
		t.Fatalf("the worker registered without TLS:\n%s", serverOut)
	}
	if fi, err := os.Stat(filepath.Join(dir, "worker", "tls", "worker.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the worker's key: %v %v", fi, err)
	}

	// The Go SDK: a sandbox and an exec, relayed to the worker over TLS.
	echoInSandbox(ctx, t, c, "tls-split", "over tls", serverOut)

	// The Python SDK, reading the same client config: a function call and a sandbox.
	prog := `import gust as modal
app = modal.App("tls-split-py")

@app.function()
def double(x):
    return 2 * x

if __name__ == "__main__":
    with app.run():
        print("remote", double.remote(21))
        sb = modal.Sandbox.create(app=app)
        p = sb.exec("echo", "py-sandbox")
        print("exec", p.stdout.read().strip())
        sb.terminate()
`
	progPath := filepath.Join(dir, "tlsprog.py")
	if err := os.WriteFile(progPath, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	pyEnv := append(cleanEnv("GUST_CONFIG="+cfgPath), "PYTHONPATH="+filepath.Join(repoRoot(), "sdk", "python"))
	py := exec.CommandContext(ctx, "python3", progPath)
	py.Env = pyEnv
	out, err := py.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "remote 42") || !strings.Contains(string(out), "exec py-sandbox") {
		t.Fatalf("the Python SDK over TLS: %v\n%s", err, out)
	}
	// The CLI.
	cli := exec.CommandContext(ctx, gust.bin, "app", "list")
	cli.Env = cleanEnv("GUST_CONFIG=" + cfgPath)
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), "tls-split") {
		t.Fatalf("gust app list over TLS: %v\n%s", err, out)
	}

	// A wrong pin: every client refuses the server.
	wrongEnv := cleanEnv("GUST_CONFIG="+cfgPath, "GUST_TLS_FINGERPRINT="+wrongPin)
	wc := clientFor(t, cfgPath, wrongEnv)
	if _, err := wc.LookupApp(ctx, "tls-split", false); !errors.Is(err, sdk.ErrCertificateMismatch) {
		t.Fatalf("the Go SDK with a wrong fingerprint: %v", err)
	}
	py = exec.CommandContext(ctx, "python3", "-c", `import gust; gust.App.lookup("tls-split")`)
	py.Env = append(wrongEnv, "PYTHONPATH="+filepath.Join(repoRoot(), "sdk", "python"))
	if out, err := py.CombinedOutput(); err == nil || !strings.Contains(string(out), "pinned fingerprint") {
		t.Fatalf("the Python SDK with a wrong fingerprint: %v\n%s", err, out)
	}
	cli = exec.CommandContext(ctx, gust.bin, "app", "list")
	cli.Env = wrongEnv
	if out, err := cli.CombinedOutput(); err == nil || !strings.Contains(string(out), "pinned fingerprint") {
		t.Fatalf("the CLI with a wrong fingerprint: %v\n%s", err, out)
	}

	stopDaemon(worker)
	stopDaemon(server)
	if err := checkNoLeftovers(filepath.Join(dir, "worker")); err != nil {
		t.Error(err)
	}
}

// clientFor is the Go SDK's client as a process with environment env (KEY=VALUE lines) and
// the client config file at path would make it.
func clientFor(t *testing.T, path string, env []string) *sdk.Client {
	t.Helper()
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	f, err := sdk.ReadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := sdk.Resolve(func(k string) string { return m[k] }, f)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sdk.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSUpAllAddresses: `gust up --addr 0.0.0.0:PORT` serves TLS (auto: beyond loopback), its
// own worker pins it, and the client config it writes names https://127.0.0.1:PORT with the
// fingerprint (not 0.0.0.0); a sandbox and an exec run through it from the Go SDK.
func TestTLSUpAllAddresses(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	_, port, _ := strings.Cut(freePort(), ":")
	cfgPath := filepath.Join(dir, "config.json")
	env := cleanEnv("GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN="+gust.joinToken, "GUST_CONFIG="+cfgPath)
	// --network=false: no bridge of its own, whose range would race with the other gusts' (parallel tests).
	up, out := startDaemon(t, env, "up", "--network=false", "--addr", "0.0.0.0:"+port, "--data-dir", filepath.Join(dir, "data"),
		"--image-cache", imageCache, "--no-install", "--sandbox-disk", "256", "--warm-pool", "0")
	defer stopDaemon(up)
	p := waitClientConfig(t, cfgPath, out)
	if p.ServerURL != "https://127.0.0.1:"+port || len(p.TLSFingerprint) != 64 {
		t.Fatalf("client config profile: %+v\n%s", p, out)
	}
	echoInSandbox(ctx, t, clientFor(t, cfgPath, env), "tls-up", "all addresses", out)
}

// waitClientConfig waits up to 10 s for a starting gust (its output: out) to write the client
// config at path, and returns its default profile.
func waitClientConfig(t *testing.T, path string, out *lockedBuffer) sdk.Profile {
	t.Helper()
	for i := 0; ; i++ {
		f, err := sdk.ReadConfigFile(path)
		if err == nil {
			return f.Profiles[sdk.DefaultProfile]
		}
		if i > 200 {
			t.Fatalf("gust wrote no client config: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// echoInSandbox creates a sandbox in app through client c, checks that an exec echoes text
// back, and terminates it; out is the gust's output, shown on failure.
func echoInSandbox(ctx context.Context, t *testing.T, c *sdk.Client, app, text string, out *lockedBuffer) {
	t.Helper()
	a, err := c.LookupApp(ctx, app, true)
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.DebianSlim(ctx, sdk.ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, sdk.SandboxOptions{App: a.ID, Image: img.ID})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	stdout, _, code, err := sb.Run(ctx, sdk.ExecOptions{Command: []string{"echo", text}})
	if err != nil || code != 0 || string(stdout) != text+"\n" {
		t.Fatalf("exec: %q %d %v\n%s", stdout, code, err, out)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
}

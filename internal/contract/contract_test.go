package contract

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/server"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
	gust "github.com/gust-run/gust/sdk/go"
)

const (
	token     = "contract-token"
	joinToken = "contract-join-token"
	// fakeAPIToken is what the server presents to the fake worker's API.
	fakeAPIToken = "0123456789abcdef0123456789abcdef"
)

// TestSDKAgainstServer drives the Go SDK through the server's real HTTP API, with a fake
// worker behind it. Each step checks what the SDK reads back against what it sent, and what
// the worker was sent, so a field renamed on either side fails here.
func TestSDKAgainstServer(t *testing.T) {
	env := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := env.client

	h, err := c.Health(ctx)
	if err != nil || !h.OK || h.Version != server.Version {
		t.Fatalf("health: %+v, %v", h, err)
	}

	var app *gust.App
	t.Run("apps", func(t *testing.T) {
		if _, err := c.LookupApp(ctx, "contract", false); !errors.Is(err, gust.ErrNotFound) {
			t.Fatalf("looking up a missing app: %v, want the SDK's not found", err)
		}
		app, err = c.LookupApp(ctx, "contract", true)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(app.ID, "ap-") || app.Name != "contract" || app.CreatedAt.IsZero() {
			t.Fatalf("app %+v", app)
		}
		again, err := c.LookupApp(ctx, "contract", false)
		if err != nil || again.ID != app.ID {
			t.Fatalf("looking the app up again: %+v, %v", again, err)
		}
	})
	if app == nil {
		t.FailNow()
	}

	im := env.scratchImage(t)
	t.Run("images", func(t *testing.T) {
		got, err := c.Image(ctx, im.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != im.ID || got.Kind != image.KindScratch || got.CreatedAt.IsZero() || got.ParentID != "" {
			t.Fatalf("the SDK read image %+v", got)
		}
		all, err := c.ListImages(ctx)
		if err != nil || !slices.ContainsFunc(all, func(i *gust.Image) bool { return i.ID == im.ID }) {
			t.Fatalf("list images: %v, %v", all, err)
		}
	})

	t.Run("sandbox", func(t *testing.T) { env.sandboxSteps(ctx, t, app, im.ID) })
	t.Run("gpus", func(t *testing.T) { env.gpuSteps(ctx, t, app, im.ID) })
	t.Run("secrets", func(t *testing.T) { secretSteps(ctx, t, c) })
	t.Run("dicts and queues", func(t *testing.T) { dictQueueSteps(ctx, t, c) })
	t.Run("volumes", func(t *testing.T) { volumeSteps(ctx, t, c) })
	t.Run("functions", func(t *testing.T) { env.functionSteps(ctx, t, im.ID) })
	t.Run("errors", func(t *testing.T) { env.errorSteps(ctx, t, app, im.ID) })
}

// TestSnapshotLayerChecked: a worker's snapshot answer names the layer directory that other
// sandboxes will mount; one that is not a snapshot in the server's layer directory ("/", a
// host path, another image's layer) is refused and records no image.
func TestSnapshotLayerChecked(t *testing.T) {
	env := start(t)
	ctx := context.Background()
	app, err := env.client.LookupApp(ctx, "snap", true)
	if err != nil {
		t.Fatal(err)
	}
	im := env.scratchImage(t)
	sb, err := env.client.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: im.ID})
	if err != nil {
		t.Fatal(err)
	}
	images := func() int {
		all, err := env.store.ListImages(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}
	before := images()
	for _, bad := range []string{"/", "/etc", filepath.Join(env.layers.Dir, "..", "x"), env.scratchLayers(t, im.ID)[0]} {
		env.worker.mu.Lock()
		env.worker.snapLayer = bad
		env.worker.mu.Unlock()
		resp := env.do(t, "POST", "/v1/sandboxes/"+sb.ID+"/snapshot", "", nil)
		if err := resp.Body.Close(); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("snapshot layer %q: status %d, want 400", bad, resp.StatusCode)
		}
	}
	if images() != before {
		t.Fatal("a refused snapshot recorded an image")
	}
	env.worker.mu.Lock()
	env.worker.snapLayer = filepath.Join(env.layers.Dir, "snap-good")
	env.worker.mu.Unlock()
	resp := env.do(t, "POST", "/v1/sandboxes/"+sb.ID+"/snapshot", "", nil)
	if err := resp.Body.Close(); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusCreated || images() != before+1 {
		t.Fatalf("a good snapshot: status %d", resp.StatusCode)
	}
}

func (env *testEnv) sandboxSteps(ctx context.Context, t *testing.T, app *gust.App, imageID string) {
	c := env.client
	sb, err := c.CreateSandbox(ctx, gust.SandboxOptions{
		App: app.ID, Image: imageID, Timeout: 90 * time.Second, IdleTimeout: 30 * time.Second,
		CPU: 0.5, MemoryMiB: 256, Workdir: "/work", Env: map[string]string{"K": "V"},
		Name: "box1", Tags: map[string]string{"team": "ml"},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSandbox := func(what string, got *gust.Sandbox) {
		t.Helper()
		if got.ID != sb.ID || got.AppID != app.ID || got.ImageID != imageID || got.Status != gust.StatusRunning ||
			got.Isolation != gust.IsolationRunc || got.Timeout != 90*time.Second || got.IdleTimeout != 30*time.Second ||
			got.CPU != 0.5 || got.MemoryMiB != 256 || got.Workdir != "/work" || got.Name != "box1" ||
			!maps.Equal(got.Tags, map[string]string{"team": "ml"}) || got.CreatedAt.IsZero() || got.StartedAt.IsZero() ||
			!got.FinishedAt.IsZero() || got.ExitCode != nil {
			t.Fatalf("%s: the SDK read %+v", what, got)
		}
	}
	checkSandbox("create", sb)
	got, err := c.Sandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkSandbox("get", got)
	byName, err := c.SandboxFromName(ctx, "contract", "box1")
	if err != nil {
		t.Fatal(err)
	}
	checkSandbox("from name", byName)
	if code, err := sb.Poll(ctx); err != nil || code != nil {
		t.Fatalf("poll of a running sandbox: %v, %v", code, err)
	}

	// What the worker was sent: the sandbox as asked, with the image's layers.
	spec := env.worker.spec(t, sb.ID)
	if spec.Isolation != sandbox.IsolationRunc || !slices.Equal(spec.ImageLayers, env.scratchLayers(t, imageID)) ||
		spec.Env["K"] != "V" || spec.CPU != 0.5 || spec.CPULimit != 0.5 || spec.MemoryMiB != 256 || spec.Workdir != "/work" ||
		spec.Timeout != wire.Duration(90*time.Second) || spec.IdleTimeout != wire.Duration(30*time.Second) || spec.Function != nil {
		t.Fatalf("the worker was sent %+v", spec)
	}

	// Exec: the request reaches the worker as workerproto.ExecRequest (unknown fields refused),
	// and its NDJSON answer reaches the SDK as output and an exit code.
	stdout, stderr, code, err := sb.Run(ctx, gust.ExecOptions{Command: []string{"echo", "hello", "world"},
		Env: map[string]string{"X": "1"}, Workdir: "/tmp", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if string(stdout) != "hello world\n" || string(stderr) != "echo: done\n" || code != 0 {
		t.Fatalf("exec: stdout %q stderr %q exit %d", stdout, stderr, code)
	}
	req := env.worker.lastExec(t)
	if !slices.Equal(req.Command, []string{"echo", "hello", "world"}) || !maps.Equal(req.Env, map[string]string{"X": "1"}) ||
		req.Workdir != "/tmp" || req.Timeout == nil || *req.Timeout != 5 || req.Stream == nil || !*req.Stream || req.PTY {
		t.Fatalf("the worker got exec request %+v", req)
	}
	var out bytes.Buffer
	p, err := sb.Exec(ctx, gust.ExecOptions{Command: []string{"missing"}, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 127 || p.ExitError != "missing: not found" || out.String() != "missing: not found\n" {
		t.Fatalf("a failing exec: exit %d (%q), stderr %q, %v", code, p.ExitError, out.String(), err)
	}
	if !strings.HasPrefix(p.ID, "ex-") {
		t.Fatalf("exec id %q", p.ID)
	}

	if err := sb.SetTags(ctx, map[string]string{"team": "infra"}); err != nil {
		t.Fatal(err)
	}
	if sb.Tags["team"] != "infra" || sb.Status != gust.StatusRunning {
		t.Fatalf("after SetTags: tags %v, status %s", sb.Tags, sb.Status)
	}
	listed, err := c.ListSandboxes(ctx, gust.ListOptions{AppID: app.ID, Tags: map[string]string{"team": "infra"}})
	if err != nil || len(listed) != 1 || listed[0].ID != sb.ID {
		t.Fatalf("list by tag: %v, %v", listed, err)
	}

	// Terminate: the worker is asked, reports 137, and the SDK reads the end.
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	if sb.Status != gust.StatusTerminated || sb.ExitCode == nil || *sb.ExitCode != gust.ExitTerminated || sb.FinishedAt.IsZero() {
		t.Fatalf("after Terminate: %s, exit %v, finished %v", sb.Status, sb.ExitCode, sb.FinishedAt)
	}
	if !env.worker.terminated(sb.ID) {
		t.Fatal("the worker was not asked to terminate the sandbox")
	}
	if code, err := sb.Wait(ctx); err != nil || code != gust.ExitTerminated {
		t.Fatalf("wait after terminate: %d, %v", code, err)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Fatalf("terminating twice: %v", err)
	}
	live, err := c.ListSandboxes(ctx, gust.ListOptions{AppID: app.ID})
	if err != nil || len(live) != 0 {
		t.Fatalf("live sandboxes after terminate: %v, %v", live, err)
	}
	all, err := c.ListSandboxes(ctx, gust.ListOptions{AppID: app.ID, IncludeFinished: true})
	if err != nil || len(all) != 1 || all[0].Status != gust.StatusTerminated || all[0].ExitCode == nil || *all[0].ExitCode != 137 {
		t.Fatalf("all sandboxes after terminate: %v, %v", all, err)
	}
	if _, _, _, err := sb.Run(ctx, gust.ExecOptions{Command: []string{"echo"}}); !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("exec in a terminated sandbox: %v, want the SDK's conflict", err)
	}
}

func secretSteps(ctx context.Context, t *testing.T, c *gust.Client) {
	sec, err := c.CreateSecret(ctx, "db", map[string]string{"USER": "u", "PASSWORD": "p"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if sec.Name != "db" || sec.ID == "" || sec.CreatedAt.IsZero() || !slices.Equal(slices.Sorted(slices.Values(sec.Keys)), []string{"PASSWORD", "USER"}) {
		t.Fatalf("created secret %+v", sec)
	}
	if _, err := c.CreateSecret(ctx, "db", map[string]string{"USER": "v"}, false); !errors.Is(err, gust.ErrConflict) {
		t.Fatalf("creating it again: %v, want the SDK's conflict", err)
	}
	if _, err := c.CreateSecret(ctx, "db", map[string]string{"USER": "v"}, true); err != nil {
		t.Fatalf("overwriting it: %v", err)
	}
	list, err := c.ListSecrets(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "db" || !slices.Equal(list[0].Keys, []string{"USER"}) {
		t.Fatalf("list secrets: %+v, %v", list, err)
	}
	if got, err := c.LookupSecret(ctx, "db"); err != nil || got.ID != list[0].ID {
		t.Fatalf("lookup: %+v, %v", got, err)
	}
	if err := c.DeleteSecret(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LookupSecret(ctx, "db"); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("lookup after delete: %v, want the SDK's not found", err)
	}
	if _, err := c.CreateSecret(ctx, "bad name", map[string]string{"K": "V"}, false); !errors.Is(err, gust.ErrInvalid) {
		t.Fatalf("a bad name: %v, want the SDK's invalid", err)
	}
}

// functionSteps publishes a function as `gust deploy` does (the Go SDK calls deployed
// functions; it does not publish them), then calls it through the SDK. The fake worker's
// runner squares its JSON argument.
func (env *testEnv) functionSteps(ctx context.Context, t *testing.T, imageID string) {
	c := env.client
	var blob struct {
		Blob string `json:"blob"`
	}
	env.raw(t, http.MethodPost, "/v1/blobs", "application/octet-stream", codeTar(t), http.StatusCreated, &blob)
	var pub struct {
		AppID     string            `json:"app_id"`
		Functions map[string]string `json:"functions"`
	}
	spec := map[string]any{"name": "square", "kind": "function", "image_id": imageID, "cpu": 1, "cpu_limit": 2, "memory": 512,
		"env": map[string]string{"F": "1"}, "max_containers": 1}
	env.rawJSON(t, "/v1/apps/publish", map[string]any{"name": "fnapp", "mode": "deployed",
		"code": map[string]string{"blob": blob.Blob, "module": "squares"}, "functions": []any{spec}}, &pub)

	f, err := c.FunctionFromName(ctx, "fnapp", "square")
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != pub.Functions["square"] || f.AppID != pub.AppID || f.Name != "square" || f.Kind != "function" ||
		f.Mode != gust.AppDeployed || f.State != "active" || f.IsGenerator || f.CreatedAt.IsZero() {
		t.Fatalf("the SDK read function %+v", f)
	}
	v, err := f.Remote(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if v != 49.0 {
		t.Fatalf("square(7) = %v (%T), want 49", v, v)
	}
	in := env.worker.lastInput(t)
	if in.Format != "json" || string(in.Args) != `{"args":[7],"kwargs":{}}` {
		t.Fatalf("the runner got input %s in format %q", in.Args, in.Format)
	}
	run := env.worker.functionSpec(t, f.ID)
	if run.Function == nil || run.Function.Module != "squares" || run.Function.Name != "square" || run.Function.CodeBlob != blob.Blob ||
		run.CPU != 1 || run.CPULimit != 2 || run.MemoryMiB != 512 || run.Env["F"] != "1" {
		t.Fatalf("the function's container was sent %+v (function %+v)", run, run.Function)
	}

	call, err := f.Spawn(ctx, 12)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := call.Get(ctx, 10*time.Second, &n); err != nil || n != 144 {
		t.Fatalf("spawned square(12): %d, %v", n, err)
	}
	fc, err := c.FunctionCallFromID(ctx, call.ID)
	if err != nil || fc.FunctionID != f.ID || fc.Count != 1 || fc.Done != 1 {
		t.Fatalf("the call as read back: %+v, %v", fc, err)
	}
	if _, err := f.Remote(ctx, "not a number"); err == nil {
		t.Fatal("a failing input returned no error")
	} else if re := (*gust.RemoteError)(nil); !errors.As(err, &re) || re.Type != "TypeError" || re.Traceback == "" {
		t.Fatalf("a failing input: %v, want a *RemoteError TypeError with its traceback", err)
	}

	apps, err := c.GetApp(ctx, pub.AppID)
	if err != nil {
		t.Fatal(err)
	}
	if apps.State != gust.AppDeployed || apps.FunctionCount != 1 || len(apps.Functions) != 1 || apps.Functions[0].ID != f.ID {
		t.Fatalf("the app as read back: %+v", apps)
	}
	if err := f.Refresh(ctx); err != nil || f.Stats.Containers != 1 {
		t.Fatalf("function stats %+v, %v; want its one container", f.Stats, err)
	}

	// Stopping the app stops its container through the worker.
	if err := c.StopApp(ctx, pub.AppID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !env.worker.terminated(run.ID) {
		if time.Now().After(deadline) {
			t.Fatal("the function's container was not terminated after its app stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (env *testEnv) errorSteps(ctx context.Context, t *testing.T, app *gust.App, imageID string) {
	c := env.client
	_, err := c.Sandbox(ctx, "sb-nothing")
	var apiErr *gust.APIError
	if !errors.Is(err, gust.ErrNotFound) || !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || !strings.Contains(apiErr.Message, "sb-nothing") {
		t.Fatalf("an unknown sandbox: %v, want the SDK's not found with status 404", err)
	}
	if _, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: imageID, MemoryMiB: 1}); !errors.Is(err, gust.ErrInvalid) {
		t.Fatalf("too little memory: %v, want the SDK's invalid", err)
	}
	if _, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: imageID, Isolation: gust.IsolationGVisor}); !errors.Is(err, gust.ErrUnavailable) {
		t.Fatalf("an isolation no worker offers: %v, want the SDK's unavailable", err)
	}
	if _, err := c.FunctionFromName(ctx, "fnapp", "cube"); !errors.Is(err, gust.ErrNotFound) {
		t.Fatalf("an unknown function: %v, want the SDK's not found", err)
	}
	bad, err := gust.NewClient(gust.Config{ServerURL: env.server.URL, Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.ListSandboxes(ctx, gust.ListOptions{}); !errors.Is(err, gust.ErrUnauthorized) {
		t.Fatalf("a wrong token: %v, want the SDK's unauthorized", err)
	}
}

// testEnv is a server over a fresh store, its HTTP API, an SDK client of it, and a fake worker.
type testEnv struct {
	store  *store.Store
	layers *image.Builder
	server *httptest.Server
	client *gust.Client
	worker *fakeWorker
}

func start(t *testing.T) *testEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	layers, err := image.NewBuilder(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := server.New(ctx, server.Config{Token: token, JoinToken: joinToken, Images: layers, Logger: log.New(logs, "server: ", log.Lmicroseconds)}, st)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	client, err := gust.NewClient(gust.Config{ServerURL: hs.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{store: st, layers: layers, server: hs, client: client}
	env.worker = startWorker(t, hs.URL)
	return env
}

// scratchImage builds the empty image, which needs neither root nor network, through the API
// (the Go SDK builds only debian_slim, which needs debootstrap).
func (env *testEnv) scratchImage(t *testing.T) *gust.Image {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"kind": image.KindScratch})
	resp := env.do(t, http.MethodPost, "/v1/images", "application/json", body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/images: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Image *gust.Image     `json:"image"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("a line of the build stream: %v", err)
		}
		if line.Image != nil {
			return line.Image
		}
		if line.Error != nil {
			t.Fatalf("building the scratch image: %s", line.Error)
		}
	}
	t.Fatalf("the build stream ended without an image (%v)", sc.Err())
	return nil
}

func (env *testEnv) scratchLayers(t *testing.T, id string) []string {
	t.Helper()
	im, err := env.store.GetImage(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return im.Layers
}

func (env *testEnv) do(t *testing.T, method, path, contentType string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, env.server.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := env.server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// raw makes a call the SDK has no method for and decodes its answer.
func (env *testEnv) raw(t *testing.T, method, path, contentType string, body []byte, status int, out any) {
	t.Helper()
	resp := env.do(t, method, path, contentType, body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

func (env *testEnv) rawJSON(t *testing.T, path string, in, out any) {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	env.raw(t, http.MethodPost, path, "application/json", body, http.StatusOK, out)
}

// codeTar is a function's code as the SDKs upload it: a tar of the module.
func codeTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	src := []byte("def square(x):\n    return x * x\n")
	if err := tw.WriteHeader(&tar.Header{Name: "squares.py", Mode: 0o644, Size: int64(len(src))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(src); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeWorker plays a worker over HTTP with the server's own protocol types: it registers,
// long-polls for assignments, reports containers running and terminated, runs function inputs
// (squaring a JSON number), and serves execs from its own API as the real worker does.
type fakeWorker struct {
	server *workerproto.ServerClient

	mu         sync.Mutex
	specs      map[string]workerproto.ContainerSpec
	ended      map[string]bool
	execs      []workerproto.ExecRequest
	inputs     []workerproto.Input
	badRequest error  // the first request of the server's that did not decode
	snapLayer  string // the layer the worker's snapshot endpoint reports
}

func startWorker(t *testing.T, serverURL string) *fakeWorker {
	t.Helper()
	w := &fakeWorker{server: workerproto.NewServerClient(serverURL, joinToken, nil),
		specs: map[string]workerproto.ContainerSpec{}, ended: map[string]bool{}}
	api := httptest.NewServer(w.routes())
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.server.Register(ctx, workerproto.RegisterRequest{Name: "fake", APIToken: fakeAPIToken, Addr: api.URL, CPU: 4, MemoryMiB: 8192,
		Isolation: []string{sandbox.IsolationRunc}, GPUs: []gpu.Device{fakeGPU}}); err != nil {
		cancel()
		api.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.loop(ctx)
	}()
	// Runs first among the cleanups: the worker stops polling before the server closes.
	t.Cleanup(func() {
		cancel()
		<-done
		api.Close()
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.badRequest != nil {
			t.Errorf("fake worker: %v", w.badRequest)
		}
	})
	return w
}

func (w *fakeWorker) loop(ctx context.Context) {
	for ctx.Err() == nil {
		as, err := w.server.Assignments(ctx, 2*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				w.fail(fmt.Errorf("assignments: %w", err))
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		for _, a := range as {
			if err := w.handle(ctx, a); err != nil && ctx.Err() == nil {
				w.fail(fmt.Errorf("%s: %w", a.Op, err))
			}
		}
	}
}

func (w *fakeWorker) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.badRequest == nil {
		w.badRequest = err
	}
}

func (w *fakeWorker) handle(ctx context.Context, a workerproto.Assignment) error {
	switch a.Op {
	case workerproto.OpCreate:
		spec := *a.Container
		w.mu.Lock()
		w.specs[spec.ID] = spec
		w.mu.Unlock()
		if err := w.server.ReportState(ctx, spec.ID, workerproto.StateReport{Status: sandbox.Running}); err != nil {
			return err
		}
		if spec.Function != nil {
			return w.server.SendEvents(ctx, []workerproto.Event{{ContainerID: spec.ID, Type: workerproto.EventReady}})
		}
	case workerproto.OpTerminate:
		w.mu.Lock()
		w.ended[a.ContainerID] = true
		w.mu.Unlock()
		status := a.EndStatus
		if status == "" {
			status = sandbox.Terminated
		}
		code := sandbox.ExitTerminated
		err := w.server.ReportState(ctx, a.ContainerID, workerproto.StateReport{Status: status, ExitCode: &code})
		if errors.Is(err, errdefs.ErrConflict) {
			return nil // it ended already
		}
		return err
	case workerproto.OpInputs:
		evs := make([]workerproto.Event, len(a.Inputs))
		for i, in := range a.Inputs {
			w.mu.Lock()
			w.inputs = append(w.inputs, in)
			w.mu.Unlock()
			evs[i] = square(a.ContainerID, in)
		}
		return w.server.SendEvents(ctx, evs)
	default:
		return fmt.Errorf("unknown op")
	}
	return nil
}

// square is the fake runner: the output for an input of the JSON format.
func square(containerID string, in workerproto.Input) workerproto.Event {
	ev := workerproto.Event{ContainerID: containerID, Type: workerproto.EventOutput, InputID: in.ID, Runtime: wire.Duration(time.Millisecond)}
	var args struct {
		Args   []any          `json:"args"`
		Kwargs map[string]any `json:"kwargs"`
	}
	if in.Format != "json" || json.Unmarshal(in.Args, &args) != nil || len(args.Args) != 1 {
		ev.Status, ev.Error = workerproto.StatusFailure, fmt.Sprintf("ValueError: cannot read input %q (%s)", in.Args, in.Format)
		ev.Traceback = "Traceback (most recent call last):\nValueError"
		return ev
	}
	x, ok := args.Args[0].(float64)
	if !ok {
		ev.Status, ev.Error = workerproto.StatusFailure, fmt.Sprintf("TypeError: can't multiply sequence by non-int of type '%T'", args.Args[0])
		ev.Traceback = "Traceback (most recent call last):\n  File \"squares.py\", line 2, in square\nTypeError"
		return ev
	}
	ev.Status, ev.Format = workerproto.StatusSuccess, "json"
	ev.Data, _ = json.Marshal(x * x)
	return ev
}

// routes is the worker's own API, as far as the test uses it.
func (w *fakeWorker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/{id}/execs", w.handleExec)
	mux.HandleFunc("POST /v1/sandboxes/{id}/execs/{eid}/stdin", func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/snapshot", func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		layer := w.snapLayer
		w.mu.Unlock()
		httpapi.WriteJSON(rw, http.StatusOK, workerproto.SnapshotResponse{Layer: layer, SizeBytes: 1})
	})
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(rw, errdefs.NotFound("the fake worker does not serve %s %s", r.Method, r.URL.Path))
	})
	return httpapi.Auth(fakeAPIToken, mux)
}

// handleExec answers as the real worker does (internal/worker/api.go): an exec_id line,
// output lines, and an exit line. "echo" prints its arguments; anything else is not found.
func (w *fakeWorker) handleExec(rw http.ResponseWriter, r *http.Request) {
	var req workerproto.ExecRequest
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		w.fail(fmt.Errorf("an exec request the worker cannot read: %w", err))
		httpapi.WriteError(rw, err)
		return
	}
	w.mu.Lock()
	_, ok := w.specs[r.PathValue("id")]
	w.execs = append(w.execs, req)
	n := len(w.execs)
	w.mu.Unlock()
	if !ok {
		httpapi.WriteError(rw, errdefs.NotFound("sandbox %s is not running on this worker", r.PathValue("id")))
		return
	}
	nd := httpapi.StartNDJSON(rw)
	lines := []any{workerproto.ExecStarted{ExecID: fmt.Sprintf("ex-%d", n)}}
	if len(req.Command) > 0 && req.Command[0] == "echo" {
		lines = append(lines,
			workerproto.OutputLine{Stream: "stdout", Data: []byte(strings.Join(req.Command[1:], " "))},
			workerproto.OutputLine{Stream: "stdout", Data: []byte("\n")},
			workerproto.OutputLine{Stream: "stderr", Data: []byte("echo: done\n")},
			workerproto.ExitLine{ExitCode: 0})
	} else {
		lines = append(lines,
			workerproto.OutputLine{Stream: "stderr", Data: []byte(req.Command[0] + ": not found\n")},
			workerproto.ExitLine{ExitCode: 127, Error: req.Command[0] + ": not found"})
	}
	for _, l := range lines {
		if nd.Send(l) != nil {
			return
		}
	}
}

func (w *fakeWorker) spec(t *testing.T, id string) workerproto.ContainerSpec {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	spec, ok := w.specs[id]
	if !ok {
		t.Fatalf("the worker was never asked to create %s", id)
	}
	return spec
}

// functionSpec is the spec of the function's one container.
func (w *fakeWorker) functionSpec(t *testing.T, fnID string) workerproto.ContainerSpec {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, spec := range w.specs {
		if spec.Function != nil && spec.Function.FunctionID == fnID {
			return spec
		}
	}
	t.Fatalf("the worker was never asked to create a container of function %s", fnID)
	return workerproto.ContainerSpec{}
}

func (w *fakeWorker) terminated(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended[id]
}

func (w *fakeWorker) lastExec(t *testing.T) workerproto.ExecRequest {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.execs) == 0 {
		t.Fatal("the worker got no exec")
	}
	return w.execs[len(w.execs)-1]
}

func (w *fakeWorker) lastInput(t *testing.T) workerproto.Input {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.inputs) == 0 {
		t.Fatal("the worker got no input")
	}
	return w.inputs[len(w.inputs)-1]
}

// syncBuffer is the server's log, kept for a failing test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeGPU is the fake worker's one GPU.
var fakeGPU = gpu.Device{Index: 0, UUID: "GPU-contract-0", Model: "NVIDIA L4", Type: "L4", MemoryMiB: 23034, Driver: "550.54", CUDA: "12.4", MIG: "Disabled"}

// gpuSteps: the SDK reads the workers and their GPUs, and a sandbox asking for a GPU reaches
// the worker with the device, its type and count; the GPU is in use until it ends.
func (env *testEnv) gpuSteps(ctx context.Context, t *testing.T, app *gust.App, imageID string) {
	c := env.client
	workers, waiting, err := c.Workers(ctx)
	if err != nil || len(workers) != 1 || len(waiting) != 0 {
		t.Fatalf("workers %+v, waiting %+v, %v", workers, waiting, err)
	}
	want := gust.GPU{Index: 0, UUID: fakeGPU.UUID, Model: fakeGPU.Model, Type: "L4", MemoryMiB: 23034, Driver: "550.54", CUDA: "12.4", MIG: "Disabled"}
	if w := workers[0]; w.Name != "fake" || len(w.GPUs) != 1 || w.GPUs[0] != want {
		t.Fatalf("worker %+v, want its GPU %+v", w, want)
	}
	sb, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: imageID, GPU: []string{"H100", "l4"}})
	if err != nil {
		t.Fatal(err)
	}
	env.worker.mu.Lock()
	spec := env.worker.specs[sb.ID]
	env.worker.mu.Unlock()
	if spec.GPUType != "L4" || spec.GPUCount != 1 || len(spec.GPUs) != 1 || spec.GPUs[0].UUID != fakeGPU.UUID {
		t.Fatalf("the worker got gpu %q×%d %v", spec.GPUType, spec.GPUCount, spec.GPUs)
	}
	if workers, _, _ := c.Workers(ctx); !workers[0].GPUs[0].InUse {
		t.Fatal("the GPU is not shown in use")
	}
	if _, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: imageID, GPU: []string{"H1000"}}); !errors.Is(err, gust.ErrInvalid) {
		t.Fatalf("an unknown GPU type: %v, want invalid", err)
	}
	if _, err := c.CreateSandbox(ctx, gust.SandboxOptions{App: app.ID, Image: imageID, GPU: []string{"B200"}}); !errors.Is(err, gust.ErrUnavailable) {
		t.Fatalf("a GPU no worker has: %v, want unavailable", err)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	if workers, _, _ := c.Workers(ctx); workers[0].GPUs[0].InUse {
		t.Fatal("the GPU was not given back")
	}
}

// Package integration runs the real gust binary with real containers (runc and runsc) and
// drives it through its HTTP API and SDKs. These tests need root; they skip without it and
// under -short. Run them alone with `go test ./test/integration`.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/image"
)

// gust is the running instance all tests in this package share.
var gust struct {
	bin   string
	url   string
	token string
	// joinToken registers workers (GUST_JOIN_TOKEN of every gust the tests start).
	joinToken string
	dataDir   string
	cmd       *exec.Cmd
	log       *bytes.Buffer
	imageID   string
	appID     string
	skip      string
}

// sharedCache holds the debootstrap bases, built once per machine and shared by every run.
// Nothing else of a run goes there: see imageCache.
const sharedCache = "/var/cache/gust-test/layers"

// imageCache is this run's layer directory (the --image-cache of every gust it starts): the
// bases in it are links to sharedCache, and everything else (built steps, registry layers,
// uploads, functions' code, snapshots) is the run's own, removed with it. So one run's image
// prune (TestImageCLIAndGC prunes with no grace) never removes what another run uses.
var imageCache string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() || os.Geteuid() != 0 {
			gust.skip = "integration tests need root and no -short"
			return m.Run()
		}
		if err := start(); err != nil {
			fmt.Fprintln(os.Stderr, "starting gust:", err)
			if gust.log != nil {
				fmt.Fprintln(os.Stderr, gustLog())
			}
			return 1
		}
		code := m.Run()
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping gust:", err)
			code = 1
		}
		if code != 0 && os.Getenv("GUST_TEST_LOG") != "" {
			fmt.Fprintln(os.Stderr, gustLog())
		}
		return code
	}()
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func start() error {
	tmp, err := os.MkdirTemp("", "gust-it-")
	if err != nil {
		return err
	}
	gust.dataDir = tmp
	imageCache = filepath.Join(tmp, "layers")
	if err := linkBases(); err != nil {
		return err
	}
	gust.bin = filepath.Join(tmp, "gust")
	build := exec.Command("go", "build", "-o", gust.bin, "./cmd/gust")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	// The runtimes, as `make test` installs them: the pinned static runsc (built once per
	// machine, a no-op after), which gust up then chooses as every gust does
	// (container.FindRunsc; GUST_RUNSC overrides it).
	install := exec.Command(gust.bin, "install")
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("gust install: %v\n%s", err, out)
	}
	addr := freePort()
	gust.url = "http://" + addr
	gust.token = "test-token-" + fmt.Sprint(time.Now().UnixNano())
	gust.joinToken = "test-join-" + fmt.Sprint(time.Now().UnixNano())
	gust.log = &bytes.Buffer{}
	gust.cmd = exec.Command(gust.bin, "up", "--addr", addr, "--data-dir", filepath.Join(tmp, "data"), "--image-cache", imageCache, "--no-config", "--no-install", "--sandbox-disk", "256")
	gust.cmd.Env = append(os.Environ(), "GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN="+gust.joinToken, "GUST_HEARTBEAT_TIMEOUT=15s")
	pr, pw := io.Pipe()
	gust.cmd.Stdout, gust.cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logMu.Lock()
			gust.log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if os.Getenv("GUST_TEST_VERBOSE") != "" {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
	}()
	dieWithTest(gust.cmd)
	if err := gust.cmd.Start(); err != nil {
		return err
	}
	os.Setenv("GUST_SERVER_URL", gust.url)
	os.Setenv("GUST_TOKEN", gust.token)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(gust.url + "/v1/health")
		if err == nil {
			resp.Body.Close()
			if hasWorker(gust.url) { // its worker registers a moment after the API answers
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gust did not answer /v1/health with a worker registered within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "integration", "create_if_missing": true}, &app); err != nil {
		return err
	}
	gust.appID = app.AppID
	// The base image: built once per machine (about a minute), cached after.
	id, err := resolveImage()
	if err != nil {
		return err
	}
	gust.imageID = id
	// Wait for the worker to register: a create answers 503 until it has (generously: a busy
	// machine may take a while).
	for deadline := time.Now().Add(90 * time.Second); ; {
		var sb map[string]any
		err := api("POST", "/v1/sandboxes", map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "command": []string{"true"}}, &sb)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no worker came up in 90 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func resolveImage() (string, error) {
	req, _ := http.NewRequest("POST", gust.url+"/v1/images", strings.NewReader(`{"kind":"debian_slim"}`))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Image *struct {
				ID string `json:"image_id"`
			} `json:"image"`
			Error *struct{ Message string } `json:"error"`
		}
		json.Unmarshal(sc.Bytes(), &line)
		if line.Image != nil {
			return line.Image.ID, nil
		}
		if line.Error != nil {
			return "", fmt.Errorf("image build: %s", line.Error.Message)
		}
	}
	return "", fmt.Errorf("image stream ended without an image")
}

func stop() error {
	gust.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- gust.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("gust exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		gust.cmd.Process.Kill()
		return fmt.Errorf("gust did not stop within 60 s of SIGINT")
	}
	defer os.RemoveAll(gust.dataDir) // this run's layers too (the bases' links, not the bases)
	keepBases()
	return checkNoLeftovers(filepath.Join(gust.dataDir, "data"))
}

// baseNames names the base layers (one per python_version) as gust names them on disk.
func baseNames() []string {
	var names []string
	for _, v := range image.PythonVersions() {
		names = append(names, image.BaseHash(v))
	}
	return names
}

// linkBases makes imageCache, with a link to each base that sharedCache holds.
func linkBases() error {
	if err := os.MkdirAll(imageCache, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(sharedCache, 0o755); err != nil {
		return err
	}
	for _, name := range baseNames() {
		shared := filepath.Join(sharedCache, name)
		if _, err := os.Stat(filepath.Join(shared, "usr")); err != nil {
			continue // not built yet on this machine: this run builds it, keepBases shares it
		}
		if err := os.Symlink(shared, filepath.Join(imageCache, name)); err != nil {
			return err
		}
	}
	return nil
}

// keepBases moves the bases this run built into sharedCache, for the runs after it. One that
// another run shared meanwhile stays (the rename fails), and goes with this run.
func keepBases() {
	for _, name := range baseNames() {
		p := filepath.Join(imageCache, name)
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			os.Rename(p, filepath.Join(sharedCache, name))
		}
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// checkNoLeftovers fails if gust left containers, mounts or cgroups behind.
func checkNoLeftovers(dataDir string) error {
	var problems []string
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(dataDir)) {
		problems = append(problems, "mounts under "+dataDir+" remain")
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "containers", "bundles")); len(entries) > 0 {
		problems = append(problems, fmt.Sprintf("%d bundle directories remain", len(entries)))
	}
	for _, iso := range []string{"runc", "gvisor"} {
		entries, _ := os.ReadDir(filepath.Join(dataDir, "containers", "state", iso))
		for _, e := range entries {
			problems = append(problems, "runtime state remains: "+iso+"/"+e.Name())
		}
	}
	// The runtime's roots directory is named after its state directory (internal/container).
	sum := sha256.Sum256([]byte(filepath.Join(dataDir, "containers")))
	if roots := filepath.Join("/run/gust/roots", hex.EncodeToString(sum[:6])); exists(roots) {
		problems = append(problems, "the roots directory "+roots+" remains")
	}
	createdMu.Lock()
	for _, id := range created {
		if m, _ := filepath.Glob("/sys/fs/cgroup/*/gust/" + id); len(m) > 0 {
			problems = append(problems, "cgroups remain: "+strings.Join(m, ", "))
		}
		if b, _ := exec.Command("pgrep", "-f", id).Output(); len(b) > 0 {
			problems = append(problems, "processes remain for "+id)
		}
	}
	createdMu.Unlock()
	// runsc's sandbox and gofer processes name their state directory under dataDir.
	if b, _ := exec.Command("pgrep", "-af", dataDir).Output(); len(b) > 0 {
		problems = append(problems, "processes remain: "+strings.TrimSpace(string(b)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("leftovers after shutdown: %s", strings.Join(problems, "; "))
	}
	return nil
}

// dieWithTest makes a gust the tests start shut down (SIGINT: it removes its containers) when
// the test binary dies, killed by a timeout or by hand, instead of living on.
func dieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGINT
}

// logMu guards gust.log, written by the output reader and read by failing tests.
var logMu sync.Mutex

// gustLog returns what gust has printed so far.
func gustLog() string {
	logMu.Lock()
	defer logMu.Unlock()
	return gust.log.String()
}

// api makes a JSON request to gust.
func api(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, gust.url+path, body)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return &apiError{resp.StatusCode, string(b)}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

func needGust(t *testing.T) {
	t.Helper()
	if gust.skip != "" {
		t.Skip(gust.skip)
	}
}

package integration

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// GPU tests run on machines without GPUs: a second gust declares a test inventory
// (GUST_TEST_GPUS) over a fake device tree (GUST_TEST_DEVICE_ROOT) of harmless character
// devices standing in for /dev/nvidia*, and driver files standing in for libcuda and
// nvidia-smi. Placement, waiting, CDI injection and device isolation are all real; only the
// devices are not GPUs. scripts/gpu-check is the check on a real GPU.

// fakeGPUTree lays out n GPUs: nvidiaN are copies of /dev/zero (1:5) and /dev/full (1:7),
// the control nodes of /dev/null, /dev/random and /dev/urandom.
func fakeGPUTree(t *testing.T, n int) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(root, 0o755))
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	nodes := map[string]uint32{"nvidiactl": 3, "nvidia-uvm": 8, "nvidia-uvm-tools": 9}
	for i, minor := range []uint32{5, 7}[:n] {
		nodes["nvidia"+string(rune('0'+i))] = minor
	}
	for name, minor := range nodes {
		must(unix.Mknod(filepath.Join(root, "dev", name), unix.S_IFCHR|0o666, int(unix.Mkdev(1, minor))))
	}
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	must(os.MkdirAll(lib, 0o755))
	must(os.WriteFile(filepath.Join(lib, "libcuda.so.550.54"), []byte("fake libcuda 550.54\n"), 0o644))
	must(os.Symlink("libcuda.so.550.54", filepath.Join(lib, "libcuda.so.1")))
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "usr/bin/nvidia-smi"), []byte("#!/bin/sh\necho 'GPU 0: fake (UUID: none)'\n"), 0o755))
	return root
}

// startGPUGust starts a `gust up` of its own that declares gpus over a fake tree, and points
// the API helpers at it (and at its app and image) until the test ends.
func startGPUGust(t *testing.T, gpus string, devices int) {
	t.Helper()
	root := fakeGPUTree(t, devices)
	dir := t.TempDir()
	addr := freePort()
	logFile := filepath.Join(dir, "gust.log")
	logOut, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gust.bin, "up", "--addr", addr, "--data-dir", filepath.Join(dir, "data"), "--image-cache", imageCache,
		"--no-config", "--no-install", "--sandbox-disk", "256", "--warm-pool", "0")
	cmd.Env = append(os.Environ(), "GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN="+gust.joinToken, "GUST_TEST_GPUS="+gpus, "GUST_TEST_DEVICE_ROOT="+root)
	cmd.Stdout, cmd.Stderr = logOut, logOut
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	savedURL := gust.url
	gust.url = "http://" + addr
	t.Cleanup(func() { gust.url = savedURL })
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("the GPU gust's log:\n%s", b)
		}
		logOut.Close()
	})
	for i := 0; ; i++ {
		if resp, err := http.Get(gust.url + "/v1/health"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 400 {
			t.Fatal("the GPU gust did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	savedApp, savedImage := gust.appID, gust.imageID
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		gust.appID, gust.imageID = savedApp, savedImage
		if err := checkNoLeftovers(filepath.Join(dir, "data")); err != nil {
			t.Error(err)
		}
	})
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "gpu", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	id, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	gust.appID, gust.imageID = app.AppID, id
	for i := 0; ; i++ { // until its worker has registered its GPUs
		var out struct {
			Workers []struct {
				GPUs []map[string]any `json:"gpus"`
			} `json:"workers"`
		}
		if err := api("GET", "/v1/workers", nil, &out); err == nil && len(out.Workers) == 1 && len(out.Workers[0].GPUs) > 0 {
			return
		}
		if i > 200 {
			t.Fatal("the GPU worker did not register")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const gpuModule = `
import os, time

def hold(s):
    start = time.time()
    time.sleep(s)
    return [start, time.time(), os.environ.get("CUDA_VISIBLE_DEVICES")]

hold_too = hold
`

// TestGPUScheduling: on a worker that declares one H100, two functions that each want it run
// one at a time, the second waiting with its reason shown; H100:2 fails at once; unknown GPU
// types are refused.
func TestGPUScheduling(t *testing.T) {
	needGust(t)
	startGPUGust(t, "H100", 1)

	var list struct {
		Workers []struct {
			GPUs []struct {
				Type   string `json:"type"`
				UUID   string `json:"uuid"`
				Driver string `json:"driver"`
				InUse  bool   `json:"in_use"`
			} `json:"gpus"`
		} `json:"workers"`
	}
	if err := api("GET", "/v1/workers", nil, &list); err != nil {
		t.Fatal(err)
	}
	if g := list.Workers[0].GPUs; len(g) != 1 || g[0].Type != "H100" || !strings.HasPrefix(g[0].UUID, "GPU-") || g[0].Driver != "test" || g[0].InUse {
		t.Fatalf("workers' GPUs: %+v", g)
	}
	out, err := runCLI("worker", "list")
	if err != nil || !strings.Contains(out, "H100") || !strings.Contains(out, "1 (0 in use)") {
		t.Fatalf("gust worker list: %v\n%s", err, out)
	}

	// Unknown types: refused when published and when a sandbox asks.
	blob := uploadCode(t, map[string]string{"gpumod.py": gpuModule})
	var e *apiError
	err = api("POST", "/v1/apps/publish", map[string]any{"name": "gpu-bad", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "gpumod"},
		"functions": []map[string]any{{"name": "hold", "image_id": gust.imageID, "gpu": "H1000"}}}, nil)
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Body, "not a known GPU type") {
		t.Fatalf("publish with gpu=H1000: %v", err)
	}
	err = api("POST", "/v1/sandboxes", map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "gpu": []string{"H100", "B2000"}}, nil)
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Body, "not a known GPU type") {
		t.Fatalf("sandbox with gpu=B2000: %v", err)
	}

	var app fnApp
	one := map[string]any{"image_id": gust.imageID, "gpu": "H100", "scaledown_window": 1, "timeout": 60}
	two := map[string]any{"name": "hold_too", "image_id": gust.imageID, "gpu": "H100:2"}
	fnA, fnB := map[string]any{"name": "hold"}, map[string]any{"name": "hold_too"}
	for k, v := range one {
		fnA[k], fnB[k] = v, v
	}
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "gpu-sched", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "gpumod"},
		"functions": []map[string]any{fnA, fnB}}, &app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil) })
	var twoApp fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "gpu-two", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "gpumod"},
		"functions": []map[string]any{two}}, &twoApp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+twoApp.AppID+"/stop", map[string]any{}, nil) })

	// H100:2 where only one exists: at once, not after a wait.
	start := time.Now()
	resp := post(t, "/v1/functions/"+twoApp.Functions["hold_too"]+"/calls", map[string]any{"kind": "remote", "stream": true,
		"inputs": []map[string]any{{"args": jsonArgs(1), "format": "json"}}})
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(body.String(), "no connected worker has gpu=H100:2") || time.Since(start) > 5*time.Second {
		t.Fatalf("H100:2 on a one-H100 worker: HTTP %d %s after %v", resp.StatusCode, body, time.Since(start))
	}

	call := func(fn string, secs int) chan callResult {
		ch := make(chan callResult, 1)
		go func() {
			ch <- readStream(t, post(t, "/v1/functions/"+fn+"/calls", map[string]any{"kind": "remote", "stream": true,
				"inputs": []map[string]any{{"args": jsonArgs(secs), "format": "json"}}}))
		}()
		return ch
	}
	first := call(app.Functions["hold"], 3)
	for i := 0; appStats(t, app.AppID, app.Functions["hold"])["running"] != 1.0; i++ {
		if i > 600 {
			t.Fatalf("the first input never ran\n%s", gustLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	second := call(app.Functions["hold_too"], 1)
	var reason string
	for i := 0; ; i++ {
		reason, _ = appStats(t, app.AppID, app.Functions["hold_too"])["reason"].(string)
		if strings.Contains(reason, "waiting for") {
			break
		}
		if i > 200 {
			t.Fatalf("the second function never showed why it waits (reason %q)", reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if reason != "waiting for 1× H100: 0 of 1 free" {
		t.Fatalf("reason %q", reason)
	}
	a, b := <-first, <-second
	av, bv := a.value(t, 0).([]any), b.value(t, 0).([]any)
	if bv[0].(float64) < av[1].(float64) {
		t.Fatalf("the second function started at %v, before the first ended at %v: the H100 was shared", bv[0], av[1])
	}
	if av[2] != list.Workers[0].GPUs[0].UUID || bv[2] != av[2] {
		t.Fatalf("CUDA_VISIBLE_DEVICES %v and %v, want the H100's UUID %s", av[2], bv[2], list.Workers[0].GPUs[0].UUID)
	}
}

// TestGPUDevices: a runc sandbox given one of two GPUs sees its node, the control nodes and
// the driver's files (read-only), and nothing of the other GPU; the GPU is in use until the
// sandbox ends. Under gVisor (this runsc has no nvproxy) gpu= is refused.
func TestGPUDevices(t *testing.T) {
	needGust(t)
	startGPUGust(t, "H100:2", 2)

	sb := createRaw(t, map[string]any{"gpu": "H100", "isolation": "runc"})
	stdout, stderr, code := execRaw(t, sb, "sh", "-c", "ls /dev | grep nvidia; echo CUDA=$CUDA_VISIBLE_DEVICES NV=$NVIDIA_VISIBLE_DEVICES")
	if code != 0 {
		t.Fatalf("exec: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	envLine := lines[len(lines)-1]
	nodes := lines[:len(lines)-1]
	sort.Strings(nodes)
	if strings.Join(nodes, " ") != "nvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl" {
		t.Fatalf("/dev has %v, want its GPU's node nvidia0 and the control nodes only", nodes)
	}
	var uuid string
	var list struct {
		Workers []struct {
			GPUs []struct {
				Index int    `json:"index"`
				UUID  string `json:"uuid"`
				InUse bool   `json:"in_use"`
			} `json:"gpus"`
		} `json:"workers"`
	}
	if err := api("GET", "/v1/workers", nil, &list); err != nil {
		t.Fatal(err)
	}
	for _, g := range list.Workers[0].GPUs {
		if g.InUse != (g.Index == 0) {
			t.Fatalf("GPUs in use: %+v, want GPU 0 only", list.Workers[0].GPUs)
		}
		if g.Index == 0 {
			uuid = g.UUID
		}
	}
	if envLine != "CUDA="+uuid+" NV="+uuid {
		t.Fatalf("env %q, want GPU 0's UUID %s", envLine, uuid)
	}
	// Its node works (a copy of /dev/zero); the driver's library and tool are there, read-only.
	checks := []struct{ cmd, want string }{
		{"head -c 4 /dev/nvidia0 | od -An -tx1 | tr -d ' \\n'", "00000000"},
		{"cat /usr/lib/x86_64-linux-gnu/libcuda.so.1", "fake libcuda 550.54"},
		{"nvidia-smi", "GPU 0: fake"},
		{"echo x > /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>&1 || echo refused", "refused"},
		{"test -e /dev/nvidia1 || echo absent", "absent"},
	}
	for _, c := range checks {
		out, errOut, _ := execRaw(t, sb, "sh", "-c", c.cmd)
		if !strings.Contains(out, c.want) {
			t.Fatalf("%s: %q %q, want %q", c.cmd, out, errOut, c.want)
		}
	}

	// The second sandbox gets the other GPU, and only it.
	sb2 := createRaw(t, map[string]any{"gpu": "any"})
	if out, _, _ := execRaw(t, sb2, "sh", "-c", "ls /dev | grep -x 'nvidia[0-9]*'"); strings.TrimSpace(out) != "nvidia1" {
		t.Fatalf("the second sandbox sees %q, want nvidia1 only", out)
	}
	if out, _, _ := execRaw(t, sb2, "sh", "-c", "head -c 1 /dev/nvidia1 >/dev/null 2>&1; echo $?; head -c 4 /dev/nvidia1 | od -An -tx1 | tr -d ' \\n'"); !strings.Contains(out, "00000000") {
		// /dev/full reads zeros too: the node is usable, the device cgroup allows it.
		t.Fatalf("reading its GPU node: %q", out)
	}
	if err := api("POST", "/v1/sandboxes/"+sb+"/terminate", nil, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ { // given back when it ends
		api("GET", "/v1/workers", nil, &list)
		if !list.Workers[0].GPUs[0].InUse {
			break
		}
		if i > 200 {
			t.Fatal("GPU 0 was not given back when its sandbox ended")
		}
		time.Sleep(50 * time.Millisecond)
	}

	var e *apiError
	err := api("POST", "/v1/sandboxes", map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "gpu": "H100", "isolation": "gvisor"}, nil)
	if !errors.As(err, &e) || e.Status != 503 || !strings.Contains(e.Body, "nvproxy") {
		t.Fatalf("gpu under gvisor: %v", err)
	}
}

// runCLI runs the gust CLI against the gust at gust.url.
func runCLI(args ...string) (string, error) {
	cmd := exec.Command(gust.bin, args...)
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

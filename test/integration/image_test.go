package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildImage posts an image definition with the operator's token and returns its id, the log
// lines and any error line.
func buildImage(t *testing.T, spec map[string]any) (id string, logs []string, errMsg string) {
	t.Helper()
	return buildImageAs(t, gust.token, spec)
}

func TestImageSteps(t *testing.T) {
	needGust(t)
	marker := fmt.Sprint(time.Now().UnixNano())
	spec := map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{"echo built-" + marker + " > /opt/marker", "echo step output " + marker}},
		{"type": "env", "env": map[string]string{"FROM_IMAGE": "yes"}},
		{"type": "workdir", "path": "/opt"},
		{"type": "run_commands", "commands": []string{"echo second > /opt/second"}},
	}}
	start := time.Now()
	id, logs, errMsg := buildImage(t, spec)
	if errMsg != "" || id == "" {
		t.Fatalf("build failed: %s\n%s", errMsg, strings.Join(logs, "\n"))
	}
	all := strings.Join(logs, "\n")
	if !strings.Contains(all, "Building image "+id) || !strings.Contains(all, "step output "+marker) || !strings.Contains(all, "Built image "+id) {
		t.Fatalf("build log should name the image and stream the step's output:\n%s", all)
	}
	t.Logf("cold build of 2 layers: %v", time.Since(start))

	// The same definition again: every layer cached, nothing built, fast.
	start = time.Now()
	id2, logs2, errMsg := buildImage(t, spec)
	if errMsg != "" || id2 != id || len(logs2) != 0 {
		t.Fatalf("cached build: id %s (want %s), err %q, logs %v", id2, id, errMsg, logs2)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a cached image took %v to resolve", d)
	}

	sb := createRaw(t, map[string]any{"image_id": id})
	out, _, code := execRaw(t, sb, "sh", "-c", "cat marker second; pwd; echo $FROM_IMAGE")
	if code != 0 || out != "built-"+marker+"\nsecond\n/opt\nyes\n" {
		t.Fatalf("sandbox from the built image: %q", out)
	}

	// Changing the last step rebuilds only it.
	spec["steps"].([]map[string]any)[3]["commands"] = []string{"echo changed > /opt/second"}
	_, logs3, errMsg := buildImage(t, spec)
	all = strings.Join(logs3, "\n")
	if errMsg != "" || strings.Contains(all, "step 1:") || !strings.Contains(all, "step 4:") {
		t.Fatalf("changing step 4 should rebuild only step 4: %q\n%s", errMsg, all)
	}

	// force_build rebuilds everything.
	spec["force_build"] = true
	_, logs4, _ := buildImage(t, spec)
	if !strings.Contains(strings.Join(logs4, "\n"), "step 1:") {
		t.Fatalf("force_build did not rebuild step 1:\n%s", strings.Join(logs4, "\n"))
	}
}

func TestImageStepFailure(t *testing.T) {
	needGust(t)
	spec := map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{"echo before-the-failure; exit 3"}},
	}}
	_, _, errMsg := buildImage(t, spec)
	if !strings.Contains(errMsg, "step 1") || !strings.Contains(errMsg, "exited with code 3") || !strings.Contains(errMsg, "before-the-failure") {
		t.Fatalf("failure should name the step, the exit code and the log tail: %q", errMsg)
	}
	var app struct {
		ID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "gust-image-builds", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Sandboxes []sbState `json:"sandboxes"`
	}
	api("GET", "/v1/sandboxes?app_id="+app.ID, nil, &list)
	for _, sb := range list.Sandboxes {
		t.Fatalf("a build container was left running: %+v", sb)
	}
	if code, body := raw(t, "POST", "/v1/images", js(map[string]any{"kind": "debian_slim", "steps": []map[string]any{{"type": "copy_everything"}}})); code != 400 || !strings.Contains(body, "copy_everything") {
		t.Fatalf("unknown step: %d %s", code, body)
	}
}

func TestImageConcurrentBuildsOnce(t *testing.T) {
	needGust(t)
	spec := map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{fmt.Sprintf("echo %d > /once", time.Now().UnixNano())}},
	}}
	var wg sync.WaitGroup
	ids := make([]string, 2)
	built := make([]bool, 2)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, logs, _ := buildImage(t, spec)
			ids[i] = id
			built[i] = strings.Contains(strings.Join(logs, "\n"), "step 1:")
		}()
	}
	wg.Wait()
	if ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("ids %v", ids)
	}
	if built[0] && built[1] {
		t.Fatal("two clients asking for the same image at once built it twice")
	}
}

// TestImageCLIAndGC lists, removes and garbage-collects images with the gust CLI.
func TestImageCLIAndGC(t *testing.T) {
	needGust(t)
	run := func(args ...string) (string, error) {
		out, err := exec.Command(gust.bin, args...).CombinedOutput()
		return string(out), err
	}
	spec := map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{fmt.Sprintf("echo %d > /gc", time.Now().UnixNano())}},
	}}
	id, _, errMsg := buildImage(t, spec)
	if errMsg != "" {
		t.Fatal(errMsg)
	}
	out, err := run("image", "ls")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "layers on disk:") {
		t.Fatalf("image ls: %v\n%s", err, out)
	}
	// An image in use by a running sandbox stays.
	sb := createRaw(t, map[string]any{"image_id": id})
	if out, err := run("image", "rm", id); err == nil || !strings.Contains(out, "running sandbox") {
		t.Fatalf("rm of an image in use: %v %s", err, out)
	}
	api("POST", "/v1/sandboxes/"+sb+"/terminate", nil, nil)
	if out, err := run("image", "rm", id); err != nil {
		t.Fatalf("image rm: %v %s", err, out)
	}
	out, err = run("image", "prune", "--older-than", "0s")
	if err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("prune: %v %s", err, out)
	}
	var n int
	fmt.Sscanf(strings.TrimPrefix(out, "removed "), "%d", &n)
	if n < 1 {
		t.Fatalf("prune removed no layers after the image was deleted: %s", out)
	}
	// The base image is still in use and still works.
	if out, _, code := execRaw(t, createRaw(t, nil), "true"); code != 0 {
		t.Fatalf("base image broken after prune: %q", out)
	}
}

// TestImageAptInstall installs a Debian package in a build container, which reaches the
// mirror on the containers' bridge under the default policy (or, on a worker with
// --network=false, through the egress proxy, which apt finds through http_proxy).
func TestImageAptInstall(t *testing.T) {
	needGust(t)
	id, logs, errMsg := buildImage(t, map[string]any{"kind": "debian_slim", "steps": []map[string]any{{"type": "apt_install", "packages": []string{"jq"}}}})
	if errMsg != "" {
		t.Fatalf("apt_install: %s\n%s", errMsg, strings.Join(logs, "\n"))
	}
	for _, l := range logs {
		if strings.Contains(l, "\r") {
			t.Fatalf("log line keeps a carriage return: %q", l)
		}
	}
	var im struct {
		ParentID string `json:"parent_id"`
	}
	if err := api("GET", "/v1/images/"+id, nil, &im); err != nil || im.ParentID == id || im.ParentID == "" {
		t.Fatalf("parent_id %q of %s", im.ParentID, id)
	}
	sb := createRaw(t, map[string]any{"image_id": id, "block_network": true})
	out, errOut, code := execRaw(t, sb, "sh", "-c", `echo '{"a": 41}' | jq '.a + 1'`)
	if code != 0 || out != "42\n" {
		t.Fatalf("jq in the built image: %q %q %d", out, errOut, code)
	}
}

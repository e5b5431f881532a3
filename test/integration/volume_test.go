package integration

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Volumes end to end: a Modal program whose functions and sandbox (real containers) share a
// Volume with their caller (commit/reload visibility, read-only and sub_path mounts, uploads,
// Modal's errors); the workspace quota; another workspace's volume unreachable.

// TestVolumeProgram runs sdk/python/tests/programs/volumes.py and checks every RESULT.
func TestVolumeProgram(t *testing.T) {
	needGust(t)
	name := "vol-program-data"
	t.Cleanup(func() {
		var v struct {
			ID string `json:"volume_id"`
		}
		if api("POST", "/v1/volumes/lookup", map[string]any{"name": name}, &v) == nil {
			api("DELETE", "/v1/volumes/"+v.ID, nil, nil)
		}
	})
	res := runProgram(t, "volumes.py")
	want := map[string]string{
		"client_read":       "hello from the client",
		"listdir":           "[('up/a', 'DIRECTORY', 0), ('up/a/two.txt', 'FILE', 2), ('up/one.txt', 'FILE', 1)]",
		"upload_exists":     "FileExistsError",
		"upload_force":      "forced",
		"writer":            "['client.txt', 'sub', 'up', 'x.txt']",
		"client_sees_fn":    "v1",
		"sandbox_sees":      "v1forced",
		"one_container":     "True",
		"reload_view":       "['v1', 'v1', 'v2']",
		"reload_open":       "RuntimeError: there are open files preventing the operation",
		"sandbox_reload":    "['v1', 'v2']",
		"sandbox_commit":    "from the sandbox",
		"background_commit": "in the background",
		"commit_open":       "ok written while open",
		"sandbox_delete":    "['up/a', 'up/a/two.txt']",
		"read_only":         "EROFS",
		"gvisor":            "v2 from gvisor InvalidError",
		"gvisor_commit":     "ok committed in gVisor",
		"app_level":         "forced",
		"iterdir":           "['up/a', 'up/a/two.txt']",
		"info":              "vol-program-data True vol-program-data",
		"objects":           "True",
		"objects_create":    "AlreadyExistsError",
		"renamed":           "vol-program-data-3",
		"ephemeral":         "temporary",
		"ephemeral_gone":    "True",
		"sub_path":          "['deep.txt']",
		"sub_path_commit":   "via sub_path",
		"copy":              "v2",
		"remove_dir":        "InvalidError",
		"removed":           "True",
		"read_missing":      "FileNotFoundError",
		"remove_missing":    "FileNotFoundError",
		"list_missing":      "FileNotFoundError",
		"bad":               "[('missing', 'NotFoundError'), ('name', 'InvalidError'), ('relative', 'InvalidError'), ('reload_outside', 'RuntimeError'), ('type', 'InvalidError')]",
	}
	for k, v := range want {
		if res[k] != v {
			t.Errorf("RESULT %s = %q, want %q", k, res[k], v)
		}
	}
}

// rawAs sends body as it is with a credential and returns the status and answer.
func rawAs(t *testing.T, cred, method, path string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, gust.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

// putVolumeFile uploads data as path in volume id and commits it; it returns the upload's
// answer if it failed, else the commit's.
func putVolumeFile(t *testing.T, cred, id, path string, data []byte) (int, string) {
	t.Helper()
	code, body := rawAs(t, cred, "POST", "/v1/volumes/"+id+"/blobs", data)
	if code != 201 {
		return code, body
	}
	var b struct{ Blob string }
	mustJSON(t, body, &b)
	return apiAs(t, cred, "POST", "/v1/volumes/"+id+"/commit", map[string]any{"force": true,
		"changes": []map[string]any{{"op": "put", "entry": map[string]any{"path": path, "type": "file", "blob": b.Blob}}}})
}

// TestVolumeQuota: a workspace's volume_mib bounds what its volumes hold: a commit past it is
// a 403 that names the quota; removing files frees the room.
func TestVolumeQuota(t *testing.T) {
	needGust(t)
	cred, ws := newWorkspace(t, "vol-quota")
	if err := api("PUT", "/v1/workspaces/"+ws+"/quotas", map[string]any{"sandboxes": 0, "cpu": 0, "memory_mib": 0, "gpus": 0,
		"image_disk_mib": 0, "requests_per_second": 0, "kv_store_mib": 0, "volume_mib": 1}, nil); err != nil {
		t.Fatal(err)
	}
	code, body := apiAs(t, cred, "POST", "/v1/volumes", map[string]any{"name": "v"})
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var v struct {
		ID string `json:"volume_id"`
	}
	mustJSON(t, body, &v)
	if code, body := putVolumeFile(t, cred, v.ID, "a.bin", bytes.Repeat([]byte("a"), 600<<10)); code != 200 {
		t.Fatalf("first file under the quota: %d %s", code, body)
	}
	// An upload larger than the room left is refused before it is stored.
	code, body = putVolumeFile(t, cred, v.ID, "b.bin", bytes.Repeat([]byte("b"), 600<<10))
	if code != 403 || !strings.Contains(body, "quota_exceeded") || !strings.Contains(body, "volume_mib") {
		t.Fatalf("file over the quota: %d %s", code, body)
	}
	// Two uploads that each fit, committed together, do not.
	var blobs []string
	for _, c := range []string{"c", "d"} {
		code, body := rawAs(t, cred, "POST", "/v1/volumes/"+v.ID+"/blobs", bytes.Repeat([]byte(c), 300<<10))
		if code != 201 {
			t.Fatalf("an upload that fits: %d %s", code, body)
		}
		var b struct{ Blob string }
		mustJSON(t, body, &b)
		blobs = append(blobs, b.Blob)
	}
	code, body = apiAs(t, cred, "POST", "/v1/volumes/"+v.ID+"/commit", map[string]any{"changes": []map[string]any{
		{"op": "put", "entry": map[string]any{"path": "c.bin", "type": "file", "blob": blobs[0]}},
		{"op": "put", "entry": map[string]any{"path": "d.bin", "type": "file", "blob": blobs[1]}}}})
	if code != 403 || !strings.Contains(body, "quota_exceeded") || !strings.Contains(body, "volume_mib") {
		t.Fatalf("a commit over the quota: %d %s", code, body)
	}
	if code, body := apiAs(t, cred, "POST", "/v1/volumes/"+v.ID+"/remove", map[string]any{"path": "a.bin"}); code != 200 {
		t.Fatalf("remove: %d %s", code, body)
	}
	if code, body := putVolumeFile(t, cred, v.ID, "b.bin", bytes.Repeat([]byte("b"), 600<<10)); code != 200 {
		t.Fatalf("after a remove: %d %s", code, body)
	}
}

// TestVolumeCrossWorkspace: another workspace's owner, against a volume by ID through every
// route: each answer is 404, a sandbox cannot mount it, and its contents are unchanged.
func TestVolumeCrossWorkspace(t *testing.T) {
	needGust(t)
	var v struct {
		ID string `json:"volume_id"`
	}
	if err := api("POST", "/v1/volumes", map[string]any{"name": "xws-vol-" + time.Now().Format("150405.000")}, &v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api("DELETE", "/v1/volumes/"+v.ID, nil, nil) })
	code, body := putVolumeFile(t, gust.token, v.ID, "secret.txt", []byte("mine"))
	if code != 200 {
		t.Fatalf("commit: %d %s", code, body)
	}
	other, _ := newWorkspace(t, "vol-other")
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/volumes/" + v.ID, nil},
		{"DELETE", "/v1/volumes/" + v.ID, nil},
		{"POST", "/v1/volumes/" + v.ID + "/heartbeat", nil},
		{"PUT", "/v1/volumes/" + v.ID + "/name", map[string]any{"name": "stolen"}},
		{"GET", "/v1/volumes/" + v.ID + "/entries?path=/", nil},
		{"GET", "/v1/volumes/" + v.ID + "/content?path=secret.txt", nil},
		{"POST", "/v1/volumes/" + v.ID + "/blobs", nil},
		{"POST", "/v1/volumes/" + v.ID + "/commit", map[string]any{"changes": []any{}}},
		{"POST", "/v1/volumes/" + v.ID + "/remove", map[string]any{"path": "secret.txt"}},
		{"POST", "/v1/volumes/" + v.ID + "/copy", map[string]any{"src_paths": []string{"secret.txt"}, "dst_path": "x"}},
	} {
		if code, body := apiAs(t, other, c.method, c.path, c.body); code != 404 {
			t.Errorf("%s %s as another workspace: %d %s, want 404", c.method, c.path, code, body)
		}
	}
	// A sandbox of the other workspace cannot mount it.
	var app struct {
		ID string `json:"app_id"`
	}
	code, body = apiAs(t, other, "POST", "/v1/apps/lookup", map[string]any{"name": "vol-thief", "create_if_missing": true})
	mustJSON(t, body, &app)
	var im struct {
		ID string `json:"image_id"`
	}
	code, body = apiAs(t, other, "POST", "/v1/images", map[string]any{"kind": "debian_slim"})
	for _, line := range strings.Split(body, "\n") {
		var l struct {
			Image *struct {
				ID string `json:"image_id"`
			} `json:"image"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Image != nil {
			im.ID = l.Image.ID
		}
	}
	if im.ID == "" {
		t.Fatalf("resolve an image in the other workspace: %d %s", code, body)
	}
	code, body = apiAs(t, other, "POST", "/v1/sandboxes", map[string]any{"app_id": app.ID, "image_id": im.ID,
		"volumes": []map[string]any{{"path": "/data", "volume_id": v.ID}}})
	if code != 404 {
		t.Errorf("a sandbox mounting another workspace's volume: %d %s, want 404", code, body)
	}
	code, body = apiAs(t, gust.token, "GET", "/v1/volumes/"+v.ID+"/content?path=secret.txt", nil)
	if code != 200 || body != "mine" {
		t.Errorf("the volume's file after the attempts: %d %q", code, body)
	}
}

// TestVolumeCLI: gust volume create, put (a file and a directory), ls, get, cp, rm, rename,
// list and delete, as Modal's `modal volume` does them.
func TestVolumeCLI(t *testing.T) {
	needGust(t)
	name := "cli-vol-" + time.Now().Format("150405")
	run := func(wantErr bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(gust.bin, args...)
		cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
		out, err := cmd.CombinedOutput()
		if (err != nil) != wantErr {
			t.Fatalf("gust %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o644)
	os.WriteFile(filepath.Join(src, "d", "b.txt"), []byte("beta"), 0o755)
	run(false, "volume", "create", name)
	t.Cleanup(func() { exec.Command(gust.bin, "volume", "delete", "--yes", name+"-2").Run() })
	if out := run(true, "volume", "create", name); !strings.Contains(out, "already exists") {
		t.Errorf("create twice: %s", out)
	}
	run(false, "volume", "put", name, filepath.Join(src, "a.txt"), "/one.txt")
	run(false, "volume", "put", name, src, "/tree")
	if out := run(true, "volume", "put", name, filepath.Join(src, "a.txt"), "/one.txt"); !strings.Contains(out, "--force") {
		t.Errorf("put over an existing file: %s", out)
	}
	run(false, "volume", "put", "--force", name, filepath.Join(src, "d", "b.txt"), "/one.txt")
	if out := run(false, "volume", "ls", name); !strings.Contains(out, "one.txt") || !strings.Contains(out, "tree/") {
		t.Errorf("ls: %s", out)
	}
	if out := run(false, "volume", "get", name, "/one.txt", "-"); out != "beta" {
		t.Errorf("get to stdout: %q", out)
	}
	dst := filepath.Join(dir, "dst")
	run(false, "volume", "get", name, "/tree", dst)
	if b, err := os.ReadFile(filepath.Join(dst, "d", "b.txt")); err != nil || string(b) != "beta" {
		t.Errorf("get of a directory: %q %v", b, err)
	}
	run(false, "volume", "cp", name, "/one.txt", "/tree/a.txt", "/tree/d")
	if out := run(false, "volume", "ls", name, "/tree/d"); !strings.Contains(out, "tree/d/one.txt") || !strings.Contains(out, "tree/d/a.txt") {
		t.Errorf("ls after cp: %s", out)
	}
	if out := run(true, "volume", "rm", name, "/tree"); !strings.Contains(out, "recursive") {
		t.Errorf("rm of a directory without -r: %s", out)
	}
	run(false, "volume", "rm", "-r", name, "/tree")
	if out := run(true, "volume", "get", name, "/tree/a.txt", "-"); !strings.Contains(out, "No such file") {
		t.Errorf("get after rm: %s", out)
	}
	run(false, "volume", "rename", "--yes", name, name+"-2")
	if out := run(false, "volume", "list"); !strings.Contains(out, name+"-2") {
		t.Errorf("list after rename: %s", out)
	}
	run(false, "volume", "delete", "--yes", name+"-2")
	if out := run(true, "volume", "ls", name+"-2"); !strings.Contains(out, "not found") {
		t.Errorf("ls after delete: %s", out)
	}
}

// TestVolumeMetering: a volume's bytes are metered as storage of class volume (storage read
// every second): its row in the usage has GiB-seconds and the volume's name.
func TestVolumeMetering(t *testing.T) {
	needGust(t)
	t.Setenv("GUST_STORAGE_METER_PERIOD", "1s")
	dir := t.TempDir()
	meteredGust(t, filepath.Join(dir, "data"), freePort())
	var v struct {
		ID string `json:"volume_id"`
	}
	if err := api("POST", "/v1/volumes", map[string]any{"name": "metered"}, &v); err != nil {
		t.Fatal(err)
	}
	if code, body := putVolumeFile(t, gust.token, v.ID, "f.bin", bytes.Repeat([]byte("m"), 1<<20)); code != 200 {
		t.Fatalf("commit: %d %s", code, body)
	}
	var row usageRow
	for i := 0; i < 40 && row.StorageGiBSeconds < 0.9/1024; i++ {
		time.Sleep(250 * time.Millisecond)
		row = usageBy(t, "app")[v.ID]
	}
	// About 1 MiB for a second or more: 1/1024 GiB-second at least.
	if row.StorageGiBSeconds < 0.9/1024 || row.Name != "metered" {
		t.Errorf("the volume's usage row: %+v, want GiB-seconds of 1 MiB and its name", row)
	}
}

// TestVolumeCommitWhileBusy runs sdk/python/tests/programs/volume_commits.py: explicit commits
// while two threads of the same container read the volume and one writes to it (no reader
// ever sees a file vanish, the directory empty or read-only; every file written is
// committed), and file owners set in a container kept by a commit.
func TestVolumeCommitWhileBusy(t *testing.T) {
	needGust(t)
	res := runProgram(t, "volume_commits.py")
	want := map[string]string{
		"glitches":     "[]",
		"reads":        "True",
		"commits_kept": "30",
		"owners":       "[('owned.txt', 1234, 2345), ('owned_dir', 1000, 1000), ('c0.txt', 0, 0)]",
	}
	for k, v := range want {
		if res[k] != v {
			t.Errorf("RESULT %s = %q, want %q", k, res[k], v)
		}
	}
	if !strings.HasPrefix(res["writes_kept"], "True ") {
		t.Errorf("RESULT writes_kept = %q, want every file the writer wrote committed", res["writes_kept"])
	}
}

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

// The tenant boundary, end to end: workspaces apart, a function container's own credential
// and its allowlist, revocation, quotas.

// apiAs makes a JSON request with a credential ("id:secret" or an opaque token) and returns
// the status and body.
func apiAs(t *testing.T, cred, method, path string, in any) (int, string) {
	t.Helper()
	var body bytes.Buffer
	if in != nil {
		json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, gust.url+path, &body)
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

// newWorkspace makes a workspace with the operator's token and returns its owner's
// credential and the workspace's ID.
func newWorkspace(t *testing.T, name string) (cred, id string) {
	t.Helper()
	var out struct {
		Workspace struct{ ID string }
		Token     struct {
			ID     string `json:"token_id"`
			Secret string `json:"token_secret"`
		}
	}
	if err := api("POST", "/v1/workspaces", map[string]string{"name": name + "-" + time.Now().Format("150405.000")}, &out); err != nil {
		t.Fatal(err)
	}
	return out.Token.ID + ":" + out.Token.Secret, out.Workspace.ID
}

// TestTenantCrossWorkspace: workspace B's owner, against each of A's objects through the
// routes and the Python SDK: every answer is 404 and nothing of A's changes.
func TestTenantCrossWorkspace(t *testing.T) {
	needGust(t)
	id := createRaw(t, map[string]any{"isolation": "runc"})
	var app struct {
		ID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "tenant-a", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	if err := api("POST", "/v1/secrets", map[string]any{"name": "tenant-a-secret", "env": map[string]string{"K": "a-only"}, "overwrite": true}, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := newWorkspace(t, "tenant-b")
	sb := "/v1/sandboxes/" + id
	for _, tt := range []struct {
		method, path string
		body         any
	}{
		{"GET", sb, nil},
		{"POST", sb + "/execs", map[string]any{"argv": []string{"touch", "/tmp/b-was-here"}}},
		{"GET", sb + "/files?path=/etc/hostname", nil},
		{"PUT", sb + "/files?path=/tmp/b-was-here", nil},
		{"GET", sb + "/logs", nil},
		{"PUT", sb + "/tags", map[string]any{"tags": map[string]string{"owner": "b"}}},
		{"POST", sb + "/snapshot", nil},
		{"POST", sb + "/terminate", nil},
		{"GET", "/v1/apps/" + app.ID, nil},
		{"POST", "/v1/apps/" + app.ID + "/stop", nil},
		{"GET", "/v1/images/" + gust.imageID, nil},
		{"DELETE", "/v1/images/" + gust.imageID, nil},
		{"POST", "/v1/secrets/lookup", map[string]string{"name": "tenant-a-secret"}},
		{"DELETE", "/v1/secrets/tenant-a-secret", nil},
		{"POST", "/v1/sandboxes", map[string]any{"app_id": app.ID, "image_id": gust.imageID}},
	} {
		if code, body := apiAs(t, b, tt.method, tt.path, tt.body); code != http.StatusNotFound {
			t.Errorf("B: %s %s: %d %s, want 404", tt.method, tt.path, code, body)
		}
	}
	// The Python SDK, with B's credential from the environment.
	py := exec.Command("python3", "-c", `
import gust
try:
    gust.Sandbox.from_id("`+id+`")
    print("FOUND")
except gust.exception.NotFoundError:
    print("NOT FOUND")
`)
	dir := filepath.Join(repoRoot(), "sdk", "python")
	bid, bsecret, _ := strings.Cut(b, ":")
	py.Env = append(os.Environ(), "PYTHONPATH="+dir, "GUST_SERVER_URL="+gust.url, "GUST_TOKEN=", "GUST_TOKEN_ID="+bid, "GUST_TOKEN_SECRET="+bsecret)
	if out, err := py.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "NOT FOUND" {
		t.Errorf("Python SDK as B: %v %s", err, out)
	}
	// Nothing changed: A's sandbox runs, untouched and untagged, and A's secret is there.
	out, _, code := execRaw(t, id, "sh", "-c", "test -e /tmp/b-was-here && echo touched || echo clean")
	if code != 0 || strings.TrimSpace(out) != "clean" {
		t.Fatalf("A's sandbox after B's attempts: %q (exit %d)", out, code)
	}
	var got map[string]any
	if err := api("GET", sb, nil, &got); err != nil || got["status"] != "running" || got["tags"].(map[string]any)["owner"] != nil {
		t.Fatalf("A's sandbox record after B's attempts: %v %v", got, err)
	}
	if err := api("POST", "/v1/secrets/lookup", map[string]string{"name": "tenant-a-secret"}, nil); err != nil {
		t.Fatalf("A's secret after B's attempts: %v", err)
	}
}

const probeModule = `
import json, os, socket

def probe(reqs):
    cred = os.environ["GUST_TOKEN_ID"] + ":" + os.environ["GUST_TOKEN_SECRET"]
    codes = []
    for method, path, body in reqs:
        s = socket.socket(socket.AF_UNIX)
        s.connect("/.gust/run/api.sock")
        data = json.dumps(body).encode() if body is not None else b""
        s.sendall(("%s %s HTTP/1.1\r\nHost: gust\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, cred, len(data))).encode() + data)
        resp = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
        s.close()
        codes.append(int(resp.split(b" ")[1]))
    return {"codes": codes, "cred": cred}
`

// TestContainerCredentialScope: from inside a function container, every route outside the
// allowlist is refused, another's sandbox is not found, and the credential dies with the
// container.
func TestContainerCredentialScope(t *testing.T) {
	needGust(t)
	other := createRaw(t, map[string]any{"isolation": "runc"})
	blob := uploadCode(t, map[string]string{"probemod.py": probeModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "cred-probe", "mode": "ephemeral",
		"code": map[string]string{"blob": blob, "module": "probemod"}, "functions": []map[string]any{{"name": "probe", "image_id": gust.imageID}}}, &app); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil)
		}
	})
	reqs := []struct {
		method, path string
		body         any
		want         int
	}{
		{"GET", "/v1/secrets", nil, 403},
		{"POST", "/v1/secrets", map[string]any{"name": "x", "env": map[string]string{"K": "v"}}, 403},
		{"GET", "/v1/apps", nil, 403},
		{"POST", "/v1/apps/publish", map[string]any{}, 403},
		{"POST", "/v1/images", map[string]any{"kind": "debian_slim", "steps": []map[string]any{{"type": "run_commands", "commands": []string{"echo never-built-" + time.Now().Format(time.RFC3339Nano)}}}}, 403},
		{"POST", "/v1/images", map[string]any{"kind": "debian_slim"}, 200}, // built already: resolving it is fine
		{"DELETE", "/v1/images", nil, 403},
		{"GET", "/v1/tokens", nil, 403},
		{"POST", "/v1/workspaces", map[string]any{"name": "x"}, 403},
		{"GET", "/v1/audit", nil, 403},
		{"POST", "/v1/workers/register", map[string]any{}, 403},
		{"GET", "/v1/sandboxes/" + other, nil, 404},
		{"POST", "/v1/sandboxes/" + other + "/execs", map[string]any{"argv": []string{"true"}}, 404},
		{"POST", "/v1/sandboxes/" + other + "/terminate", nil, 404},
		{"GET", "/v1/whoami", nil, 200},
		{"GET", "/v1/functions/" + app.Functions["probe"], nil, 200},
	}
	var args []any
	for _, r := range reqs {
		args = append(args, []any{r.method, r.path, r.body})
	}
	res := callRemote(t, app.Functions["probe"], nil, args).value(t, 0).(map[string]any)
	codes := res["codes"].([]any)
	for i, r := range reqs {
		if int(codes[i].(float64)) != r.want {
			t.Errorf("from the container: %s %s: %v, want %d", r.method, r.path, codes[i], r.want)
		}
	}
	// The other sandbox is untouched, and the credential ends with its container.
	if out, _, code := execRaw(t, other, "echo", "alive"); code != 0 || strings.TrimSpace(out) != "alive" {
		t.Fatalf("the other sandbox: %q %d", out, code)
	}
	cred := res["cred"].(string)
	if code, body := apiAs(t, cred, "GET", "/v1/whoami", nil); code != 200 {
		t.Fatalf("the live container's credential from outside: %d %s", code, body)
	}
	if err := api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	stopped = true
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := apiAs(t, cred, "GET", "/v1/whoami", nil)
		if code == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the credential of a stopped container still works: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTokenRevokedAndQuota: a revoked token is refused within a second; a workspace at its
// sandbox quota gets the named error and no half-made sandbox.
func TestTokenRevokedAndQuota(t *testing.T) {
	needGust(t)
	b, wsID := newWorkspace(t, "quota")
	if err := api("PUT", "/v1/workspaces/"+wsID+"/quotas", map[string]any{"sandboxes": 1}, nil); err != nil {
		t.Fatal(err)
	}
	appID, imageID := workspaceAppImage(t, b)
	code, body := apiAs(t, b, "POST", "/v1/sandboxes", map[string]any{"app_id": appID, "image_id": imageID})
	var first struct {
		ID string `json:"sandbox_id"`
	}
	if code != 201 || json.Unmarshal([]byte(body), &first) != nil {
		t.Fatalf("B's first sandbox: %d %s", code, body)
	}
	code, body = apiAs(t, b, "POST", "/v1/sandboxes", map[string]any{"app_id": appID, "image_id": imageID})
	if code != 403 || !strings.Contains(body, "quota_exceeded") || !strings.Contains(body, "quota sandboxes is 1") {
		t.Fatalf("B's second sandbox over a quota of 1: %d %s", code, body)
	}
	code, body = apiAs(t, b, "GET", "/v1/sandboxes", nil)
	if code != 200 || strings.Count(body, `"sandbox_id"`) != 1 {
		t.Fatalf("B's sandboxes after the refusal: %d %s", code, body)
	}
	if code, body := apiAs(t, b, "POST", "/v1/sandboxes/"+first.ID+"/terminate", nil); code != 200 {
		t.Fatalf("terminating B's sandbox: %d %s", code, body)
	}
	// Revocation: refused within a second.
	id, _, _ := strings.Cut(b, ":")
	if code, body := apiAs(t, b, "DELETE", "/v1/tokens/"+id, nil); code != 200 {
		t.Fatalf("revoking: %d %s", code, body)
	}
	start := time.Now()
	for {
		code, _ := apiAs(t, b, "GET", "/v1/sandboxes", nil)
		if code == 401 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("a revoked token still works after %v", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// workspaceAppImage gives workspace cred an app and the debian_slim image: B may not use A's
// image, so it resolves its own (a cache hit, granted to B).
func workspaceAppImage(t *testing.T, cred string) (appID, imageID string) {
	t.Helper()
	var app struct {
		ID string `json:"app_id"`
	}
	code, body := apiAs(t, cred, "POST", "/v1/apps/lookup", map[string]any{"name": "q", "create_if_missing": true})
	if code != 200 || json.Unmarshal([]byte(body), &app) != nil {
		t.Fatalf("%d %s", code, body)
	}
	var im struct {
		ID string `json:"image_id"`
	}
	code, body = apiAs(t, cred, "POST", "/v1/images", map[string]any{"kind": "debian_slim"})
	lines := strings.Split(strings.TrimSpace(body), "\n")
	var last struct {
		Image json.RawMessage `json:"image"`
	}
	if code != 200 || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || json.Unmarshal(last.Image, &im) != nil || im.ID == "" {
		t.Fatalf("resolving debian_slim: %d %s", code, body)
	}
	return app.ID, im.ID
}

// TestSnapshotQuota: a snapshot's layer counts against the workspace's image_disk_mib, as its
// uploads do. Before, a workspace could keep any amount of disk by snapshotting sandboxes.
func TestSnapshotQuota(t *testing.T) {
	needGust(t)
	b, wsID := newWorkspace(t, "snapquota")
	appID, imageID := workspaceAppImage(t, b)
	setQuota := func(mib int) {
		t.Helper()
		if err := api("PUT", "/v1/workspaces/"+wsID+"/quotas", map[string]any{"image_disk_mib": mib}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// 3 MiB of random bytes (no compression or sharing makes them smaller), then a marker.
	code, body := apiAs(t, b, "POST", "/v1/sandboxes", map[string]any{"app_id": appID, "image_id": imageID,
		"command": []string{"sh", "-c", "head -c 3145728 /dev/urandom > /root/big && touch /root/done && sleep 600"}})
	var sb struct {
		ID string `json:"sandbox_id"`
	}
	if code != 201 || json.Unmarshal([]byte(body), &sb) != nil {
		t.Fatalf("create: %d %s", code, body)
	}
	t.Cleanup(func() { apiAs(t, b, "POST", "/v1/sandboxes/"+sb.ID+"/terminate", nil) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := apiAs(t, b, "GET", "/v1/sandboxes/"+sb.ID+"/files/stat?path=/root/done", nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox never wrote its file (last answer %d)", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	images := func() int {
		code, body := apiAs(t, b, "GET", "/v1/images", nil)
		if code != 200 {
			t.Fatalf("list images: %d %s", code, body)
		}
		return strings.Count(body, `"image_id"`)
	}
	before := images()

	setQuota(2)
	code, body = apiAs(t, b, "POST", "/v1/sandboxes/"+sb.ID+"/snapshot", nil)
	if code != 403 || !strings.Contains(body, "quota_exceeded") || !strings.Contains(body, "image_disk_mib is 2") {
		t.Fatalf("a 3 MiB snapshot under a 2 MiB quota: %d %s", code, body)
	}
	if n := images(); n != before {
		t.Fatalf("the refused snapshot left an image: %d images, %d before", n, before)
	}

	// Unlimited: the snapshot is made and charged; at the quota, the next is refused up front.
	setQuota(0)
	var im struct {
		ID string `json:"image_id"`
	}
	code, body = apiAs(t, b, "POST", "/v1/sandboxes/"+sb.ID+"/snapshot", nil)
	if code != 201 || json.Unmarshal([]byte(body), &im) != nil {
		t.Fatalf("snapshot without a quota: %d %s", code, body)
	}
	setQuota(3)
	code, body = apiAs(t, b, "POST", "/v1/sandboxes/"+sb.ID+"/snapshot", nil)
	if code != 403 || !strings.Contains(body, "image_disk_mib is 3") {
		t.Fatalf("a second snapshot with 3 MiB kept under a 3 MiB quota: %d %s", code, body)
	}
	// Deleting the snapshot gives its room back.
	if code, body := apiAs(t, b, "DELETE", "/v1/images/"+im.ID, nil); code != 204 {
		t.Fatalf("delete the snapshot: %d %s", code, body)
	}
	setQuota(5)
	if code, body := apiAs(t, b, "POST", "/v1/sandboxes/"+sb.ID+"/snapshot", nil); code != 201 {
		t.Fatalf("snapshot after the first was deleted, under 5 MiB: %d %s", code, body)
	}
}

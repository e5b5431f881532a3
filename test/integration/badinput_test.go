package integration

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// raw sends a request and returns the status and body.
func raw(t *testing.T, method, path string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, gust.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func js(v any) []byte { b, _ := json.Marshal(v); return b }

func TestBadInput(t *testing.T) {
	needGust(t)
	live := createRaw(t, nil)
	dead := createRaw(t, nil)
	if code, body := raw(t, "POST", "/v1/sandboxes/"+dead+"/terminate", nil); code != 200 {
		t.Fatalf("terminate: %d %s", code, body)
	}
	huge := bytes.Repeat([]byte("x"), 64<<20+10)
	tests := []struct {
		name, method, path string
		body               []byte
		status             int
		says               string
	}{
		{"unknown image", "POST", "/v1/sandboxes", js(map[string]any{"app_id": gust.appID, "image_id": "im-nope"}), 404, "image"},
		{"unknown app", "POST", "/v1/sandboxes", js(map[string]any{"app_id": "ap-nope", "image_id": gust.imageID}), 404, "app"},
		{"negative timeout", "POST", "/v1/sandboxes", js(map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "timeout": -5}), 400, "timeout"},
		{"unknown isolation", "POST", "/v1/sandboxes", js(map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "isolation": "kvm"}), 400, "isolation"},
		{"unknown field", "POST", "/v1/sandboxes", js(map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "gpus": 8}), 400, "gpus"},
		{"not json", "POST", "/v1/sandboxes", []byte("{nope"), 400, "JSON"},
		{"bad python version", "POST", "/v1/images", js(map[string]any{"kind": "debian_slim", "python_version": "3.12"}), 400, "3.13 (Debian trixie)"},
		{"exec in terminated sandbox", "POST", "/v1/sandboxes/" + dead + "/execs", js(map[string]any{"command": []string{"true"}}), 409, "terminated"},
		{"exec without command", "POST", "/v1/sandboxes/" + live + "/execs", js(map[string]any{"command": []string{}}), 400, "command"},
		{"exec in unknown sandbox", "POST", "/v1/sandboxes/sb-nope/execs", js(map[string]any{"command": []string{"true"}}), 404, "sb-nope"},
		{"relative path", "GET", "/v1/sandboxes/" + live + "/files?path=etc/passwd", nil, 400, "absolute"},
		{"path climbing out", "GET", "/v1/sandboxes/" + live + "/files?path=/../../etc/passwd", nil, 400, "climbs above"},
		{"missing file", "GET", "/v1/sandboxes/" + live + "/files?path=/nope", nil, 404, "/nope"},
		{"read a directory", "GET", "/v1/sandboxes/" + live + "/files?path=/etc", nil, 400, "directory"},
		{"huge file write", "PUT", "/v1/sandboxes/" + live + "/files?path=/tmp/huge", huge, 413, "64 MiB"},
		{"wrong method", "GET", "/v1/sandboxes/" + live + "/terminate", nil, 405, "not allowed"},
		{"no auth path", "GET", "/nowhere", nil, 404, "/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := raw(t, tt.method, tt.path, tt.body)
			if code != tt.status {
				t.Fatalf("status %d, want %d: %s", code, tt.status, body)
			}
			var e struct {
				Error struct{ Kind, Message string }
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" {
				t.Fatalf("error body is not the JSON error shape: %q", body)
			}
			if !strings.Contains(e.Error.Message, tt.says) {
				t.Fatalf("message %q does not name the problem (%q)", e.Error.Message, tt.says)
			}
		})
	}
	// A huge read is refused too: make a sparse 100 MiB file and read it whole.
	execRaw(t, live, "truncate", "-s", "100M", "/tmp/sparse")
	if code, body := raw(t, "GET", "/v1/sandboxes/"+live+"/files?path=/tmp/sparse", nil); code != 413 {
		t.Fatalf("huge read: %d %s", code, body[:min(len(body), 200)])
	}
	// Nothing was half-made: the live sandbox still works.
	if out, _, code := execRaw(t, live, "echo", "ok"); out != "ok\n" || code != 0 {
		t.Fatalf("sandbox broken after bad requests: %q %d", out, code)
	}
	// No auth.
	req, _ := http.NewRequest("GET", gust.url+"/v1/sandboxes", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("no token: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
}

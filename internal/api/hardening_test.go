package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/fleet"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/imagebuild"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

const testToken = "t"

// testAPI is the API over a fresh store, assembled as internal/server does, with no worker.
type testAPI struct {
	h          http.Handler
	fleet      *fleet.Fleet
	workerCred string // the registered worker's credential
}

const testJoinToken = "join-token-for-tests"

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	layers, err := image.NewBuilder(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	logger := log.New(io.Discard, "", 0)
	fl := fleet.New(st, fleet.Config{Logger: logger})
	eng := dispatch.New(st, fl, dispatch.Config{Logger: logger})
	fl.OnContainerEnd(eng.ContainerEnded)
	builds := imagebuild.New(st, fl, layers, logger)
	a := New(Config{Token: testToken, JoinToken: testJoinToken, DefaultIsolation: "runc", Logger: logger}, st, fl, eng, builds, layers)
	return &testAPI{h: a.Handler(), fleet: fl}
}

// do sends a request with the token and returns the status and body.
func (ta *testAPI) do(t *testing.T, method, path string, body []byte) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	// Each part of the API with the credential it takes: the operator's, the join token,
	// or the worker's own.
	token := testToken
	switch {
	case path == "/v1/workers/register":
		token = testJoinToken
	case strings.HasPrefix(path, "/v1/workers/"):
		token = ta.workerCred
	}
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	ta.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// errorKind returns the kind and message of a JSON error body, failing on any other body.
func errorKind(t *testing.T, body string) (string, string) {
	t.Helper()
	var e struct {
		Error struct{ Kind, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Kind == "" || e.Error.Message == "" {
		t.Fatalf("not the JSON error body: %q", body[:min(len(body), 300)])
	}
	return e.Error.Kind, e.Error.Message
}

func (ta *testAPI) registerWorker(t *testing.T) string {
	t.Helper()
	b, _ := json.Marshal(workerproto.RegisterRequest{Name: "w", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:1", CPU: 4, MemoryMiB: 4096,
		Isolation: []string{"runc"}})
	code, body := ta.do(t, "POST", "/v1/workers/register", b)
	var resp workerproto.RegisterResponse
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil || resp.Credential == "" {
		t.Fatalf("registering a worker: %d %s", code, body)
	}
	ta.workerCred = resp.Credential
	return resp.WorkerID
}

// TestBodyLimits: a body one byte over a route's limit is a 413 that names the limit; a body
// at the limit is read.
func TestBodyLimits(t *testing.T) {
	ta := newTestAPI(t)
	wid := ta.registerWorker(t)
	tests := []struct {
		path  string
		start string // JSON, padded with spaces to the size under test
		limit int
		says  string
	}{
		{"/v1/functions/fu-x/calls", `{"kind":"remote"}`, 64 << 20, "64 MiB"},
		{"/v1/calls/fc-x/inputs", `{"inputs":[]}`, 64 << 20, "64 MiB"},
		{"/v1/workers/" + wid + "/events", `{"events":[]}`, 256 << 20, "256 MiB"},
		{"/v1/apps/publish", `{}`, 4 << 20, "4 MiB"},
		{"/v1/sandboxes", `{}`, 1 << 20, "1 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			body := make([]byte, tt.limit+1)
			copy(body, tt.start)
			for i := len(tt.start); i < len(body); i++ {
				body[i] = ' '
			}
			code, resp := ta.do(t, "POST", tt.path, body)
			kind, msg := errorKind(t, resp)
			if code != http.StatusRequestEntityTooLarge || kind != "too_large" || !strings.Contains(msg, tt.says) {
				t.Fatalf("one byte over: %d %s", code, resp)
			}
			if code, resp := ta.do(t, "POST", tt.path, body[:tt.limit]); code == http.StatusRequestEntityTooLarge {
				t.Fatalf("at the limit: %d %s", code, resp)
			}
		})
	}
}

// TestBadBodies: trailing data, invalid UTF-8 and NUL bytes in names are refused with 400.
func TestBadBodies(t *testing.T) {
	ta := newTestAPI(t)
	tests := []struct {
		name, method, path, body string
		says                     string
	}{
		{"two objects", "POST", "/v1/apps/lookup", `{"name":"a","create_if_missing":true}{}`, "after the JSON object"},
		{"garbage after", "POST", "/v1/apps/lookup", `{"name":"a","create_if_missing":true} x`, "after the JSON object"},
		{"invalid UTF-8 in a name", "POST", "/v1/apps/lookup", "{\"name\":\"a\xff\",\"create_if_missing\":true}", "UTF-8"},
		{"NUL in an app name", "POST", "/v1/apps/lookup", `{"name":"a\u0000b","create_if_missing":true}`, "app name"},
		{"NUL in a tag key", "PUT", "/v1/sandboxes/sb-x/tags", `{"tags":{"a\u0000":"b"}}`, "NUL"},
		{"NUL in a tag value", "PUT", "/v1/sandboxes/sb-x/tags", `{"tags":{"a":"b\u0000"}}`, "NUL"},
		{"NUL in a workdir step", "POST", "/v1/images", `{"kind":"scratch","steps":[{"type":"workdir","path":"/a\u0000b"}]}`, "NUL"},
		{"NUL in a user step", "POST", "/v1/images", `{"kind":"scratch","steps":[{"type":"user","user":"a\u0000"}]}`, "NUL"},
		{"NUL in a secret name", "POST", "/v1/secrets", `{"name":"s\u0000","env":{"A":"b"}}`, "secret name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := ta.do(t, tt.method, tt.path, []byte(tt.body))
			kind, msg := errorKind(t, body)
			if code != http.StatusBadRequest || kind != "invalid" || !strings.Contains(msg, tt.says) {
				t.Fatalf("%d %s, want 400 saying %q", code, body, tt.says)
			}
		})
	}
	// The same lookup without the trailing data works.
	if code, body := ta.do(t, "POST", "/v1/apps/lookup", []byte(`{"name":"a","create_if_missing":true}`)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
}

// TestQueryNumbers: numbers of seconds in queries are finite, non-negative and in range.
func TestQueryNumbers(t *testing.T) {
	ta := newTestAPI(t)
	wid := ta.registerWorker(t)
	code, body := ta.do(t, "POST", "/v1/blobs", []byte("fresh files"))
	if code != http.StatusCreated {
		t.Fatalf("blob upload: %d %s", code, body)
	}
	var blob struct{ Blob string }
	json.Unmarshal([]byte(body), &blob)
	for _, path := range []string{
		"/v1/images?older_than=NaN", "/v1/images?older_than=-1", "/v1/images?older_than=1e300",
		"/v1/images?older_than=Inf", "/v1/images?older_than=x",
	} {
		code, body := ta.do(t, "DELETE", path, nil)
		if kind, msg := errorKind(t, body); code != 400 || kind != "invalid" || !strings.Contains(msg, "older_than") {
			t.Errorf("DELETE %s: %d %s", path, code, body)
		}
	}
	if code, body := ta.do(t, "GET", "/v1/blobs/"+blob.Blob, nil); code != 200 {
		t.Fatalf("a fresh blob is gone after the refused prunes: %d %s", code, body)
	}
	for _, path := range []string{
		"/v1/sandboxes/sb-x?wait=NaN", "/v1/sandboxes/sb-x?wait=Inf", "/v1/sandboxes/sb-x?wait=1e400", "/v1/sandboxes/sb-x?wait=-1",
		"/v1/calls/fc-x/stream?timeout=NaN", "/v1/calls/fc-x/stream?timeout=+Inf", "/v1/calls/fc-x/stream?timeout=1e400",
		"/v1/workers/" + wid + "/assignments?wait=NaN", "/v1/workers/" + wid + "/assignments?wait=-Inf",
		"/v1/workers/" + wid + "/assignments?wait=1e400",
	} {
		code, body := ta.do(t, "GET", path, nil)
		name := strings.SplitN(strings.SplitN(path, "?", 2)[1], "=", 2)[0]
		if kind, msg := errorKind(t, body); code != 400 || kind != "invalid" || !strings.Contains(msg, name) {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	// Ordinary values still pass.
	if code, body := ta.do(t, "GET", "/v1/workers/"+wid+"/assignments?wait=0.01", nil); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if code, body := ta.do(t, "DELETE", "/v1/images?older_than=3600", nil); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
}

// TestWorkerRegisterChecks: a worker's name, capacity, runtimes and address are checked.
func TestWorkerRegisterChecks(t *testing.T) {
	ta := newTestAPI(t)
	valid := func() map[string]any {
		return map[string]any{"name": "w-1.example", "addr": "http://10.0.0.5:7421", "cpu": 8, "memory": 16384, "isolation": []string{"runc", "gvisor"},
			"api_token": "0123456789abcdef0123456789abcdef"}
	}
	tests := []struct {
		name  string
		field string
		value any
	}{
		{"climbing name", "name", "../../x"},
		{"dot name", "name", ".hidden"},
		{"empty name", "name", ""},
		{"long name", "name", strings.Repeat("a", 65)},
		{"slash in name", "name", "a/b"},
		{"negative cpu", "cpu", -1},
		{"zero cpu", "cpu", 0},
		{"absurd cpu", "cpu", 1e9},
		{"negative memory", "memory", -5},
		{"absurd memory", "memory", 1 << 40},
		{"unknown runtime", "isolation", []string{"kvm"}},
		{"not http", "addr", "ftp://10.0.0.5/"},
		{"no host", "addr", "http://"},
		{"not a URL", "addr", "10.0.0.5:7421"},
		{"short API token", "api_token", "guessable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid()
			req[tt.field] = tt.value
			b, _ := json.Marshal(req)
			code, body := ta.do(t, "POST", "/v1/workers/register", b)
			if kind, msg := errorKind(t, body); code != 400 || kind != "invalid" || !strings.Contains(msg, tt.field) {
				t.Fatalf("%d %s, want 400 naming %s", code, body, tt.field)
			}
		})
	}
	b, _ := json.Marshal(valid())
	if code, body := ta.do(t, "POST", "/v1/workers/register", b); code != 200 {
		t.Fatalf("a valid worker: %d %s", code, body)
	}
}

// TestNoPlainErrors: requests that no route takes get the JSON error body, never a redirect
// or the mux's plain text.
func TestNoPlainErrors(t *testing.T) {
	ta := newTestAPI(t)
	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/sandboxes/../images", 400},
		{"GET", "/v1/sandboxes/./x", 400},
		{"GET", "/v1//sandboxes", 400},
		{"GET", "/v1/sandboxes/a%2F..%2Fb", 400},
		{"GET", "/v1/sandboxes/%2e%2e", 400},
		{"DELETE", "/v1/health", 405},
		{"PATCH", "/v1/sandboxes/x", 405},
		{"OPTIONS", "/v1/sandboxes", 405},
		{"BREW", "/v1/images", 405},
		{"GET", "/v1", 404},
		{"GET", "/v1/nope", 404},
		{"GET", "/v1/sandboxes/", 404},
		{"GET", "/elsewhere/../v1/health", 400},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			rec := httptest.NewRecorder()
			ta.h.ServeHTTP(rec, req)
			errorKind(t, rec.Body.String())
			if rec.Code != tt.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body.String(), tt.status)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}

package gust

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

const testToken = "tok-test"

// fakeAPI is an httptest server that checks the bearer token and serves the handlers a test
// registers on it.
type fakeAPI struct {
	mux *http.ServeMux
	srv *httptest.Server
}

func newFakeAPI(t *testing.T) (*fakeAPI, *Client) {
	t.Helper()
	f := &fakeAPI{mux: http.NewServeMux()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/health" && r.Header.Get("Authorization") != "Bearer "+testToken {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{"kind": "unauthorized", "message": "missing or wrong bearer token"}})
			return
		}
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	c, err := NewClient(Config{ServerURL: f.srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func (f *fakeAPI) handle(pattern string, h http.HandlerFunc) { f.mux.HandleFunc(pattern, h) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"kind": kind, "message": msg}})
}

// ndjson writes NDJSON lines, flushing each.
type ndjson struct {
	w http.ResponseWriter
}

func startNDJSON(w http.ResponseWriter) *ndjson {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	return &ndjson{w}
}

func (n *ndjson) send(v any) {
	json.NewEncoder(n.w).Encode(v)
	n.w.(http.Flusher).Flush()
}

func (n *ndjson) out(stream string, data []byte) {
	n.send(map[string]string{"stream": stream, "data": base64.StdEncoding.EncodeToString(data)})
}

func decodeBody(t *testing.T, r *http.Request) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil && err != io.EOF {
		t.Errorf("request body: %v", err)
	}
	return m
}

// sandboxJSON is a SANDBOX as the server writes it.
func sandboxJSON(id, status string) map[string]any {
	return map[string]any{
		"sandbox_id": id, "app_id": "ap-1", "name": nil, "tags": map[string]string{}, "image_id": "im-1",
		"command": nil, "isolation": "runc", "status": status, "exit_code": nil, "error": nil,
		"timeout": 300, "idle_timeout": nil, "cpu": 1.0, "memory": 1024, "workdir": nil,
		"block_network": false, "created_at": "2026-01-02T03:04:05Z", "started_at": "2026-01-02T03:04:06Z", "finished_at": nil,
	}
}

// runningSandbox registers GET of a running sandbox and returns it.
func runningSandbox(t *testing.T, f *fakeAPI, c *Client) *Sandbox {
	t.Helper()
	f.handle("GET /v1/sandboxes/sb-1", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, sandboxJSON("sb-1", "running"))
	})
	sb, err := c.Sandbox(t.Context(), "sb-1")
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// doAs sends a request with the given credential.
func (ta *testAPI) doAs(t *testing.T, cred, method, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+cred)
	rec := httptest.NewRecorder()
	ta.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// newCred makes a token with the operator's and returns "id:secret".
func (ta *testAPI) newCred(t *testing.T, body string) string {
	t.Helper()
	code, resp := ta.doAs(t, testToken, "POST", "/v1/tokens", body)
	var tok struct {
		ID     string `json:"token_id"`
		Secret string `json:"token_secret"`
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(resp), &tok) != nil || tok.Secret == "" {
		t.Fatalf("making a token: %d %s", code, resp)
	}
	return tok.ID + ":" + tok.Secret
}

// newWorkspace makes a workspace and returns its owner's credential.
func (ta *testAPI) newWorkspace(t *testing.T, name string) string {
	t.Helper()
	code, resp := ta.doAs(t, testToken, "POST", "/v1/workspaces", `{"name":"`+name+`"}`)
	var out struct {
		Token struct {
			ID     string `json:"token_id"`
			Secret string `json:"token_secret"`
		}
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(resp), &out) != nil || out.Token.Secret == "" {
		t.Fatalf("making workspace %s: %d %s", name, code, resp)
	}
	return out.Token.ID + ":" + out.Token.Secret
}

// Another workspace's objects are not found, never forbidden, and nothing of them changes.
func TestWorkspacesAreApart(t *testing.T) {
	ta := newTestAPI(t)
	code, body := ta.doAs(t, testToken, "POST", "/v1/apps/lookup", `{"name":"a-app","create_if_missing":true}`)
	var app struct {
		ID string `json:"app_id"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &app) != nil {
		t.Fatalf("%d %s", code, body)
	}
	if code, body := ta.doAs(t, testToken, "POST", "/v1/secrets", `{"name":"a-secret","env":{"K":"v"}}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	b := ta.newWorkspace(t, "tenant-b")
	for _, tt := range []struct{ method, path, body string }{
		{"GET", "/v1/apps/" + app.ID, ""},
		{"POST", "/v1/apps/" + app.ID + "/stop", ""},
		{"GET", "/v1/apps/" + app.ID + "/logs", ""},
		{"POST", "/v1/apps/" + app.ID + "/heartbeat", ""},
		{"POST", "/v1/secrets/lookup", `{"name":"a-secret"}`},
		{"DELETE", "/v1/secrets/a-secret", ""},
		{"POST", "/v1/functions/lookup", `{"app_name":"a-app","name":"f"}`},
		{"GET", "/v1/workspaces/ws-default/quotas", ""},
		{"POST", "/v1/sandboxes", `{"app_id":"` + app.ID + `","image_id":"im-x"}`},
	} {
		code, body := ta.doAs(t, b, tt.method, tt.path, tt.body)
		if kind, _ := errorKind(t, body); code != http.StatusNotFound || kind != "not_found" {
			t.Errorf("workspace B: %s %s: %d %s, want 404", tt.method, tt.path, code, body)
		}
	}
	// Lists show only B's own.
	for _, path := range []string{"/v1/apps", "/v1/secrets", "/v1/sandboxes", "/v1/images"} {
		code, body := ta.doAs(t, b, "GET", path, "")
		if code != 200 || strings.Contains(body, "a-app") || strings.Contains(body, "a-secret") || strings.Contains(body, app.ID) {
			t.Errorf("workspace B lists %s: %d %s", path, code, body)
		}
	}
	// B's app of the same name is B's own.
	code, body = ta.doAs(t, b, "POST", "/v1/apps/lookup", `{"name":"a-app","create_if_missing":true}`)
	if code != 200 || strings.Contains(body, app.ID) {
		t.Fatalf("B's lookup of its own a-app: %d %s", code, body)
	}
	// A's secret is still there.
	if code, body := ta.doAs(t, testToken, "POST", "/v1/secrets/lookup", `{"name":"a-secret"}`); code != 200 {
		t.Fatalf("A's secret after B's attempts: %d %s", code, body)
	}
}

// Roles: read-only reads, a member runs, an owner manages tokens and secrets, and only the
// operator makes workspaces.
func TestRoles(t *testing.T) {
	ta := newTestAPI(t)
	ro := ta.newCred(t, `{"role":"readonly"}`)
	member := ta.newCred(t, `{"role":"member"}`)
	for _, tt := range []struct {
		cred, method, path, body string
		want                     int
	}{
		{ro, "GET", "/v1/apps", "", 200},
		{ro, "POST", "/v1/sandboxes", `{}`, 403},
		{ro, "POST", "/v1/secrets", `{"name":"s","env":{"K":"v"}}`, 403},
		{member, "POST", "/v1/secrets", `{"name":"s","env":{"K":"v"}}`, 403},
		{member, "POST", "/v1/tokens", `{}`, 403},
		{member, "GET", "/v1/audit", "", 403},
		{member, "POST", "/v1/workspaces", `{"name":"x"}`, 403},
		{member, "POST", "/v1/apps/lookup", `{"name":"m","create_if_missing":true}`, 200},
		{member, "PUT", "/v1/workspaces/ws-default/quotas", `{"sandboxes":100}`, 403},
		{member, "DELETE", "/v1/images", "", 403},
		{member, "POST", "/v1/workers/register", `{}`, 403},
		{testToken, "POST", "/v1/workers/register", `{}`, 403},
		{"tk-nosuchtoken0000000000:ts-x", "GET", "/v1/apps", "", 401},
		{"not-the-token", "GET", "/v1/apps", "", 401},
	} {
		code, body := ta.doAs(t, tt.cred, tt.method, tt.path, tt.body)
		if code != tt.want {
			t.Errorf("%s %s as %.12s: %d %s, want %d", tt.method, tt.path, tt.cred, code, body, tt.want)
		}
	}
	// A read-only lookup never creates.
	if code, body := ta.doAs(t, ro, "POST", "/v1/apps/lookup", `{"name":"ro-app","create_if_missing":true}`); code != 404 {
		t.Fatalf("a read-only lookup with create: %d %s", code, body)
	}
}

// A revoked token is refused at once; an expired one too; the worker protocol takes only a
// worker's own credential.
func TestRevocationAndWorkerCredentials(t *testing.T) {
	ta := newTestAPI(t)
	cred := ta.newCred(t, `{"role":"member","name":"ci"}`)
	if code, body := ta.doAs(t, cred, "GET", "/v1/whoami", ""); code != 200 || !strings.Contains(body, `"role":"member"`) {
		t.Fatalf("%d %s", code, body)
	}
	id, _, _ := strings.Cut(cred, ":")
	if code, body := ta.doAs(t, testToken, "DELETE", "/v1/tokens/"+id, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := ta.doAs(t, cred, "GET", "/v1/apps", ""); code != 401 || !strings.Contains(body, "revoked") {
		t.Fatalf("a revoked token: %d %s", code, body)
	}
	// The wrong secret for a real ID is refused too.
	if code, _ := ta.doAs(t, id+":ts-wrong", "GET", "/v1/apps", ""); code != 401 {
		t.Fatalf("a wrong secret: %d", code)
	}
	wid := ta.registerWorker(t)
	if code, body := ta.doAs(t, ta.workerCred, "GET", "/v1/apps", ""); code != 403 {
		t.Fatalf("a worker's credential on a user route: %d %s", code, body)
	}
	if code, body := ta.doAs(t, ta.workerCred, "GET", "/v1/workers/wk-someoneelse/assignments", ""); code != 403 {
		t.Fatalf("a worker's credential for another worker: %d %s", code, body)
	}
	if code, body := ta.doAs(t, testToken, "GET", "/v1/workers/"+wid+"/assignments", ""); code != 403 {
		t.Fatalf("the operator's token on the worker protocol: %d %s", code, body)
	}
	// The audit log has the revocation, by the operator.
	code, body := ta.doAs(t, testToken, "GET", "/v1/audit?route=tokens", "")
	if code != 200 || !strings.Contains(body, `"object":"`+id+`"`) || !strings.Contains(body, `"token_id":"operator"`) {
		t.Fatalf("audit: %d %s", code, body)
	}
}

// Over the request-rate quota: a 429 that names it.
func TestRateQuota(t *testing.T) {
	ta := newTestAPI(t)
	b := ta.newWorkspace(t, "limited")
	var ws struct {
		ID string `json:"workspace_id"`
	}
	_, body := ta.doAs(t, b, "GET", "/v1/whoami", "")
	if err := json.Unmarshal([]byte(body), &ws); err != nil || ws.ID == "" {
		t.Fatal(body)
	}
	if code, body := ta.doAs(t, b, "PUT", "/v1/workspaces/"+ws.ID+"/quotas", `{"requests_per_second":1}`); code != 403 {
		t.Fatalf("an owner raising its own quota: %d %s", code, body)
	}
	if code, body := ta.doAs(t, testToken, "PUT", "/v1/workspaces/"+ws.ID+"/quotas", `{"requests_per_second":1}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var last string
	limited := false
	for i := 0; i < 30 && !limited; i++ {
		code, body := ta.doAs(t, b, "GET", "/v1/apps", "")
		limited, last = code == http.StatusTooManyRequests, body
	}
	if !limited || !strings.Contains(last, "requests_per_second") {
		t.Fatalf("30 requests at once under a 1/s quota: last answer %s", last)
	}
	// Another workspace is not slowed.
	if code, _ := ta.doAs(t, testToken, "GET", "/v1/apps", ""); code != 200 {
		t.Fatalf("the default workspace was limited too: %d", code)
	}
}

// Blobs are shared on disk by content, but a workspace uses only what it uploaded, within
// its image_disk_mib quota.
func TestBlobsPerWorkspace(t *testing.T) {
	ta := newTestAPI(t)
	code, body := ta.doAs(t, testToken, "POST", "/v1/blobs", "a's files")
	var blob struct{ Blob string }
	if code != 201 || json.Unmarshal([]byte(body), &blob) != nil {
		t.Fatalf("%d %s", code, body)
	}
	b := ta.newWorkspace(t, "blobs")
	if code, body := ta.doAs(t, b, "GET", "/v1/blobs/"+blob.Blob, ""); code != 404 {
		t.Fatalf("B asking for A's blob: %d %s", code, body)
	}
	if code, body := ta.doAs(t, b, "POST", "/v1/images", `{"kind":"oci_archive","blob":"`+blob.Blob+`"}`); code != 404 {
		t.Fatalf("B building from A's blob: %d %s", code, body)
	}
	if code, _ := ta.doAs(t, b, "POST", "/v1/blobs", "a's files"); code != 201 {
		t.Fatalf("B uploading the same files: %d", code)
	}
	if code, body := ta.doAs(t, b, "GET", "/v1/blobs/"+blob.Blob, ""); code != 200 {
		t.Fatalf("B's own upload: %d %s", code, body)
	}
	_, who := ta.doAs(t, b, "GET", "/v1/whoami", "")
	var ws struct {
		ID string `json:"workspace_id"`
	}
	json.Unmarshal([]byte(who), &ws)
	if code, body := ta.doAs(t, testToken, "PUT", "/v1/workspaces/"+ws.ID+"/quotas", `{"image_disk_mib":1}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	code, body = ta.doAs(t, b, "POST", "/v1/blobs", strings.Repeat("x", 2<<20))
	if code != 403 || !strings.Contains(body, "quota image_disk_mib is 1") {
		t.Fatalf("2 MiB over a 1 MiB quota: %d %s", code, body)
	}
}

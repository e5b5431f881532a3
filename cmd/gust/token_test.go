package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

const (
	opToken   = "operator-token"
	ownerID   = "tk-owner0000000000000"
	ownerSec  = "ts-owner000000000000000000000000000000000"
	newID     = "tk-new000000000000000"
	newSecret = "ts-new00000000000000000000000000000000000"
)

// fakeTenancy is an httptest server for the workspace, token and audit routes. It knows the
// operator token and two token ids with their secrets.
type fakeTenancy struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies map[string]map[string]any // last body per route
	query  string                    // last audit query
	quotas map[string]any
}

func newFakeTenancy(t *testing.T) *fakeTenancy {
	f := &fakeTenancy{bodies: map[string]map[string]any{}, quotas: map[string]any{"sandboxes": 10, "cpu": 4, "memory_mib": 8192, "gpus": 0, "image_disk_mib": 0, "requests_per_second": 0}}
	secrets := map[string]string{ownerID: ownerSec, newID: newSecret}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	record := func(r *http.Request) map[string]any {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		f.mu.Lock()
		f.bodies[r.Pattern] = m
		f.mu.Unlock()
		return m
	}
	created := "2026-01-02T03:04:05Z"
	mux.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Token-ID")
		if id == "" {
			reply(w, 200, map[string]any{"workspace_id": "ws-default", "workspace_name": "default", "token_id": "", "role": "owner", "admin": true})
			return
		}
		reply(w, 200, map[string]any{"workspace_id": "ws-1", "workspace_name": "acme", "token_id": id, "role": "owner", "admin": false})
	})
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		b := record(r)
		role, _ := b["role"].(string)
		if role == "" {
			role = "member"
		}
		reply(w, 201, map[string]any{"token_id": newID, "token_secret": newSecret, "workspace_id": "ws-1", "role": role, "name": b["name"], "created_at": created, "expires_at": nil})
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]any{"tokens": []any{
			map[string]any{"token_id": ownerID, "name": "", "role": "owner", "workspace_id": "ws-1", "created_at": created, "expires_at": nil, "revoked_at": nil, "last_used_at": nil},
			map[string]any{"token_id": newID, "name": "ci", "role": "readonly", "workspace_id": "ws-1", "created_at": "2026-01-02T04:04:05Z", "expires_at": "2026-01-03T00:00:00Z", "revoked_at": nil, "last_used_at": nil},
		}})
	})
	mux.HandleFunc("DELETE /v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != newID {
			reply(w, 404, map[string]any{"error": map[string]string{"kind": "not_found", "message": "no token " + r.PathValue("id")}})
			return
		}
		reply(w, 200, map[string]any{"token_id": newID, "revoked_at": created})
	})
	mux.HandleFunc("POST /v1/workspaces", func(w http.ResponseWriter, r *http.Request) {
		b := record(r)
		reply(w, 201, map[string]any{"workspace": map[string]any{"id": "ws-2", "name": b["name"], "created_at": created},
			"token": map[string]any{"token_id": newID, "token_secret": newSecret, "workspace_id": "ws-2", "role": "owner", "name": "", "created_at": created, "expires_at": nil}})
	})
	mux.HandleFunc("GET /v1/workspaces", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]any{"workspaces": []any{
			map[string]any{"id": "ws-2", "name": "zeta", "created_at": created},
			map[string]any{"id": "ws-default", "name": "default", "created_at": created},
		}})
	})
	mux.HandleFunc("GET /v1/workspaces/{id}/quotas", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.PathValue("id") != "ws-default" && r.PathValue("id") != "ws-2" {
			reply(w, 404, map[string]any{"error": map[string]string{"kind": "not_found", "message": "no workspace"}})
			return
		}
		reply(w, 200, f.quotas)
	})
	mux.HandleFunc("PUT /v1/workspaces/{id}/quotas", func(w http.ResponseWriter, r *http.Request) {
		b := record(r)
		f.mu.Lock()
		f.quotas = b
		f.mu.Unlock()
		reply(w, 200, b)
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.query = r.URL.RawQuery
		f.mu.Unlock()
		reply(w, 200, map[string]any{"entries": []any{
			map[string]any{"time": "2026-01-02T03:04:05Z", "workspace_id": "ws-1", "token_id": ownerID, "method": "POST", "route": "POST /v1/sandboxes", "object": "sb-1", "status": 201, "error": nil},
			map[string]any{"time": "2026-01-02T03:04:00Z", "workspace_id": "ws-1", "token_id": newID, "method": "DELETE", "route": "/v1/tokens/{id}", "object": nil, "status": 404, "error": "no token\ntk-x"},
		}})
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch id, secret, pair := strings.Cut(auth, ":"); {
		case pair && secrets[id] != "" && secrets[id] == secret:
			r.Header.Set("X-Token-ID", id)
		case !pair && auth == opToken:
			r.Header.Del("X-Token-ID")
		default:
			reply(w, 401, map[string]any{"error": map[string]string{"kind": "unauthorized", "message": "wrong credentials"}})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTenancy) body(pattern string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[pattern]
}

// cliEnv gives a test its own config file ($XDG_CONFIG_HOME/gust/config.json, written when
// config is not empty) and clears the client variables; it returns the file's path.
func cliEnv(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "gust", "config.json")
	if config != "" {
		os.MkdirAll(filepath.Dir(path), 0o700)
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"GUST_CONFIG", "GUST_SERVER_URL", "GUST_TOKEN", "GUST_TOKEN_ID", "GUST_TOKEN_SECRET", "GUST_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", t.TempDir())
	return path
}

// runCLI runs a command with stdin and returns its stdout and stderr.
func runCLI(t *testing.T, f func(ctx context.Context, args []string, io cliIO) error, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := f(t.Context(), args, cliIO{in: strings.NewReader(stdin), out: &out, err: &errb})
	return out.String(), errb.String(), err
}

func readConfigMap(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenNew(t *testing.T) {
	f := newFakeTenancy(t)
	path := cliEnv(t, `{"active_profile": "default", "profiles": {"default": {"server_url": "`+f.srv.URL+`", "token_id": "`+ownerID+`", "token_secret": "`+ownerSec+`"}}}`)

	out, errOut, err := runCLI(t, runTokenNew, "", "--name", "ci", "--role", "readonly", "--expires-in", "2d", "--workspace", "ws-9")
	if err != nil {
		t.Fatal(err)
	}
	if want := "token_id:     " + newID + "\ntoken_secret: " + newSecret + "\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	if !strings.Contains(errOut, "shown only now") || strings.Contains(errOut, newSecret) {
		t.Errorf("stderr %q", errOut)
	}
	if want := map[string]any{"name": "ci", "role": "readonly", "expires_in": 172800.0, "workspace_id": "ws-9"}; !reflect.DeepEqual(f.body("POST /v1/tokens"), want) {
		t.Errorf("body %v, want %v", f.body("POST /v1/tokens"), want)
	}

	// --set-profile stores the token with the server in use; the secret is not printed and
	// the active profile stays.
	out, _, err = runCLI(t, runTokenNew, "", "--set-profile", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, newSecret) || !strings.Contains(out, `stored as profile "ci"`) || !strings.Contains(out, "GUST_PROFILE=ci") {
		t.Errorf("stdout %q", out)
	}
	m := readConfigMap(t, path)
	if m["active_profile"] != "default" {
		t.Errorf("active_profile %v, want default", m["active_profile"])
	}
	if got, want := m["profiles"].(map[string]any)["ci"], map[string]any{"server_url": f.srv.URL, "token_id": newID, "token_secret": newSecret}; !reflect.DeepEqual(got, want) {
		t.Errorf("profile ci = %v, want %v", got, want)
	}

	if _, _, err := runCLI(t, runTokenNew, "", "--role", "admin"); err == nil || !strings.Contains(err.Error(), "owner, member or readonly") {
		t.Errorf("bad role: %v", err)
	}
	if _, _, err := runCLI(t, runTokenNew, "", "--expires-in", "soon"); err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Errorf("bad duration: %v", err)
	}
}

func TestTokenListRevoke(t *testing.T) {
	f := newFakeTenancy(t)
	cliEnv(t, "")
	t.Setenv("GUST_SERVER_URL", f.srv.URL)
	t.Setenv("GUST_TOKEN_ID", ownerID)
	t.Setenv("GUST_TOKEN_SECRET", ownerSec)
	var b bytes.Buffer
	now := time.Date(2026, 1, 2, 5, 4, 5, 0, time.UTC)
	toks := []*gust.Token{
		{ID: ownerID, Role: "owner", CreatedAt: now.Add(-2 * time.Hour), LastUsedAt: &now},
		{ID: newID, Name: "ci", Role: "readonly", CreatedAt: now.Add(-time.Hour), ExpiresAt: ptr(now.Add(-time.Minute))},
		{ID: "tk-r", Role: "member", CreatedAt: now.Add(-3 * time.Hour), RevokedAt: &now},
	}
	if err := printTokens(&b, toks, now); err != nil {
		t.Fatal(err)
	}
	exp := now.Add(-time.Minute).Local().Format("2006-01-02 15:04")
	want := "TOKEN ID               NAME  ROLE      STATE    CREATED  EXPIRES           LAST USED\n" +
		newID + "  ci    readonly  expired  1h ago   " + exp + "  -\n" +
		ownerID + "  -     owner     active   2h ago   -                 0s ago\n" +
		"tk-r                   -     member    revoked  3h ago   -                 -\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	out, _, err := runCLI(t, runTokenList, "", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || list[1]["token_id"] != newID {
		t.Errorf("--json: %v %s", err, out)
	}
	out, _, err = runCLI(t, runTokenRevoke, "", newID, "tk-missing")
	if out != "revoked "+newID+"\n" || err == nil || !strings.Contains(err.Error(), "tk-missing") {
		t.Errorf("revoke: %q, %v", out, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestTokenSet(t *testing.T) {
	f := newFakeTenancy(t)

	t.Run("secret from stdin, into a legacy file", func(t *testing.T) {
		path := cliEnv(t, `{"server_url": "`+f.srv.URL+`", "token": "`+opToken+`"}`)
		out, errOut, err := runCLI(t, runTokenSet, newSecret+"\n", "--token-id", newID, "--token-secret", "-", "--profile", "acme")
		if err != nil {
			t.Fatal(err)
		}
		if errOut != "" || !strings.Contains(out, "(workspace acme, role owner) stored as profile \"acme\"") {
			t.Errorf("stdout %q stderr %q", out, errOut)
		}
		want := map[string]any{"active_profile": "acme", "profiles": map[string]any{
			"default": map[string]any{"server_url": f.srv.URL, "token": opToken},
			"acme":    map[string]any{"server_url": f.srv.URL, "token_id": newID, "token_secret": newSecret},
		}}
		if got := readConfigMap(t, path); !reflect.DeepEqual(got, want) {
			t.Errorf("config %v\nwant %v", got, want)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v", fi.Mode().Perm())
		}
		// The stored profile is what the client now uses.
		cfg, err := gust.LoadConfig()
		if err != nil || cfg.TokenID != newID || cfg.TokenSecret != newSecret || cfg.Profile != "acme" {
			t.Errorf("LoadConfig = %+v, %v", cfg, err)
		}
	})

	t.Run("secret from the environment, no flag", func(t *testing.T) {
		path := cliEnv(t, "")
		t.Setenv("GUST_TOKEN_ID", newID)
		t.Setenv("GUST_TOKEN_SECRET", newSecret)
		if _, errOut, err := runCLI(t, runTokenSet, "", "--server-url", f.srv.URL, "--activate=false"); err != nil || errOut != "" {
			t.Fatalf("%v %q", err, errOut)
		}
		m := readConfigMap(t, path)
		// The first profile of a new file is the active one even without --activate.
		if m["active_profile"] != "default" || m["profiles"].(map[string]any)["default"].(map[string]any)["token_secret"] != newSecret {
			t.Errorf("config %v", m)
		}
	})

	t.Run("secret on the command line warns", func(t *testing.T) {
		cliEnv(t, "")
		t.Setenv("GUST_SERVER_URL", f.srv.URL)
		_, errOut, err := runCLI(t, runTokenSet, "", "--token-id", newID, "--token-secret", newSecret)
		if err != nil || errOut != tokenSecretFlagWarning {
			t.Errorf("%v, stderr %q", err, errOut)
		}
	})

	t.Run("a wrong secret is not stored", func(t *testing.T) {
		path := cliEnv(t, "")
		t.Setenv("GUST_SERVER_URL", f.srv.URL)
		_, _, err := runCLI(t, runTokenSet, "ts-wrong\n", "--token-id", newID)
		if err == nil || !strings.Contains(err.Error(), "not stored") {
			t.Errorf("err %v", err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("config written: %v", err)
		}
		// --verify=false stores it anyway.
		if _, _, err := runCLI(t, runTokenSet, "ts-wrong\n", "--token-id", newID, "--verify=false"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Error(err)
		}
	})

	t.Run("a profile keeps its pinned certificate", func(t *testing.T) {
		pin := strings.Repeat("ab", 32)
		path := cliEnv(t, `{"active_profile": "prod", "profiles": {"prod": {"server_url": "https://gust.example:7420", "token": "op", "tls_fingerprint": "`+pin+`"}}}`)
		if _, _, err := runCLI(t, runTokenSet, newSecret+"\n", "--token-id", newID, "--profile", "prod", "--verify=false"); err != nil {
			t.Fatal(err)
		}
		p := readConfigMap(t, path)["profiles"].(map[string]any)["prod"].(map[string]any)
		if p["tls_fingerprint"] != pin || p["token_id"] != newID {
			t.Errorf("profile after token set: %v", p)
		}
		// Another server: no pin carried over.
		if _, _, err := runCLI(t, runTokenSet, newSecret+"\n", "--token-id", newID, "--profile", "other", "--server-url", "https://elsewhere:7420", "--verify=false"); err != nil {
			t.Fatal(err)
		}
		if p := readConfigMap(t, path)["profiles"].(map[string]any)["other"].(map[string]any); p["tls_fingerprint"] != nil {
			t.Errorf("a pin for another server: %v", p)
		}
	})

	t.Run("needs an id and a secret", func(t *testing.T) {
		cliEnv(t, "")
		if _, _, err := runCLI(t, runTokenSet, ""); err == nil || !strings.Contains(err.Error(), "--token-id") {
			t.Errorf("no id: %v", err)
		}
		if _, _, err := runCLI(t, runTokenSet, "\n", "--token-id", newID); err == nil || !strings.Contains(err.Error(), "no token secret on stdin") {
			t.Errorf("no secret: %v", err)
		}
	})
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90m": 90 * time.Minute, "12h": 12 * time.Hour, "30d": 30 * 24 * time.Hour, "1.5d": 36 * time.Hour, "0s": 0} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-1h", "-2d", "soon", "3 days"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q): no error", in)
		}
	}
}

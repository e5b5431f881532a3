package gust

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestWhoami(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"workspace_id": "ws-1", "workspace_name": "acme", "token_id": "tk-1", "role": "owner", "admin": false})
	})
	got, err := c.Whoami(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Whoami{WorkspaceID: "ws-1", WorkspaceName: "acme", TokenID: "tk-1", Role: RoleOwner}); *got != want {
		t.Errorf("Whoami = %+v, want %+v", *got, want)
	}
}

func TestTokens(t *testing.T) {
	f, c := newFakeAPI(t)
	ctx := t.Context()
	created := "2026-01-02T03:04:05Z"
	var bodies []map[string]any
	f.handle("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		body := decodeBody(t, r)
		bodies = append(bodies, body)
		if body["role"] == "god" {
			writeErr(w, http.StatusBadRequest, "invalid", "role must be owner, member or readonly")
			return
		}
		var expires any
		if _, ok := body["expires_in"]; ok {
			expires = "2026-01-03T03:04:05Z"
		}
		writeJSON(w, http.StatusCreated, map[string]any{"token_id": "tk-2", "token_secret": "ts-2", "workspace_id": "ws-1",
			"role": "readonly", "name": body["name"], "created_at": created, "expires_at": expires})
	})
	f.handle("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": []any{
			map[string]any{"token_id": "tk-1", "name": "", "role": "owner", "workspace_id": "ws-1", "created_at": created, "expires_at": nil, "revoked_at": nil, "last_used_at": created},
			map[string]any{"token_id": "tk-2", "name": "ci", "role": "readonly", "workspace_id": "ws-1", "created_at": created, "expires_at": nil, "revoked_at": created, "last_used_at": nil},
		}})
	})
	f.handle("DELETE /v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "tk-2" {
			writeErr(w, http.StatusNotFound, "not_found", "no token "+r.PathValue("id"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"token_id": "tk-2", "revoked_at": created})
	})

	tok, err := c.CreateToken(ctx, TokenOptions{Name: "ci", Role: RoleReadonly, ExpiresIn: 24 * time.Hour, WorkspaceID: "ws-9"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID != "tk-2" || tok.Secret != "ts-2" || tok.Name != "ci" || tok.ExpiresAt == nil || tok.RevokedAt != nil {
		t.Errorf("CreateToken = %+v", tok)
	}
	if want := map[string]any{"name": "ci", "role": "readonly", "expires_in": 86400.0, "workspace_id": "ws-9"}; !reflect.DeepEqual(bodies[0], want) {
		t.Errorf("request body %v, want %v", bodies[0], want)
	}
	// The zero options send an empty object: the server's defaults.
	if tok, err := c.CreateToken(ctx, TokenOptions{}); err != nil || tok.ExpiresAt != nil {
		t.Fatalf("CreateToken({}) = %+v, %v", tok, err)
	}
	if len(bodies[1]) != 0 {
		t.Errorf("request body %v, want {}", bodies[1])
	}
	if _, err := c.CreateToken(ctx, TokenOptions{Role: "god"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad role: %v, want ErrInvalid", err)
	}
	if _, err := c.CreateToken(ctx, TokenOptions{ExpiresIn: -time.Second}); err == nil {
		t.Error("negative ExpiresIn: no error")
	}

	toks, err := c.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 2 || toks[0].LastUsedAt == nil || toks[0].RevokedAt != nil || toks[1].RevokedAt == nil || toks[1].Secret != "" {
		t.Errorf("ListTokens = %+v %+v", toks[0], toks[1])
	}

	at, err := c.RevokeToken(ctx, "tk-2")
	if err != nil || !at.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("RevokeToken = %v, %v", at, err)
	}
	if _, err := c.RevokeToken(ctx, "tk-none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeToken(missing) = %v, want ErrNotFound", err)
	}
}

func TestWorkspaces(t *testing.T) {
	f, c := newFakeAPI(t)
	ctx := t.Context()
	quotas := map[string]any{"sandboxes": 10.0, "cpu": 8.0, "memory_mib": 16384.0, "gpus": 0.0, "image_disk_mib": 0.0, "requests_per_second": 50.0}
	f.handle("POST /v1/workspaces", func(w http.ResponseWriter, r *http.Request) {
		name := decodeBody(t, r)["name"]
		if name == "taken" {
			writeErr(w, http.StatusConflict, "conflict", "workspace taken exists")
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{
			"workspace": map[string]any{"id": "ws-2", "name": name, "created_at": "2026-01-02T03:04:05Z"},
			"token":     map[string]any{"token_id": "tk-9", "token_secret": "ts-9", "workspace_id": "ws-2", "role": "owner", "name": "", "created_at": "2026-01-02T03:04:05Z", "expires_at": nil},
		})
	})
	f.handle("GET /v1/workspaces", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"workspaces": []any{map[string]any{"id": "ws-1", "name": "default", "created_at": "2026-01-02T03:04:05Z"}}})
	})
	f.handle("GET /v1/workspaces/{id}/quotas", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, quotas)
	})
	f.handle("PUT /v1/workspaces/{id}/quotas", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "ws-2" {
			writeErr(w, http.StatusNotFound, "not_found", "no workspace")
			return
		}
		quotas = decodeBody(t, r)
		writeJSON(w, http.StatusOK, quotas)
	})

	ws, tok, err := c.CreateWorkspace(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if ws.ID != "ws-2" || ws.Name != "acme" || tok.ID != "tk-9" || tok.Secret != "ts-9" || tok.Role != RoleOwner {
		t.Errorf("CreateWorkspace = %+v, %+v", ws, tok)
	}
	if _, _, err := c.CreateWorkspace(ctx, "taken"); !errors.Is(err, ErrConflict) {
		t.Errorf("CreateWorkspace(taken) = %v, want ErrConflict", err)
	}
	list, err := c.ListWorkspaces(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "default" {
		t.Errorf("ListWorkspaces = %v, %v", list, err)
	}
	q, err := c.GetQuotas(ctx, "ws-2")
	if want := (Quotas{Sandboxes: 10, CPU: 8, MemoryMiB: 16384, RequestsPerSecond: 50}); err != nil || *q != want {
		t.Errorf("GetQuotas = %+v, %v; want %+v", q, err, want)
	}
	set := Quotas{Sandboxes: 3, CPU: 1.5, MemoryMiB: 2048, GPUs: 1, ImageDiskMiB: 10240, RequestsPerSecond: 0}
	q, err = c.SetQuotas(ctx, "ws-2", set)
	if err != nil || *q != set {
		t.Errorf("SetQuotas = %+v, %v", q, err)
	}
	// Every field is sent, zeros included: a PUT replaces them all.
	if want := map[string]any{"sandboxes": 3.0, "cpu": 1.5, "memory_mib": 2048.0, "gpus": 1.0, "image_disk_mib": 10240.0, "requests_per_second": 0.0, "kv_store_mib": 0.0, "volume_mib": 0.0}; !reflect.DeepEqual(quotas, want) {
		t.Errorf("PUT body %v, want %v", quotas, want)
	}
	if _, err := c.SetQuotas(ctx, "ws-x", set); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetQuotas(missing) = %v, want ErrNotFound", err)
	}
}

func TestAudit(t *testing.T) {
	f, c := newFakeAPI(t)
	var queries []string
	f.handle("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		writeJSON(w, http.StatusOK, map[string]any{"entries": []any{
			map[string]any{"time": "2026-01-02T03:04:05Z", "workspace_id": "ws-1", "token_id": "tk-1", "method": "POST", "route": "POST /v1/sandboxes", "object": "sb-1", "status": 201, "error": nil},
			map[string]any{"time": "2026-01-02T03:04:00Z", "workspace_id": "ws-1", "token_id": "tk-2", "method": "DELETE", "route": "DELETE /v1/tokens/{id}", "object": nil, "status": 404, "error": "no token tk-x"},
		}})
	})
	ctx := t.Context()
	entries, err := c.Audit(ctx, AuditOptions{Since: 90 * time.Minute, TokenID: "tk-1", Route: "POST /v1/sandboxes", Object: "sb-1", Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := []*AuditEntry{
		{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), WorkspaceID: "ws-1", TokenID: "tk-1", Method: "POST", Route: "POST /v1/sandboxes", Object: "sb-1", Status: 201},
		{Time: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), WorkspaceID: "ws-1", TokenID: "tk-2", Method: "DELETE", Route: "DELETE /v1/tokens/{id}", Status: 404, Error: "no token tk-x"},
	}
	if !reflect.DeepEqual(entries, want) {
		t.Errorf("Audit = %+v %+v", entries[0], entries[1])
	}
	if _, err := c.Audit(ctx, AuditOptions{SinceTime: time.Date(2026, 1, 2, 0, 0, 0, 0, time.FixedZone("x", 3600))}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Audit(ctx, AuditOptions{}); err != nil {
		t.Fatal(err)
	}
	wantQ := []string{
		"limit=5&object=sb-1&route=POST+%2Fv1%2Fsandboxes&since=5400&token_id=tk-1",
		"since=2026-01-01T23%3A00%3A00Z",
		"",
	}
	if !reflect.DeepEqual(queries, wantQ) {
		t.Errorf("queries %q, want %q", queries, wantQ)
	}
}

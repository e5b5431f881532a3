package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/store"
)

// The tenant boundary's own routes: who am I, tokens, workspaces and their quotas, the audit
// log.
func (a *API) tenantRoutes(rt *router) {
	rt.handle("GET /v1/whoami", a.handleWhoami)
	rt.handle("POST /v1/tokens", a.handleTokenCreate)
	rt.handle("GET /v1/tokens", a.handleTokenList)
	rt.handle("DELETE /v1/tokens/{id}", a.handleTokenRevoke)
	rt.handle("POST /v1/workspaces", a.handleWorkspaceCreate)
	rt.handle("GET /v1/workspaces", a.handleWorkspaceList)
	rt.handle("GET /v1/workspaces/{id}/quotas", a.handleQuotasGet)
	rt.handle("PUT /v1/workspaces/{id}/quotas", a.handleQuotasPut)
	rt.handle("GET /v1/audit", a.handleAudit)
}

func (a *API) handleWhoami(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	ws, err := a.store.GetWorkspace(r.Context(), p.WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"workspace_id": ws.ID, "workspace_name": ws.Name, "token_id": p.TokenID,
		"role": p.Role, "admin": p.Admin, "kind": p.Kind})
}

// newToken is a token as made: the only time its secret is shown.
type newToken struct {
	auth.Token
	Secret string `json:"token_secret"`
}

// makeToken makes a user token of workspace ws.
func (a *API) makeToken(r *http.Request, ws, name string, role auth.Role, expiresIn float64) (newToken, error) {
	if !role.Valid() {
		return newToken{}, errdefs.Invalid("role must be owner, member or readonly, got %q", role)
	}
	if len(name) > 128 {
		return newToken{}, errdefs.Invalid("token name is longer than 128 characters")
	}
	id, secret := auth.NewCredential()
	t := auth.Token{ID: id, WorkspaceID: ws, Name: name, Role: role, Kind: auth.User, Hash: auth.Hash(secret), CreatedAt: time.Now().UTC()}
	if expiresIn > 0 {
		exp := t.CreatedAt.Add(time.Duration(expiresIn * float64(time.Second)))
		t.ExpiresAt = &exp
	}
	if err := a.store.PutToken(r.Context(), t); err != nil {
		return newToken{}, err
	}
	return newToken{Token: t, Secret: secret}, nil
}

func (a *API) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name        string    `json:"name"`
		Role        auth.Role `json:"role"`
		ExpiresIn   *float64  `json:"expires_in"`
		WorkspaceID string    `json:"workspace_id"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	p := principal(r)
	ws := p.WorkspaceID
	if req.WorkspaceID != "" && req.WorkspaceID != ws {
		if !p.Admin {
			httpapi.WriteError(w, errdefs.NotFound("workspace %q not found", req.WorkspaceID))
			return
		}
		if _, err := a.store.GetWorkspace(r.Context(), req.WorkspaceID); err != nil {
			httpapi.WriteError(w, err)
			return
		}
		ws = req.WorkspaceID
	}
	if req.Role == "" {
		req.Role = auth.Member
	}
	var exp float64
	if req.ExpiresIn != nil {
		if !(*req.ExpiresIn >= 1 && *req.ExpiresIn <= 10*365*86400) {
			httpapi.WriteError(w, errdefs.Invalid("expires_in must be from 1 second to 10 years, in seconds"))
			return
		}
		exp = *req.ExpiresIn
	}
	t, err := a.makeToken(r, ws, req.Name, req.Role, exp)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, t)
}

func (a *API) handleTokenList(w http.ResponseWriter, r *http.Request) {
	ts, err := a.store.ListTokens(r.Context(), principal(r).WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tokens": ts})
}

func (a *API) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	t, err := a.store.RevokeToken(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), time.Now())
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"token_id": t.ID, "revoked_at": t.RevokedAt})
}

func (a *API) handleWorkspaceCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ws, err := a.store.CreateWorkspace(r.Context(), req.Name)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	t, err := a.makeToken(r, ws.ID, "owner of "+ws.Name, auth.Owner, 0)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"workspace": ws, "token": t})
}

func (a *API) handleWorkspaceList(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	var out []store.Workspace
	if p.Admin {
		all, err := a.store.ListWorkspaces(r.Context())
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		out = all
	} else {
		ws, err := a.store.GetWorkspace(r.Context(), p.WorkspaceID)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		out = []store.Workspace{ws}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"workspaces": out})
}

// workspaceOf returns the workspace the path names, if r's principal may see it: its own,
// or any for the operator.
func (a *API) workspaceOf(r *http.Request) (store.Workspace, error) {
	id, p := r.PathValue("id"), principal(r)
	if id != p.WorkspaceID && !p.Admin {
		return store.Workspace{}, errdefs.NotFound("workspace %q not found", id)
	}
	return a.store.GetWorkspace(r.Context(), id)
}

func (a *API) handleQuotasGet(w http.ResponseWriter, r *http.Request) {
	ws, err := a.workspaceOf(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ws.Quotas)
}

func (a *API) handleQuotasPut(w http.ResponseWriter, r *http.Request) {
	var q store.Quotas
	if err := httpapi.DecodeJSON(r, &q, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ws, err := a.workspaceOf(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.store.SetQuotas(r.Context(), ws.ID, q); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.limits.set(ws.ID, q.RequestsPerSecond)
	httpapi.WriteJSON(w, http.StatusOK, q)
}

func (a *API) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AuditFilter{WorkspaceID: principal(r).WorkspaceID, TokenID: q.Get("token_id"), Route: q.Get("route"), Object: q.Get("object")}
	if v := q.Get("since"); v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			f.Since = t
		} else if secs, err := querySeconds(r, "since", 0, 10*365*86400); err == nil {
			f.Since = time.Now().Add(-time.Duration(secs * float64(time.Second)))
		} else {
			httpapi.WriteError(w, errdefs.Invalid("since must be a time (RFC 3339) or a number of seconds ago, got %q", v))
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			httpapi.WriteError(w, errdefs.Invalid("limit must be from 1 to 10000, got %q", v))
			return
		}
		f.Limit = n
	}
	a.flushAudit(r.Context()) // what was just done shows at once
	es, err := a.store.ListAudit(r.Context(), f)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"entries": es})
}

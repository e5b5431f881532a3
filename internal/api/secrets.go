package api

import (
	"net/http"
	"regexp"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/httpapi"
)

func (a *API) secretRoutes(rt *router) {
	rt.handle("POST /v1/secrets", a.handleSecretCreate)
	rt.handle("GET /v1/secrets", a.handleSecretList)
	rt.handle("POST /v1/secrets/lookup", a.handleSecretLookup)
	rt.handle("DELETE /v1/secrets/{name}", a.handleSecretDelete)
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (a *API) handleSecretCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string            `json:"name"`
		Env       map[string]string `json:"env"`
		Overwrite bool              `json:"overwrite"`
	}
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if !secretNameRE.MatchString(req.Name) {
		httpapi.WriteError(w, errdefs.Invalid("secret name %q is not valid: use 1-64 letters, digits, '.', '_' or '-'", req.Name))
		return
	}
	if len(req.Env) == 0 {
		httpapi.WriteError(w, errdefs.Invalid("secret %q needs at least one KEY=VALUE", req.Name))
		return
	}
	if err := (&function.Spec{Name: "x", Env: req.Env}).ValidateEnv(); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sec, err := a.store.PutSecret(r.Context(), principal(r).WorkspaceID, req.Name, req.Env, req.Overwrite)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, sec)
}

func (a *API) handleSecretList(w http.ResponseWriter, r *http.Request) {
	secs, err := a.store.ListSecrets(r.Context(), principal(r).WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"secrets": secs})
}

func (a *API) handleSecretLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sec, err := a.store.GetSecret(r.Context(), principal(r).WorkspaceID, req.Name)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sec)
}

func (a *API) handleSecretDelete(w http.ResponseWriter, r *http.Request) {
	if err := a.store.DeleteSecret(r.Context(), principal(r).WorkspaceID, r.PathValue("name")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

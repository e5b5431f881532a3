package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/httpapi"
)

// namedObjects is what the routes shared by Dicts, Queues and Volumes need of one kind: the
// store's calls for it, and how one is shown. kindRoutes serves create, lookup (unless the
// kind has its own), list, get, delete and heartbeat from them.
type namedObjects[T any] struct {
	what   string // "Dict": in messages
	plural string // "dicts": the routes' and the listing's name
	create func(ctx context.Context, ws, name, by string, allowExisting bool) (T, error)
	lookup func(ctx context.Context, ws, name, by string, create bool) (T, error) // nil: the kind routes its own
	list   func(ctx context.Context, ws string, limit int, before time.Time) ([]T, error)
	get    func(ctx context.Context, ws, id string) (T, error)
	del    func(ctx context.Context, ws, id string) error
	beat   func(ctx context.Context, ws, id string) error
	// show is one object as the API answers it; listed says it is an entry of a listing.
	show func(ctx context.Context, ws string, v T, listed bool) (any, error)
}

func kindRoutes[T any](rt *router, k namedObjects[T]) {
	base := "/v1/" + k.plural
	rt.handle("POST "+base, func(w http.ResponseWriter, r *http.Request) {
		var req createReq
		if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
			httpapi.WriteError(w, err)
			return
		}
		if err := req.check(k.what); err != nil {
			httpapi.WriteError(w, err)
			return
		}
		p := principal(r)
		v, err := k.create(r.Context(), p.WorkspaceID, req.Name, p.TokenID, req.AllowExisting)
		k.answer(w, r, http.StatusCreated, v, err)
	})
	if k.lookup != nil {
		rt.handle("POST "+base+"/lookup", func(w http.ResponseWriter, r *http.Request) {
			var req lookupReq
			if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
				httpapi.WriteError(w, err)
				return
			}
			p := principal(r)
			v, err := k.lookup(r.Context(), p.WorkspaceID, req.Name, p.TokenID, mayCreate(p, req.CreateIfMissing))
			k.answer(w, r, http.StatusOK, v, err)
		})
	}
	rt.handle("GET "+base, func(w http.ResponseWriter, r *http.Request) {
		limit, before, err := listQuery(r)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		ws := principal(r).WorkspaceID
		vs, err := k.list(r.Context(), ws, limit, before)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		out := make([]any, len(vs))
		for i, v := range vs {
			if out[i], err = k.show(r.Context(), ws, v, true); err != nil {
				httpapi.WriteError(w, err)
				return
			}
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{k.plural: out})
	})
	rt.handle("GET "+base+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, err := k.get(r.Context(), principal(r).WorkspaceID, r.PathValue("id"))
		k.answer(w, r, http.StatusOK, v, err)
	})
	noContent := func(f func(ctx context.Context, ws, id string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := f(r.Context(), principal(r).WorkspaceID, r.PathValue("id")); err != nil {
				httpapi.WriteError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}
	rt.handle("DELETE "+base+"/{id}", noContent(k.del))
	rt.handle("POST "+base+"/{id}/heartbeat", noContent(k.beat))
}

// answer writes v (or err) as one object of the kind.
func (k namedObjects[T]) answer(w http.ResponseWriter, r *http.Request, status int, v T, err error) {
	var out any
	if err == nil {
		out, err = k.show(r.Context(), principal(r).WorkspaceID, v, false)
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, status, out)
}

// mayCreate is a lookup's create_if_missing as the caller may ask it: creating is a member's
// (or a function's); looking up is anyone's.
func mayCreate(p auth.Principal, create bool) bool {
	return create && (p.Kind != auth.User || p.Role.AtLeast(auth.Member))
}

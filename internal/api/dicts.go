package api

import (
	"context"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/store"
)

// Modal's Dicts and Queues (dicts.go, queues.go): named or ephemeral objects of a workspace
// whose contents the clients pickle; the server keeps bytes and never unpickles them. Every
// route is open to function containers, for their own workspace's objects: handing state and
// work between a function and its caller is what these are for.

const (
	// kvBodyLimit bounds a Dict update or a Queue put, as Modal's 100 MiB message limit does
	// (there a 413 becomes RequestSizeError: "Dict.put request is too large").
	kvBodyLimit = 100 << 20
	// DictMaxKeyBytes bounds a pickled Dict key: reads name the key in the URL. Modal sets
	// no documented limit and recommends primitive keys, which pickle to a few dozen bytes.
	dictMaxKeyBytes = 16 << 10
	// kvMaxWait is the longest a Queue get, put or iterate waits in one request; the SDKs ask
	// again for longer waits (Modal's client asks for at most 50 s at a time too).
	kvMaxWait = 60
	// dictPageBytes bounds a page of Dict entries: the page ends after the entry that passes it.
	dictPageBytes = 16 << 20
)

func (a *API) dictRoutes(rt *router) {
	kindRoutes(rt, namedObjects[store.KVObject]{what: "Dict", plural: "dicts",
		create: a.store.CreateDict, lookup: a.store.LookupDict, list: a.store.ListDicts, get: a.store.GetDict,
		del: a.store.DeleteDict, beat: a.store.HeartbeatDict,
		show: func(_ context.Context, _ string, d store.KVObject, _ bool) (any, error) {
			return dictJSON{d.ID, d}, nil
		},
	})
	rt.handle("POST /v1/dicts/{id}/clear", a.handleDictClear)
	rt.handle("GET /v1/dicts/{id}/len", a.handleDictLen)
	rt.handle("POST /v1/dicts/{id}/entries", a.handleDictUpdate)
	rt.handle("GET /v1/dicts/{id}/entries", a.handleDictEntries)
	rt.handle("GET /v1/dicts/{id}/entries/{key}", a.handleDictEntryGet)
	rt.handle("DELETE /v1/dicts/{id}/entries/{key}", a.handleDictEntryPop)
}

// dictJSON is a Dict as the API shows it.
type dictJSON struct {
	ID string `json:"dict_id"`
	store.KVObject
}

// createReq is the body of POST /v1/dicts and /v1/queues: a named object (with
// allow_existing, an existing one is no error) or an ephemeral one.
type createReq struct {
	Name          string `json:"name"`
	AllowExisting bool   `json:"allow_existing"`
	Ephemeral     bool   `json:"ephemeral"`
}

func (c createReq) check(what string) error {
	if c.Ephemeral == (c.Name != "") {
		return errdefs.Invalid("a %s needs either a name or \"ephemeral\": true", what)
	}
	return nil
}

// lookupReq is the body of POST /v1/dicts/lookup and /v1/queues/lookup.
type lookupReq struct {
	Name            string `json:"name"`
	CreateIfMissing bool   `json:"create_if_missing"`
}

// listQuery reads ?limit= and ?created_before= (RFC 3339, or unix seconds).
func listQuery(r *http.Request) (int, time.Time, error) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, time.Time{}, errdefs.Invalid("limit must be a whole number of at least 0 (0: all), got %q", v)
		}
		limit = n
	}
	var before time.Time
	if v := q.Get("created_before"); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			before = t
		} else if secs, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(secs) && !math.IsInf(secs, 0) && secs >= 0 {
			before = time.Unix(0, int64(secs*1e9))
		} else {
			return 0, time.Time{}, errdefs.Invalid("created_before must be an RFC 3339 time or unix seconds, got %q", v)
		}
	}
	return limit, before, nil
}

// kvQuota is the caller's workspace's quota on Dict and Queue contents, in bytes (0: none).
func (a *API) kvQuota(ctx context.Context, ws string) (int64, error) {
	w, err := a.store.GetWorkspace(ctx, ws)
	if err != nil {
		return 0, err
	}
	return int64(w.Quotas.KVStoreMiB) << 20, nil
}

func (a *API) handleDictClear(w http.ResponseWriter, r *http.Request) {
	if err := a.store.DictClear(r.Context(), principal(r).WorkspaceID, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) handleDictLen(w http.ResponseWriter, r *http.Request) {
	n, err := a.store.DictLen(r.Context(), principal(r).WorkspaceID, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]int{"len": n})
}

func (a *API) handleDictUpdate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Entries      []store.DictEntry `json:"entries"`
		SkipIfExists bool              `json:"skip_if_exists"`
	}
	if err := httpapi.DecodeJSON(r, &req, kvBodyLimit); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.SkipIfExists && len(req.Entries) != 1 {
		httpapi.WriteError(w, errdefs.Invalid("skip_if_exists needs exactly one entry (Dict.put), got %d", len(req.Entries)))
		return
	}
	for i, e := range req.Entries {
		if len(e.Key) == 0 {
			httpapi.WriteError(w, errdefs.Invalid("entry %d has no key; keys are pickled values, base64-encoded", i))
			return
		}
		if len(e.Key) > dictMaxKeyBytes {
			httpapi.WriteError(w, errdefs.TooLarge("Dict key of entry %d is %d bytes pickled; gust takes keys of up to 16 KiB (use a short key, such as a string or a hash)", i, len(e.Key)))
			return
		}
	}
	p := principal(r)
	quota, err := a.kvQuota(r.Context(), p.WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	created, err := a.store.DictUpdate(r.Context(), p.WorkspaceID, r.PathValue("id"), req.Entries, req.SkipIfExists, quota)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"created": created})
}

// pathKey reads the {key} of a route: the pickled key, base64url without padding.
func pathKey(r *http.Request) ([]byte, error) {
	k, err := base64.RawURLEncoding.DecodeString(r.PathValue("key"))
	if err != nil || len(k) == 0 {
		return nil, errdefs.Invalid("the key in the path must be the pickled key, base64url-encoded without padding")
	}
	return k, nil
}

// entryJSON is the answer of a read of one key.
type entryJSON struct {
	Found bool   `json:"found"`
	Value []byte `json:"value,omitempty"`
}

func (a *API) handleDictEntryGet(w http.ResponseWriter, r *http.Request) {
	key, err := pathKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	withValue := r.URL.Query().Get("value") != "0"
	v, found, err := a.store.DictGet(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), key, withValue)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if !withValue {
		v = nil
	}
	httpapi.WriteJSON(w, http.StatusOK, entryJSON{found, v})
}

func (a *API) handleDictEntryPop(w http.ResponseWriter, r *http.Request) {
	key, err := pathKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	v, found, err := a.store.DictPop(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), key)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, entryJSON{found, v})
}

// handleDictEntries answers a page of Dict.keys/values/items: ?after= (the last key of the
// previous page, base64url), ?limit= (at most 1000), ?values=0 for keys only. next is the
// cursor of the following page, absent at the end.
func (a *API) handleDictEntries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after []byte
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = base64.RawURLEncoding.DecodeString(v); err != nil {
			httpapi.WriteError(w, errdefs.Invalid("after must be a key as the previous page's next gave it"))
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpapi.WriteError(w, errdefs.Invalid("limit must be from 1 to 1000, got %q", v))
			return
		}
		limit = n
	}
	withValues := q.Get("values") != "0"
	es, err := a.store.DictEntries(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), after, limit, withValues)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	more := len(es) == limit
	size := 0
	for i, e := range es {
		size += len(e.Key) + len(e.Value)
		if size > dictPageBytes && i < len(es)-1 {
			es, more = es[:i+1], true
			break
		}
	}
	out := map[string]any{"entries": es}
	if more && len(es) > 0 {
		out["next"] = base64.RawURLEncoding.EncodeToString(es[len(es)-1].Key)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// RunKV sweeps what has expired in Dicts and Queues (entries after 7 days without use,
// partitions past their TTL, ephemeral objects whose client stopped beating) every minute
// until ctx ends.
func (a *API) RunKV(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := a.store.ExpireKV(ctx, time.Now()); err != nil && ctx.Err() == nil {
				a.log.Printf("expiring Dict and Queue contents: %v", err)
			}
		}
	}
}

package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/store"
)

func (a *API) queueRoutes(rt *router) {
	kindRoutes(rt, namedObjects[store.KVObject]{what: "Queue", plural: "queues",
		create: a.store.CreateQueue, lookup: a.store.LookupQueue, list: a.store.ListQueues, get: a.store.GetQueue,
		del: a.store.DeleteQueue, beat: a.store.HeartbeatQueue,
		show: func(ctx context.Context, ws string, q store.KVObject, listed bool) (any, error) {
			if !listed {
				return queueJSON{ID: q.ID, KVObject: q}, nil
			}
			st, err := a.store.QueueStats(ctx, ws, q.ID) // a listing shows partitions and items
			if err != nil {
				return nil, err
			}
			return queueJSON{q.ID, q, &st}, nil
		},
	})
	rt.handle("POST /v1/queues/{id}/put", a.handleQueuePut)
	rt.handle("POST /v1/queues/{id}/get", a.handleQueueTake)
	rt.handle("GET /v1/queues/{id}/len", a.handleQueueLen)
	rt.handle("POST /v1/queues/{id}/clear", a.handleQueueClear)
	rt.handle("GET /v1/queues/{id}/items", a.handleQueueItems)
}

// queueJSON is a Queue as the API shows it; a listing adds its partitions and items.
type queueJSON struct {
	ID string `json:"queue_id"`
	store.KVObject
	*store.QueueStats
}

// waitSeconds checks a wait given in a body: at least 0, at most kvMaxWait.
func waitSeconds(name string, v float64) (time.Duration, error) {
	if v < 0 || v > kvMaxWait || v != v {
		return 0, errdefs.Invalid("%s must be from 0 to %d seconds (ask again to wait longer), got %v", name, kvMaxWait, v)
	}
	return time.Duration(v * float64(time.Second)), nil
}

// handleQueuePut appends values to a partition. timeout is how long to wait for room in a
// full partition (0: answer resource_exhausted at once, which Modal's clients raise as
// queue.Full); partition_ttl, in seconds, is how long the partition lives after this put
// (default and most: 24 hours).
func (a *API) handleQueuePut(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Values       [][]byte `json:"values"`
		Partition    string   `json:"partition"`
		PartitionTTL *float64 `json:"partition_ttl"`
		Timeout      float64  `json:"timeout"`
	}
	if err := httpapi.DecodeJSON(r, &req, kvBodyLimit); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	wait, err := waitSeconds("timeout", req.Timeout)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ttl := store.QueueDefaultTTL
	if req.PartitionTTL != nil {
		if *req.PartitionTTL <= 0 || *req.PartitionTTL != *req.PartitionTTL {
			httpapi.WriteError(w, errdefs.Invalid("partition_ttl must be a positive number of seconds (at most 86400), got %v", *req.PartitionTTL))
			return
		}
		ttl = time.Duration(min(*req.PartitionTTL, store.QueueMaxPartitionTTL.Seconds()) * float64(time.Second))
	}
	p := principal(r)
	quota, err := a.kvQuota(r.Context(), p.WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.store.QueuePut(r.Context(), p.WorkspaceID, r.PathValue("id"), req.Partition, req.Values, ttl, wait, quota); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleQueueTake takes up to n_values items from the front of a partition, waiting up to
// timeout seconds for a put when it is empty (a long poll: the put's commit wakes it).
// values is empty when the wait ended first.
func (a *API) handleQueueTake(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Partition string  `json:"partition"`
		NValues   *int    `json:"n_values"`
		Timeout   float64 `json:"timeout"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	wait, err := waitSeconds("timeout", req.Timeout)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	n := 1
	if req.NValues != nil {
		n = *req.NValues
	}
	vals, err := a.store.QueueGet(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), req.Partition, n, wait)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if vals == nil {
		vals = [][]byte{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"values": vals})
}

func (a *API) handleQueueLen(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	total := q.Get("total") == "1" || q.Get("total") == "true"
	n, err := a.store.QueueLen(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), q.Get("partition"), total)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]int{"len": n})
}

func (a *API) handleQueueClear(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Partition string `json:"partition"`
		All       bool   `json:"all"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.store.QueueClear(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), req.Partition, req.All); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleQueueItems is a page of Queue.iterate(): items after ?after= (an entry_id), read in
// place; with ?timeout= it waits that long for a put when there are none.
func (a *API) handleQueueItems(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	secs, err := querySeconds(r, "timeout", 0, kvMaxWait)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	items, err := a.store.QueueItems(r.Context(), principal(r).WorkspaceID, r.PathValue("id"), q.Get("partition"), q.Get("after"),
		time.Duration(secs*float64(time.Second)))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if items == nil {
		items = []store.QueueItem{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

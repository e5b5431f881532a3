package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// The workers' protocol (internal/workerproto): registration, the assignments long poll,
// container state reports and function events.
func (a *API) workerRoutes(rt *router) {
	rt.handle("GET /v1/workers", a.handleWorkerList)
	rt.handle("POST /v1/workers/register", a.handleWorkerRegister)
	rt.handle("POST /v1/workers/{wid}/events", a.handleWorkerEvents)
	rt.handle("GET /v1/workers/{wid}/assignments", a.handleWorkerAssignments)
	rt.handle("POST /v1/workers/{wid}/sandboxes/{id}/state", a.handleWorkerState)
}

// handleWorkerList shows the workers, their GPUs (which are in use), and the caller's
// containers that wait for GPUs, with why.
func (a *API) handleWorkerList(w http.ResponseWriter, r *http.Request) {
	workers, waiting := a.fleet.Workers(principal(r).WorkspaceID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"workers": workers, "waiting": waiting})
}

func (a *API) handleWorkerRegister(w http.ResponseWriter, r *http.Request) {
	var req workerproto.RegisterRequest
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// A server that speaks TLS is split across machines: the worker's own API, which the
	// server sends commands and clients' streams to, must be TLS as well.
	if r.TLS != nil && !strings.HasPrefix(req.Addr, "https://") {
		httpapi.WriteError(w, errdefs.Invalid("worker %s: this server serves TLS, so the worker's API must too: addr %q is not https (a gust worker given an https --server serves TLS itself)", req.Name, req.Addr))
		return
	}
	resp, err := a.fleet.Register(req)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// The usage ledger lets a restarted worker report what its earlier IDs owed (billing.go).
	if err := a.store.PutWorkerName(r.Context(), resp.WorkerID, req.Name, time.Now()); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// A new credential at each registration; the worker's earlier ones go.
	if err := a.store.DeleteWorkerTokens(r.Context(), req.Name); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	id, secret := auth.NewCredential()
	if err := a.store.PutToken(r.Context(), auth.Token{ID: id, Name: req.Name, Kind: auth.Worker, WorkerID: resp.WorkerID,
		Hash: auth.Hash(secret), CreatedAt: time.Now().UTC()}); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	resp.Credential = id + ":" + secret
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

func (a *API) handleWorkerAssignments(w http.ResponseWriter, r *http.Request) {
	wait, err := querySeconds(r, "wait", 0, maxQuerySeconds)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	as, err := a.fleet.Assignments(r.Context(), r.PathValue("wid"), wire.Seconds(wait).D())
	if err != nil {
		if r.Context().Err() == nil {
			httpapi.WriteError(w, err)
		}
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, workerproto.Assignments{Assignments: as})
}

func (a *API) handleWorkerState(w http.ResponseWriter, r *http.Request) {
	var st workerproto.StateReport
	if err := httpapi.DecodeJSON(r, &st, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.fleet.ReportState(r.Context(), r.PathValue("wid"), r.PathValue("id"), st); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxEventsBody bounds one batch of a worker's function events. The worker cuts its batches
// at 16 MiB of payload; this leaves room for one large result (up to 160 MiB, base64).
const maxEventsBody = 256 << 20

func (a *API) handleWorkerEvents(w http.ResponseWriter, r *http.Request) {
	if err := a.fleet.CheckWorker(r.PathValue("wid")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var req workerproto.Events
	if err := httpapi.DecodeJSON(r, &req, maxEventsBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.engine.HandleEvents(r.PathValue("wid"), req.Events)
	w.WriteHeader(http.StatusNoContent)
}

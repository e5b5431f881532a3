package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
)

func (a *API) sandboxRoutes(rt *router) {
	rt.handle("POST /v1/sandboxes", a.handleSandboxCreate)
	rt.handle("GET /v1/sandboxes", a.handleSandboxList)
	rt.handle("GET /v1/sandboxes/{id}", a.handleSandboxGet)
	rt.handle("POST /v1/sandboxes/{id}/terminate", a.handleSandboxTerminate)
	rt.handle("PUT /v1/sandboxes/{id}/tags", a.handleSandboxTags)
	rt.handle("POST /v1/sandboxes/{id}/snapshot", a.handleSandboxSnapshot)
	rt.handle("PUT /v1/sandboxes/{id}/network", a.handleSandboxNetwork)
	// Relayed to the sandbox's worker, which answers them.
	for _, p := range []string{
		"POST /v1/sandboxes/{id}/execs", "GET /v1/sandboxes/{id}/execs/{eid}/output",
		"GET /v1/sandboxes/{id}/execs/{eid}", "POST /v1/sandboxes/{id}/execs/{eid}/stdin",
		"POST /v1/sandboxes/{id}/execs/{eid}/signal", "POST /v1/sandboxes/{id}/execs/{eid}/resize",
		"GET /v1/sandboxes/{id}/logs", "GET /v1/sandboxes/{id}/files", "PUT /v1/sandboxes/{id}/files",
		"DELETE /v1/sandboxes/{id}/files", "GET /v1/sandboxes/{id}/files/list",
		"GET /v1/sandboxes/{id}/files/stat", "POST /v1/sandboxes/{id}/files/mkdir",
		"POST /v1/sandboxes/{id}/volumes/reload",
	} {
		h := a.forward
		if p == "POST /v1/sandboxes/{id}/execs" {
			h = a.meters.timeExec(a.forward) // exec latency, for the operator's metrics
		}
		rt.handle(p, h)
	}
}

func (a *API) handleSandboxCreate(w http.ResponseWriter, r *http.Request) {
	var req sandbox.CreateRequest
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	cpu, mem := a.fleet.Capacity()
	sb, err := req.Validate(a.cfg.DefaultIsolation, cpu, mem)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	p := principal(r)
	if _, err := a.appOf(r, sb.AppID); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.checkImage(r, sb.ImageID); err != nil {
		httpapi.WriteError(w, fmt.Errorf("%w (resolve an image first, e.g. Image.debian_slim())", err))
		return
	}
	if err := a.checkIngress(sb.Ports); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.fleet.CheckGPU(sb.GPU, sb.Isolation); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb.WorkspaceID, sb.CreatedBy = p.WorkspaceID, p.ContainerID
	created, err := a.fleet.Create(r.Context(), sb, nil, nil)
	if err != nil {
		if r.Context().Err() == nil {
			httpapi.WriteError(w, err)
		}
		return
	}
	if err := a.openTunnels(r.Context(), created); err != nil {
		// No sandbox without the tunnels it asked for.
		if _, terr := a.fleet.Terminate(context.WithoutCancel(r.Context()), created.ID, sandbox.Terminated, "its tunnels could not be opened"); terr != nil {
			a.log.Printf("sandbox %s: terminating it after its tunnels failed: %v", created.ID, terr)
		}
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, created.Public())
}

func (a *API) handleSandboxList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := principal(r)
	f := store.SandboxFilter{WorkspaceID: p.WorkspaceID, CreatedBy: p.ContainerID, AppID: q.Get("app_id"), Name: q.Get("name"), Tags: map[string]string{}}
	f.IncludeFinished = q.Get("include_finished") == "1" || q.Get("include_finished") == "true"
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			httpapi.WriteError(w, errdefs.Invalid("tag filter %q must look like key=value", t))
			return
		}
		f.Tags[k] = v
	}
	sbs, err := a.store.ListSandboxes(r.Context(), f)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	out := make([]sandbox.Sandbox, len(sbs))
	for i, sb := range sbs {
		out[i] = sb.Public()
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
}

// handleSandboxGet answers at once, or with ?wait=S once the sandbox ends (or S passes).
func (a *API) handleSandboxGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	wait, err := querySeconds(r, "wait", 0, maxQuerySeconds)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb, timedOut, err := a.awaitSandbox(r, id, wait, a.sandboxOf, func(sb sandbox.Sandbox) bool {
		return wait == 0 || sb.Status.Terminal()
	})
	if timedOut {
		sb, err = a.sandboxOf(r, id)
	}
	if r.Context().Err() != nil {
		return // the client went
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sb.Public())
}

// awaitSandbox reads sandbox id with read until done holds (timedOut false), secs pass
// (timedOut true, with the last record read) or the client goes; at most 300 s.
func (a *API) awaitSandbox(r *http.Request, id string, secs float64, read func(*http.Request, string) (sandbox.Sandbox, error),
	done func(sandbox.Sandbox) bool) (sb sandbox.Sandbox, timedOut bool, err error) {
	deadline := time.NewTimer(wire.Seconds(min(secs, 300)).D())
	defer deadline.Stop()
	for {
		sb, err := read(r, id)
		if err != nil || done(sb) {
			return sb, false, err
		}
		// Watch, then look again: a change between the two reads must not be missed.
		changed := a.fleet.Watch(id)
		if again, err := a.store.GetSandbox(r.Context(), id); err == nil && again.Status != sb.Status {
			continue
		}
		select {
		case <-changed:
		case <-deadline.C:
			return sb, true, nil
		case <-r.Context().Done():
			return sb, false, r.Context().Err()
		}
	}
}

func (a *API) handleSandboxTerminate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.sandboxOf(r, id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb, err := a.fleet.Terminate(r.Context(), id, sandbox.Terminated, "")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sb.Public())
}

func (a *API) handleSandboxTags(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tags map[string]string `json:"tags"`
	}
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := sandbox.ValidateTags(req.Tags); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Tags == nil {
		req.Tags = map[string]string{}
	}
	if _, err := a.sandboxOf(r, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb, err := a.fleet.SetTags(r.Context(), r.PathValue("id"), req.Tags)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sb.Public())
}

// handleSandboxNetwork replaces a running sandbox's outbound network policy, whole and
// atomically: the body is the network part of a create (block_network and the allowlists).
func (a *API) handleSandboxNetwork(w http.ResponseWriter, r *http.Request) {
	var req sandbox.NetworkRequest
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	p, err := req.Policy(false)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if _, err := a.sandboxOf(r, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb, err := a.fleet.SetNetwork(r.Context(), r.PathValue("id"), p)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sb.Public())
}

// handleSandboxSnapshot saves a running sandbox's filesystem as a new image.
func (a *API) handleSandboxSnapshot(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sb, err := a.sandboxOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if sb.Status != sandbox.Running {
		httpapi.WriteError(w, notRunning(sb))
		return
	}
	// A snapshot's layer is disk the workspace keeps, so it counts against image_disk_mib like
	// its uploads: a workspace already at its quota is refused before the work, and one that
	// the new layer takes over it gets no image (the layer goes with the next prune).
	ws, err := a.store.GetWorkspace(ctx, sb.WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	quota := int64(ws.Quotas.ImageDiskMiB) << 20
	if err := a.store.CheckBlobRoom(ctx, ws.ID, 0, quota); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	im, size, err := a.builds.SnapshotImage(ctx, sb)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	err = a.store.GrantBlob(ctx, ws.ID, store.SnapshotGrant(im.ID), size, quota)
	if err == nil {
		err = a.store.GrantImage(ctx, ws.ID, im.ID)
	}
	if err != nil {
		if derr := a.store.DeleteImage(context.WithoutCancel(ctx), im.ID); derr != nil {
			a.log.Printf("snapshot refused but its image record %s stays: %v", im.ID, derr)
		}
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, im)
}

// maxForwardBody bounds what a client may send through to a worker (file writes, stdin).
const maxForwardBody = 64<<20 + 1<<10

// forward relays a request to the worker running the sandbox.
func (a *API) forward(w http.ResponseWriter, r *http.Request) {
	sb, err := a.sandboxOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// Output, logs and exec status stay readable for a while after the sandbox ends.
	reads := r.Method == http.MethodGet && (strings.HasSuffix(r.URL.Path, "/output") || strings.HasSuffix(r.URL.Path, "/logs") || r.PathValue("eid") != "" && !strings.Contains(r.URL.Path, "/files"))
	if sb.Status != sandbox.Running && !reads {
		httpapi.WriteError(w, notRunning(sb))
		return
	}
	client, err := a.fleet.Client(sb)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// Read the request body before forwarding: Go's HTTP/1 server is not full duplex, and a body
	// still being read while the streamed answer flows back gets the answer cut off.
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardBody+1))
	if err != nil {
		httpapi.WriteError(w, errdefs.Invalid("reading request body: %v", err))
		return
	}
	if len(body) > maxForwardBody {
		httpapi.WriteError(w, errdefs.TooLarge("request body is above the 64 MiB limit; send it in parts"))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	client.Relay(w, r)
}

func notRunning(sb sandbox.Sandbox) error {
	switch sb.Status {
	case sandbox.Pending:
		return errdefs.Conflict("sandbox %s is still starting", sb.ID)
	case sandbox.Timeout:
		return errdefs.Conflict("sandbox %s has timed out and is no longer running; create a new sandbox (or raise timeout=)", sb.ID)
	case sandbox.Terminated:
		return errdefs.Conflict("sandbox %s has been terminated and is no longer running; create a new sandbox", sb.ID)
	}
	code := "unknown"
	if sb.ExitCode != nil {
		code = strconv.Itoa(*sb.ExitCode)
	}
	return errdefs.Conflict("sandbox %s is %s (exit code %s) and no longer running; create a new sandbox", sb.ID, sb.Status, code)
}

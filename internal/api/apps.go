package api

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
)

func (a *API) appRoutes(rt *router) {
	rt.handle("POST /v1/apps/lookup", a.handleAppLookup)
	rt.handle("GET /v1/apps", a.handleAppList)
	rt.handle("POST /v1/apps/publish", a.handleAppPublish)
	rt.handle("GET /v1/apps/{id}", a.handleAppGet)
	rt.handle("POST /v1/apps/{id}/stop", a.handleAppStop)
	rt.handle("POST /v1/apps/{id}/heartbeat", a.handleAppHeartbeat)
	rt.handle("GET /v1/apps/{id}/logs", a.handleAppLogs)
}

func (a *API) handleAppLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name            string `json:"name"`
		CreateIfMissing bool   `json:"create_if_missing"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Name == "" || len(req.Name) > 64 || strings.ContainsAny(req.Name, "/ ") || strings.ContainsFunc(req.Name, unicode.IsControl) {
		httpapi.WriteError(w, errdefs.Invalid("app name %q is not valid: use 1-64 characters without spaces, '/' or control characters", req.Name))
		return
	}
	p := principal(r)
	if req.CreateIfMissing && p.Kind == auth.User && !p.Role.AtLeast(auth.Member) {
		req.CreateIfMissing = false // creating is a member's (or a function's); looking up is anyone's
	}
	app, err := a.store.LookupApp(r.Context(), p.WorkspaceID, req.Name, req.CreateIfMissing)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, app)
}

func (a *API) handleAppList(w http.ResponseWriter, r *http.Request) {
	apps, err := a.store.ListApps(r.Context(), principal(r).WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	docs := make([]appDoc, 0, len(apps))
	for _, app := range apps {
		doc, err := a.appDoc(r.Context(), app, false)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		docs = append(docs, doc)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"apps": docs})
}

var appNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// publishRequest is an app's functions as an SDK publishes them.
type publishRequest struct {
	Name      string          `json:"name"`
	Mode      string          `json:"mode"`
	Code      function.Code   `json:"code"`
	Functions []function.Spec `json:"functions"`
	Heartbeat bool            `json:"heartbeat"`
}

// handleAppPublish makes an app's functions: `with app.run()` (ephemeral) or `app.deploy()`.
// Everything is checked before anything is recorded.
func (a *API) handleAppPublish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	if err := httpapi.DecodeJSON(r, &req, 4<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := r.Context()
	ws := principal(r).WorkspaceID
	if err := a.checkPublish(r, &req); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	app, err := a.store.LookupApp(ctx, ws, req.Name, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	webURLs, err := a.webLabels(ctx, ws, app.Name, req.Mode, req.Functions)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	now := time.Now().UTC()
	fns := make([]function.Function, len(req.Functions))
	fnIDs := map[string]string{}
	for i, sp := range req.Functions {
		fns[i] = function.Function{ID: ids.New(ids.Function), AppID: app.ID, WorkspaceID: ws, Name: sp.Name, Mode: req.Mode,
			State: function.StateActive, Spec: sp, Code: req.Code, CreatedAt: now, Heartbeat: req.Heartbeat && req.Mode == function.ModeEphemeral}
		fnIDs[sp.Name] = fns[i].ID
	}
	replaced, err := a.store.InsertFunctions(ctx, fns, req.Mode == function.ModeDeployed)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.engine.Publish(fns, replaced)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"app_id": app.ID, "app_name": app.Name, "mode": req.Mode, "functions": fnIDs, "web_urls": webURLs})
}

// checkPublish validates a publish request and fills its defaults.
func (a *API) checkPublish(r *http.Request, req *publishRequest) error {
	ctx, ws := r.Context(), principal(r).WorkspaceID
	if req.Mode != function.ModeEphemeral && req.Mode != function.ModeDeployed {
		return errdefs.Invalid("mode must be %q or %q, got %q", function.ModeEphemeral, function.ModeDeployed, req.Mode)
	}
	if req.Name == "" {
		if req.Mode == function.ModeDeployed {
			return errdefs.Invalid("a deployed app needs a name: App(\"my-app\")")
		}
		req.Name = "ephemeral-" + ids.Random(8)
	}
	if !appNameRE.MatchString(req.Name) {
		return errdefs.Invalid("app name %q is not valid: use 1-64 letters, digits, '.', '_' or '-'", req.Name)
	}
	if len(req.Functions) == 0 {
		return errdefs.Invalid("app %q has no functions to publish", req.Name)
	}
	if req.Code.Module == "" || strings.IndexByte(req.Code.Module, 0) >= 0 || !a.layers.HasBlob(req.Code.Blob) || a.checkBlob(r, req.Code.Blob) != nil {
		return errdefs.Invalid("code must name the module to import and a blob uploaded with POST /v1/blobs (blob %q)", req.Code.Blob)
	}
	cpu, mem := a.fleet.Capacity()
	seen := map[string]bool{}
	for i := range req.Functions {
		sp := &req.Functions[i]
		sp.ApplyDefaults()
		if err := sp.Validate(cpu, mem); err != nil {
			return err
		}
		if seen[sp.Name] {
			return errdefs.Invalid("function %q is published twice", sp.Name)
		}
		seen[sp.Name] = true
		if err := a.checkImage(r, sp.ImageID); err != nil {
			return fmt.Errorf("function %q: %w", sp.Name, err)
		}
		for _, sec := range sp.Secrets {
			if sec.Name != "" {
				if _, err := a.store.GetSecret(ctx, ws, sec.Name); err != nil {
					return fmt.Errorf("function %q: %w", sp.Name, err)
				}
			}
		}
		if sp.Schedule != nil && req.Mode == function.ModeEphemeral {
			a.log.Printf("app %s: function %s has a schedule, which runs only once deployed", req.Name, sp.Name)
		}
	}
	return nil
}

// appDoc is an app with the state of its functions.
type appDoc struct {
	store.App
	State      string        `json:"state"` // deployed, ephemeral, stopped, or "" for sandbox-only apps
	Functions  int           `json:"functions"`
	Containers int           `json:"containers"`
	Details    []functionDoc `json:"function_details,omitempty"`
}

func (a *API) appDoc(ctx context.Context, app store.App, details bool) (appDoc, error) {
	doc := appDoc{App: app}
	fns, err := a.store.ListFunctions(ctx, app.ID, false)
	if err != nil {
		return doc, err
	}
	for _, fn := range fns {
		fd := a.functionDoc(fn)
		if fd.State != function.StateStopped && fd.State != function.StateReplaced {
			doc.Functions++
			if fn.Mode == function.ModeDeployed {
				doc.State = "deployed"
			} else if doc.State == "" {
				doc.State = "ephemeral"
			}
		}
		doc.Containers += fd.Stats.Containers
		if details && (fd.State == function.StateActive || fd.Stats.Containers > 0 || fd.Stats.Pending > 0) {
			doc.Details = append(doc.Details, fd)
		}
	}
	if len(fns) > 0 && doc.State == "" {
		doc.State = "stopped"
	}
	return doc, nil
}

func (a *API) handleAppGet(w http.ResponseWriter, r *http.Request) {
	app, err := a.appOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	doc, err := a.appDoc(r.Context(), app, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if doc.Details == nil {
		doc.Details = []functionDoc{}
	}
	httpapi.WriteJSON(w, http.StatusOK, doc)
}

// handleAppStop stops an app's functions: all of them, or those listed (the end of one
// `with app.run()`). Stopping all of them stops the app's sandboxes too, as `modal app stop`
// does.
func (a *API) handleAppStop(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Functions []string `json:"functions"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := r.Context()
	app, err := a.appOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	fns, err := a.store.ListFunctions(ctx, app.ID, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	want := idSet(req.Functions)
	var fnIDs []string
	for _, fn := range fns {
		if len(want) == 0 || want[fn.ID] || want[fn.VariantOf] { // variants stop with their function
			fnIDs = append(fnIDs, fn.ID)
		}
	}
	if err := a.engine.StopFunctions(fnIDs, "the app was stopped"); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if len(want) == 0 {
		if err := a.stopSandboxes(ctx, app); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	doc, err := a.appDoc(ctx, app, false)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, doc)
}

// stopSandboxes terminates an app's sandboxes. One that does not confirm its stop is logged
// and the rest still go: the app is stopped either way.
func (a *API) stopSandboxes(ctx context.Context, app store.App) error {
	appID := app.ID
	sbs, err := a.store.ListSandboxes(ctx, store.SandboxFilter{WorkspaceID: app.WorkspaceID, AppID: appID})
	if err != nil {
		return fmt.Errorf("listing the app's sandboxes: %w", err)
	}
	for _, sb := range sbs {
		if _, err := a.fleet.Terminate(ctx, sb.ID, sandbox.Terminated, "the app was stopped"); err != nil {
			a.log.Printf("app %s stop: sandbox %s: %v", appID, sb.ID, err)
		}
	}
	return nil
}

// idSet is a set of IDs from a request; empty means "all".
func idSet(list []string) map[string]bool {
	set := make(map[string]bool, len(list))
	for _, id := range list {
		set[id] = true
	}
	return set
}

// handleAppHeartbeat keeps a `with app.run()` alive: its client is still there.
func (a *API) handleAppHeartbeat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Functions []string `json:"functions"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	appID := r.PathValue("id")
	if _, err := a.appOf(r, appID); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	alive := a.engine.Heartbeat(appID, req.Functions)
	if alive == 0 {
		httpapi.WriteError(w, errdefs.NotFound("app %s has no running functions to keep alive", appID))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"functions": alive})
}

// handleAppLogs returns an app's kept logs, and with follow=1 goes on with new ones.
func (a *API) handleAppLogs(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	app, err := a.appOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q := r.URL.Query()
	var since int64
	if v := q.Get("since"); v != "" {
		if since, err = strconv.ParseInt(v, 10, 64); err != nil {
			httpapi.WriteError(w, errdefs.Invalid("since must be a log sequence number, got %q", v))
			return
		}
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	a.engine.FlushWrites() // lines still on their way to the store count too
	n := httpapi.StartNDJSON(w)
	for {
		wake := a.engine.LogsAppended()
		lines, err := a.store.AppLogs(ctx, app.ID, since, 1000)
		if err != nil {
			sendLast(n, httpapi.ErrorLine(err))
			return
		}
		for _, l := range lines {
			if err := n.Send(map[string]any{"log": l}); err != nil {
				return
			}
			since = l.Seq
		}
		if len(lines) == 1000 {
			continue
		}
		if !follow {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// maxInputsPerRequest and maxCallBody bound one call or add-inputs request; .map sends more
// in batches, and large data goes by reference rather than as an argument.
const (
	maxInputsPerRequest = 10000
	maxCallBody         = 64 << 20
)

func (a *API) functionRoutes(rt *router) {
	rt.handle("POST /v1/functions/lookup", a.handleFunctionLookup)
	rt.handle("GET /v1/functions/{id}", a.handleFunctionGet)
	rt.handle("POST /v1/functions/{id}/autoscaler", a.handleFunctionAutoscaler)
	rt.handle("POST /v1/functions/{id}/variants", a.handleFunctionVariant)
	rt.handle("POST /v1/functions/{id}/calls", a.handleCallCreate)
	rt.handle("POST /v1/calls/{id}/inputs", a.handleCallInputs)
	rt.handle("GET /v1/calls/{id}/stream", a.handleCallStream)
	rt.handle("GET /v1/calls/{id}", a.handleCallGet)
	rt.handle("POST /v1/calls/{id}/cancel", a.handleCallCancel)
}

// functionDoc is a function as clients see it.
type functionDoc struct {
	ID          string                     `json:"function_id"`
	AppID       string                     `json:"app_id"`
	Name        string                     `json:"name"`
	Kind        string                     `json:"kind"`
	Mode        string                     `json:"mode"`
	State       function.State             `json:"state"`
	VariantOf   string                     `json:"variant_of,omitempty"` // with_options: the function it was made from
	Methods     map[string]function.Method `json:"methods,omitempty"`
	IsGenerator bool                       `json:"is_generator"`
	Spec        function.Spec              `json:"spec"`
	Stats       dispatch.Stats             `json:"stats"`
	WebURL      string                     `json:"web_url,omitempty"` // a web endpoint's
	CreatedAt   time.Time                  `json:"created_at"`
}

func (a *API) functionDoc(fn function.Function) functionDoc {
	state, st := a.engine.Describe(fn)
	if why := a.fleet.WaitReason(fn.ID); why != "" {
		st.Reason = why // its containers wait for GPUs that others hold
	}
	return functionDoc{ID: fn.ID, AppID: fn.AppID, Name: fn.Name, Kind: fn.Spec.Kind, Mode: fn.Mode, State: state, VariantOf: fn.VariantOf,
		Methods: fn.Spec.Methods, IsGenerator: fn.Spec.IsGenerator, Spec: fn.Spec.Public(), Stats: st, WebURL: a.webURL(context.Background(), fn), CreatedAt: fn.CreatedAt}
}

func (a *API) handleFunctionLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppName string `json:"app_name"`
		Name    string `json:"name"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	app, err := a.store.LookupApp(r.Context(), principal(r).WorkspaceID, req.AppName, false)
	if err != nil {
		httpapi.WriteError(w, errdefs.NotFound("app %q is not deployed; deploy it with `gust deploy FILE`", req.AppName))
		return
	}
	fn, err := a.store.DeployedFunction(r.Context(), app.ID, req.Name)
	if err != nil {
		httpapi.WriteError(w, errdefs.NotFound("app %q has no deployed function %q; deploy it with `gust deploy FILE`", req.AppName, req.Name))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, a.functionDoc(fn))
}

func (a *API) handleFunctionGet(w http.ResponseWriter, r *http.Request) {
	fn, err := a.functionOf(r, a.store.GetFunction)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, a.functionDoc(fn))
}

// handleFunctionAutoscaler changes a running function's scaling bounds: Modal's
// Function.update_autoscaler (and keep_warm). Fields left out keep their values.
func (a *API) handleFunctionAutoscaler(w http.ResponseWriter, r *http.Request) {
	var req struct {
		MinContainers    *int     `json:"min_containers"`
		MaxContainers    *int     `json:"max_containers"`
		BufferContainers *int     `json:"buffer_containers"`
		ScaledownWindow  *float64 `json:"scaledown_window"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	fn, err := a.functionOf(r, a.engine.Active)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	cpu, mem := a.fleet.Capacity()
	fn, err = a.engine.UpdateAutoscaler(r.Context(), fn.ID, dispatch.AutoscalerPatch{MinContainers: req.MinContainers,
		MaxContainers: req.MaxContainers, BufferContainers: req.BufferContainers, ScaledownWindow: req.ScaledownWindow}, cpu, mem)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, a.functionDoc(fn))
}

// inputArgs is one input as a client sends it.
type inputArgs struct {
	Args   []byte `json:"args"`
	Format string `json:"format"`
}

func checkInputs(ins []inputArgs) ([]workerproto.Input, error) {
	if len(ins) > maxInputsPerRequest {
		return nil, errdefs.TooLarge("%d inputs in one request; send at most %d and add the rest with POST /v1/calls/{id}/inputs", len(ins), maxInputsPerRequest)
	}
	out := make([]workerproto.Input, len(ins))
	for i, in := range ins {
		if in.Format == "" {
			in.Format = function.FormatPickle
		}
		if err := function.CheckFormat(in.Format); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		if len(in.Args) == 0 {
			return nil, errdefs.Invalid("input %d has no args payload", i)
		}
		out[i] = workerproto.Input{Args: in.Args, Format: in.Format}
	}
	return out, nil
}

// callRequest is .remote(), .spawn() or .map() as a client sends it.
type callRequest struct {
	Kind   string            `json:"kind"`
	Method string            `json:"method"`
	Params *function.Payload `json:"params"`
	Inputs []inputArgs       `json:"inputs"`
	Stream bool              `json:"stream"`
}

// checkCall refuses a call its function cannot take.
func (a *API) checkCall(fn function.Function, req callRequest) ([]workerproto.Input, error) {
	switch req.Kind {
	case dispatch.CallRemote, dispatch.CallSpawn, dispatch.CallMap:
	default:
		return nil, errdefs.Invalid("call kind must be remote, spawn or map, got %q", req.Kind)
	}
	if w := fn.Spec.Web; w != nil && (fn.Spec.Kind != function.KindClass || req.Method == w.ClsMethod) {
		return nil, errdefs.Invalid("a web endpoint cannot be invoked for remote execution with .%s: invoke it through its web URL instead", req.Kind)
	}
	sp := fn.Spec
	if sp.Kind == function.KindClass {
		if _, ok := sp.Methods[req.Method]; !ok {
			return nil, errdefs.Invalid("class %s has no method %q (its methods: %s)", fn.Name, req.Method, strings.Join(sp.SortedMethods(), ", "))
		}
	} else if req.Method != "" {
		return nil, errdefs.Invalid("%s is a function, not a class; it has no method %q", fn.Name, req.Method)
	}
	if req.Params != nil {
		if err := function.CheckFormat(req.Params.Format); err != nil {
			return nil, err
		}
	}
	args, err := checkInputs(req.Inputs)
	if err != nil {
		return nil, err
	}
	if len(args) == 0 && req.Kind != dispatch.CallMap {
		return nil, errdefs.Invalid("a %s call needs one input", req.Kind)
	}
	iso := sp.Isolation
	if iso == "" {
		iso = a.cfg.DefaultIsolation
	}
	if err := a.fleet.CheckGPU(sp.GPU, iso); err != nil {
		return nil, err
	}
	return args, nil
}

// handleCallCreate starts a call: .remote(), .spawn() or .map().
func (a *API) handleCallCreate(w http.ResponseWriter, r *http.Request) {
	var req callRequest
	if err := httpapi.DecodeJSON(r, &req, maxCallBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := r.Context()
	fn, err := a.functionOf(r, a.engine.Active)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	args, err := a.checkCall(fn, req)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	call := a.engine.NewCall(fn, req.Kind, req.Method, req.Params, principal(r).ContainerID)
	first, err := a.engine.Enqueue(ctx, call.ID, args)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	head := map[string]any{"call_id": call.ID, "first_index": first, "count": len(args)}
	if !req.Stream {
		httpapi.WriteJSON(w, http.StatusCreated, head)
		return
	}
	n := httpapi.StartNDJSON(w)
	if err := n.Send(map[string]any{"call": head}); err != nil {
		return // the client went away; the call goes on and can be followed later
	}
	if err := a.engine.Stream(ctx, w, call.ID, 0, -1, 300*time.Second); err != nil {
		sendLast(n, httpapi.ErrorLine(err))
	}
}

func (a *API) handleCallInputs(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Inputs []inputArgs `json:"inputs"`
	}
	if err := httpapi.DecodeJSON(r, &req, maxCallBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	args, err := checkInputs(req.Inputs)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	id := r.PathValue("id")
	if _, err := a.callOf(r, id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	first, err := a.engine.Enqueue(r.Context(), id, args)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"call_id": id, "first_index": first, "count": len(args)})
}

// handleCallStream follows a call: its logs, generator items and outputs.
func (a *API) handleCallStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, until := 0, -1
	timeout, err := querySeconds(r, "timeout", 60, maxQuerySeconds)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if v := q.Get("from"); v != "" {
		if from, err = strconv.Atoi(v); err != nil || from < 0 {
			httpapi.WriteError(w, errdefs.Invalid("from must be a non-negative integer, got %q", v))
			return
		}
	}
	if v := q.Get("until"); v != "" {
		if until, err = strconv.Atoi(v); err != nil || until < 0 {
			httpapi.WriteError(w, errdefs.Invalid("until must be a non-negative integer, got %q", v))
			return
		}
	}
	id := r.PathValue("id")
	if _, err := a.callOf(r, id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	n := httpapi.StartNDJSON(w)
	if err := a.engine.Stream(r.Context(), w, id, from, until, wire.Seconds(min(timeout, 300)).D()); err != nil {
		sendLast(n, httpapi.ErrorLine(err))
	}
}

func (a *API) handleCallGet(w http.ResponseWriter, r *http.Request) {
	info, err := a.callOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	call := info.Call
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"call_id": call.ID, "function_id": call.FunctionID, "kind": call.Kind,
		"count": call.Count, "done": info.Done, "status": info.Status(), "created_at": call.CreatedAt})
}

// handleCallCancel ends a call's inputs that are not done: queued ones at once, running ones
// too (their outputs are dropped), and with terminate_containers the containers running them.
func (a *API) handleCallCancel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TerminateContainers bool `json:"terminate_containers"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	id := r.PathValue("id")
	if _, err := a.callOf(r, id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	n, err := a.engine.Cancel(r.Context(), id, req.TerminateContainers)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"call_id": id, "cancelled": n})
}

// functionOf returns the function the path names, through get, if r's workspace owns it.
func (a *API) functionOf(r *http.Request, get func(context.Context, string) (function.Function, error)) (function.Function, error) {
	id := r.PathValue("id")
	fn, err := get(r.Context(), id)
	if err == nil && fn.WorkspaceID != principal(r).WorkspaceID {
		return function.Function{}, errdefs.NotFound("function %q not found", id)
	}
	return fn, err
}

// callOf returns a call r's principal may follow: one of its workspace, and for a container's
// credential one that container made.
func (a *API) callOf(r *http.Request, id string) (dispatch.CallInfo, error) {
	info, err := a.engine.Call(r.Context(), id)
	if err == nil && !visible(principal(r), info.Call.WorkspaceID, info.Call.CreatedBy) {
		return dispatch.CallInfo{}, errdefs.NotFound("function call %q not found", id)
	}
	return info, err
}

// handleFunctionVariant answers Modal's Function.with_options and Cls.with_options: the
// function with some options changed, as a function of its own (function.VariantOptions).
// The same options on the same function give the same variant, made once.
func (a *API) handleFunctionVariant(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Options function.VariantOptions `json:"options"`
	}
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	parent, err := a.functionOf(r, a.engine.Active)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if parent.State != function.StateActive {
		httpapi.WriteError(w, errdefs.Conflict("function %s is %s: with_options needs a running function", parent.ID, parent.State))
		return
	}
	ctx := r.Context()
	sp := req.Options.Apply(parent.Spec)
	sp.ApplyDefaults()
	cpu, mem := a.fleet.Capacity()
	if err := sp.Validate(cpu, mem); err != nil {
		httpapi.WriteError(w, fmt.Errorf("with_options: %w", err))
		return
	}
	for _, sec := range req.Options.Secrets {
		if sec.Name != "" {
			if _, err := a.store.GetSecret(ctx, parent.WorkspaceID, sec.Name); err != nil {
				httpapi.WriteError(w, fmt.Errorf("with_options: %w", err))
				return
			}
		}
	}
	name := req.Options.VariantName(parent.Name, parent.ID)
	a.variantMu.Lock()
	defer a.variantMu.Unlock()
	fns, err := a.store.ListFunctions(ctx, parent.AppID, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, fn := range fns {
		if fn.VariantOf != "" && fn.Name == name && fn.State == function.StateActive {
			httpapi.WriteJSON(w, http.StatusOK, a.functionDoc(fn))
			return
		}
	}
	root := parent.ID
	if parent.VariantOf != "" {
		root = parent.VariantOf // a variant of a variant stops with the function they both come from
	}
	v := function.Function{ID: ids.New(ids.Function), AppID: parent.AppID, WorkspaceID: parent.WorkspaceID, Name: name,
		Mode: parent.Mode, State: function.StateActive, Spec: sp, Code: parent.Code, Heartbeat: parent.Heartbeat,
		VariantOf: root, CreatedAt: time.Now().UTC()}
	if _, err := a.store.InsertFunctions(ctx, []function.Function{v}, false); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.engine.Publish([]function.Function{v}, nil)
	httpapi.WriteJSON(w, http.StatusOK, a.functionDoc(v))
}

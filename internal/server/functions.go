package server

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// maxInputsPerRequest bounds one call or add-inputs request; .map sends more in batches.
const maxInputsPerRequest = 10000

var appNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// handleAppPublish makes an app's functions: `with app.run()` (ephemeral) or `app.deploy()`.
// Everything is checked before anything is recorded.
func (s *Server) handleAppPublish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string          `json:"name"`
		Mode      string          `json:"mode"`
		Code      function.Code   `json:"code"`
		Functions []function.Spec `json:"functions"`
		Heartbeat bool            `json:"heartbeat"`
	}
	if err := httpapi.DecodeJSON(r, &req, 4<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := r.Context()
	if req.Mode != function.ModeEphemeral && req.Mode != function.ModeDeployed {
		httpapi.WriteError(w, errdefs.Invalid("mode must be %q or %q, got %q", function.ModeEphemeral, function.ModeDeployed, req.Mode))
		return
	}
	if req.Name == "" {
		if req.Mode == function.ModeDeployed {
			httpapi.WriteError(w, errdefs.Invalid("a deployed app needs a name: App(\"my-app\")"))
			return
		}
		req.Name = "ephemeral-" + ids.Random(8)
	}
	if !appNameRE.MatchString(req.Name) {
		httpapi.WriteError(w, errdefs.Invalid("app name %q is not valid: use 1-64 letters, digits, '.', '_' or '-'", req.Name))
		return
	}
	if len(req.Functions) == 0 {
		httpapi.WriteError(w, errdefs.Invalid("app %q has no functions to publish", req.Name))
		return
	}
	if req.Code.Module == "" || !s.cfg.Images.HasBlob(req.Code.Blob) {
		httpapi.WriteError(w, errdefs.Invalid("code must name the module to import and a blob uploaded with POST /v1/blobs (blob %q)", req.Code.Blob))
		return
	}
	cpu, mem := s.capacity()
	seen := map[string]bool{}
	for i := range req.Functions {
		sp := &req.Functions[i]
		if err := sp.Validate(cpu, mem); err != nil {
			httpapi.WriteError(w, err)
			return
		}
		if seen[sp.Name] {
			httpapi.WriteError(w, errdefs.Invalid("function %q is published twice", sp.Name))
			return
		}
		seen[sp.Name] = true
		if _, err := s.store.GetImage(ctx, sp.ImageID); err != nil {
			httpapi.WriteError(w, fmt.Errorf("function %q: %w", sp.Name, err))
			return
		}
		for _, sec := range sp.Secrets {
			if sec.Name != "" {
				if _, err := s.store.GetSecret(ctx, sec.Name); err != nil {
					httpapi.WriteError(w, fmt.Errorf("function %q: %w", sp.Name, err))
					return
				}
			}
		}
		if sp.Schedule != nil && req.Mode == function.ModeEphemeral {
			s.log.Printf("app %s: function %s has a schedule, which runs only once deployed", req.Name, sp.Name)
		}
	}
	app, err := s.store.LookupApp(ctx, req.Name, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	now := time.Now().UTC()
	fns := make([]function.Function, len(req.Functions))
	fnIDs := map[string]string{}
	for i, sp := range req.Functions {
		fns[i] = function.Function{ID: ids.New(ids.Function), AppID: app.ID, Name: sp.Name, Mode: req.Mode,
			State: function.StateActive, Spec: sp, Code: req.Code, CreatedAt: now, Heartbeat: req.Heartbeat && req.Mode == function.ModeEphemeral}
		fnIDs[sp.Name] = fns[i].ID
	}
	replaced, err := s.store.InsertFunctions(ctx, fns, req.Mode == function.ModeDeployed)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.mu.Lock()
	for _, id := range replaced {
		if fs := s.fx.fns[id]; fs != nil {
			fs.fn.State = function.StateReplaced
		}
	}
	for _, fn := range fns {
		s.fx.fns[fn.ID] = &fnState{fn: fn, containers: map[string]*fnContainer{}, lastBeat: time.Now()}
	}
	s.fx.mu.Unlock()
	s.fx.wake()
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"app_id": app.ID, "app_name": app.Name, "mode": req.Mode, "functions": fnIDs})
}

// functionDoc is a function as clients see it.
type functionDoc struct {
	ID          string                     `json:"function_id"`
	AppID       string                     `json:"app_id"`
	Name        string                     `json:"name"`
	Kind        string                     `json:"kind"`
	Mode        string                     `json:"mode"`
	State       string                     `json:"state"`
	Methods     map[string]function.Method `json:"methods,omitempty"`
	IsGenerator bool                       `json:"is_generator"`
	Spec        function.Spec              `json:"spec"`
	Stats       fnStats                    `json:"stats"`
	CreatedAt   time.Time                  `json:"created_at"`
}

func (s *Server) functionDoc(fn function.Function) functionDoc {
	st := s.fx.stats(fn.ID)
	s.fx.mu.Lock()
	if fs := s.fx.fns[fn.ID]; fs != nil {
		fn.State = fs.fn.State
	}
	s.fx.mu.Unlock()
	return functionDoc{ID: fn.ID, AppID: fn.AppID, Name: fn.Name, Kind: fn.Spec.Kind, Mode: fn.Mode, State: fn.State,
		Methods: fn.Spec.Methods, IsGenerator: fn.Spec.IsGenerator, Spec: fn.Spec.Public(), Stats: st, CreatedAt: fn.CreatedAt}
}

func (s *Server) handleFunctionLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppName string `json:"app_name"`
		Name    string `json:"name"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	app, err := s.store.LookupApp(r.Context(), req.AppName, false)
	if err != nil {
		httpapi.WriteError(w, errdefs.NotFound("app %q is not deployed; deploy it with `gust deploy FILE`", req.AppName))
		return
	}
	fn, err := s.store.DeployedFunction(r.Context(), app.ID, req.Name)
	if err != nil {
		httpapi.WriteError(w, errdefs.NotFound("app %q has no deployed function %q; deploy it with `gust deploy FILE`", req.AppName, req.Name))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.functionDoc(fn))
}

func (s *Server) handleFunctionGet(w http.ResponseWriter, r *http.Request) {
	fn, err := s.store.GetFunction(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.functionDoc(fn))
}

// handleFunctionAutoscaler changes a running function's scaling bounds: Modal's
// Function.update_autoscaler (and keep_warm). Fields left out keep their values.
func (s *Server) handleFunctionAutoscaler(w http.ResponseWriter, r *http.Request) {
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
	fs, err := s.activeFunction(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.mu.Lock()
	sp := fs.fn.Spec
	s.fx.mu.Unlock()
	if req.MinContainers != nil {
		sp.MinContainers = *req.MinContainers
	}
	if req.MaxContainers != nil {
		sp.MaxContainers = req.MaxContainers
	}
	if req.BufferContainers != nil {
		sp.BufferContainers = *req.BufferContainers
	}
	if req.ScaledownWindow != nil {
		sp.ScaledownWindow = *req.ScaledownWindow
		if sp.ScaledownWindow == 0 {
			sp.ScaledownWindow = -1 // Validate fills 0 with the default; 0 asked for is invalid
		}
	}
	cpu, mem := s.capacity()
	if err := sp.Validate(cpu, mem); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.mu.Lock()
	fs.fn.Spec = sp
	fn := fs.fn
	s.fx.mu.Unlock()
	if err := s.store.UpdateFunction(r.Context(), fn); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.wake()
	httpapi.WriteJSON(w, http.StatusOK, s.functionDoc(fn))
}

// activeFunction returns a function that takes calls: 404 for an unknown one, 409 for one
// whose app was stopped.
func (s *Server) activeFunction(ctx context.Context, id string) (*fnState, error) {
	s.fx.mu.Lock()
	fs := s.fx.fns[id]
	s.fx.mu.Unlock()
	if fs != nil {
		return fs, nil
	}
	fn, err := s.store.GetFunction(ctx, id)
	if err != nil {
		return nil, err
	}
	return nil, errdefs.Conflict("function %s (%s) is %s: its app was stopped; run or deploy the app again", fn.Name, fn.ID, fn.State)
}

// idSet is a set of IDs from a request; empty means "all".
func idSet(ids []string) map[string]bool {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set
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

// handleCallCreate starts a call: .remote(), .spawn() or .map().
func (s *Server) handleCallCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind   string            `json:"kind"`
		Method string            `json:"method"`
		Params *function.Payload `json:"params"`
		Inputs []inputArgs       `json:"inputs"`
		Stream bool              `json:"stream"`
	}
	if err := httpapi.DecodeJSON(r, &req, 256<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := r.Context()
	fnID := r.PathValue("id")
	fs, err := s.activeFunction(ctx, fnID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	switch req.Kind {
	case "remote", "spawn", "map":
	default:
		httpapi.WriteError(w, errdefs.Invalid("call kind must be remote, spawn or map, got %q", req.Kind))
		return
	}
	sp := fs.fn.Spec
	if sp.Kind == function.KindClass {
		if _, ok := sp.Methods[req.Method]; !ok {
			httpapi.WriteError(w, errdefs.Invalid("class %s has no method %q (its methods: %s)", fs.fn.Name, req.Method, strings.Join(sp.SortedMethods(), ", ")))
			return
		}
	} else if req.Method != "" {
		httpapi.WriteError(w, errdefs.Invalid("%s is a function, not a class; it has no method %q", fs.fn.Name, req.Method))
		return
	}
	if req.Params != nil {
		if err := function.CheckFormat(req.Params.Format); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	args, err := checkInputs(req.Inputs)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if len(args) == 0 && req.Kind != "map" {
		httpapi.WriteError(w, errdefs.Invalid("a %s call needs one input", req.Kind))
		return
	}
	if err := s.checkGPU(sp); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	cs := s.fx.newCall(function.Call{ID: ids.New(ids.FunctionCall), FunctionID: fnID, Kind: req.Kind, Method: req.Method, Params: req.Params, CreatedAt: time.Now().UTC()})
	first, err := s.fx.enqueue(ctx, cs, fs, args)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	head := map[string]any{"call_id": cs.call.ID, "first_index": first, "count": len(args)}
	if !req.Stream {
		httpapi.WriteJSON(w, http.StatusCreated, head)
		return
	}
	n := httpapi.StartNDJSON(w)
	n.Send(map[string]any{"call": head})
	s.streamCall(r.Context(), w, cs, 0, -1, 300*time.Second)
}

// checkGPU refuses a call that no connected worker could run, rather than queue it forever.
func (s *Server) checkGPU(sp function.Spec) error {
	gpus, _ := function.ParseGPU(sp.GPU)
	if len(gpus) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var have []string
	for _, wc := range s.workers {
		for _, g := range gpus {
			if workerHasGPU(wc.reg, g) {
				return nil
			}
		}
		for _, d := range wc.reg.GPUs {
			have = append(have, d.Model)
		}
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return errdefs.Unavailable("no connected worker has gpu=%v (workers' GPUs: %s); start a worker on a machine with that GPU, or drop gpu=", sp.GPU, strings.Join(have, ", "))
}

func workerHasGPU(reg workerproto.RegisterRequest, g function.GPU) bool {
	n := 0
	for _, d := range reg.GPUs {
		if g.Matches(d.Model, d.MemoryMiB) {
			n++
		}
	}
	return n >= g.Count
}

func (s *Server) handleCallInputs(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Inputs []inputArgs `json:"inputs"`
	}
	if err := httpapi.DecodeJSON(r, &req, 256<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	args, err := checkInputs(req.Inputs)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	cs, err := s.fx.callState(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.mu.Lock()
	fs := s.fx.fns[cs.call.FunctionID]
	kind := cs.call.Kind
	s.fx.mu.Unlock()
	if kind != "map" {
		httpapi.WriteError(w, errdefs.Invalid("inputs can be added only to map calls; %s is a %s call", cs.call.ID, kind))
		return
	}
	if fs == nil {
		httpapi.WriteError(w, errdefs.Conflict("the function of call %s was stopped", cs.call.ID))
		return
	}
	first, err := s.fx.enqueue(r.Context(), cs, fs, args)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"call_id": cs.call.ID, "first_index": first, "count": len(args)})
}

// handleCallStream follows a call: its logs, generator items and outputs.
func (s *Server) handleCallStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, until := 0, -1
	timeout := 60.0
	var err error
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
	if v := q.Get("timeout"); v != "" {
		if timeout, err = strconv.ParseFloat(v, 64); err != nil || timeout < 0 {
			httpapi.WriteError(w, errdefs.Invalid("timeout must be a non-negative number of seconds, got %q", v))
			return
		}
	}
	cs, err := s.fx.callState(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.StartNDJSON(w)
	s.streamCall(r.Context(), w, cs, from, until, time.Duration(min(timeout, 300)*float64(time.Second)))
}

// streamCall writes a call's lines from its from-th output on, until `until` outputs (or every
// input it has) have been sent, or timeout passes.
func (s *Server) streamCall(ctx context.Context, w http.ResponseWriter, cs *callState, from, until int, timeout time.Duration) {
	flusher, _ := w.(http.Flusher)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	d := s.fx
	d.mu.Lock()
	pos := 0
	if from > 0 {
		if from <= len(cs.outputPos) {
			pos = cs.outputPos[from-1] + 1
		} else {
			pos = len(cs.lines)
		}
	}
	d.mu.Unlock()
	for {
		d.mu.Lock()
		lines := cs.lines[pos:]
		pos = len(cs.lines)
		sent := sort.SearchInts(cs.outputPos, pos)
		want := cs.call.Count
		if until >= 0 {
			want = until
		}
		changed := cs.changed
		cs.lastUsed = time.Now()
		d.mu.Unlock()
		for _, l := range lines {
			if _, err := w.Write(l); err != nil {
				return
			}
		}
		if flusher != nil && len(lines) > 0 {
			flusher.Flush()
		}
		if sent >= want && (want > 0 || until == 0) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			w.Write([]byte("{\"timeout\":true}\n"))
			return
		case <-ctx.Done():
			return
		}
	}
}

func (s *Server) handleCallGet(w http.ResponseWriter, r *http.Request) {
	cs, err := s.fx.callState(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.mu.Lock()
	call, done := cs.call, len(cs.outputPos)
	s.fx.mu.Unlock()
	status := "pending"
	switch {
	case call.Cancelled:
		status = "cancelled"
	case done >= call.Count:
		status = "done"
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"call_id": call.ID, "function_id": call.FunctionID, "kind": call.Kind,
		"count": call.Count, "done": done, "status": status, "created_at": call.CreatedAt})
}

// handleCallCancel ends a call's inputs that are not done: queued ones at once, running ones
// too (their outputs are dropped), and with terminate_containers the containers running them.
func (s *Server) handleCallCancel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TerminateContainers bool `json:"terminate_containers"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	cs, err := s.fx.callState(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	d := s.fx
	var done []function.Input
	var kill []string
	d.mu.Lock()
	cs.call.Cancelled = true
	call := cs.call
	const why = "the call was cancelled"
	for _, fs := range d.fns {
		if fs.fn.ID != call.FunctionID {
			continue
		}
		keep := func(list []*queuedInput) []*queuedInput {
			out := list[:0]
			for _, qi := range list {
				if qi.callID == call.ID {
					done = append(done, d.finishLocked(qi, function.InputTerminated, nil, "", why, "", nil))
				} else {
					out = append(out, qi)
				}
			}
			return out
		}
		fs.queue, fs.delayed = keep(fs.queue), keep(fs.delayed)
		for _, c := range fs.containers {
			for _, qi := range c.inflight {
				if qi.callID == call.ID && !qi.cancelled {
					qi.cancelled = true
					done = append(done, d.finishLocked(qi, function.InputTerminated, nil, "", why, "", nil))
					if req.TerminateContainers && !c.stopping {
						c.stopping = true
						kill = append(kill, c.id)
					}
				}
			}
		}
	}
	d.mu.Unlock()
	if err := s.store.PutCall(r.Context(), call); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	d.persist(done, nil)
	for _, id := range kill {
		go s.terminate(context.Background(), id, sandbox.Terminated, why)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"call_id": call.ID, "cancelled": len(done)})
}

// appDoc is an app with the state of its functions.
type appDoc struct {
	store.App
	State      string        `json:"state"` // deployed, ephemeral, stopped, or "" for sandbox-only apps
	Functions  int           `json:"functions"`
	Containers int           `json:"containers"`
	Details    []functionDoc `json:"function_details,omitempty"`
}

func (s *Server) appDoc(ctx context.Context, app store.App, details bool) (appDoc, error) {
	doc := appDoc{App: app}
	fns, err := s.store.ListFunctions(ctx, app.ID, false)
	if err != nil {
		return doc, err
	}
	hasFns := len(fns) > 0
	for _, fn := range fns {
		fd := s.functionDoc(fn)
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
	if hasFns && doc.State == "" {
		doc.State = "stopped"
	}
	return doc, nil
}

func (s *Server) handleAppGet(w http.ResponseWriter, r *http.Request) {
	app, err := s.store.GetApp(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	doc, err := s.appDoc(r.Context(), app, true)
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
// `with app.run()`).
func (s *Server) handleAppStop(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Functions []string `json:"functions"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := r.Context()
	app, err := s.store.GetApp(ctx, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	fns, err := s.store.ListFunctions(ctx, app.ID, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	want := idSet(req.Functions)
	var ids []string
	for _, fn := range fns {
		if len(want) == 0 || want[fn.ID] {
			ids = append(ids, fn.ID)
		}
	}
	if err := s.fx.stopFunctions(ids, "the app was stopped"); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// Sandboxes of the app stop with it, as `modal app stop` does; unless only some functions
	// were named.
	if len(want) == 0 {
		sbs, _ := s.store.ListSandboxes(ctx, store.SandboxFilter{AppID: app.ID})
		for _, sb := range sbs {
			s.terminate(ctx, sb.ID, sandbox.Terminated, "the app was stopped")
		}
	}
	doc, err := s.appDoc(ctx, app, false)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, doc)
}

// handleAppHeartbeat keeps a `with app.run()` alive: its client is still there.
func (s *Server) handleAppHeartbeat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Functions []string `json:"functions"`
	}
	if err := httpapi.DecodeOptionalJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	appID := r.PathValue("id")
	now := time.Now()
	want := idSet(req.Functions)
	alive := 0
	s.fx.mu.Lock()
	for _, fs := range s.fx.fns {
		if fs.fn.AppID == appID && (len(want) == 0 || want[fs.fn.ID]) {
			fs.lastBeat = now
			alive++
		}
	}
	s.fx.mu.Unlock()
	if alive == 0 {
		httpapi.WriteError(w, errdefs.NotFound("app %s has no running functions to keep alive", appID))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"functions": alive})
}

// handleAppLogs returns an app's kept logs, and with follow=1 goes on with new ones.
func (s *Server) handleAppLogs(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	app, err := s.store.GetApp(ctx, r.PathValue("id"))
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
	s.fx.flushWrites() // lines still on their way to the store count too
	n := httpapi.StartNDJSON(w)
	for {
		s.fx.mu.Lock()
		wake := s.fx.logsWake
		s.fx.mu.Unlock()
		lines, err := s.store.AppLogs(ctx, app.ID, since, 1000)
		if err != nil {
			n.Send(httpapi.ErrorLine(err))
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

func (s *Server) handleWorkerEvents(w http.ResponseWriter, r *http.Request) {
	if _, err := s.worker(r.PathValue("wid")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var req workerproto.Events
	if err := httpapi.DecodeJSON(r, &req, 512<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.fx.handleEvents(req.Events)
	w.WriteHeader(http.StatusNoContent)
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *Server) handleSecretCreate(w http.ResponseWriter, r *http.Request) {
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
	sec, err := s.store.PutSecret(r.Context(), req.Name, req.Env, req.Overwrite)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, sec)
}

func (s *Server) handleSecretList(w http.ResponseWriter, r *http.Request) {
	secs, err := s.store.ListSecrets(r.Context())
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"secrets": secs})
}

func (s *Server) handleSecretLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sec, err := s.store.GetSecret(r.Context(), req.Name)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sec)
}

func (s *Server) handleSecretDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.store.DeleteSecret(r.Context(), r.PathValue("name")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// startTimeout bounds how long a create waits for the worker to start the container.
const startTimeout = 90 * time.Second

func (s *Server) handleSandboxCreate(w http.ResponseWriter, r *http.Request) {
	var req sandbox.CreateRequest
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	cpu, mem := s.capacity()
	sb, err := req.Validate(s.cfg.DefaultIsolation, cpu, mem)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	created, err := s.createSandbox(r.Context(), sb, nil, nil)
	if err != nil {
		if r.Context().Err() == nil {
			httpapi.WriteError(w, err)
		}
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, created.Public())
}

// createSandbox places a validated sandbox on a worker and waits until it runs. The image's
// environment and workdir are the sandbox's defaults. If ctx ends first (the client went away),
// the sandbox is terminated: nobody would know about it. A function container carries fn (what
// its runner runs) and a preset ID; placed learns which worker took it.
func (s *Server) createSandbox(ctx context.Context, sb sandbox.Sandbox, fn *workerproto.FunctionRun, placed func(workerID string)) (sandbox.Sandbox, error) {
	if _, err := s.store.GetApp(ctx, sb.AppID); err != nil {
		return sb, err
	}
	im, err := s.store.GetImage(ctx, sb.ImageID)
	if err != nil {
		return sb, fmt.Errorf("%w (resolve an image first, e.g. Image.debian_slim())", err)
	}
	if len(im.Env) > 0 {
		env := maps.Clone(im.Env)
		maps.Copy(env, sb.Env)
		sb.Env = env
	}
	sb.User = im.User
	if sb.Workdir == nil && im.Workdir != "" {
		wd := im.Workdir
		sb.Workdir = &wd
	}
	wc, err := s.place(sb)
	if err != nil {
		return sb, err
	}
	if sb.ID == "" {
		sb.ID = ids.New(ids.Sandbox)
	}
	sb.WorkerID = wc.id
	if placed != nil {
		placed(wc.id)
	}
	sb.CreatedAt = time.Now().UTC()
	if err := s.store.InsertSandbox(ctx, sb); err != nil {
		s.unplace(wc, sb)
		return sb, err
	}
	changed := s.watch(sb.ID)
	s.assign(wc, workerproto.Assignment{Op: workerproto.OpCreate, Sandbox: &sb, ImageLayers: im.Layers, Function: fn})
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-changed:
		case <-deadline.C:
			s.terminate(context.Background(), sb.ID, sandbox.Failed, "the worker did not start the sandbox in time")
			return sb, errdefs.Unavailable("sandbox %s did not start within %v", sb.ID, startTimeout)
		case <-ctx.Done():
			s.terminate(context.Background(), sb.ID, sandbox.Terminated, "the client disconnected while the sandbox was starting")
			return sb, ctx.Err()
		}
		changed = s.watch(sb.ID)
		cur, err := s.store.GetSandbox(ctx, sb.ID)
		if err != nil {
			return sb, err
		}
		if cur.Status == sandbox.Failed {
			msg := "unknown error"
			if cur.Error != nil {
				msg = *cur.Error
			}
			return cur, errdefs.Unavailable("sandbox %s failed to start: %s", sb.ID, msg)
		}
		if cur.Status != sandbox.Pending {
			return cur, nil
		}
	}
}

// unplace undoes place's count when the sandbox never reached its worker.
func (s *Server) unplace(wc *workerConn, sb sandbox.Sandbox) {
	s.mu.Lock()
	if wc.running > 0 {
		wc.running--
	}
	wc.reservedMiB = max(0, wc.reservedMiB-sb.MemoryMiB)
	s.mu.Unlock()
}

// capacity is the most one sandbox may ask for: the largest registered worker.
func (s *Server) capacity() (float64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cpu, mem := float64(runtime.NumCPU()), 0
	for _, wc := range s.workers {
		cpu = max(cpu, wc.reg.CPU)
		mem = max(mem, wc.reg.MemoryMiB)
	}
	if mem == 0 {
		mem = 1 << 20
	}
	return cpu, mem
}

// place picks the worker for a sandbox: one that has its runtime, with the fewest sandboxes.
func (s *Server) place(sb sandbox.Sandbox) (*workerConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *workerConn
	seen := false
	for _, wc := range s.workers {
		seen = true
		ok := false
		for _, iso := range wc.reg.Isolation {
			ok = ok || iso == sb.Isolation
		}
		if !ok || sb.MemoryMiB > wc.reg.MemoryMiB || !hasGPUs(wc.reg, sb.GPU) {
			continue
		}
		// Function containers are started by the autoscaler, not asked for one by one: they
		// get memory the worker has not promised elsewhere. Sandboxes may overcommit (most
		// sit idle).
		if sb.FunctionID != "" && wc.reservedMiB+sb.MemoryMiB > wc.reg.MemoryMiB {
			continue
		}
		if best == nil || wc.running < best.running {
			best = wc
		}
	}
	if best == nil {
		if !seen {
			return nil, errdefs.Unavailable("no worker is connected; start one with `gust up` or `gust worker`")
		}
		if len(sb.GPU) > 0 {
			return nil, errdefs.Unavailable("no connected worker has gpu %s with isolation %q and %d MiB of memory", strings.Join(sb.GPU, " or "), sb.Isolation, sb.MemoryMiB)
		}
		return nil, errdefs.Unavailable("no connected worker offers isolation %q with %d MiB of memory; install %s on a worker", sb.Isolation, sb.MemoryMiB, runtimePackage(sb.Isolation))
	}
	best.running++
	best.reservedMiB += sb.MemoryMiB
	return best, nil
}

// hasGPUs reports whether a worker has one of the GPU choices ("H100:2") a sandbox needs.
func hasGPUs(reg workerproto.RegisterRequest, choices []string) bool {
	if len(choices) == 0 {
		return true
	}
	for _, c := range choices {
		gpus, err := function.ParseGPU(c)
		if err == nil && len(gpus) == 1 && workerHasGPU(reg, gpus[0]) {
			return true
		}
	}
	return false
}

func runtimePackage(iso string) string {
	if iso == sandbox.IsolationGVisor {
		return "runsc"
	}
	return "runc"
}

func (s *Server) assign(wc *workerConn, a workerproto.Assignment) {
	s.mu.Lock()
	wc.queue = append(wc.queue, a)
	close(wc.wake)
	wc.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) handleSandboxList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.SandboxFilter{AppID: q.Get("app_id"), Name: q.Get("name"), Tags: map[string]string{}}
	f.IncludeFinished = q.Get("include_finished") == "1" || q.Get("include_finished") == "true"
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			httpapi.WriteError(w, errdefs.Invalid("tag filter %q must look like key=value", t))
			return
		}
		f.Tags[k] = v
	}
	sbs, err := s.store.ListSandboxes(r.Context(), f)
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

func (s *Server) handleSandboxGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	wait, _ := strconv.ParseFloat(r.URL.Query().Get("wait"), 64)
	if wait < 0 {
		httpapi.WriteError(w, errdefs.Invalid("wait must not be negative"))
		return
	}
	deadline := time.After(time.Duration(min(wait, 300) * float64(time.Second)))
	for {
		sb, err := s.store.GetSandbox(r.Context(), id)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		if wait == 0 || sb.Status.Terminal() {
			httpapi.WriteJSON(w, http.StatusOK, sb.Public())
			return
		}
		// Watch, then look again: a change between the two reads must not be missed.
		changed := s.watch(id)
		if again, err := s.store.GetSandbox(r.Context(), id); err == nil && again.Status != sb.Status {
			continue
		}
		select {
		case <-changed:
		case <-deadline:
			wait = 0
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) handleSandboxTerminate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.store.GetSandbox(r.Context(), id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb, err := s.terminate(r.Context(), id, sandbox.Terminated, "")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sb.Public())
}

// terminate asks the sandbox's worker to stop it and waits until the worker reports it gone.
func (s *Server) terminate(ctx context.Context, id string, status sandbox.Status, reason string) (sandbox.Sandbox, error) {
	sb, err := s.store.GetSandbox(ctx, id)
	if err != nil || sb.Status.Terminal() {
		return sb, err
	}
	s.mu.Lock()
	wc := s.workers[sb.WorkerID]
	s.mu.Unlock()
	if wc == nil {
		// Its worker is gone, and the container with it.
		code := sandbox.ExitTerminated
		return s.setState(ctx, id, workerproto.StateReport{Status: status, ExitCode: &code, Error: strPtr(reason)})
	}
	changed := s.watch(id)
	s.assign(wc, workerproto.Assignment{Op: workerproto.OpTerminate, SandboxID: id, Reason: status})
	timeout := time.After(30 * time.Second)
	for {
		select {
		case <-changed:
		case <-timeout:
			return sb, errdefs.Unavailable("worker did not confirm that sandbox %s stopped", id)
		case <-ctx.Done():
			return sb, ctx.Err()
		}
		changed = s.watch(id)
		sb, err = s.store.GetSandbox(ctx, id)
		if err != nil || sb.Status.Terminal() {
			return sb, err
		}
	}
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// setState applies a state change if the lifecycle allows it.
func (s *Server) setState(ctx context.Context, id string, st workerproto.StateReport) (sandbox.Sandbox, error) {
	sb, err := s.store.GetSandbox(ctx, id)
	if err != nil {
		return sb, err
	}
	if !sb.Status.CanTransition(st.Status) {
		return sb, errdefs.Conflict("sandbox %s cannot go from %s to %s", id, sb.Status, st.Status)
	}
	now := time.Now().UTC()
	sb.Status = st.Status
	if st.Status == sandbox.Running {
		sb.StartedAt = &now
	}
	if st.Status.Terminal() {
		sb.FinishedAt = &now
		sb.ExitCode, sb.Error = st.ExitCode, st.Error
		s.mu.Lock()
		if wc := s.workers[sb.WorkerID]; wc != nil && wc.running > 0 {
			wc.running--
			wc.reservedMiB = max(0, wc.reservedMiB-sb.MemoryMiB)
		}
		s.mu.Unlock()
	}
	if err := s.store.UpdateSandbox(ctx, sb); err != nil {
		return sb, err
	}
	s.notify(id)
	if sb.FunctionID != "" && st.Status.Terminal() {
		s.fx.containerEnded(sb)
	}
	return sb, nil
}

func (s *Server) handleSandboxTags(w http.ResponseWriter, r *http.Request) {
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
	sb, err := s.store.GetSandbox(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Tags == nil {
		req.Tags = map[string]string{}
	}
	sb.Tags = req.Tags
	if err := s.store.UpdateSandbox(r.Context(), sb); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, sb.Public())
}

func (s *Server) handleSandboxSnapshot(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sb, err := s.store.GetSandbox(ctx, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if sb.Status != sandbox.Running {
		httpapi.WriteError(w, notRunning(sb))
		return
	}
	parent, err := s.store.GetImage(ctx, sb.ImageID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.mu.Lock()
	wc := s.workers[sb.WorkerID]
	s.mu.Unlock()
	if wc == nil {
		httpapi.WriteError(w, errdefs.Unavailable("the worker running sandbox %s is not connected", sb.ID))
		return
	}
	rec := &responseRecorder{header: http.Header{}}
	wc.proxy.ServeHTTP(rec, r)
	if rec.status >= 300 {
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		w.Write(rec.body)
		return
	}
	var snap workerproto.SnapshotResponse
	if err := json.Unmarshal(rec.body, &snap); err != nil {
		httpapi.WriteError(w, fmt.Errorf("bad snapshot answer from worker: %w", err))
		return
	}
	pid := parent.ID
	im := image.Image{
		ID: ids.New(ids.Image), Kind: image.KindSnapshot, ParentID: &pid, Hash: "snapshot:" + snap.Layer,
		Layers: append(append([]string(nil), parent.Layers...), snap.Layer), SizeBytes: parent.SizeBytes + snap.SizeBytes,
		CreatedAt: time.Now().UTC(), Env: parent.Env, Workdir: parent.Workdir, User: parent.User,
	}
	if err := s.store.PutImage(ctx, im); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, im)
}

// responseRecorder captures a small forwarded response.
type responseRecorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *responseRecorder) Header() http.Header { return r.header }
func (r *responseRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body = append(r.body, b...)
	return len(b), nil
}
func (r *responseRecorder) WriteHeader(code int) { r.status = code }

package fleet

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// place picks the worker for a container and counts it there, with the GPUs it takes.
func (f *Fleet) place(sb sandbox.Sandbox) (*workerConn, []gpu.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := make([]*workerConn, 0, len(f.workers))
	for _, wc := range f.workers {
		ws = append(ws, wc)
	}
	best, devs, err := pick(ws, sb)
	if err != nil {
		var busy *gpuBusy
		if errors.As(err, &busy) {
			busy.wake = f.gpuFreed
		}
		return nil, nil, err
	}
	best.running++
	best.reservedMiB += sb.MemoryMiB
	for _, d := range devs {
		if best.gpuHolder == nil {
			best.gpuHolder = map[string]string{}
		}
		best.gpuHolder[devKey(d)] = sb.ID
	}
	return best, devs, nil
}

// placeWaiting places a container, waiting while the GPUs it asks for exist but other
// containers hold them: up to wait, or until ctx ends. While it waits, WaitReason says why.
func (f *Fleet) placeWaiting(ctx context.Context, sb sandbox.Sandbox, wait time.Duration) (*workerConn, []gpu.Device, error) {
	deadline := time.Now().Add(wait)
	defer f.setWaiting(sb, "")
	for {
		wc, devs, err := f.place(sb)
		var busy *gpuBusy
		if !errors.As(err, &busy) {
			return wc, devs, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil, errdefs.Unavailable("gave up after %v %s; other containers hold those GPUs (ask for fewer, list more types, or raise the timeout)", wait.Round(time.Second), busy.reason)
		}
		f.setWaiting(sb, busy.reason)
		t := time.NewTimer(left)
		select {
		case <-busy.wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		}
		t.Stop()
	}
}

// gpuBusy is placement's answer when the GPUs asked for exist on a worker that could run the
// container, but other containers hold them: the container waits (placeWaiting) rather than
// fail. wake is closed when a GPU is given back or a worker registers.
type gpuBusy struct {
	reason string
	wake   <-chan struct{}
}

func (e *gpuBusy) Error() string { return e.reason }

// devKey names a device on its worker: its UUID, or its index for a worker that reports none.
func devKey(d gpu.Device) string {
	if d.UUID != "" {
		return d.UUID
	}
	return "index:" + strconv.Itoa(d.Index)
}

// freeGPUs are a worker's devices that no container holds.
func freeGPUs(wc *workerConn) []gpu.Device {
	var free []gpu.Device
	for _, d := range wc.reg.GPUs {
		if _, held := wc.gpuHolder[devKey(d)]; !held {
			free = append(free, d)
		}
	}
	return free
}

// pick chooses among workers: one with the container's runtime, its memory and GPUs, with
// the fewest containers. GPUs are whole devices, each held by one container at a time; a
// request's choices are tried in order of preference, each on every worker, before the next.
// When the GPUs exist but are all held, the error is a *gpuBusy saying what is waited for.
// Function containers, which the autoscaler starts rather than users one by one, also need
// memory the worker has not promised elsewhere; sandboxes may overcommit (most sit idle).
func pick(ws []*workerConn, sb sandbox.Sandbox) (*workerConn, []gpu.Device, error) {
	if len(ws) == 0 {
		return nil, nil, errdefs.Unavailable("no worker is connected; start one with `gust up` or `gust worker`")
	}
	// Stable order: ties go to the worker that registered first (IDs are random, so by name).
	sort.Slice(ws, func(i, j int) bool { return ws[i].reg.Name < ws[j].reg.Name })
	full := false // a worker would do, but has promised its memory to other function containers
	noProxy := false
	var fit []*workerConn
	for _, wc := range ws {
		if !offers(wc.reg, sb.Isolation) || sb.MemoryMiB > wc.reg.MemoryMiB || !sb.GPU.FitsIn(wc.reg.GPUs) {
			continue
		}
		if len(sb.GPU) > 0 && sb.Isolation == sandbox.IsolationGVisor && !wc.reg.GVisorGPU {
			noProxy = true
			continue
		}
		if sb.FunctionID != "" && wc.reservedMiB+sb.MemoryMiB > wc.reg.MemoryMiB {
			full = true
			continue
		}
		fit = append(fit, wc)
	}
	if len(sb.GPU) == 0 {
		var best *workerConn
		for _, wc := range fit {
			if best == nil || wc.running < best.running {
				best = wc
			}
		}
		if best != nil {
			return best, nil, nil
		}
	}
	for _, c := range sb.GPU {
		var best *workerConn
		var devs []gpu.Device
		for _, wc := range fit {
			if take := c.Take(freeGPUs(wc)); take != nil && (best == nil || wc.running < best.running) {
				best, devs = wc, take
			}
		}
		if best != nil {
			return best, devs, nil
		}
	}
	if len(fit) > 0 && len(sb.GPU) > 0 {
		return nil, nil, &gpuBusy{reason: waitReason(fit, sb.GPU)}
	}
	if full {
		return nil, nil, errdefs.Unavailable("every worker that could run this container has promised its memory to other containers (%d MiB needed); it starts when one ends", sb.MemoryMiB)
	}
	if noProxy {
		return nil, nil, errdefs.Unavailable("gpu=%s with isolation \"gvisor\" needs runsc's GPU proxy (nvproxy), which the runsc of no worker with that GPU supports; use isolation=\"runc\" for GPU containers, or install a runsc with --nvproxy on the GPU workers", sb.GPU)
	}
	if len(sb.GPU) > 0 {
		return nil, nil, errdefs.Unavailable("no connected worker has gpu %s with isolation %q and %d MiB of memory", sb.GPU, sb.Isolation, sb.MemoryMiB)
	}
	return nil, nil, errdefs.Unavailable("no connected worker offers isolation %q with %d MiB of memory; install %s on a worker", sb.Isolation, sb.MemoryMiB, runtimePackage(sb.Isolation))
}

// waitReason says what a container waits for: "waiting for 1× H100: 0 of 8 free", a clause
// per choice, counting the devices of the workers that could run it.
func waitReason(ws []*workerConn, req gpu.Request) string {
	parts := make([]string, len(req))
	for i, c := range req {
		free, total := 0, 0
		for _, wc := range ws {
			free += c.CountIn(freeGPUs(wc))
			total += c.CountIn(wc.reg.GPUs)
		}
		name := c.Type
		if name == "ANY" {
			name = "GPU of any type"
		}
		parts[i] = fmt.Sprintf("%d× %s: %d of %d free", max(c.Count, 1), name, free, total)
		if free >= c.Count {
			parts[i] += " (but not on one worker)"
		}
	}
	return "waiting for " + strings.Join(parts, "; or ")
}

func offers(reg workerproto.RegisterRequest, isolation string) bool {
	for _, iso := range reg.Isolation {
		if iso == isolation {
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

// unplace undoes place's count when the container never reached its worker.
func (f *Fleet) unplace(wc *workerConn, sb sandbox.Sandbox) {
	f.mu.Lock()
	wc.running = max(0, wc.running-1)
	wc.reservedMiB = max(0, wc.reservedMiB-sb.MemoryMiB)
	f.freeGPUsLocked(wc, sb.ID)
	f.mu.Unlock()
}

// release gives back what an ended container held on its worker: its count, its memory and
// its GPUs, which wakes the containers waiting for GPUs.
func (f *Fleet) release(sb sandbox.Sandbox) {
	f.mu.Lock()
	if wc := f.workers[sb.WorkerID]; wc != nil {
		if wc.running > 0 {
			wc.running--
			wc.reservedMiB = max(0, wc.reservedMiB-sb.MemoryMiB)
		}
		f.freeGPUsLocked(wc, sb.ID)
	}
	f.mu.Unlock()
}

// freeGPUsLocked gives back the GPUs container id holds on wc; f.mu is held.
func (f *Fleet) freeGPUsLocked(wc *workerConn, id string) {
	freed := false
	for k, holder := range wc.gpuHolder {
		if holder == id && id != "" {
			delete(wc.gpuHolder, k)
			freed = true
		}
	}
	if freed {
		f.wakeGPUWaitersLocked()
	}
}

// wakeGPUWaitersLocked wakes the containers waiting for GPUs to try again; f.mu is held.
func (f *Fleet) wakeGPUWaitersLocked() {
	close(f.gpuFreed)
	f.gpuFreed = make(chan struct{})
}

// setWaiting records (or, with "", clears) why a container waits to be placed.
func (f *Fleet) setWaiting(sb sandbox.Sandbox, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if reason == "" {
		delete(f.waiting, sb.ID)
		return
	}
	if w, ok := f.waiting[sb.ID]; ok {
		w.Reason = reason
		f.waiting[sb.ID] = w
		return
	}
	f.waiting[sb.ID] = Waiting{ContainerID: sb.ID, FunctionID: sb.FunctionID, WorkspaceID: sb.WorkspaceID, GPU: sb.GPU, Reason: reason, Since: time.Now().UTC()}
}

// Waiting is a container that waits for GPUs other containers hold.
type Waiting struct {
	ContainerID string      `json:"container_id"`
	FunctionID  string      `json:"function_id,omitempty"`
	WorkspaceID string      `json:"-"`
	GPU         gpu.Request `json:"gpu"`
	Reason      string      `json:"reason"`
	Since       time.Time   `json:"since"`
}

// WaitReason is why a function's containers wait to be placed, "" when none waits.
func (f *Fleet) WaitReason(functionID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first *Waiting
	for _, w := range f.waiting {
		if w.FunctionID == functionID && (first == nil || w.Since.Before(first.Since)) {
			w := w
			first = &w
		}
	}
	if first == nil {
		return ""
	}
	return first.Reason
}

// Capacity is the most one container may ask for: the largest registered worker's cores and
// memory (this machine's cores, and no memory bound, before any worker registered).
func (f *Fleet) Capacity() (cpu float64, memMiB int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cpu = float64(runtime.NumCPU())
	for _, wc := range f.workers {
		cpu = max(cpu, wc.reg.CPU)
		memMiB = max(memMiB, wc.reg.MemoryMiB)
	}
	if memMiB == 0 {
		memMiB = 1 << 20
	}
	return cpu, memMiB
}

// HasWorkers reports whether any worker is connected.
func (f *Fleet) HasWorkers() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.workers) > 0
}

// FreeMemoryMiB is the memory the workers have not promised to containers yet: it bounds how
// many function containers the autoscaler starts.
func (f *Fleet) FreeMemoryMiB() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	free := 0
	for _, wc := range f.workers {
		free += max(0, wc.reg.MemoryMiB-wc.reservedMiB)
	}
	return free
}

// CheckGPU refuses work that no connected worker could run, rather than queue it forever:
// a GPU no worker has (however many are free), or a GPU under gVisor where no worker's
// runsc has its GPU proxy.
func (f *Fleet) CheckGPU(req gpu.Request, isolation string) error {
	if len(req) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var have []string
	noProxy := false
	for _, wc := range f.workers {
		if req.FitsIn(wc.reg.GPUs) {
			if isolation != sandbox.IsolationGVisor || wc.reg.GVisorGPU {
				return nil
			}
			noProxy = true
		}
		for _, d := range wc.reg.GPUs {
			have = append(have, d.Model)
		}
	}
	if noProxy {
		return errdefs.Unavailable("gpu=%s with isolation=\"gvisor\" needs runsc's GPU proxy (nvproxy), which the runsc on the workers with that GPU lacks; use isolation=\"runc\" for GPU containers, or install a runsc that has --nvproxy", req)
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return errdefs.Unavailable("no connected worker has gpu=%s (workers' GPUs: %s); start a worker on a machine with that GPU, or drop gpu=", req, strings.Join(have, ", "))
}

// WorkerInfo is a worker as clients see it (GET /v1/workers): what it offers and what of it
// is in use. Its address and credentials stay with the fleet.
type WorkerInfo struct {
	ID         string    `json:"worker_id"`
	Name       string    `json:"name"`
	CPU        float64   `json:"cpu"`
	MemoryMiB  int       `json:"memory"`
	Isolation  []string  `json:"isolation"`
	GVisorGPU  bool      `json:"gvisor_gpu"`
	Containers int       `json:"containers"`
	GPUs       []GPUInfo `json:"gpus"`
}

// GPUInfo is one of a worker's GPUs and whether a container holds it (not which: that may be
// another workspace's).
type GPUInfo struct {
	gpu.Device
	InUse bool `json:"in_use"`
}

// Workers lists the connected workers, by name, and the containers of workspace ws that wait
// for GPUs.
func (f *Fleet) Workers(ws string) ([]WorkerInfo, []Waiting) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []WorkerInfo{}
	for _, wc := range f.workers {
		wi := WorkerInfo{ID: wc.id, Name: wc.reg.Name, CPU: wc.reg.CPU, MemoryMiB: wc.reg.MemoryMiB, Isolation: wc.reg.Isolation,
			GVisorGPU: wc.reg.GVisorGPU, Containers: wc.running, GPUs: []GPUInfo{}}
		for _, d := range wc.reg.GPUs {
			if d.Type == "" {
				d.Type = d.TypeOf()
			}
			_, held := wc.gpuHolder[devKey(d)]
			wi.GPUs = append(wi.GPUs, GPUInfo{Device: d, InUse: held})
		}
		out = append(out, wi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	waiting := []Waiting{}
	for _, w := range f.waiting {
		if w.WorkspaceID == ws {
			waiting = append(waiting, w)
		}
	}
	sort.Slice(waiting, func(i, j int) bool { return waiting[i].Since.Before(waiting[j].Since) })
	return out, waiting
}

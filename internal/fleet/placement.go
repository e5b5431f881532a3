package fleet

import (
	"runtime"
	"sort"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// place picks the worker for a container and counts it there.
func (f *Fleet) place(sb sandbox.Sandbox) (*workerConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := make([]*workerConn, 0, len(f.workers))
	for _, wc := range f.workers {
		ws = append(ws, wc)
	}
	best, err := pick(ws, sb)
	if err != nil {
		return nil, err
	}
	best.running++
	best.reservedMiB += sb.MemoryMiB
	return best, nil
}

// pick chooses among workers: one with the container's runtime, its memory and GPUs, with
// the fewest containers. Function containers, which the autoscaler starts rather than users
// one by one, also need memory the worker has not promised elsewhere; sandboxes may
// overcommit (most sit idle).
func pick(ws []*workerConn, sb sandbox.Sandbox) (*workerConn, error) {
	if len(ws) == 0 {
		return nil, errdefs.Unavailable("no worker is connected; start one with `gust up` or `gust worker`")
	}
	// Stable order: ties go to the worker that registered first (IDs are random, so by name).
	sort.Slice(ws, func(i, j int) bool { return ws[i].reg.Name < ws[j].reg.Name })
	var best *workerConn
	full := false // a worker would do, but has promised its memory to other function containers
	for _, wc := range ws {
		if !offers(wc.reg, sb.Isolation) || sb.MemoryMiB > wc.reg.MemoryMiB || !sb.GPU.FitsIn(wc.reg.GPUs) {
			continue
		}
		if sb.FunctionID != "" && wc.reservedMiB+sb.MemoryMiB > wc.reg.MemoryMiB {
			full = true
			continue
		}
		if best == nil || wc.running < best.running {
			best = wc
		}
	}
	if best != nil {
		return best, nil
	}
	if full {
		return nil, errdefs.Unavailable("every worker that could run this container has promised its memory to other containers (%d MiB needed); it starts when one ends", sb.MemoryMiB)
	}
	if len(sb.GPU) > 0 {
		return nil, errdefs.Unavailable("no connected worker has gpu %s with isolation %q and %d MiB of memory", sb.GPU, sb.Isolation, sb.MemoryMiB)
	}
	return nil, errdefs.Unavailable("no connected worker offers isolation %q with %d MiB of memory; install %s on a worker", sb.Isolation, sb.MemoryMiB, runtimePackage(sb.Isolation))
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
	f.mu.Unlock()
}

// release gives back what an ended container held on its worker.
func (f *Fleet) release(sb sandbox.Sandbox) {
	f.mu.Lock()
	if wc := f.workers[sb.WorkerID]; wc != nil && wc.running > 0 {
		wc.running--
		wc.reservedMiB = max(0, wc.reservedMiB-sb.MemoryMiB)
	}
	f.mu.Unlock()
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

// CheckGPU refuses work that no connected worker could run, rather than queue it forever.
func (f *Fleet) CheckGPU(req gpu.Request) error {
	if len(req) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var have []string
	for _, wc := range f.workers {
		if req.FitsIn(wc.reg.GPUs) {
			return nil
		}
		for _, d := range wc.reg.GPUs {
			have = append(have, d.Model)
		}
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return errdefs.Unavailable("no connected worker has gpu=%s (workers' GPUs: %s); start a worker on a machine with that GPU, or drop gpu=", req, strings.Join(have, ", "))
}

package worker

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/nvidia"
	"github.com/gust-run/gust/internal/sandbox"
)

// gpuSet is the worker's GPUs: what discovery found, the injector that puts them into
// containers, and the sampler of their use. nil on a machine without GPUs.
type gpuSet struct {
	inv     nvidia.Inventory
	inj     *nvidia.Injector
	sampler nvidia.Sampler
	// gvisor: the runsc in use has its GPU proxy, so GPU containers may run under gVisor.
	gvisor bool
}

// newGPUSet finds the machine's GPUs. A machine whose GPUs cannot be given to containers (no
// driver nodes, a CDI spec that does not load) registers none, and says why.
func newGPUSet(cfg nvidia.Config, gvisor bool, logf func(string, ...any)) *gpuSet {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inv, err := nvidia.Discover(ctx, cfg)
	if err != nil {
		logf("GPUs: discovery failed, registering none: %v", err)
		return nil
	}
	if len(inv.GPUs) == 0 {
		return nil
	}
	inj, err := nvidia.NewInjector(cfg, inv)
	if err != nil {
		logf("GPUs: %d found, but they cannot be given to containers, registering none: %v", len(inv.GPUs), err)
		return nil
	}
	for _, g := range inv.GPUs {
		logf("GPU %d: %s (%s, %d MiB, %s, driver %s, CUDA %s, MIG %q)", g.Index, g.Type, g.Model, g.MemoryMiB, g.UUID, g.Driver, g.CUDA, g.MIG)
	}
	note := ""
	if inv.Test {
		note = " (a declared test inventory: GUST_TEST_GPUS)"
	}
	proxy := "refused (runsc's GPU proxy, nvproxy, is off: " + container.NVProxyEnv + "=1 turns it on where the runsc has it)"
	if gvisor {
		proxy = "through runsc's GPU proxy (--nvproxy)"
	}
	logf("GPUs%s: injected through %s; under gVisor %s", note, inj.Source(), proxy)
	return &gpuSet{inv: inv, inj: inj, sampler: nvidia.NewSampler(cfg), gvisor: gvisor}
}

// devices is what the worker registers.
func (g *gpuSet) devices() []gpu.Device {
	if g == nil {
		return nil
	}
	return g.inv.Devices()
}

func (g *gpuSet) gvisorOK() bool { return g != nil && g.gvisor }

// gpuOptions fills the runtime options of a container given GPUs: the CDI edit of its spec
// and, under gVisor, the GPU proxy. Its processes' environment gets the GPUs too (b.spec.Env):
// execs do not inherit PID 1's.
func (w *Worker) gpuOptions(b *box) (edit func(*specs.Spec) error, nvproxy bool, err error) {
	spec := b.spec
	if len(spec.GPUs) == 0 {
		return nil, false, nil
	}
	if w.gpus == nil {
		return nil, false, fmt.Errorf("the container was given %d GPU(s), but this worker has none", len(spec.GPUs))
	}
	if spec.Isolation == sandbox.IsolationGVisor && !w.gpus.gvisor {
		return nil, false, fmt.Errorf("gpu= under isolation gvisor needs runsc's GPU proxy (nvproxy), which this worker's runsc lacks; use isolation runc")
	}
	uuids := make([]string, len(spec.GPUs))
	for i, d := range spec.GPUs {
		uuids[i] = d.UUID
	}
	edit, env, err := w.gpus.inj.Edit(uuids, spec.Isolation != sandbox.IsolationGVisor)
	if err != nil {
		return nil, false, err
	}
	b.mu.Lock()
	merged := maps.Clone(b.spec.Env)
	if merged == nil {
		merged = map[string]string{}
	}
	for k, v := range env {
		if _, own := merged[k]; !own || k == "CUDA_VISIBLE_DEVICES" || k == "NVIDIA_VISIBLE_DEVICES" {
			merged[k] = v
		}
	}
	b.spec.Env = merged
	b.mu.Unlock()
	return edit, spec.Isolation == sandbox.IsolationGVisor, nil
}

// gpuUsage accumulates a container's GPU samples.
type gpuUsage struct {
	mu      sync.Mutex
	peak    int
	utilSum int
	n       int
}

// gpuSampleEvery is how often a GPU container's devices are sampled.
const gpuSampleEvery = 5 * time.Second

// sampleGPUs samples a running container's GPUs until it ends; a no-op without nvidia-smi
// (a declared test inventory) or GPUs.
func (w *Worker) sampleGPUs(b *box) {
	if w.gpus == nil || !w.gpus.sampler.Enabled() || len(b.spec.GPUs) == 0 {
		return
	}
	uuids := make([]string, len(b.spec.GPUs))
	for i, d := range b.spec.GPUs {
		uuids[i] = d.UUID
	}
	t := time.NewTicker(gpuSampleEvery)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := w.gpus.sampler.Sample(ctx, uuids)
		cancel()
		if err != nil {
			w.log.Printf("container %s: sampling its GPUs: %v", b.spec.ID, err)
		}
		mem, util := 0, 0
		for _, u := range m {
			mem += u.MemoryUsedMiB
			util += u.UtilizationPct
		}
		if len(m) > 0 {
			b.gpu.mu.Lock()
			b.gpu.peak = max(b.gpu.peak, mem)
			b.gpu.utilSum += util / len(m)
			b.gpu.n++
			b.gpu.mu.Unlock()
		}
		select {
		case <-b.done:
			return
		case <-t.C:
		}
	}
}

// report is what the samples add to a container's end: nil without samples.
func (u *gpuUsage) report() *gpu.Usage {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == 0 {
		return nil
	}
	return &gpu.Usage{PeakMemoryMiB: u.peak, MeanUtilizationPct: float64(u.utilSum) / float64(u.n), Samples: u.n}
}

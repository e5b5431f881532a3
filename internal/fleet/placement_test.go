package fleet

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

var (
	h100      = gpu.Device{Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81559}
	a100x80   = gpu.Device{Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920}
	a100x40   = gpu.Device{Model: "NVIDIA A100-PCIE-40GB", MemoryMiB: 40960}
	runcOnly  = []string{sandbox.IsolationRunc}
	bothIsols = []string{sandbox.IsolationRunc, sandbox.IsolationGVisor}
)

// wk is a worker as placement sees it.
func wk(name string, mem int, isolation []string, gpus ...gpu.Device) *workerConn {
	return &workerConn{id: "wk-" + name, reg: workerproto.RegisterRequest{Name: name, CPU: 4, MemoryMiB: mem, Isolation: isolation, GPUs: gpus}}
}

// busy sets what a worker already runs.
func busy(wc *workerConn, running, reservedMiB int) *workerConn {
	wc.running, wc.reservedMiB = running, reservedMiB
	return wc
}

func mustGPU(t *testing.T, choices ...string) gpu.Request {
	t.Helper()
	r, err := gpu.Parse(choices...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPick(t *testing.T) {
	sb := func(iso string, mem int) sandbox.Sandbox {
		return sandbox.Sandbox{Isolation: iso, MemoryMiB: mem}
	}
	fnc := func(mem int, g gpu.Request) sandbox.Sandbox {
		return sandbox.Sandbox{Isolation: sandbox.IsolationRunc, MemoryMiB: mem, FunctionID: "fu-1", GPU: g}
	}
	tests := []struct {
		name    string
		workers []*workerConn
		sb      sandbox.Sandbox
		want    string // the worker's name, or "" when nothing fits
		wantErr string // part of the error when nothing fits
	}{
		{name: "no worker", sb: sb("runc", 512), wantErr: "no worker is connected; start one with `gust up` or `gust worker`"},
		{name: "the only worker", workers: []*workerConn{wk("a", 4096, runcOnly)}, sb: sb("runc", 512), want: "a"},
		{name: "gvisor where it is offered", sb: sb("gvisor", 512), want: "b",
			workers: []*workerConn{wk("a", 4096, runcOnly), busy(wk("b", 4096, bothIsols), 5, 0)}},
		{name: "gvisor offered nowhere", sb: sb("gvisor", 512), workers: []*workerConn{wk("a", 4096, runcOnly)},
			wantErr: `no connected worker offers isolation "gvisor" with 512 MiB of memory; install runsc on a worker`},
		{name: "runc offered nowhere", sb: sb("runc", 512), workers: []*workerConn{wk("a", 4096, []string{"gvisor"})},
			wantErr: `offers isolation "runc" with 512 MiB of memory; install runc on a worker`},
		{name: "memory: the worker that has it", sb: sb("runc", 4096), want: "b",
			workers: []*workerConn{wk("a", 2048, runcOnly), busy(wk("b", 8192, runcOnly), 3, 0)}},
		{name: "memory: more than any worker has", sb: sb("runc", 16384),
			workers: []*workerConn{wk("a", 2048, runcOnly), wk("b", 8192, runcOnly)}, wantErr: "with 16384 MiB of memory"},
		{name: "fewest running wins", sb: sb("runc", 512), want: "b",
			workers: []*workerConn{busy(wk("a", 4096, runcOnly), 3, 0), busy(wk("b", 4096, runcOnly), 1, 0), busy(wk("c", 4096, runcOnly), 2, 0)}},
		{name: "a tie goes to the first name", sb: sb("runc", 512), want: "a",
			workers: []*workerConn{busy(wk("c", 4096, runcOnly), 1, 0), busy(wk("a", 4096, runcOnly), 1, 0), busy(wk("b", 4096, runcOnly), 1, 0)}},
		{name: "a sandbox may overcommit memory", sb: sb("runc", 2048), want: "a",
			workers: []*workerConn{busy(wk("a", 4096, runcOnly), 0, 4096), busy(wk("b", 4096, runcOnly), 1, 0)}},
		{name: "a function container needs unpromised memory", sb: fnc(2048, nil), want: "b",
			workers: []*workerConn{busy(wk("a", 4096, runcOnly), 0, 3072), busy(wk("b", 4096, runcOnly), 5, 0)}},
		{name: "a function container fits exactly", sb: fnc(1024, nil), want: "a",
			workers: []*workerConn{busy(wk("a", 4096, runcOnly), 0, 3072)}},
		{name: "no unpromised memory for a function container", sb: fnc(2048, nil),
			workers: []*workerConn{busy(wk("a", 4096, runcOnly), 0, 3072)}, wantErr: "promised its memory to other containers (2048 MiB needed)"},
		{name: "gpu: the worker that has one", sb: fnc(512, mustGPU(t, "H100")), want: "b",
			workers: []*workerConn{wk("a", 4096, runcOnly), busy(wk("b", 4096, runcOnly, h100), 4, 0)}},
		{name: "gpu: H100:2 needs two", sb: fnc(512, mustGPU(t, "H100:2")), want: "b",
			workers: []*workerConn{wk("a", 4096, runcOnly, h100, a100x80), busy(wk("b", 4096, runcOnly, h100, h100), 4, 0)}},
		{name: "gpu: one H100 is not H100:2", sb: fnc(512, mustGPU(t, "H100:2")),
			workers: []*workerConn{wk("a", 4096, runcOnly, h100, a100x80)},
			wantErr: `no connected worker has gpu H100:2 with isolation "runc" and 512 MiB of memory`},
		{name: "gpu: a later choice of the list", sb: fnc(512, mustGPU(t, "H100", "A100-80GB")), want: "b",
			workers: []*workerConn{wk("a", 4096, runcOnly, a100x40), busy(wk("b", 4096, runcOnly, a100x80), 2, 0)}},
		{name: "gpu: no choice of the list", sb: fnc(512, mustGPU(t, "H100", "A100-80GB:2")),
			workers: []*workerConn{wk("a", 4096, runcOnly, a100x40, a100x80)}, wantErr: "no connected worker has gpu H100 or A100-80GB:2"},
		{name: "gpu: any", sb: fnc(512, mustGPU(t, "any")), want: "b",
			workers: []*workerConn{wk("a", 4096, runcOnly), busy(wk("b", 4096, runcOnly, a100x40), 3, 0)}},
		{name: "gpu: but not the runtime", sb: sandbox.Sandbox{Isolation: "gvisor", MemoryMiB: 512, GPU: mustGPU(t, "H100")},
			workers: []*workerConn{wk("a", 4096, runcOnly, h100)}, wantErr: `no connected worker has gpu H100 with isolation "gvisor"`},
		{name: "gpu: but not the memory", sb: fnc(8192, mustGPU(t, "H100")),
			workers: []*workerConn{wk("a", 4096, runcOnly, h100)}, wantErr: "no connected worker has gpu H100 with isolation \"runc\" and 8192 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := pick(tt.workers, tt.sb)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("picked %s, want an error", got.reg.Name)
				}
				if !errors.Is(err, errdefs.ErrUnavailable) {
					t.Errorf("error %q is not of kind unavailable", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.reg.Name != tt.want {
				t.Errorf("picked %s, want %s", got.reg.Name, tt.want)
			}
		})
	}
}

// TestPlaceCounts checks that place counts a container on its worker, so the next one goes
// elsewhere, and that unplace and release give it back.
func TestPlaceCounts(t *testing.T) {
	env := newTestEnv(t)
	a := env.register(t, "a")
	b := env.register(t, "b")
	sb := env.newSandbox()
	first, _, err := env.f.place(sb)
	if err != nil {
		t.Fatal(err)
	}
	if first.id != a {
		t.Fatalf("first container went to %s, want %s (a tie goes to the first name)", first.id, a)
	}
	second, _, err := env.f.place(sb)
	if err != nil {
		t.Fatal(err)
	}
	if second.id != b {
		t.Fatalf("second container went to %s, want %s (fewest running)", second.id, b)
	}
	if r, m := env.f.counts(a); r != 1 || m != 512 {
		t.Fatalf("worker a counts %d containers and %d MiB, want 1 and 512", r, m)
	}
	env.f.unplace(first, sb)
	if r, m := env.f.counts(a); r != 0 || m != 0 {
		t.Fatalf("after unplace worker a counts %d containers and %d MiB, want 0 and 0", r, m)
	}
	sb.WorkerID = b
	env.f.release(sb)
	env.f.release(sb) // never below zero
	if r, m := env.f.counts(b); r != 0 || m != 0 {
		t.Fatalf("after release worker b counts %d containers and %d MiB, want 0 and 0", r, m)
	}
}

func TestCapacity(t *testing.T) {
	env := newTestEnv(t)
	cpu, mem := env.f.Capacity()
	if cpu != float64(runtime.NumCPU()) || mem != 1<<20 {
		t.Fatalf("capacity without workers is %v cpu and %d MiB, want this machine's %d cores and no memory bound", cpu, mem, runtime.NumCPU())
	}
	if env.f.HasWorkers() {
		t.Fatal("HasWorkers without workers")
	}
	big := float64(runtime.NumCPU() + 8)
	for _, reg := range []workerproto.RegisterRequest{
		{Name: "small", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:1", CPU: 1, MemoryMiB: 2048, Isolation: runcOnly},
		{Name: "big", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:2", CPU: big, MemoryMiB: 8192, Isolation: runcOnly},
		{Name: "mid", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:3", CPU: 2, MemoryMiB: 4096, Isolation: runcOnly},
	} {
		if _, err := env.f.Register(reg); err != nil {
			t.Fatal(err)
		}
	}
	cpu, mem = env.f.Capacity()
	if cpu != big || mem != 8192 {
		t.Fatalf("capacity is %v cpu and %d MiB, want the largest worker's %v and 8192", cpu, mem, big)
	}
	if !env.f.HasWorkers() {
		t.Fatal("HasWorkers is false with three workers")
	}
}

func TestFreeMemoryMiB(t *testing.T) {
	env := newTestEnv(t)
	if got := env.f.FreeMemoryMiB(); got != 0 {
		t.Fatalf("free memory without workers is %d", got)
	}
	a := env.register(t, "a") // 4096 MiB each
	env.register(t, "b")
	if got := env.f.FreeMemoryMiB(); got != 8192 {
		t.Fatalf("free memory is %d MiB, want 8192", got)
	}
	fn := env.newSandbox()
	fn.FunctionID, fn.MemoryMiB = "fu-1", 1024
	if _, _, err := env.f.place(fn); err != nil {
		t.Fatal(err)
	}
	if got := env.f.FreeMemoryMiB(); got != 7168 {
		t.Fatalf("free memory is %d MiB after placing 1024, want 7168", got)
	}
	// An overcommitted worker (sandboxes may) counts as none free, not as less than none.
	env.f.mu.Lock()
	env.f.workers[a].reservedMiB = 6000
	env.f.mu.Unlock()
	if got := env.f.FreeMemoryMiB(); got != 4096 {
		t.Fatalf("free memory is %d MiB with worker a overcommitted, want only worker b's", got)
	}
}

func TestCheckGPU(t *testing.T) {
	tests := []struct {
		name    string
		workers []gpu.Device // on one worker; nil: a worker without GPUs
		noWkr   bool
		req     []string
		wantErr string
	}{
		{name: "no gpu asked, no worker", noWkr: true},
		{name: "no gpu asked", workers: nil},
		{name: "no worker", noWkr: true, req: []string{"H100"}, wantErr: "no connected worker has gpu=H100 (workers' GPUs: none)"},
		{name: "workers without GPUs", req: []string{"T4"}, wantErr: "(workers' GPUs: none)"},
		{name: "has it", workers: []gpu.Device{h100}, req: []string{"H100"}},
		{name: "has two", workers: []gpu.Device{h100, h100}, req: []string{"H100:2"}},
		{name: "has one of two", workers: []gpu.Device{h100}, req: []string{"H100:2"},
			wantErr: "no connected worker has gpu=H100:2 (workers' GPUs: NVIDIA H100 80GB HBM3); start a worker on a machine with that GPU, or drop gpu="},
		{name: "a later choice", workers: []gpu.Device{a100x80}, req: []string{"H100", "A100-80GB"}},
		{name: "40GB is not 80GB", workers: []gpu.Device{a100x40}, req: []string{"A100-80GB"}, wantErr: "NVIDIA A100-PCIE-40GB"},
		{name: "any", workers: []gpu.Device{a100x40}, req: []string{"any"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t)
			if !tt.noWkr {
				if _, err := env.f.Register(workerproto.RegisterRequest{Name: "g", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:1", CPU: 4,
					MemoryMiB: 4096, Isolation: runcOnly, GPUs: tt.workers}); err != nil {
					t.Fatal(err)
				}
			}
			err := env.f.CheckGPU(mustGPU(t, tt.req...), sandbox.IsolationRunc)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one of kind unavailable containing %q", err, tt.wantErr)
			}
		})
	}
}

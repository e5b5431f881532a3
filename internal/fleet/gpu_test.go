package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// dev is a GPU with a UUID, as discovery reports it.
func dev(typ string, i int) gpu.Device {
	return gpu.Device{Index: i, UUID: "GPU-" + typ + "-" + string(rune('a'+i)), Model: "NVIDIA " + typ, Type: typ, MemoryMiB: 81559}
}

// holding marks a worker's devices as held by containers.
func holding(wc *workerConn, held ...gpu.Device) *workerConn {
	wc.gpuHolder = map[string]string{}
	for _, d := range held {
		wc.gpuHolder[devKey(d)] = "sb-other"
	}
	return wc
}

func TestPickGPUs(t *testing.T) {
	h0, h1, a0 := dev("H100", 0), dev("H100", 1), dev("A100-80GB", 0)
	fnc := func(req ...string) sandbox.Sandbox {
		return sandbox.Sandbox{Isolation: sandbox.IsolationRunc, MemoryMiB: 512, FunctionID: "fu-1", GPU: mustGPU(t, req...)}
	}
	tests := []struct {
		name     string
		workers  []*workerConn
		sb       sandbox.Sandbox
		want     string   // worker
		wantDevs []string // UUIDs
		busy     string   // the wait reason, when all are held
		wantErr  string
	}{
		{name: "per device, not per type: the free H100", sb: fnc("H100"), want: "a", wantDevs: []string{h1.UUID},
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, h0, h1), h0)}},
		{name: "two of two", sb: fnc("H100:2"), want: "a", wantDevs: []string{h0.UUID, h1.UUID},
			workers: []*workerConn{wk("a", 4096, runcOnly, h0, h1)}},
		{name: "two asked, one free: wait", sb: fnc("H100:2"), busy: "waiting for 2× H100: 1 of 2 free",
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, h0, h1), h1)}},
		{name: "all held: wait with the count", sb: fnc("H100"), busy: "waiting for 1× H100: 0 of 2 free",
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, h0, h1), h0, h1)}},
		{name: "preference: the first choice where it is free", sb: fnc("H100", "A100-80GB"), want: "b", wantDevs: []string{h0.UUID},
			workers: []*workerConn{wk("a", 4096, runcOnly, a0), busy(wk("b", 4096, runcOnly, h0), 5, 0)}},
		{name: "preference: the second choice when the first is held", sb: fnc("H100", "A100-80GB"), want: "a", wantDevs: []string{a0.UUID},
			workers: []*workerConn{wk("a", 4096, runcOnly, a0), holding(wk("b", 4096, runcOnly, h0), h0)}},
		{name: "preference: both held", sb: fnc("H100", "A100-80GB"), busy: "waiting for 1× H100: 0 of 1 free; or 1× A100-80GB: 0 of 1 free",
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, a0), a0), holding(wk("b", 4096, runcOnly, h0), h0)}},
		{name: "any takes what is free", sb: fnc("any"), want: "a", wantDevs: []string{a0.UUID},
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, h0, a0), h0)}},
		{name: "free but spread over two workers", sb: fnc("H100:2"), busy: "waiting for 2× H100: 2 of 4 free (but not on one worker)",
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, h0, h1), h0), holding(wk("b", 4096, runcOnly, h0, h1), h1)}},
		{name: "a type no worker has fails, not waits", sb: fnc("B200"), wantErr: "no connected worker has gpu B200",
			workers: []*workerConn{holding(wk("a", 4096, runcOnly, h0), h0)}},
		{name: "gvisor without nvproxy", sb: sandbox.Sandbox{Isolation: sandbox.IsolationGVisor, MemoryMiB: 512, GPU: mustGPU(t, "H100")},
			workers: []*workerConn{wk("a", 4096, bothIsols, h0)}, wantErr: "nvproxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, devs, err := pick(tt.workers, tt.sb)
			var b *gpuBusy
			switch {
			case tt.busy != "":
				if !errors.As(err, &b) || b.reason != tt.busy {
					t.Fatalf("error %v, want a wait: %q", err, tt.busy)
				}
				return
			case tt.wantErr != "":
				if err == nil || errors.As(err, &b) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want a failure containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var uuids []string
			for _, d := range devs {
				uuids = append(uuids, d.UUID)
			}
			if got.reg.Name != tt.want || strings.Join(uuids, ",") != strings.Join(tt.wantDevs, ",") {
				t.Fatalf("picked %s with %v, want %s with %v", got.reg.Name, uuids, tt.want, tt.wantDevs)
			}
		})
	}
	// gVisor with a runsc that has the GPU proxy is fine.
	wc := wk("a", 4096, bothIsols, h0)
	wc.reg.GVisorGPU = true
	if _, _, err := pick([]*workerConn{wc}, sandbox.Sandbox{Isolation: sandbox.IsolationGVisor, MemoryMiB: 512, GPU: mustGPU(t, "H100")}); err != nil {
		t.Fatal(err)
	}
}

// registerGPUs adds a worker with the given GPUs.
func (e *testEnv) registerGPUs(t *testing.T, name string, gvisorGPU bool, devs ...gpu.Device) string {
	t.Helper()
	resp, err := e.f.Register(workerproto.RegisterRequest{Name: name, APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:1", CPU: 4, MemoryMiB: 4096,
		Isolation: []string{sandbox.IsolationRunc, sandbox.IsolationGVisor}, GPUs: devs, GVisorGPU: gvisorGPU})
	if err != nil {
		t.Fatal(err)
	}
	return resp.WorkerID
}

// TestGPUsExclusiveAndReturned: a second container for the one H100 waits, visibly, until the
// first ends and gives it back; then it gets the same device.
func TestGPUsExclusiveAndReturned(t *testing.T) {
	env := newTestEnv(t)
	h := dev("H100", 0)
	wid := env.registerGPUs(t, "g", false, h)
	specs := make(chan workerproto.ContainerSpec, 4)
	w := &fakeWorker{create: func(spec workerproto.ContainerSpec) *workerproto.StateReport {
		specs <- spec
		return runningReport(spec)
	}}
	w.start(t, env.f, wid)
	ctx := context.Background()

	sb := env.newSandbox()
	sb.GPU = mustGPU(t, "H100")
	first, err := env.f.Create(ctx, sb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := <-specs
	if spec.GPUType != "H100" || spec.GPUCount != 1 || len(spec.GPUs) != 1 || spec.GPUs[0].UUID != h.UUID {
		t.Fatalf("the first container's spec has gpu %q×%d %v, want H100×1 %s", spec.GPUType, spec.GPUCount, spec.GPUs, h.UUID)
	}
	workers, _ := env.f.Workers("ws-default")
	if len(workers) != 1 || len(workers[0].GPUs) != 1 || !workers[0].GPUs[0].InUse {
		t.Fatalf("workers %+v, want the H100 in use", workers)
	}

	type result struct {
		sb  sandbox.Sandbox
		err error
	}
	second := make(chan result, 1)
	go func() {
		sb, err := env.f.Create(ctx, sb, nil, nil)
		second <- result{sb, err}
	}()
	var reason string
	waitFor(t, "the second container to wait, with its reason", func() bool {
		_, waiting := env.f.Workers("ws-default")
		if len(waiting) == 1 {
			reason = waiting[0].Reason
		}
		return reason != ""
	})
	if reason != "waiting for 1× H100: 0 of 1 free" {
		t.Fatalf("reason %q", reason)
	}
	if _, waiting := env.f.Workers("ws-other"); len(waiting) != 0 {
		t.Fatal("another workspace sees the waiting container")
	}
	select {
	case r := <-second:
		t.Fatalf("the second container was placed while the GPU was held: %+v %v", r.sb, r.err)
	case <-time.After(100 * time.Millisecond):
	}

	if _, err := env.f.Terminate(ctx, first.ID, sandbox.Terminated, "done"); err != nil {
		t.Fatal(err)
	}
	r := <-second
	if r.err != nil {
		t.Fatal(r.err)
	}
	if spec := <-specs; len(spec.GPUs) != 1 || spec.GPUs[0].UUID != h.UUID || spec.ID != r.sb.ID {
		t.Fatalf("the second container got %v, want the H100 given back", spec.GPUs)
	}
	if _, waiting := env.f.Workers("ws-default"); len(waiting) != 0 {
		t.Fatalf("still waiting: %v", waiting)
	}
}

func TestGPUWaitTimesOut(t *testing.T) {
	env := newTestEnv(t)
	wid := env.registerGPUs(t, "g", false, dev("H100", 0))
	(&fakeWorker{create: runningReport}).start(t, env.f, wid)
	ctx := context.Background()
	sb := env.newSandbox()
	sb.GPU = mustGPU(t, "H100")
	if _, err := env.f.Create(ctx, sb, nil, nil); err != nil {
		t.Fatal(err)
	}
	fn := env.newSandbox()
	fn.GPU, fn.FunctionID, fn.GPUWait = mustGPU(t, "H100"), "fu-1", wire.Duration(300*time.Millisecond)
	start := time.Now()
	_, err := env.f.Create(ctx, fn, &workerproto.FunctionRun{FunctionID: "fu-1"}, nil)
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "waiting for 1× H100: 0 of 1 free") {
		t.Fatalf("error %v, want a clear give-up", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %v, want about its GPUWait", d)
	}
	if env.f.WaitReason("fu-1") != "" {
		t.Fatal("a container that gave up is still shown waiting")
	}
	if r, _ := env.f.counts(wid); r != 1 {
		t.Fatalf("worker counts %d containers, want 1 (the give-up placed nothing)", r)
	}
}

func TestCheckGPUGVisor(t *testing.T) {
	env := newTestEnv(t)
	env.registerGPUs(t, "g", false, dev("H100", 0))
	h100 := mustGPU(t, "H100")
	if err := env.f.CheckGPU(h100, sandbox.IsolationRunc); err != nil {
		t.Fatal(err)
	}
	if err := env.f.CheckGPU(h100, sandbox.IsolationGVisor); err == nil || !strings.Contains(err.Error(), "nvproxy") {
		t.Fatalf("gpu under gvisor without nvproxy: %v", err)
	}
	env.registerGPUs(t, "g2", true, dev("H100", 0))
	if err := env.f.CheckGPU(h100, sandbox.IsolationGVisor); err != nil {
		t.Fatalf("a worker with nvproxy: %v", err)
	}
}

package main

import (
	"strings"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func TestPrintWorkers(t *testing.T) {
	now := time.Now()
	ws := []gust.Worker{
		{ID: "wk-1", Name: "gpu1", CPU: 64, MemoryMiB: 1 << 20, Isolation: []string{"runc"}, Containers: 1, GPUs: []gust.GPU{
			{Index: 0, UUID: "GPU-a", Model: "NVIDIA H100 80GB HBM3", Type: "H100", MemoryMiB: 81559, Driver: "570.86.15", CUDA: "12.8", MIG: "Disabled", InUse: true},
			{Index: 1, UUID: "GPU-b", Model: "NVIDIA H100 80GB HBM3", Type: "H100", MemoryMiB: 81559, Driver: "570.86.15", CUDA: "12.8", MIG: "Disabled"},
		}},
		{ID: "wk-2", Name: "cpu1", CPU: 8, MemoryMiB: 32768, Isolation: []string{"runc", "gvisor"}},
	}
	waiting := []gust.GPUWait{{ContainerID: "sb-1", Reason: "waiting for 2× H100: 1 of 2 free", Since: now.Add(-3 * time.Second)}}
	var b strings.Builder
	if err := printWorkers(&b, ws, waiting, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"2 (1 in use)", "gpu 0  H100", "GPU-a", "570.86.15", "in use", "free", "cpu1", "runc,gvisor",
		"container sb-1 waiting for 2× H100: 1 of 2 free (for 3s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

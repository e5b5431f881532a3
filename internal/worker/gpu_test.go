package worker

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/nvidia"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// A machine CDI spec for one GPU, fully specified so that no device node is needed.
const testCDISpec = `cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia0, type: c, major: 195, minor: 0}
containerEdits:
  deviceNodes:
  - {path: /dev/nvidiactl, type: c, major: 195, minor: 255}
`

func testGPUSet(t *testing.T) *gpuSet {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(testCDISpec), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := nvidia.TestInventory("L4")
	if err != nil {
		t.Fatal(err)
	}
	inj, err := nvidia.NewInjector(nvidia.Config{CDIDirs: []string{dir}, StateDir: t.TempDir()}, inv)
	if err != nil {
		t.Fatal(err)
	}
	return &gpuSet{inv: inv, inj: inj}
}

func TestGPUOptions(t *testing.T) {
	set := testGPUSet(t)
	dev := set.inv.GPUs[0].Device
	boxFor := func(iso string, gpus ...gpu.Device) *box {
		return &box{spec: workerproto.ContainerSpec{ID: "sb-1", Isolation: iso, GPUs: gpus,
			Env: map[string]string{"MINE": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}}}
	}

	w := &Worker{gpus: set}
	if edit, _, err := w.gpuOptions(boxFor(sandbox.IsolationRunc)); edit != nil || err != nil {
		t.Fatalf("a container without GPUs got an edit: %v", err)
	}

	b := boxFor(sandbox.IsolationRunc, dev)
	edit, nvproxy, err := w.gpuOptions(b)
	if err != nil || edit == nil || nvproxy {
		t.Fatalf("runc with a GPU: edit %v, nvproxy %v, err %v", edit != nil, nvproxy, err)
	}
	if b.spec.Env["CUDA_VISIBLE_DEVICES"] != dev.UUID || b.spec.Env["NVIDIA_VISIBLE_DEVICES"] != dev.UUID || b.spec.Env["MINE"] != "1" {
		t.Fatalf("env %v: the GPU's UUID must replace what the user set, and the rest stay", b.spec.Env)
	}
	s := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	if err := edit(s); err != nil {
		t.Fatal(err)
	}
	var binds []string
	for _, m := range s.Mounts {
		binds = append(binds, m.Destination)
	}
	sort.Strings(binds)
	if strings.Join(binds, " ") != "/dev/nvidia0 /dev/nvidiactl" || len(s.Linux.Devices) != 0 || len(s.Linux.Resources.Devices) != 2 {
		t.Fatalf("under runc the nodes are bound with their cgroup rules: mounts %v devices %v rules %v", binds, s.Linux.Devices, s.Linux.Resources.Devices)
	}

	if _, _, err := w.gpuOptions(boxFor(sandbox.IsolationGVisor, dev)); err == nil || !strings.Contains(err.Error(), "nvproxy") {
		t.Fatalf("gvisor without nvproxy: %v", err)
	}
	set.gvisor = true
	b = boxFor(sandbox.IsolationGVisor, dev)
	if edit, nvproxy, err := w.gpuOptions(b); err != nil || edit == nil || !nvproxy {
		t.Fatalf("gvisor with nvproxy: %v %v %v", edit != nil, nvproxy, err)
	}

	if _, _, err := (&Worker{}).gpuOptions(boxFor(sandbox.IsolationRunc, dev)); err == nil {
		t.Fatal("a worker without GPUs accepted a GPU container")
	}
	other := dev
	other.UUID = "GPU-elsewhere"
	if _, _, err := w.gpuOptions(boxFor(sandbox.IsolationRunc, other)); err == nil {
		t.Fatal("a GPU that is not this worker's was accepted")
	}
	if (*gpuSet)(nil).devices() != nil || (*gpuSet)(nil).gvisorOK() {
		t.Fatal("no GPU set reports GPUs")
	}
}

func TestGPUUsageReport(t *testing.T) {
	var u gpuUsage
	if u.report() != nil {
		t.Fatal("no samples made a report")
	}
	u.peak, u.utilSum, u.n = 2048, 150, 3
	if r := u.report(); r.PeakMemoryMiB != 2048 || r.MeanUtilizationPct != 50 || r.Samples != 3 {
		t.Fatalf("report %+v", r)
	}
}

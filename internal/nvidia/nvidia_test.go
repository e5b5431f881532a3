package nvidia

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseQuery(t *testing.T) {
	b, err := os.ReadFile("testdata/nvidia-smi-query.csv")
	if err != nil {
		t.Fatal(err)
	}
	gpus, err := ParseQuery(string(b))
	if err != nil {
		t.Fatal(err)
	}
	q, _ := os.ReadFile("testdata/nvidia-smi-q.txt")
	applyReport(gpus, string(q))
	type row struct {
		idx, minor int
		typ, mig   string
		mem        int
	}
	var got []row
	for _, g := range gpus {
		got = append(got, row{g.Index, g.Minor, g.Type, g.MIG, g.MemoryMiB})
		if g.Driver != "570.86.15" || g.CUDA != "12.8" || !strings.HasPrefix(g.UUID, "GPU-") {
			t.Errorf("gpu %d: driver %q cuda %q uuid %q", g.Index, g.Driver, g.CUDA, g.UUID)
		}
	}
	want := []row{{0, 2, "H100", "Disabled", 81559}, {1, 0, "H100", "Enabled", 81559}, {2, 1, "A100-40GB", "", 40960}, {3, 3, "T4", "", 15360}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := ParseQuery("zero, x, y, 1"); err == nil {
		t.Fatal("a line with a bad index was accepted")
	}
}

func TestTestInventory(t *testing.T) {
	inv, err := TestInventory("H100:2, a100-80gb")
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.GPUs) != 3 || inv.GPUs[1].Type != "H100" || inv.GPUs[2].Type != "A100-80GB" || inv.GPUs[2].Index != 2 || inv.GPUs[2].Minor != 2 {
		t.Fatalf("inventory %+v", inv.GPUs)
	}
	if inv.GPUs[0].UUID == inv.GPUs[1].UUID {
		t.Fatal("two declared devices share a UUID")
	}
	for _, bad := range []string{"H1000", "any", "A100", "H100:0"} {
		if _, err := TestInventory(bad); err == nil {
			t.Errorf("declared inventory %q was accepted", bad)
		}
	}
}

func TestParseSample(t *testing.T) {
	got := ParseSample("GPU-a, 1024, 37\nGPU-b, [N/A], 0\n")
	want := map[string]Usage{"GPU-a": {1024, 37}, "GPU-b": {0, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if m, err := (Sampler{}).Sample(t.Context(), []string{"GPU-a"}); m != nil || err != nil {
		t.Fatalf("a sampler without nvidia-smi sampled %v, %v", m, err)
	}
}

// fakeTree lays out a machine with two GPUs: device nodes made from harmless character
// devices (/dev/zero as nvidia0, /dev/full as nvidia1, /dev/null as nvidiactl, ...), driver
// libraries and nvidia-smi as plain files. It needs root (mknod).
func fakeTree(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making device nodes needs root")
	}
	root := t.TempDir()
	nodes := map[string]int{"nvidia0": 5, "nvidia1": 7, "nvidiactl": 3, "nvidia-uvm": 8, "nvidia-uvm-tools": 9}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	for n, minor := range nodes {
		must(unix.Mknod(filepath.Join(root, "dev", n), unix.S_IFCHR|0o666, int(unix.Mkdev(1, uint32(minor)))))
	}
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	must(os.MkdirAll(lib, 0o755))
	must(os.WriteFile(filepath.Join(lib, "libcuda.so.550.54"), []byte("cuda 550"), 0o644))
	must(os.Symlink("libcuda.so.550.54", filepath.Join(lib, "libcuda.so.1")))
	must(os.WriteFile(filepath.Join(lib, "libnvidia-ml.so.1"), []byte("nvml"), 0o644))
	must(os.WriteFile(filepath.Join(lib, "libc.so.6"), []byte("not the driver's"), 0o644))
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "usr/bin/nvidia-smi"), []byte("#!/bin/sh\n"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "proc/driver/nvidia"), 0o755))
	must(os.WriteFile(filepath.Join(root, "proc/driver/nvidia/version"), []byte("NVRM version: 550.54\n"), 0o644))
	return root
}

func baseSpec() *specs.Spec {
	return &specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin"}}, Linux: &specs.Linux{
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
	}}
}

func TestInjectGenerated(t *testing.T) {
	root := fakeTree(t)
	inv, err := TestInventory("H100:2")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Root: root, CDIDirs: []string{filepath.Join(root, "etc/cdi")}, StateDir: t.TempDir()}
	j, err := NewInjector(cfg, inv)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(j.Source(), "generated") {
		t.Fatalf("source %q, want the generated spec", j.Source())
	}
	uuid := inv.GPUs[1].UUID
	edit, env, err := j.Edit([]string{uuid}, false)
	if err != nil {
		t.Fatal(err)
	}
	s := baseSpec()
	if err := edit(s); err != nil {
		t.Fatal(err)
	}

	var devs []string
	for _, d := range s.Linux.Devices {
		devs = append(devs, d.Path)
	}
	slices.Sort(devs)
	if want := []string{"/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia1", "/dev/nvidiactl"}; !reflect.DeepEqual(devs, want) {
		t.Fatalf("devices %v, want %v (GPU 1 and the control nodes, not GPU 0)", devs, want)
	}
	for _, d := range s.Linux.Devices {
		if d.Path == "/dev/nvidia1" && (d.Type != "c" || d.Major != 1 || d.Minor != 7) {
			t.Fatalf("/dev/nvidia1 is %s %d:%d, want the host node's c 1:7", d.Type, d.Major, d.Minor)
		}
	}
	rules := s.Linux.Resources.Devices
	if rules[0].Allow {
		t.Fatal("the deny-all rule is no longer first")
	}
	allowed := map[int64]bool{}
	for _, r := range rules[1:] {
		if !r.Allow || r.Major == nil || *r.Major != 1 || r.Access != "rwm" {
			t.Fatalf("unexpected device rule %+v", r)
		}
		allowed[*r.Minor] = true
	}
	if !allowed[7] || !allowed[3] || !allowed[8] || !allowed[9] || allowed[5] {
		t.Fatalf("device cgroup allows minors %v: want 7 (GPU 1), 3, 8, 9 and never 5 (GPU 0)", allowed)
	}

	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for _, dst := range []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "/usr/bin/nvidia-smi"} {
		m, ok := mounts[dst]
		if !ok {
			t.Fatalf("no mount at %s; mounts %v", dst, s.Mounts)
		}
		if !slices.Contains(m.Options, "ro") || !strings.HasPrefix(m.Source, root) {
			t.Fatalf("mount %+v is not a read-only bind from the tree", m)
		}
	}
	if _, ok := mounts["/usr/lib/x86_64-linux-gnu/libc.so.6"]; ok {
		t.Fatal("a library that is not the driver's was bound")
	}
	for _, kv := range []string{"NVIDIA_VISIBLE_DEVICES=" + uuid, "CUDA_VISIBLE_DEVICES=" + uuid, "PATH=/bin"} {
		if !slices.Contains(s.Process.Env, kv) {
			t.Fatalf("env %v lacks %s", s.Process.Env, kv)
		}
	}
	if env["CUDA_VISIBLE_DEVICES"] != uuid {
		t.Fatalf("exec env %v", env)
	}

	// Bound rather than listed (runc in a user namespace): the nodes come from the tree, the
	// cgroup rules stay.
	edit, _, err = j.Edit([]string{uuid}, true)
	if err != nil {
		t.Fatal(err)
	}
	s = baseSpec()
	if err := edit(s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 0 {
		t.Fatalf("bound nodes are still listed: %v", s.Linux.Devices)
	}
	binds := map[string]string{}
	for _, m := range s.Mounts {
		binds[m.Destination] = m.Source
	}
	if binds["/dev/nvidia1"] != filepath.Join(root, "dev/nvidia1") || binds["/dev/nvidiactl"] != filepath.Join(root, "dev/nvidiactl") || binds["/dev/nvidia0"] != "" {
		t.Fatalf("device binds %v", binds)
	}
	if len(s.Linux.Resources.Devices) != 5 {
		t.Fatalf("device rules %v, want deny-all and four allows", s.Linux.Resources.Devices)
	}

	// The driver changes under the worker: new containers get the new libraries.
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	if err := os.Remove(filepath.Join(lib, "libcuda.so.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lib, "libcuda.so.560.1"), []byte("cuda 560"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libcuda.so.560.1", filepath.Join(lib, "libcuda.so.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/driver/nvidia/version"), []byte("NVRM version: 560.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	edit, _, err = j.Edit([]string{uuid}, false)
	if err != nil {
		t.Fatal(err)
	}
	s = baseSpec()
	if err := edit(s); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range s.Mounts {
		found = found || m.Destination == "/usr/lib/x86_64-linux-gnu/libcuda.so.560.1"
	}
	if !found {
		t.Fatal("after a driver change the new library is not bound")
	}
	written, err := os.ReadFile(filepath.Join(cfg.StateDir, "cdi", generatedName))
	if err != nil || !strings.Contains(string(written), "libcuda.so.560.1") {
		t.Fatalf("the generated spec on disk was not rewritten: %v", err)
	}

	if _, _, err := j.Edit([]string{"GPU-not-here"}, false); err == nil {
		t.Fatal("a GPU that is not the worker's was injected")
	}
}

func TestInjectMachineSpec(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/nvidia-ctk.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nvidia.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	inv, _ := TestInventory("H100:2")
	j, err := NewInjector(Config{Root: t.TempDir(), CDIDirs: []string{dir}, StateDir: t.TempDir()}, inv)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(j.Source(), "machine") {
		t.Fatalf("source %q, want the machine's spec", j.Source())
	}
	// GPU 0 by its UUID, GPU 1 by its index (the spec names it only so).
	for i, wantMinor := range []int64{0, 1} {
		edit, env, err := j.Edit([]string{inv.GPUs[i].UUID}, false)
		if err != nil {
			t.Fatal(err)
		}
		s := baseSpec()
		if err := edit(s); err != nil {
			t.Fatal(err)
		}
		var minors []int64
		for _, d := range s.Linux.Devices {
			if d.Major == 195 && d.Minor != 255 {
				minors = append(minors, d.Minor)
			}
		}
		if !reflect.DeepEqual(minors, []int64{wantMinor}) {
			t.Fatalf("gpu %d: GPU nodes with minors %v, want only %d", i, minors, wantMinor)
		}
		// The machine spec's own env is there, and ours wins over its void.
		if env["NVIDIA_VISIBLE_DEVICES"] != inv.GPUs[i].UUID || !slices.Contains(s.Process.Env, "NVIDIA_VISIBLE_DEVICES="+inv.GPUs[i].UUID) {
			t.Fatalf("env %v / %v", env, s.Process.Env)
		}
		if len(s.Mounts) != 1 || s.Mounts[0].Destination != "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.15" {
			t.Fatalf("mounts %v, want the spec's", s.Mounts)
		}
	}
}

func TestNoGPUs(t *testing.T) {
	j, err := NewInjector(Config{}, Inventory{})
	if j != nil || err != nil {
		t.Fatalf("an inventory without GPUs made an injector: %v %v", j, err)
	}
	if edit, env, err := j.Edit(nil, false); edit != nil || env != nil || err != nil {
		t.Fatal("no GPUs asked still edited the spec")
	}
	if _, _, err := j.Edit([]string{"GPU-x"}, false); err == nil {
		t.Fatal("a GPU on a worker without any was accepted")
	}
}

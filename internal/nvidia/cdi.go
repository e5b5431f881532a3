package nvidia

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// Kind is the CDI kind of NVIDIA GPUs, as `nvidia-ctk cdi generate` names it: devices are
// nvidia.com/gpu=0 (by index) and nvidia.com/gpu=GPU-… (by UUID).
const Kind = "nvidia.com/gpu"

// DefaultCDIDirs are where CDI specs live on a machine.
var DefaultCDIDirs = []string{"/etc/cdi", "/var/run/cdi"}

// generatedName is the file the worker writes its own spec to, under StateDir/cdi.
const generatedName = "gust-nvidia.json"

// controlNodes are the driver's device nodes every GPU container needs besides its GPUs'
// own; those missing on the machine are left out (nvidia-uvm-tools, nvidia-modeset are
// optional).
var controlNodes = []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}

// driverLibs are the driver's user-space libraries a CUDA program loads, as globs in the
// machine's library directories.
var driverLibs = []string{
	"libcuda.so*", "libnvidia-ml.so*", "libnvidia-ptxjitcompiler.so*", "libnvidia-nvvm.so*",
	"libnvidia-gpucomp.so*", "libcudadebugger.so*", "libnvidia-allocator.so*", "libnvidia-cfg.so*",
	"libnvidia-opencl.so*", "libnvidia-pkcs11*.so*",
}

// libDirs are where the machine's driver libraries may be.
var libDirs = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/lib64", "/usr/local/nvidia/lib64"}

// driverBins are the driver's tools, looked for in binDirs.
var driverBins = []string{"nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"}

var binDirs = []string{"/usr/bin", "/usr/local/bin", "/bin", "/usr/local/nvidia/bin"}

// containerLibDir is where the libraries appear inside: a directory in the default search
// path of Debian's (and Ubuntu's) loader, so that dlopen("libcuda.so.1") finds them without
// LD_LIBRARY_PATH or an ld.so.cache of their own.
func containerLibDir() string {
	if runtime.GOARCH == "arm64" {
		return "/usr/lib/aarch64-linux-gnu"
	}
	return "/usr/lib/x86_64-linux-gnu"
}

// Injector puts assigned GPUs into containers' OCI specs.
type Injector struct {
	cfg Config
	inv Inventory

	mu sync.Mutex
	// cache reads the CDI specs in use: the machine's, or the generated one.
	cache   *cdi.Cache
	machine bool   // the machine's spec is in use
	print   string // fingerprint of the driver files the generated spec was made from
}

// NewInjector prepares injection for an inventory; nil for a machine without GPUs.
func NewInjector(cfg Config, inv Inventory) (*Injector, error) {
	if len(inv.GPUs) == 0 {
		return nil, nil
	}
	if cfg.CDIDirs == nil {
		cfg.CDIDirs = DefaultCDIDirs
	}
	j := &Injector{cfg: cfg, inv: inv}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.refreshLocked(); err != nil {
		return nil, err
	}
	return j, nil
}

// Source says which CDI spec is in use, for the worker's log.
func (j *Injector) Source() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.machine {
		return "the machine's CDI spec (" + strings.Join(j.cfg.CDIDirs, ", ") + ")"
	}
	return "a CDI spec generated from the driver files found (" + filepath.Join(j.cfg.StateDir, "cdi", generatedName) + ")"
}

// Edit is what a container with the given GPUs (by UUID) needs: a change to its OCI spec
// (device nodes with their device cgroup rules, driver files, environment) and the
// environment its processes get. The spec is checked for driver changes each time, so that
// a driver upgraded under a running worker is what new containers get.
//
// With bindNodes the device nodes are bound from their host paths rather than listed in
// linux.devices (their cgroup rules stay): runc, in a user namespace where it cannot mknod,
// would bind each from the host path equal to its path inside, which is wrong for a CDI spec
// whose hostPath differs (and for a test's fake tree). gVisor's GPU proxy wants them listed.
func (j *Injector) Edit(uuids []string, bindNodes bool) (func(*specs.Spec) error, map[string]string, error) {
	if len(uuids) == 0 {
		return nil, nil, nil
	}
	if j == nil {
		return nil, nil, fmt.Errorf("this worker has no GPUs, but the container was given %s", strings.Join(uuids, ", "))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.refreshLocked(); err != nil {
		return nil, nil, err
	}
	var names []string
	for _, u := range uuids {
		g, ok := j.inv.byUUID(u)
		if !ok {
			return nil, nil, fmt.Errorf("GPU %s is not one of this worker's", u)
		}
		name := Kind + "=" + g.UUID
		if j.cache.GetDevice(name) == nil {
			name = Kind + "=" + strconv.Itoa(g.Index)
		}
		if j.cache.GetDevice(name) == nil {
			return nil, nil, fmt.Errorf("the CDI spec in use has no device for GPU %d (%s); regenerate it with `nvidia-ctk cdi generate`", g.Index, g.UUID)
		}
		names = append(names, name)
	}
	list := strings.Join(uuids, ",")
	env := map[string]string{"NVIDIA_VISIBLE_DEVICES": list, "CUDA_VISIBLE_DEVICES": list}
	cache := j.cache
	hostPaths := map[string]string{} // device node path inside → on the host
	for _, n := range names {
		d := cache.GetDevice(n)
		for _, e := range []*cdispec.ContainerEdits{&d.ContainerEdits, &d.GetSpec().ContainerEdits} {
			for _, dn := range e.DeviceNodes {
				hostPaths[dn.Path] = dn.Path
				if dn.HostPath != "" {
					hostPaths[dn.Path] = dn.HostPath
				}
			}
		}
	}
	edit := func(s *specs.Spec) error {
		if _, err := cache.InjectDevices(s, names...); err != nil {
			return fmt.Errorf("injecting GPUs %s: %w", list, err)
		}
		if bindNodes && s.Linux != nil {
			kept := s.Linux.Devices[:0]
			for _, d := range s.Linux.Devices {
				host, ours := hostPaths[d.Path]
				if !ours {
					kept = append(kept, d)
					continue
				}
				s.Mounts = append(s.Mounts, specs.Mount{Destination: d.Path, Type: "bind", Source: host, Options: []string{"bind", "nosuid", "noexec"}})
			}
			s.Linux.Devices = kept
		}
		if s.Process != nil {
			s.Process.Env = setEnv(s.Process.Env, env)
		}
		return nil
	}
	// The spec's own environment edits (e.g. NVIDIA_VISIBLE_DEVICES=void from nvidia-ctk)
	// reach PID 1 only; execs get the same through env, under ours.
	probe := &specs.Spec{Process: &specs.Process{}}
	if err := edit(probe); err != nil {
		return nil, nil, err
	}
	out := map[string]string{}
	for _, kv := range probe.Process.Env {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return edit, out, nil
}

func setEnv(env []string, set map[string]string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+set[k])
	}
	return out
}

// refreshLocked picks the spec to use: the machine's when it has the kind, else the
// generated one, rewritten when the driver files changed.
func (j *Injector) refreshLocked() error {
	machine, err := cdi.NewCache(cdi.WithSpecDirs(j.cfg.CDIDirs...), cdi.WithAutoRefresh(false))
	if err == nil {
		for _, d := range machine.ListDevices() {
			if strings.HasPrefix(d, Kind+"=") {
				j.cache, j.machine = machine, true
				return nil
			}
		}
	}
	raw, print, err := j.generate()
	if err != nil {
		return err
	}
	dir := filepath.Join(j.cfg.StateDir, "cdi")
	if j.cache == nil || j.machine || print != j.print {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("CDI spec directory: %w", err)
		}
		b, err := json.MarshalIndent(raw, "", "  ")
		if err != nil {
			return err
		}
		tmp := filepath.Join(dir, "."+generatedName+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("writing the generated CDI spec: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, generatedName)); err != nil {
			return fmt.Errorf("writing the generated CDI spec: %w", err)
		}
		c, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
		if err != nil {
			return fmt.Errorf("reading the generated CDI spec: %w", err)
		}
		if errs := c.GetErrors(); len(errs) > 0 {
			return fmt.Errorf("the generated CDI spec is not valid: %v", errs)
		}
		j.cache, j.machine, j.print = c, false, print
	}
	return nil
}

// generate makes a CDI spec from what is on the machine: each GPU's node, the control nodes,
// and the driver's libraries and tools bound read-only. print fingerprints the driver files
// (the driver's version and the files' names, sizes and times), which change with the driver.
func (j *Injector) generate() (*cdispec.Spec, string, error) {
	h := sha256.New()
	version, _ := os.ReadFile(j.cfg.path("/proc/driver/nvidia/version"))
	h.Write(version)
	spec := &cdispec.Spec{Version: "0.6.0", Kind: Kind}
	for _, g := range j.inv.GPUs {
		node := fmt.Sprintf("/dev/nvidia%d", g.Minor)
		if err := statDevice(j.cfg.path(node)); err != nil {
			return nil, "", fmt.Errorf("GPU %d (%s): %w", g.Index, g.UUID, err)
		}
		edits := cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Path: node, HostPath: j.cfg.path(node)}}}
		spec.Devices = append(spec.Devices,
			cdispec.Device{Name: g.UUID, ContainerEdits: edits},
			cdispec.Device{Name: strconv.Itoa(g.Index), ContainerEdits: edits})
	}
	for _, n := range controlNodes {
		if statDevice(j.cfg.path(n)) != nil {
			if n == "/dev/nvidiactl" {
				return nil, "", fmt.Errorf("%s: %w", n, errNoDriver)
			}
			continue
		}
		spec.ContainerEdits.DeviceNodes = append(spec.ContainerEdits.DeviceNodes, &cdispec.DeviceNode{Path: n, HostPath: j.cfg.path(n)})
	}
	seen := map[string]bool{}
	bind := func(host, inside string) {
		if seen[inside] {
			return
		}
		fi, err := os.Stat(host) // follows links: the file is what is bound
		if err != nil || !fi.Mode().IsRegular() {
			return
		}
		seen[inside] = true
		fmt.Fprintf(h, "%s %d %d\n", host, fi.Size(), fi.ModTime().UnixNano())
		spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, &cdispec.Mount{
			HostPath: host, ContainerPath: inside, Type: "bind", Options: []string{"ro", "nosuid", "nodev", "bind"},
		})
	}
	for _, dir := range libDirs {
		for _, pat := range driverLibs {
			matches, _ := filepath.Glob(filepath.Join(j.cfg.path(dir), pat))
			sort.Strings(matches)
			for _, m := range matches {
				bind(m, filepath.Join(containerLibDir(), filepath.Base(m)))
			}
		}
	}
	for _, dir := range binDirs {
		for _, b := range driverBins {
			bind(filepath.Join(j.cfg.path(dir), b), filepath.Join("/usr/bin", b))
		}
	}
	return spec, hex.EncodeToString(h.Sum(nil)), nil
}

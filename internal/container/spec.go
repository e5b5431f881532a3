package container

import (
	"path/filepath"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// initPath is where the gust binary appears inside every container; it runs as PID 1 with the
// argument "container-init".
const initPath = "/.gust/gust"

// defaultCaps is Docker's default set less NET_RAW (no raw sockets) and MKNOD (no device
// nodes): enough for package managers and servers, nothing that reaches the kernel's admin
// surface (no SYS_ADMIN, SYS_MODULE, SYS_PTRACE, NET_ADMIN).
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
	"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths follow the runtimes' usual defaults: kernel state that a
// container could read to learn about the host, or write to change it.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}

var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// gvisorNProc bounds the processes of one user inside a gVisor sandbox (see forGVisor).
const gvisorNProc = 256

// buildSpec returns the OCI runtime spec for a container.
func buildSpec(c *Config, opts CreateOptions, rootfs string) (*specs.Spec, error) {
	s := baseSpec(c, opts, rootfs)
	if opts.Isolation == IsolationGVisor {
		forGVisor(s, opts)
	}
	// The worker's edits (GPU devices through CDI) come before the user namespace: CDI would
	// otherwise ask for idmapped binds of the driver's files, which this runc cannot make and
	// which read-only root-owned files do not need. runc binds device nodes into a user
	// namespace itself.
	if opts.EditSpec != nil {
		if err := opts.EditSpec(s); err != nil {
			return nil, err
		}
	}
	if userNamespaced(opts) {
		// Root inside is hostIDBase outside: an escape lands as an unprivileged user that owns
		// nothing on the host. The root's layers are idmapped to match (mountIDMappedOverlay).
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = idMappings()
		s.Linux.GIDMappings = idMappings()
		if opts.NetNSPath != "" {
			// The kernel lets a user namespace mount sysfs only for a network namespace it
			// owns, and the worker's namespaces are the host's: /sys is the host's, bound
			// read-only (with its submounts: inside a user namespace they are locked to it, and
			// a bind without them is refused; runc mounts the cgroups over it as usual). Its
			// files belong to host root, which is nobody inside.
			for i, m := range s.Mounts {
				if m.Destination == "/sys" {
					s.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "ro", "nosuid", "noexec", "nodev"}}
				}
			}
			// The host's interfaces are not the container's business (its own are in netlink).
			s.Linux.MaskedPaths = append(append(append([]string(nil), s.Linux.MaskedPaths...), "/sys/class/net", "/sys/devices/virtual/net"), hostNICDirs()...)
		}
	}
	for _, m := range opts.Mounts {
		// Read-only binds the worker adds: a function's code and the Python SDK its runner uses.
		opts := []string{"rbind", "ro", "nosuid", "nodev"}
		if m.Options != nil {
			opts = m.Options
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: opts})
	}
	return s, nil
}

// resources are a container's cgroup limits.
func resources(c *Config, opts CreateOptions) *specs.LinuxResources {
	memBytes := int64(opts.MemoryMiB) << 20
	period := uint64(100000)
	// CPU is a request (a share of the machine under contention); CPULimit, when set, is a
	// hard quota. Sandboxes set both to their cpu=; function containers only the request, and
	// burst when the machine is idle, as Modal's do.
	quota := int64(-1)
	if opts.CPULimit > 0 {
		quota = int64(opts.CPULimit * float64(period))
	}
	shares := uint64(max(2, opts.CPU*1024))
	pids := int64(c.PidsLimit)
	return &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: &memBytes, Swap: &memBytes},
		CPU:     &specs.LinuxCPU{Period: &period, Quota: &quota, Shares: &shares},
		Pids:    &specs.LinuxPids{Limit: &pids},
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
}

// baseSpec is the spec every container starts from: gust-init as PID 1, the default
// capabilities and mounts, its own namespaces, masked /proc paths and the seccomp profile.
func baseSpec(c *Config, opts CreateOptions, rootfs string) *specs.Spec {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=xterm"}
	// One hostname for all: a container may be started ahead of the sandbox it will serve.
	hostname := "sandbox"
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args:            []string{initPath, "container-init"},
			Env:             env,
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  defaultCaps,
				Effective: defaultCaps,
				Permitted: defaultCaps,
			},
		},
		Root:     &specs.Root{Path: rootfs},
		Hostname: hostname,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: initPath, Type: "bind", Source: c.InitBinary, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: c.cgroupsPath(opts.ID),
			Resources:   resources(c, opts),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.CgroupNamespace},
				{Type: specs.NetworkNamespace, Path: opts.NetNSPath},
			},
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
			Seccomp:       seccompProfile(),
		},
	}
	return s
}

// forGVisor adapts a spec to runsc.
func forGVisor(s *specs.Spec, opts CreateOptions) {
	// Every guest process costs the sentry host stub processes: at the host pids limit the
	// sentry itself fails to clone and the whole sandbox dies. A per-user process limit
	// inside (effective: the container has no CAP_SYS_RESOURCE) makes a fork bomb's forks
	// fail with EAGAIN first, and the pids limit stays the backstop (it must stay above
	// about 30 + 2.5 × this).
	s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NPROC", Hard: gvisorNProc, Soft: gvisorNProc}}
	// gVisor implements its own cgroup namespace and /sys; these mounts only confuse it.
	// Given the worker's namespace, runsc runs its netstack there (--network=sandbox, see
	// runtimeArgs): the veth's address and routes become the sandbox's, and the worker's
	// nftables rules on the host side apply as to any container. Without one it makes an empty
	// namespace and the sandbox has loopback only (--network=none).
	s.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace, Path: opts.NetNSPath},
	}
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if m.Destination != "/sys/fs/cgroup" && m.Destination != "/dev/mqueue" {
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	// Debian's runsc ignores errnoRet and answers EPERM, and glibc falls back from clone3 to
	// clone only on ENOSYS: with the clone3 rule, no thread could start (Python's threading,
	// any cgo program). So clone3 is let through to gVisor's kernel, which answers ENOSYS
	// (Debian's) or implements it (a current runsc); either way the namespaces it could make
	// are the sandbox's own, so the rule that guards the host under runc has nothing to guard.
	for i, r := range s.Linux.Seccomp.Syscalls {
		if len(r.Names) == 1 && r.Names[0] == "clone3" {
			s.Linux.Seccomp.Syscalls[i] = specs.LinuxSyscall{Names: r.Names, Action: specs.ActAllow}
		}
	}
}

// hostNICDirs are the sysfs directories that list the machine's physical network interfaces
// (…/virtio2/net, …/0000:00:1f.6/net: the parents of /sys/class/net's links outside
// /sys/devices/virtual), masked in containers that see the host's /sys. Read once: NICs are
// not hot-plugged under a running worker, as a rule.
var hostNICDirs = sync.OnceValue(func() []string {
	links, _ := filepath.Glob("/sys/class/net/*")
	seen := map[string]bool{}
	var out []string
	for _, l := range links {
		dev, err := filepath.EvalSymlinks(l)
		if err != nil {
			continue
		}
		dir := filepath.Dir(dev)
		if strings.HasPrefix(dir, "/sys/devices/virtual/") || filepath.Base(dir) != "net" || seen[dir] {
			continue
		}
		seen[dir] = true
		out = append(out, dir)
	}
	return out
})

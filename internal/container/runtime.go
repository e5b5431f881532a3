// Package container runs containers for the worker: it lays out an OCI bundle (an overlayfs root
// over read-only image layers with a size-bounded writable layer), starts it under runc (in a
// user namespace, over idmapped layers) or runsc (gVisor) with gust-init as PID 1 and a seccomp
// allowlist, and speaks initproto to that init over its stdio pipes. It
// owns every host resource a container uses and gives each back on failure and on removal:
// mounts, the runtime's state and cgroups, the bundle directory.
//
// Imported by the worker, and by `gust bench` for its bare-runtime baselines.
package container

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/reaper"
)

// Isolation names.
const (
	IsolationRunc   = "runc"
	IsolationGVisor = "gvisor"
)

// Config says where the runtime keeps its state and which binaries it runs.
type Config struct {
	StateDir string // bundles and runtime state live below it
	// RootsDir holds the mount points of runc containers' roots, which their root user, an
	// unprivileged host id, must reach: it and every directory above it must be searchable
	// by others (a data directory is rightly not). Default /run/gust/roots/<hash of StateDir>.
	RootsDir   string
	InitBinary string // the gust binary, bind-mounted as /.gust/gust
	RuncPath   string
	RunscPath  string
	PidsLimit  int
	// CgroupParent groups all containers' cgroups (e.g. "gust"), so they are easy to find.
	CgroupParent string
}

func (c *Config) cgroupsPath(id string) string { return "/" + c.CgroupParent + "/" + id }

func (c *Config) bundleDir(id string) string { return filepath.Join(c.StateDir, "bundles", id) }

func (c *Config) runtimeRoot(isolation string) string {
	return filepath.Join(c.StateDir, "state", isolation)
}

// Runtime creates containers.
type Runtime struct {
	cfg Config
	// The user namespaces whose mappings idmap runc containers' mounts (see idmap.go).
	shift, unshift *userNS
	// runscCurrent: RunscPath is a current runsc, not Debian's 2022 one (see runsc.go).
	runscCurrent bool

	// gvisorLive counts gVisor containers started and not yet removed: when it falls to zero,
	// runsc's shared null network namespace is unmounted, so that nothing stays mounted
	// while no gVisor container runs.
	gvisorMu   sync.Mutex
	gvisorLive int
	// nvproxy caches GVisorGPU's answer.
	nvproxyOnce sync.Once
	nvproxy     bool
}

// New checks the configuration and returns a Runtime.
func New(cfg Config) (*Runtime, error) {
	if cfg.PidsLimit == 0 {
		cfg.PidsLimit = 1024
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "gust"
	}
	// A runtime not found stays "": Available then says how to install it.
	if cfg.RuncPath == "" {
		cfg.RuncPath, _ = exec.LookPath("runc")
	}
	if cfg.RunscPath == "" {
		cfg.RunscPath, _ = FindRunsc()
	}
	if cfg.InitBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("runtime: find the gust binary: %w", err)
		}
		cfg.InitBinary = exe
	}
	for _, d := range []string{filepath.Join(cfg.StateDir, "bundles"), cfg.runtimeRoot(IsolationRunc), cfg.runtimeRoot(IsolationGVisor)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	if cfg.RootsDir == "" {
		// One directory per state directory: CleanupLeftovers may then remove whatever it finds
		// there without touching the roots of another gust on this machine.
		sum := sha256.Sum256([]byte(cfg.StateDir))
		cfg.RootsDir = filepath.Join("/run/gust/roots", hex.EncodeToString(sum[:6]))
	}
	if err := os.MkdirAll(cfg.RootsDir, 0o711); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if err := openToSearch(cfg.RootsDir); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if err := reaper.Enable(); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	return &Runtime{cfg: cfg, shift: &userNS{m: shiftMap}, unshift: &userNS{m: unshiftMap}, runscCurrent: runscCurrent(cfg.RunscPath)}, nil
}

// Runsc describes the runsc this runtime runs (path and version), for logs.
func (r *Runtime) Runsc() string { return DescribeRunsc(r.cfg.RunscPath) }

// Available reports whether an isolation's runtime binary is installed.
func (r *Runtime) Available(isolation string) error {
	p := r.cfg.RuncPath
	pkg := "runc"
	if isolation == IsolationGVisor {
		p, pkg = r.cfg.RunscPath, "runsc"
	}
	if p == "" {
		return fmt.Errorf("%s is not installed on this worker: run `gust install`", pkg)
	}
	return nil
}

// Mount is a host directory shown read-only inside a container, or with Options instead (a
// volume's mount: writable, and a slave of the host's mounts below Source).
type Mount struct {
	Source, Destination string
	Options             []string
}

// CreateOptions describe one container.
type CreateOptions struct {
	ID        string
	Isolation string
	Layers    []string // read-only image layer directories, lowest first
	CPU       float64  // requested cores: the container's share under contention
	CPULimit  float64  // hard cap in cores; 0 is none
	MemoryMiB int
	DiskMiB   int
	// NetNSPath joins this network namespace (the worker's, with a veth to its bridge); empty
	// makes a new one with only lo. runc joins it in or out of a user namespace (a namespace
	// owned by the host's user namespace is fine to join); runsc runs its netstack in it
	// (--network=sandbox, see runtimeArgs).
	NetNSPath string
	// ExactIDs keeps the container out of a user namespace, so that the files it writes keep
	// their exact ids and file capabilities: image builds, whose upper layer becomes a layer.
	ExactIDs bool
	Mounts   []Mount // extra read-only bind mounts
	// EditSpec, if set, changes the OCI spec before the user namespace is added: the worker
	// puts a GPU container's devices and driver files in through CDI.
	EditSpec func(*specs.Spec) error
	// NVProxy runs a gVisor container with runsc's GPU proxy (GVisorGPU must be true).
	NVProxy bool
	// ReadyTimeout bounds the wait for gust-init's greeting.
	ReadyTimeout time.Duration
	// OnExit is called once, from the container's reader goroutine, when init has gone.
	OnExit func()
	// Logf receives init's and the runtime's diagnostics.
	Logf func(format string, args ...any)
}

// Create lays out the bundle and starts the container with gust-init as PID 1. On any failure
// nothing it made is left behind.
func (r *Runtime) Create(ctx context.Context, opts CreateOptions) (_ *Container, retErr error) {
	if err := r.Available(opts.Isolation); err != nil {
		return nil, err
	}
	if len(opts.Layers) == 0 {
		return nil, errors.New("runtime: an image needs at least one layer")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.Isolation == IsolationGVisor && !r.runscCurrent {
		// Debian's runsc cannot run its netstack in a namespace it is given: its sandboxes
		// keep a loopback of their own (see runtimeArgs).
		opts.NetNSPath = ""
	}
	var undo cleanupStack
	defer func() {
		if retErr == nil {
			return
		}
		if err := undo.run(); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("runtime: undoing the failed start of %s: %w", opts.ID, err))
		}
	}()

	bundle := r.cfg.bundleDir(opts.ID)
	if err := r.layOutBundle(bundle, opts, &undo); err != nil {
		return nil, err
	}

	// Stdio pipes: the container's PID 1 gets the child ends (runc and runsc pass them through
	// when detached); we keep the parent ends and speak initproto over them.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("runtime: stdio pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closePipeEnds(inR, inW)
		return nil, fmt.Errorf("runtime: stdio pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closePipeEnds(inR, inW, outR, outW)
		return nil, fmt.Errorf("runtime: stdio pipe: %w", err)
	}

	args := r.runtimeArgs(opts)
	// The pid file names init's host pid, whose namespaces the worker enters (NetNS).
	args = append(args, "run", "--detach", "--pid-file", filepath.Join(bundle, pidFile), "--bundle", bundle, opts.ID)
	cmd := exec.Command(r.binary(opts.Isolation), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	stderrLog, stderrDone := followStderr(errR, opts.ID, opts.Logf)
	r.gvisorStarting(opts.Isolation)
	runErr := reaper.Run(cmd)
	closePipeEnds(inR, outW, errW) // the container holds its own copies now
	// The runtimes remove their cgroups on delete, except when a sandbox died on its own while
	// booting; removeCgroups makes sure, as Remove does.
	undo.push(func() error {
		return errors.Join(r.delete(opts.ID, opts.Isolation), r.removeCgroups(opts.ID), r.gvisorGone(opts.Isolation))
	})
	if runErr != nil {
		closePipeEnds(inW, outR, errR)
		select {
		case <-stderrDone:
		case <-time.After(time.Second):
		}
		return nil, fmt.Errorf("runtime: %s run: %v: %s", r.binary(opts.Isolation), runErr, strings.TrimSpace(stderrLog.String()))
	}

	c := newContainer(opts, inW, outR, errR, r, bundle)
	undo.push(func() error { c.closePipes(); return nil })
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	select {
	case <-c.ready:
	case <-c.done:
		return nil, fmt.Errorf("runtime: container %s exited before gust-init was ready: %s", opts.ID, strings.TrimSpace(stderrLog.String()))
	case <-time.After(timeout):
		return nil, fmt.Errorf("runtime: gust-init in %s not ready after %s", opts.ID, timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c, nil
}

// layOutBundle makes a container's bundle: an overlayfs root over its image layers, whose
// writable layer is a tmpfs of its disk size, and the OCI spec. It pushes its undoing (the
// bundle's release) on undo.
func (r *Runtime) layOutBundle(bundle string, opts CreateOptions, undo *cleanupStack) error {
	rw := filepath.Join(bundle, "rw")
	if err := os.MkdirAll(rw, 0o700); err != nil {
		return fmt.Errorf("runtime: make bundle: %w", err)
	}
	undo.push(func() error { return releaseBundle(bundle) })
	rootfs, err := r.makeRootDir(bundle, opts)
	if err != nil {
		return err
	}
	// The writable layer is a tmpfs so that a sandbox's disk use is bounded by its size.
	if err := unix.Mount("tmpfs", rw, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%dm,mode=0755", opts.DiskMiB)); err != nil {
		return fmt.Errorf("runtime: mount writable layer: %w", err)
	}
	upper, work := filepath.Join(rw, "upper"), filepath.Join(rw, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
	}
	lower := make([]string, len(opts.Layers))
	for i, l := range opts.Layers { // overlayfs lists the top layer first
		lower[len(lower)-1-i] = l
	}
	if err := r.mountRoot(rootfs, upper, work, lower, opts); err != nil {
		return err
	}

	spec, err := buildSpec(&r.cfg, opts, rootfs)
	if err != nil {
		return fmt.Errorf("runtime: spec of %s: %w", opts.ID, err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("runtime: encode spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("runtime: write spec: %w", err)
	}
	return nil
}

// mountRoot mounts a container's overlay root: over idmapped image layers when the container
// has a user namespace, else over the layers as they are.
func (r *Runtime) mountRoot(rootfs, upper, work string, lower []string, opts CreateOptions) error {
	if userNamespaced(opts) {
		ns, err := r.shift.get(r.cfg.InitBinary)
		if err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
		return mountIDMappedOverlay(rootfs, upper, work, lower, ns)
	}
	ovl := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, ovl); err != nil {
		return fmt.Errorf("runtime: mount overlay root: %w", err)
	}
	return nil
}

// followStderr passes what arrives on a container's stderr pipe to logf, line by line, and keeps
// the last 8 KiB: the runtime's own failure messages arrive there too, and errors quote them.
// done is closed when the pipe ends.
func followStderr(errR *os.File, id string, logf func(string, ...any)) (tail *tailBuffer, done <-chan struct{}) {
	tail = &tailBuffer{max: 8 << 10}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		buf := make([]byte, 4096)
		for {
			n, err := errR.Read(buf)
			if n > 0 {
				_, _ = tail.Write(buf[:n]) // a tailBuffer never fails
				for _, line := range strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n") {
					logf("container %s: %s", id, line)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return tail, closed
}

func (r *Runtime) binary(isolation string) string {
	if isolation == IsolationGVisor {
		return r.cfg.RunscPath
	}
	return r.cfg.RuncPath
}

func (r *Runtime) runtimeArgs(opts CreateOptions) []string {
	root := r.cfg.runtimeRoot(opts.Isolation)
	if opts.Isolation != IsolationGVisor {
		return []string{"--root", root}
	}
	// Raw sockets stay off (no --net-raw); the OCI seccomp profile is applied inside the
	// sandbox too. --host-uds=open lets a process inside connect to a host unix socket that is
	// bind-mounted in (a function's API socket), and nothing more: it cannot create one on the
	// host.
	args := []string{"--root", root, "--oci-seccomp", "--host-uds=open"}
	if opts.NVProxy {
		args = append(args, "--nvproxy")
	}
	if !r.runscCurrent {
		// Debian's runsc: ptrace, its only platform that works here (KVM hangs in nested VMs);
		// it refuses the namespaces we hand it for its "sandbox" network mode, so its
		// sandboxes keep their own loopback only.
		return append(args, "--platform=ptrace", "--network=none")
	}
	// systrap: runsc's default platform, faster than ptrace to start and to exec here (KVM
	// hangs in nested VMs). --overlay2=none: by default a current runsc keeps the root's
	// writes in its own overlay, in a file of its own, so they would never reach the
	// container's writable layer, which bounds its disk and is what a snapshot reads. Given
	// a namespace, the sandbox's netstack takes over its interfaces (the worker's veth and
	// addresses); without one, it has only its loopback.
	args = append(args, "--platform=systrap", "--overlay2=none")
	if opts.NetNSPath != "" {
		return append(args, "--network=sandbox")
	}
	return append(args, "--network=none")
}

// NVProxyEnv turns on GPUs under gVisor (runsc --nvproxy) where the runsc in use has it. Off
// by default: the GPU proxy has not been checked on a real GPU with gust yet.
const NVProxyEnv = "GUST_GVISOR_NVPROXY"

// GVisorGPU reports whether GPU containers may run under gVisor: the operator turned it on
// (NVProxyEnv=1) and the runsc in use has its GPU proxy (nvproxy, in gVisor since 2023;
// Debian 12's runsc has not).
func (r *Runtime) GVisorGPU() bool {
	r.nvproxyOnce.Do(func() {
		if r.cfg.RunscPath == "" || os.Getenv(NVProxyEnv) != "1" {
			return
		}
		out, err := reaper.CombinedOutput(exec.Command(r.cfg.RunscPath, "flags"))
		r.nvproxy = err == nil && strings.Contains(string(out), "nvproxy")
	})
	return r.nvproxy
}

// delete kills and removes a container's runtime state and cgroups; a container that does not
// exist is not an error.
func (r *Runtime) delete(id, isolation string) error {
	args := append(r.runtimeArgs(CreateOptions{Isolation: isolation}), "delete", "--force", id)
	out, err := reaper.CombinedOutput(exec.Command(r.binary(isolation), args...))
	if err == nil || notExist(out) {
		return nil
	}
	// A second try covers a container still being torn down.
	time.Sleep(50 * time.Millisecond)
	out, err = reaper.CombinedOutput(exec.Command(r.binary(isolation), args...))
	if err == nil || notExist(out) {
		return nil
	}
	return fmt.Errorf("%s delete %s: %v: %s", r.binary(isolation), id, err, strings.TrimSpace(string(out)))
}

// notExist says whether a runtime's output reports that the container does not exist.
func notExist(out []byte) bool {
	return bytes.Contains(out, []byte("does not exist")) || bytes.Contains(out, []byte("not exist"))
}

// Remove stops a container and releases everything it held. Safe to call more than once: the
// call that did the work returns what it could not release (left for CleanupLeftovers at the
// next start); later calls return nil, so a failure is reported once.
func (r *Runtime) Remove(c *Container) error {
	var err error
	c.removeOnce.Do(func() {
		delErr := r.delete(c.ID, c.isolation)
		c.closePipes()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
		if e := errors.Join(delErr, releaseBundle(c.bundle), r.removeCgroups(c.ID), r.gvisorGone(c.isolation)); e != nil {
			err = fmt.Errorf("runtime: removing container %s: %w", c.ID, e)
		}
		reaper.Reap()
	})
	return err
}

// CleanupLeftovers removes containers and bundles a previous gust process left behind (after a
// crash or kill -9), so that a restart starts clean. It logs what it removes and what it cannot.
func (r *Runtime) CleanupLeftovers(logf func(string, ...any)) {
	entries, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "bundles"))
	if err != nil {
		logf("cleanup of leftover containers: %v", err)
		return
	}
	for _, e := range entries {
		id := e.Name()
		var errs []error
		for _, iso := range []string{IsolationRunc, IsolationGVisor} {
			if r.Available(iso) == nil {
				errs = append(errs, r.delete(id, iso))
			}
		}
		errs = append(errs, r.removeCgroups(id), releaseBundle(r.cfg.bundleDir(id)))
		if err := errors.Join(errs...); err != nil {
			logf("cleanup of leftover container %s: %v", id, err)
		} else {
			logf("removed leftover container %s", id)
		}
	}
	// A root mounted for a container whose bundle is gone (killed between the two): nothing
	// else names it any more.
	roots, _ := os.ReadDir(r.cfg.RootsDir)
	for _, e := range roots {
		if _, err := os.Lstat(r.cfg.bundleDir(e.Name())); err == nil {
			continue
		}
		dir := filepath.Join(r.cfg.RootsDir, e.Name())
		err := unmount(dir)
		if err == nil {
			err = os.Remove(dir) // a bare mount point now: never RemoveAll what may still be a root
		}
		if err != nil {
			logf("cleanup of leftover root %s: %v", dir, err)
		} else {
			logf("removed leftover root %s", dir)
		}
	}
	if err := unmountNullNetNS(r.cfg.runtimeRoot(IsolationGVisor)); err != nil {
		logf("cleanup of runsc's shared namespace: %v", err)
	}
}

// Close removes this state directory's roots directory, empty once every container is removed
// (one still holding a root is left, for CleanupLeftovers at the next start).
func (r *Runtime) Close() error {
	if err := os.Remove(r.cfg.RootsDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("runtime: %w", err)
	}
	return nil
}

// gvisorStarting counts a gVisor container about to start.
func (r *Runtime) gvisorStarting(isolation string) {
	if isolation != IsolationGVisor {
		return
	}
	r.gvisorMu.Lock()
	r.gvisorLive++
	r.gvisorMu.Unlock()
}

// gvisorGone counts a gVisor container gone; after the last one it unmounts the namespace
// runsc pinned for its gofers (made again at the next start, at a cost of a few ms).
func (r *Runtime) gvisorGone(isolation string) error {
	if isolation != IsolationGVisor {
		return nil
	}
	r.gvisorMu.Lock()
	defer r.gvisorMu.Unlock()
	r.gvisorLive--
	if r.gvisorLive > 0 {
		return nil
	}
	return unmountNullNetNS(r.cfg.runtimeRoot(IsolationGVisor))
}

// releaseBundle unmounts a bundle's root, its view of the writable layer and the writable
// layer, and removes its directory.
func releaseBundle(bundle string) error {
	return errors.Join(
		releaseRootDir(bundle),
		unmount(filepath.Join(bundle, upperView)),
		unmount(filepath.Join(bundle, "rw")),
		removeAll(bundle))
}

func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// closePipeEnds closes our copies of pipe ends. Their errors are dropped on purpose: closing a
// pipe end loses nothing (what was written is in the kernel's buffer or was already refused by
// the write), and it fails only for a descriptor that is already closed.
func closePipeEnds(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// pidFile is where the runtime writes the host pid of the container's init, in its bundle.
const pidFile = "init.pid"

// InitPID is the host pid of the container's init (under gVisor: of its sandbox process).
func (c *Container) InitPID() (int, error) {
	c.pidOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join(c.bundle, pidFile))
		if err != nil {
			c.pidErr = fmt.Errorf("container %s: reading its init's pid: %w", c.ID, err)
			return
		}
		c.pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || c.pid <= 0 {
			c.pidErr = fmt.Errorf("container %s: its pid file holds %q, not a pid", c.ID, b)
		}
	})
	return c.pid, c.pidErr
}

// NetNS is the path of the container's network namespace, while it runs. Under gVisor that
// namespace holds the sandbox process, not the sandbox's own network stack.
func (c *Container) NetNS() (string, error) {
	select {
	case <-c.done:
		return "", ErrStopped
	default:
	}
	pid, err := c.InitPID()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/proc/%d/ns/net", pid), nil
}

// UpperDir returns a container's writable layer, for snapshots, with the ids its files have
// inside the container: for a container in a user namespace, an idmapped view of it (made on
// first use, released with the bundle), so that a snapshot is an ordinary layer.
func (c *Container) UpperDir() (string, error) {
	upper := filepath.Join(c.bundle, "rw", "upper")
	if !userNamespaced(c.opts) {
		return upper, nil
	}
	c.viewOnce.Do(func() {
		ns, err := c.rt.unshift.get(c.rt.cfg.InitBinary)
		if err == nil {
			err = mountView(filepath.Join(c.bundle, "rw"), filepath.Join(c.bundle, upperView), ns)
		}
		if err != nil {
			c.viewErr = fmt.Errorf("runtime: the writable layer of %s: %w", c.ID, err)
		}
	})
	return filepath.Join(c.bundle, upperView, "upper"), c.viewErr
}

// unmount detaches the mount at p; nothing mounted there (or no p) is not an error.
func unmount(p string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = unix.Unmount(p, unix.MNT_DETACH)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("unmount %s: %w", p, err)
}

// cleanupStack undoes the steps of a start in reverse order.
type cleanupStack []func() error

func (s *cleanupStack) push(f func() error) { *s = append(*s, f) }

// run undoes every step, even after one fails, and returns what could not be undone.
func (s *cleanupStack) run() error {
	var errs []error
	for i := len(*s) - 1; i >= 0; i-- {
		errs = append(errs, (*s)[i]())
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// removeCgroups removes the container's cgroup directories. The runtimes remove them on delete,
// but not always when the container died on its own (gVisor's sandbox killed at its pids limit),
// and an empty cgroup left behind is still a leak.
func (r *Runtime) removeCgroups(id string) error {
	cg := r.cfg.cgroupsPath(id)
	dirs, err := filepath.Glob("/sys/fs/cgroup/*" + cg)
	if err != nil {
		return fmt.Errorf("cgroups of %s: %w", id, err)
	}
	if _, err := os.Stat("/sys/fs/cgroup" + cg); err == nil {
		dirs = append(dirs, "/sys/fs/cgroup"+cg)
	}
	var errs []error
	for _, d := range dirs {
		errs = append(errs, removeCgroup(d))
	}
	return errors.Join(errs...)
}

// removeCgroup removes one cgroup directory, waiting a little for its last tasks to go.
func removeCgroup(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

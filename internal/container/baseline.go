package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/reaper"
)

// Baseline measures the bare runtime on the same root filesystem and limits that gust uses,
// without gust in the way, so that benchmarks can report gust's figures as ratios of it.
type Baseline struct {
	rt     *Runtime
	opts   CreateOptions
	bundle string
}

// NewBaseline lays out a bundle over layers whose process is argv.
func (r *Runtime) NewBaseline(isolation string, layers []string, argv []string) (*Baseline, error) {
	id := fmt.Sprintf("baseline-%s-%d", isolation, time.Now().UnixNano())
	opts := CreateOptions{ID: id, Isolation: isolation, Layers: layers, CPU: 1, MemoryMiB: 512, DiskMiB: 64}
	bundle := r.cfg.bundleDir(id)
	rootfs, err := r.layOutBaseline(bundle, opts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("baseline bundle: %w", err), releaseBundle(bundle))
	}
	spec, err := buildSpec(&r.cfg, opts, rootfs)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("baseline spec: %w", err), releaseBundle(bundle))
	}
	spec.Process.Args = argv
	b, err := json.Marshal(spec)
	if err == nil {
		err = os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("baseline spec: %w", err), releaseBundle(bundle))
	}
	return &Baseline{rt: r, opts: opts, bundle: bundle}, nil
}

// layOutBaseline mounts an overlay root over the layers in bundle as a container's would be
// (idmapped under runc), with a tmpfs writable layer.
func (r *Runtime) layOutBaseline(bundle string, opts CreateOptions) (string, error) {
	rw := filepath.Join(bundle, "rw")
	if err := os.MkdirAll(rw, 0o755); err != nil {
		return "", err
	}
	rootfs, err := r.makeRootDir(bundle, opts)
	if err != nil {
		return "", err
	}
	if err := unix.Mount("tmpfs", rw, "tmpfs", 0, "size=64m"); err != nil {
		return "", fmt.Errorf("mount writable layer: %w", err)
	}
	upper, work := filepath.Join(rw, "upper"), filepath.Join(rw, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
	}
	lower := make([]string, len(opts.Layers))
	for i, l := range opts.Layers {
		lower[len(lower)-1-i] = l
	}
	return rootfs, r.mountRoot(rootfs, upper, work, lower, opts)
}

// Run runs the bundle's process once in the foreground (`runc run`) and returns the time until
// its first output arrived.
func (b *Baseline) Run(i int) (time.Duration, error) {
	id := fmt.Sprintf("%s-%d", b.opts.ID, i)
	args := append(b.rt.runtimeArgs(b.opts), "run", "--bundle", b.bundle, id)
	cmd := exec.Command(b.rt.binary(b.opts.Isolation), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := reaper.Start(cmd); err != nil {
		return 0, err
	}
	buf := make([]byte, 64)
	_, rerr := out.Read(buf)
	d := time.Since(start)
	werr := reaper.Wait(cmd)
	derr := b.rt.delete(id, b.opts.Isolation)
	if rerr != nil || werr != nil {
		return 0, errors.Join(fmt.Errorf("%s run: %v %v: %s", b.opts.Isolation, rerr, werr, stderr.String()), derr)
	}
	if derr != nil {
		return 0, fmt.Errorf("baseline: %w", derr)
	}
	return d, nil
}

// StartDetached starts the bundle's process (a long sleep) for Exec to measure against.
func (b *Baseline) StartDetached() error {
	args := append(b.rt.runtimeArgs(b.opts), "run", "--detach", "--bundle", b.bundle, b.opts.ID)
	cmd := exec.Command(b.rt.binary(b.opts.Isolation), args...)
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer closePipeEnds(devnull) // the runtime has its own copy; nothing of ours is written
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	return reaper.Run(cmd)
}

// Exec runs argv in the detached container (`runc exec`) and returns the round trip.
func (b *Baseline) Exec(argv ...string) (time.Duration, error) {
	args := append(b.rt.runtimeArgs(b.opts), "exec", b.opts.ID)
	args = append(args, argv...)
	cmd := exec.Command(b.rt.binary(b.opts.Isolation), args...)
	start := time.Now()
	out, err := reaper.CombinedOutput(cmd)
	if err != nil {
		return 0, fmt.Errorf("%s exec: %v: %s", b.opts.Isolation, err, out)
	}
	return time.Since(start), nil
}

// Close removes the baseline's containers and bundle (and the namespace runsc pinned for its
// gofers), and says what it could not remove.
func (b *Baseline) Close() error {
	errs := []error{b.rt.delete(b.opts.ID, b.opts.Isolation), releaseBundle(b.bundle)}
	if b.opts.Isolation == IsolationGVisor {
		errs = append(errs, unmountNullNetNS(b.rt.cfg.runtimeRoot(IsolationGVisor)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	return nil
}

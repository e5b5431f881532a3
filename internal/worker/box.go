package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/network"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// box is one container on this worker: a sandbox or a function container. Its processes stay
// readable for a while after it ends, so that a client can collect output after wait().
type box struct {
	spec workerproto.ContainerSpec

	mu        sync.Mutex
	state     boxState  // boxLifecycle
	container Container // set once made (starting)
	// net is an image build container's network, set before it is made; closed once it is
	// gone (releaseNet). netEnv points its processes at net's proxy.
	net    BuildNet
	netEnv map[string]string
	// lease is a sandbox's or function container's network namespace on the worker's bridge
	// (Worker.openNet), released once the container is gone (releaseNet).
	lease  NetLease
	runner *runner // function containers only, set once started (starting)
	execs  map[string]Process
	// activeExecs and lastActivity hold off idle_timeout.
	activeExecs  int
	lastActivity time.Time
	// endStatus and endReason say why a terminate ended it (terminated or timeout); empty
	// when it ended by itself.
	endStatus sandbox.Status
	endReason string
	// done is closed when the box reaches boxExited; reported, once its end was reported;
	// ready, once it runs and its readiness probe (if any) has passed.
	done, reported, ready chan struct{}
	// conns are the open tunnel connections into the container (ports.go), closed at its end.
	conns map[net.Conn]struct{}
	// reportMu orders the box's reports: running (if it got there) before its end.
	reportMu sync.Mutex
	// gpu is what sampling saw of its GPUs (sampleGPUs).
	gpu gpuUsage
	// vols are its volume mounts (volumes.go), set before it is made; closed once it is gone.
	vols *boxVolumes
}

// keepFinished is how long a finished container's output stays readable on the worker.
const keepFinished = 10 * time.Minute

// startTimeout bounds making a container and starting its main process.
const startTimeout = 60 * time.Second

func (w *Worker) box(id string) *box {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.boxes[id]
}

// moveLocked moves b along boxLifecycle; b.mu is held. Reaching exited closes b.done.
func (b *box) moveLocked(to boxState) error {
	if err := boxLifecycle.Move(&b.state, to); err != nil {
		return fmt.Errorf("container %s: %w", b.spec.ID, err)
	}
	if to == boxExited {
		close(b.done)
	}
	return nil
}

// create starts a container and reports it running, or failed.
func (w *Worker) create(spec workerproto.ContainerSpec) {
	b := &box{spec: spec, state: boxStarting, execs: map[string]Process{}, lastActivity: time.Now(),
		done: make(chan struct{}), reported: make(chan struct{}), ready: make(chan struct{})}
	w.mu.Lock()
	if _, dup := w.boxes[spec.ID]; dup {
		w.mu.Unlock()
		w.log.Printf("container %s: a second create for it ignored", spec.ID)
		return
	}
	w.boxes[spec.ID] = b
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := w.makeContainer(ctx, b)
	if err != nil {
		w.failStart(b, nil, err)
		return
	}
	b.mu.Lock()
	if b.state != boxStarting {
		// Terminated (or failed) while the runtime made it: nobody will use it.
		b.mu.Unlock()
		w.remove(c, spec.ID)
		w.releaseNet(b)
		w.closeVolumes(b, false)
		return
	}
	b.container = c
	b.mu.Unlock()
	w.meter.start(spec, c)

	if err := w.startMain(ctx, b, c); err != nil {
		w.failStart(b, c, err)
		return
	}
	b.reportMu.Lock()
	defer b.reportMu.Unlock()
	b.mu.Lock()
	if b.state != boxStarting {
		// Terminated, or ended by itself, while it started: whoever moved it reports.
		b.mu.Unlock()
		return
	}
	err = b.moveLocked(boxRunning)
	b.mu.Unlock()
	if err != nil {
		w.log.Printf("%v", err)
		return
	}
	w.report(spec.ID, workerproto.StateReport{Status: sandbox.Running})
	w.startProbe(b, c)
	go w.enforceTimeouts(b)
	go w.sampleGPUs(b)
}

// makeContainer takes a warm container from the pool, or has the runtime make one.
func (w *Worker) makeContainer(ctx context.Context, b *box) (Container, error) {
	spec := b.spec
	var mounts []container.Mount
	if spec.Function != nil {
		var err error
		if mounts, err = w.functionMounts(spec.Function); err != nil {
			return nil, err
		}
	} else if c, l := w.pool.take(spec); c != nil {
		if l != nil {
			if err := l.SetPolicy(policyOf(spec.Network)); err != nil {
				w.remove(c, spec.ID)
				_ = l.Release() // the container that used it is gone; the error above is the one to report
				return nil, fmt.Errorf("the container's network: %w", err)
			}
			b.mu.Lock()
			b.lease = l
			b.mu.Unlock()
		}
		c.SetOnExit(func() { w.containerExited(b) })
		return c, nil
	}
	gpuEdit, nvproxy, err := w.gpuOptions(b)
	if err != nil {
		return nil, err
	}
	if len(spec.Volumes) > 0 {
		bv, vm, err := w.attachVolumes(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("mounting volumes: %w", err)
		}
		b.mu.Lock()
		b.vols = bv
		b.mu.Unlock()
		mounts = append(mounts, vm...)
		if bv.gvisor {
			if err := bv.mountAll(ctx); err != nil {
				return nil, fmt.Errorf("mounting volumes: %w", err)
			}
		}
	}
	opts := container.CreateOptions{
		ID: spec.ID, Isolation: spec.Isolation, Layers: spec.ImageLayers, CPU: spec.CPU, CPULimit: spec.CPULimit,
		MemoryMiB: spec.MemoryMiB, DiskMiB: w.cfg.DiskMiB,
		Mounts: mounts, OnExit: func() { w.containerExited(b) }, Logf: w.log.Printf,
		EditSpec: gpuEdit, NVProxy: nvproxy,
	}
	if spec.BuildEgress && w.net != nil {
		// On the bridge, as sandboxes are: the default policy, plus the operator's mirrors.
		if spec.Isolation != sandbox.IsolationRunc {
			return nil, fmt.Errorf("an image build container must run under runc, not %s", spec.Isolation)
		}
		if err := w.openNetWith(b, &opts, network.Policy{Except: w.buildMirrors}); err != nil {
			return nil, err
		}
		opts.ExactIDs = true
	} else if spec.BuildEgress {
		n, err := w.openBuildNet(b)
		if err != nil {
			return nil, err
		}
		opts.NetNSPath, opts.ExactIDs = n.NetNSPath(), true
	} else if err := w.openNet(b, &opts); err != nil {
		return nil, err
	}
	c, err := w.rt.Create(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("creating the container: %w", err)
	}
	if bv := b.vols; bv != nil && !bv.gvisor {
		if f, ok := c.(interface {
			Freeze(time.Duration) (func() error, error)
		}); ok {
			bv.freeze = f.Freeze
		}
		if err := bv.mountAll(ctx); err != nil {
			w.remove(c, spec.ID)
			return nil, fmt.Errorf("mounting volumes: %w", err)
		}
	}
	return c, nil
}

// openBuildNet gives an image build container its network: a namespace of its own whose only
// way out is the egress proxy. The server builds under runc only.
func (w *Worker) openBuildNet(b *box) (BuildNet, error) {
	if b.spec.Isolation != sandbox.IsolationRunc {
		return nil, fmt.Errorf("an image build container must run under runc, not %s", b.spec.Isolation)
	}
	if w.buildNet == nil {
		return nil, errors.New("this worker cannot run image builds: it has no egress proxy")
	}
	n, err := w.buildNet(b.spec.ID)
	if err != nil {
		return nil, fmt.Errorf("the build container's network: %w", err)
	}
	b.mu.Lock()
	b.net, b.netEnv = n, n.Env()
	b.mu.Unlock()
	return n, nil
}

// releaseNet closes a container's network (a build's, or its namespace on the bridge), if it
// has one, once the container is gone.
func (w *Worker) releaseNet(b *box) {
	b.mu.Lock()
	n, l := b.net, b.lease
	b.net, b.lease = nil, nil
	b.mu.Unlock()
	if n != nil {
		if err := n.Close(); err != nil {
			w.log.Printf("container %s: %v", b.spec.ID, err)
		}
	}
	if l != nil {
		if err := l.Release(); err != nil {
			w.log.Printf("container %s: %v", b.spec.ID, err)
		}
	}
}

// startMain creates the workdir and starts the container's main process: its command, or a
// function container's runner. A container without either waits for execs.
func (w *Worker) startMain(ctx context.Context, b *box, c Container) error {
	spec := b.spec
	if spec.Workdir != "" {
		resp, _, err := c.FileOp(ctx, initproto.FileRequest{Op: initproto.OpMkdir, Path: spec.Workdir, Parents: true}, nil)
		if err == nil && resp.Error != "" {
			err = errors.New(resp.Error)
		}
		if err != nil {
			return fmt.Errorf("cannot create workdir %s: %w", spec.Workdir, err)
		}
	}
	switch {
	case len(spec.Command) > 0:
		// Exec under b.mu: if the command ends at once, the container's end then finds it.
		b.mu.Lock()
		p, err := c.Exec(initproto.ExecRequest{Argv: spec.Command, Env: b.env(nil), Cwd: b.cwd(""), Main: true, User: spec.User}, 0)
		if err == nil {
			b.execs["main"] = p
		}
		b.mu.Unlock()
		if err != nil {
			return fmt.Errorf("starting the command: %w", err)
		}
	case spec.Function != nil:
		if err := w.startRunner(b, c, spec.Function); err != nil {
			return fmt.Errorf("starting the function runner: %w", err)
		}
	}
	return nil
}

// failStart ends a container that could not start, and reports it failed unless something
// else (a terminate, its own end) ended it first.
func (w *Worker) failStart(b *box, c Container, cause error) {
	id := b.spec.ID
	b.mu.Lock()
	owner := b.state == boxStarting
	if owner {
		if err := b.moveLocked(boxExited); err != nil {
			w.log.Printf("%v", err)
		}
	}
	b.mu.Unlock()
	if c != nil {
		w.meter.finish(id)
		w.remove(c, id)
	}
	w.releaseNet(b)
	w.closeVolumes(b, c != nil)
	if !owner {
		w.log.Printf("container %s ended while it started; its start also failed: %v", id, cause)
		return
	}
	w.log.Printf("container %s failed to start: %v", id, cause)
	w.forgetLater(id)
	msg := cause.Error()
	w.report(id, workerproto.StateReport{Status: sandbox.Failed, Error: &msg})
	close(b.reported)
}

// closeVolumes commits (when commit is set) and unmounts a container's volumes, if it has any.
func (w *Worker) closeVolumes(b *box, commit bool) {
	b.mu.Lock()
	bv := b.vols
	b.vols = nil
	b.mu.Unlock()
	bv.close(commit)
}

// remove has the runtime remove a container, logging what it could not do.
func (w *Worker) remove(c Container, id string) {
	if err := w.rt.Remove(c); err != nil {
		w.log.Printf("removing container %s: %v", id, err)
	}
}

// env builds a process environment: defaults (with a build container's proxy), then the
// container's, then the exec's. netEnv is set before the container can run anything.
func (b *box) env(extra map[string]string) []string {
	m := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm",
		"GUST_SANDBOX_ID": b.spec.ID, "MODAL_SANDBOX_ID": b.spec.ID,
	}
	for k, v := range b.netEnv {
		m[k] = v
	}
	for k, v := range b.spec.Env {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

func (b *box) cwd(dir string) string {
	if dir != "" {
		return dir
	}
	if b.spec.Workdir != "" {
		return b.spec.Workdir
	}
	return "/"
}

// touch records activity, which holds off idle_timeout.
func (b *box) touch() {
	b.mu.Lock()
	b.lastActivity = time.Now()
	b.mu.Unlock()
}

// enforceTimeouts terminates a running container at its timeout, or once it has been idle
// (no exec running, no request) for its idle_timeout.
func (w *Worker) enforceTimeouts(b *box) {
	deadline := time.NewTimer(b.spec.Timeout.D())
	defer deadline.Stop()
	var idle <-chan time.Time
	if b.spec.IdleTimeout > 0 {
		t := time.NewTicker(w.idleTick)
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-b.done:
			return
		case <-deadline.C:
			w.terminate(b.spec.ID, sandbox.Timeout, fmt.Sprintf("the sandbox reached its timeout of %s s", b.spec.Timeout))
			return
		case <-idle:
			b.mu.Lock()
			quiet := b.activeExecs == 0 && time.Since(b.lastActivity) > b.spec.IdleTimeout.D()
			b.mu.Unlock()
			if quiet && w.forwardedFlows(b) {
				b.touch() // open connections through a kernel-forwarded tunnel
				quiet = false
			}
			if quiet {
				w.terminate(b.spec.ID, sandbox.Timeout, fmt.Sprintf("the sandbox was idle for its idle_timeout of %s s", b.spec.IdleTimeout))
				return
			}
		}
	}
}

// terminate stops a container and reports it ended with status (terminated or timeout). It
// returns once the container is gone and its end reported, by whichever path ended it.
func (w *Worker) terminate(id string, status sandbox.Status, reason string) {
	b := w.box(id)
	if b == nil {
		// Not here (already gone, or never started): tell the server so it does not wait.
		code := sandbox.ExitTerminated
		w.report(id, workerproto.StateReport{Status: status, ExitCode: &code})
		return
	}
	b.mu.Lock()
	if b.state == boxExited || b.state == boxStopping {
		// Ended, or another terminate is ending it: wait for that.
		b.mu.Unlock()
		<-b.reported
		return
	}
	b.endStatus, b.endReason = status, reason
	c, r := b.container, b.runner
	if c != nil {
		if err := b.moveLocked(boxStopping); err != nil {
			w.log.Printf("%v", err)
		}
	}
	b.mu.Unlock()
	if c != nil {
		if r != nil {
			w.stopRunner(b, r)
		}
		w.meter.finish(id) // before its cgroup goes
		w.remove(c, id)    // containerExited also runs from the container's OnExit
		<-c.Done()
	}
	// Without a container (still being made), this ends the box at once; create removes the
	// container when the runtime hands it over.
	w.containerExited(b)
	// The container's OnExit may have got there first, and be reporting still.
	<-b.reported
}

// containerExited runs once a container has gone, for any reason, and reports its end.
func (w *Worker) containerExited(b *box) {
	b.mu.Lock()
	if b.state == boxExited {
		b.mu.Unlock()
		return
	}
	if err := b.moveLocked(boxExited); err != nil {
		b.mu.Unlock()
		w.log.Printf("%v", err)
		return
	}
	status, reason := b.endStatus, b.endReason
	main, c, r := b.execs["main"], b.container, b.runner
	b.mu.Unlock()
	b.closeConns()
	if c != nil {
		w.meter.finish(b.spec.ID)
		w.remove(c, b.spec.ID)
		w.releaseNet(b)
		// The last commit of what it wrote comes before its end is reported.
		w.closeVolumes(b, true)
	}
	// Without c, the runtime may still be joining the namespace: create releases it once the
	// runtime hands the container over, or failStart once it has failed.
	st := endReport(status, reason, main)
	st.GPU = b.gpu.report()
	w.forgetLater(b.spec.ID)
	if r != nil {
		why := ""
		if st.Error != nil {
			why = *st.Error
		} else if st.ExitCode != nil {
			why = fmt.Sprintf("exit code %d", *st.ExitCode)
		}
		w.release(b, r, why)
		// The server must see this container's last outputs (a timeout) before its end, which
		// makes it retry whatever was still running.
		w.events.flush()
	}
	b.reportMu.Lock()
	w.report(b.spec.ID, st)
	b.reportMu.Unlock()
	close(b.reported)
}

// endReport is the state a container that ended reports. status is a terminate's (terminated
// or timeout), or empty when the container ended by itself: it finished with its main
// process's exit code, or failed when it had none.
func endReport(status sandbox.Status, reason string, main Process) workerproto.StateReport {
	code := sandbox.ExitTerminated
	switch status {
	case sandbox.Timeout:
		code = sandbox.ExitTimeout
	case sandbox.Terminated:
	case sandbox.Failed: // the server gave up on it (it did not start in time)
	default:
		status = sandbox.Finished
		if main == nil {
			status = sandbox.Failed
			reason = "the sandbox's init process stopped unexpectedly"
		} else if e := main.Exit(); e != nil {
			code = e.ExitCode
			if e.Error != "" {
				reason = e.Error
			}
		}
	}
	st := workerproto.StateReport{Status: status, ExitCode: &code}
	if reason != "" {
		st.Error = &reason
	}
	return st
}

// forgetLater drops a container's record once its output has had time to be read.
func (w *Worker) forgetLater(id string) {
	time.AfterFunc(keepFinished, func() {
		w.mu.Lock()
		delete(w.boxes, id)
		w.mu.Unlock()
	})
}

package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// box is one sandbox on this worker. Its processes stay readable for a while after it ends, so
// that a client can collect output after wait().
type box struct {
	sb        sandbox.Sandbox
	container *container.Container
	runner    *runner // function containers only

	mu           sync.Mutex
	execs        map[string]*container.Process
	activeExecs  int
	lastActivity time.Time
	ended        bool
	endStatus    sandbox.Status
	endReason    string
	stopTimers   chan struct{}
}

// keepFinished is how long a finished sandbox's output stays readable on the worker.
const keepFinished = 10 * time.Minute

func (w *Worker) box(id string) *box {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.boxes[id]
}

func (w *Worker) create(a workerproto.Assignment) {
	sb := *a.Sandbox
	b := &box{sb: sb, execs: map[string]*container.Process{}, lastActivity: time.Now(), stopTimers: make(chan struct{})}
	w.mu.Lock()
	if _, dup := w.boxes[sb.ID]; dup {
		w.mu.Unlock()
		return
	}
	w.boxes[sb.ID] = b
	w.mu.Unlock()

	fail := func(err error) {
		msg := err.Error()
		w.log.Printf("sandbox %s failed to start: %v", sb.ID, err)
		b.mu.Lock()
		b.ended = true
		b.mu.Unlock()
		w.forgetLater(sb.ID)
		w.report(sb.ID, workerproto.StateReport{Status: sandbox.Failed, Error: &msg})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mounts []container.Mount
	var c *container.Container
	if a.Function != nil {
		var err error
		if mounts, err = w.functionMounts(a.Function, sb.Isolation); err != nil {
			fail(err)
			return
		}
	} else {
		c = w.pool.take(sb, a.ImageLayers)
	}
	if c != nil {
		c.SetOnExit(func() { w.containerExited(b) })
	} else {
		var err error
		c, err = w.rt.Create(ctx, container.CreateOptions{
			ID: sb.ID, Isolation: sb.Isolation, Layers: a.ImageLayers, CPU: sb.CPU, CPULimit: cpuLimit(sb),
			MemoryMiB: sb.MemoryMiB, DiskMiB: w.cfg.DiskMiB, BlockNetwork: sb.BlockNetwork, HostNetwork: sb.HostNetwork,
			Mounts: mounts, OnExit: func() { w.containerExited(b) }, Logf: w.log.Printf,
		})
		if err != nil {
			fail(err)
			return
		}
	}
	b.mu.Lock()
	if b.ended {
		// Terminated while it was starting: nobody will use it.
		b.mu.Unlock()
		w.rt.Remove(c)
		return
	}
	b.container = c
	b.mu.Unlock()

	if sb.Workdir != nil {
		if resp, _, err := c.FileOp(ctx, initproto.FileRequest{Op: initproto.OpMkdir, Path: *sb.Workdir, Parents: true}, nil); err != nil || resp.Error != "" {
			w.rt.Remove(c)
			fail(fmt.Errorf("cannot create workdir %s: %v%s", *sb.Workdir, err, resp.Error))
			return
		}
	}
	if len(sb.Command) > 0 {
		p, err := c.Exec(initproto.ExecRequest{Argv: sb.Command, Env: b.env(nil), Cwd: b.cwd(""), Main: true, User: sb.User}, 0)
		if err != nil {
			w.rt.Remove(c)
			fail(err)
			return
		}
		b.mu.Lock()
		b.execs["main"] = p
		b.mu.Unlock()
	} else if a.Function != nil {
		if err := w.startRunner(b, a.Function); err != nil {
			w.rt.Remove(c)
			fail(fmt.Errorf("starting the function runner: %w", err))
			return
		}
	}
	w.report(sb.ID, workerproto.StateReport{Status: sandbox.Running})
	go w.enforceTimeouts(b)
}

// cpuLimit is the container's hard CPU cap: a sandbox's cpu, a function container's limit.
func cpuLimit(sb sandbox.Sandbox) float64 {
	if sb.FunctionID != "" {
		return sb.CPULimit
	}
	return sb.CPU
}

// env builds a process environment: defaults, then the sandbox's, then the exec's.
func (b *box) env(extra map[string]string) []string {
	m := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm",
		"GUST_SANDBOX_ID": b.sb.ID, "MODAL_SANDBOX_ID": b.sb.ID,
	}
	for k, v := range b.sb.Env {
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
	if b.sb.Workdir != nil {
		return *b.sb.Workdir
	}
	return "/"
}

// touch records activity, which holds off idle_timeout.
func (b *box) touch() {
	b.mu.Lock()
	b.lastActivity = time.Now()
	b.mu.Unlock()
}

func (w *Worker) enforceTimeouts(b *box) {
	deadline := time.NewTimer(time.Duration(b.sb.Timeout * float64(time.Second)))
	defer deadline.Stop()
	var idle <-chan time.Time
	if b.sb.IdleTimeout != nil {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-b.stopTimers:
			return
		case <-deadline.C:
			w.terminate(b.sb.ID, sandbox.Timeout, fmt.Sprintf("the sandbox reached its timeout of %v s", b.sb.Timeout))
			return
		case <-idle:
			b.mu.Lock()
			quiet := b.activeExecs == 0 && time.Since(b.lastActivity) > time.Duration(*b.sb.IdleTimeout*float64(time.Second))
			b.mu.Unlock()
			if quiet {
				w.terminate(b.sb.ID, sandbox.Timeout, fmt.Sprintf("the sandbox was idle for its idle_timeout of %v s", *b.sb.IdleTimeout))
				return
			}
		}
	}
}

// terminate stops a sandbox and reports it ended with status (terminated or timeout).
func (w *Worker) terminate(id string, status sandbox.Status, reason string) {
	b := w.box(id)
	if b == nil {
		// Not here (already gone, or never started): tell the server so it does not wait.
		code := sandbox.ExitTerminated
		w.report(id, workerproto.StateReport{Status: status, ExitCode: &code})
		return
	}
	b.mu.Lock()
	if b.ended {
		b.mu.Unlock()
		return
	}
	if b.endStatus == "" {
		b.endStatus, b.endReason = status, reason
	}
	c := b.container
	r := b.runner
	b.mu.Unlock()
	if r != nil && c != nil {
		w.stopRunner(r)
	}
	if c != nil {
		w.rt.Remove(c) // containerExited runs from the reader and reports
		<-c.Done()
	}
	w.containerExited(b)
}

// containerExited runs once the container's init has gone, for any reason.
func (w *Worker) containerExited(b *box) {
	b.mu.Lock()
	if b.ended {
		b.mu.Unlock()
		return
	}
	b.ended = true
	close(b.stopTimers)
	status, reason := b.endStatus, b.endReason
	main := b.execs["main"]
	c := b.container
	b.mu.Unlock()
	if c != nil {
		w.rt.Remove(c)
	}

	st := workerproto.StateReport{Status: status}
	switch status {
	case sandbox.Timeout:
		code := sandbox.ExitTimeout
		st.ExitCode = &code
	case sandbox.Terminated:
		code := sandbox.ExitTerminated
		st.ExitCode = &code
	default:
		st.Status = sandbox.Finished
		code := sandbox.ExitTerminated
		if main != nil {
			if e := main.Exit(); e != nil {
				code = e.ExitCode
				if e.Error != "" {
					reason = e.Error
				}
			}
		} else {
			st.Status = sandbox.Failed
			reason = "the sandbox's init process stopped unexpectedly"
		}
		st.ExitCode = &code
	}
	if reason != "" {
		st.Error = &reason
	}
	w.forgetLater(b.sb.ID)
	if b.runner != nil {
		why := reason
		if st.ExitCode != nil && why == "" {
			why = fmt.Sprintf("exit code %d", *st.ExitCode)
		}
		w.release(b, b.runner, why)
		// The server must see this container's last outputs (a timeout) before its end, which
		// makes it retry whatever was still running.
		w.events.flush()
	}
	w.report(b.sb.ID, st)
}

func (w *Worker) forgetLater(id string) {
	time.AfterFunc(keepFinished, func() {
		w.mu.Lock()
		delete(w.boxes, id)
		w.mu.Unlock()
	})
}

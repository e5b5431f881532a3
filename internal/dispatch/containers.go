package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// startBackoff is how long a function waits after its n-th container failure in a row before
// it starts another: 2 s, 4 s, ... up to 30 s.
func startBackoff(n int) time.Duration {
	return min(time.Duration(1<<min(n, 5))*time.Second, 30*time.Second)
}

// startContainer creates one function container. A failure fails the function's queued
// inputs with the reason (a missing GPU or image will not fix itself) and backs off.
func (e *Engine) startContainer(c *fnContainer) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.mu.Lock()
	fs := e.fns[c.fnID]
	var fn function.Function
	if fs != nil {
		fn = fs.fn
	}
	drained := c.state != containerStarting
	c.cancel = cancel
	e.mu.Unlock()
	if drained {
		cancel()
	}
	if fs == nil {
		e.containerGone(c.id)
		return
	}
	sb, err := e.containerRecord(fn)
	if err == nil {
		sb.ID = c.id
		_, err = e.placer.Create(ctx, sb, &workerproto.FunctionRun{
			FunctionID: fn.ID, Module: fn.Code.Module, Name: fn.Spec.Name, Kind: fn.Spec.Kind,
			MaxInputs: fn.Spec.MaxInputs, CodeBlob: fn.Code.Blob, Timeout: fn.Spec.Timeout, ModalCompat: fn.Code.ModalCompat,
		}, func(workerID string) {
			e.mu.Lock()
			c.workerID = workerID
			e.mu.Unlock()
		})
	}
	if err == nil {
		// Stopped while it started (its app stopped, or it was scaled down): stop it now, or
		// nobody would.
		e.mu.Lock()
		stale := c.state == containerDraining || fs.fn.State == function.StateStopped
		e.mu.Unlock()
		if stale {
			e.terminate(c.id, "its function was stopped while the container started")
		}
		return
	}
	if ctx.Err() != nil {
		// Drained while it started (scaled down, or its function stopped): not a failure.
		e.containerGone(c.id)
		return
	}
	e.startFailed(fs, c, err)
}

// startFailed records a container that did not start. A container lost with its worker is not
// the function's failure: the next step starts another.
func (e *Engine) startFailed(fs *fnState, c *fnContainer, err error) {
	e.log.Printf("function %s (%s): container did not start: %v", fs.fn.Name, fs.fn.ID, err)
	var done []function.Input
	e.mu.Lock()
	e.forgetContainerLocked(c)
	if errors.Is(err, sandbox.ErrWorkerLost) {
		e.mu.Unlock()
		e.wake()
		return
	}
	fs.startFailures++
	fs.retryStartAt = e.clock.Now().Add(startBackoff(fs.startFailures))
	fs.reason = "container failed to start: " + err.Error()
	if len(fs.containers) == 0 {
		failWebLocked(fs, errdefs.Unavailable("a container for this web endpoint could not start: %v", err))
		for _, qi := range fs.queue {
			done = append(done, e.finishLocked(qi, function.InputFailure, output{msg: "a container for this function could not start: " + err.Error()}))
		}
		fs.queue = nil
	}
	e.mu.Unlock()
	e.w.persist(done, nil)
}

// containerRecord is the sandbox record a function's container runs as: its resources, image,
// and an environment of the function's env, over that of its secrets. The secrets' values go in
// SecretEnv, which reaches the worker and is never stored.
func (e *Engine) containerRecord(fn function.Function) (sandbox.Sandbox, error) {
	sp := fn.Spec
	secretEnv := map[string]string{}
	for _, sec := range sp.Secrets {
		if sec.Name != "" {
			stored, err := e.store.GetSecret(context.Background(), fn.WorkspaceID, sec.Name)
			if err != nil {
				return sandbox.Sandbox{}, err
			}
			maps.Copy(secretEnv, stored.Env)
		}
		maps.Copy(secretEnv, sec.Env)
	}
	env := maps.Clone(sp.Env)
	if env == nil {
		env = map[string]string{}
	}
	env["GUST_FUNCTION_ID"] = fn.ID
	env["GUST_IS_REMOTE"] = "1"
	if sp.Web != nil {
		// The runner serves the web endpoint as this says (sdk/python/gust/_webserve.py).
		b, err := json.Marshal(sp.Web)
		if err != nil {
			return sandbox.Sandbox{}, fmt.Errorf("encoding the web endpoint of %s: %w", fn.Name, err)
		}
		env["GUST_WEB"] = string(b)
	}
	iso := sp.Isolation
	if iso == "" {
		iso = e.cfg.DefaultIsolation
	}
	net, err := sp.NetworkRequest.Policy(false) // checked when the function was published
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	return sandbox.Sandbox{
		NetworkPolicy: net,
		AppID:         fn.AppID, WorkspaceID: fn.WorkspaceID, ImageID: sp.ImageID, Isolation: iso, Status: sandbox.Pending, Timeout: wire.Duration(sandbox.MaxTimeout),
		CPU: sp.CPU, CPULimit: sp.CPULimit, MemoryMiB: sp.MemoryMiB, Env: env, SecretEnv: secretEnv, FunctionID: fn.ID, GPU: sp.GPU,
		GPUWait: sp.Timeout, // a container waits for busy GPUs as long as an input may run
		Tags:    map[string]string{"function": fn.Name},
		Volumes: sp.Volumes,
	}, nil
}

// terminate stops a container through the placer, logging a failure.
func (e *Engine) terminate(id, why string) {
	if _, err := e.placer.Terminate(context.Background(), id, sandbox.Terminated, why); err != nil {
		e.log.Printf("functions: stopping container %s (%s): %v", id, why, err)
	}
}

// ContainerEnded settles a function container that reached a terminal state: the worker
// reported the inputs that were running as crashed (an attempt each) before this end; any
// still assigned to it never began there, or reached it too late: they run elsewhere,
// uncounted. The fleet calls it.
func (e *Engine) ContainerEnded(sb sandbox.Sandbox) { e.containerGone(sb.ID) }

func (e *Engine) containerGone(id string) {
	e.mu.Lock()
	c := e.containers[id]
	if c == nil {
		e.mu.Unlock()
		return
	}
	fs := e.fns[c.fnID]
	for _, qi := range c.inflight {
		if fs == nil || qi.cancelled {
			unassign(qi)
			continue
		}
		e.requeue(fs, qi)
	}
	e.forgetContainerLocked(c)
	e.mu.Unlock()
	e.wake()
}

// forgetContainerLocked moves a container to gone and drops it; one that is gone already (its
// end was reported before its start failed) stays so.
func (e *Engine) forgetContainerLocked(c *fnContainer) {
	if c.state == containerGone {
		return
	}
	if err := containerMachine.Move(&c.state, containerGone); err != nil {
		e.log.Printf("functions: container %s: %v", c.id, err)
	}
	delete(e.containers, c.id)
	if fs := e.fns[c.fnID]; fs != nil {
		delete(fs.containers, c.id)
	}
}

// HandleEvents applies a worker's batch of events about function containers. A worker speaks
// only for its own containers, and a container only for the inputs it holds: anything else
// in the batch is dropped (and counted in the log), so that a compromised container cannot
// write into another caller's results.
func (e *Engine) HandleEvents(workerID string, evs []workerproto.Event) {
	var done []function.Input
	var logs []store.LogLine
	now := e.clock.Now()
	dropped := 0
	e.mu.Lock()
	for _, ev := range evs {
		c := e.containers[ev.ContainerID]
		if c == nil {
			continue
		}
		if c.workerID != workerID || !e.holds(c, ev) {
			dropped++
			continue
		}
		fs := e.fns[c.fnID]
		if fs == nil {
			continue
		}
		switch ev.Type {
		case workerproto.EventReady:
			if containerMachine.Can(c.state, containerReady) {
				c.state = containerReady
				c.idleSince = now
			}
			fs.startFailures = 0
		case workerproto.EventInitError:
			done = append(done, e.initErrorLocked(fs, c, ev)...)
			logs = append(logs, store.LogLine{AppID: fs.fn.AppID, FunctionID: fs.fn.ID, Stream: "stderr", Data: ev.Traceback, Time: now.UTC()})
		case workerproto.EventLog:
			logs = append(logs, store.LogLine{AppID: fs.fn.AppID, FunctionID: fs.fn.ID, InputID: ev.InputID, Stream: ev.Stream, Data: string(ev.Data), Time: now.UTC()})
			e.streamLocked(ev, "log", map[string]any{"stream": ev.Stream, "data": string(ev.Data)})
		case workerproto.EventItem:
			e.streamLocked(ev, "item", map[string]any{"data": ev.Data, "format": ev.Format})
		case workerproto.EventOutput:
			if in := e.outputLocked(fs, c, ev, now); in != nil {
				done = append(done, *in)
			}
		}
	}
	e.mu.Unlock()
	if dropped > 0 {
		e.log.Printf("functions: dropped %d event(s) from worker %s about containers or inputs that are not its own", dropped, workerID)
	}
	e.w.persist(done, logs)
	e.wake()
}

// holds reports whether an event's input, if it names one, is held or running in the
// container that sent it.
func (e *Engine) holds(c *fnContainer, ev workerproto.Event) bool {
	if ev.InputID == "" {
		return ev.Type != workerproto.EventItem && ev.Type != workerproto.EventOutput
	}
	qi := c.inflight[ev.InputID]
	return qi != nil
}

// streamLocked adds a log line or generator item to its input's call stream. Only an input
// that is still open gets lines: a cancelled one's items are dropped.
func (e *Engine) streamLocked(ev workerproto.Event, kind string, fields map[string]any) {
	qi := e.inputs[ev.InputID]
	if qi == nil || qi.cancelled {
		return
	}
	if cs := e.calls[qi.callID]; cs != nil {
		fields["index"] = qi.index
		cs.appendJSON(map[string]any{kind: fields})
	}
}

// initErrorLocked fails every input waiting for a function whose code does not import.
func (e *Engine) initErrorLocked(fs *fnState, c *fnContainer, ev workerproto.Event) []function.Input {
	fs.startFailures++
	fs.retryStartAt = e.clock.Now().Add(startBackoff(fs.startFailures))
	fs.reason = "the function's module failed to import: " + ev.Error
	out := output{msg: "the function's code failed to import in its container: " + ev.Error, traceback: ev.Traceback}
	var done []function.Input
	for _, qi := range fs.queue {
		done = append(done, e.finishLocked(qi, function.InputFailure, out))
	}
	fs.queue = nil
	failWebLocked(fs, errdefs.Unavailable("the web endpoint's code failed to import in its container: %s\n%s", ev.Error, ev.Traceback))
	for _, qi := range c.inflight {
		unassign(qi)
		if !qi.cancelled {
			done = append(done, e.finishLocked(qi, function.InputFailure, out))
		}
	}
	return done
}

// outputLocked applies an input's output; it returns the input if it is done.
func (e *Engine) outputLocked(fs *fnState, c *fnContainer, ev workerproto.Event, now time.Time) *function.Input {
	qi := c.inflight[ev.InputID]
	if qi == nil {
		return nil
	}
	if ev.Status == workerproto.StatusNotStarted {
		// Held on the worker and never begun (its container ended first): not an attempt.
		if qi.cancelled {
			unassign(qi)
		} else {
			e.requeue(fs, qi)
		}
		if c.busy() == 0 {
			c.idleSince = now
		}
		return nil
	}
	if qi.state == inputRunning {
		e.startHeld(c) // the worker starts its next held input in the slot this one freed
	}
	unassign(qi)
	if c.busy() == 0 {
		c.idleSince = now
	}
	if qi.cancelled {
		return nil
	}
	if ev.Runtime > 0 {
		if fs.avgRun == 0 {
			fs.avgRun = ev.Runtime.D()
		} else {
			fs.avgRun = (4*fs.avgRun + ev.Runtime.D()) / 5
		}
	}
	switch ev.Status {
	case workerproto.StatusSuccess:
		in := e.finishLocked(qi, function.InputSuccess, output{data: ev.Data, format: ev.Format})
		return &in
	case workerproto.StatusTimeout:
		// The worker is killing the container: send it nothing more.
		e.drain(c)
		return e.failLocked(fs, qi, function.InputTimeout, output{msg: ev.Error})
	default: // failure, crashed
		return e.failLocked(fs, qi, function.InputFailure, output{msg: ev.Error, traceback: ev.Traceback, exc: ev.Exc})
	}
}

// Stats is what `gust app` shows of a function.
type Stats struct {
	Pending        int    `json:"pending"`
	Running        int    `json:"running"`
	Containers     int    `json:"containers"`
	Starting       int    `json:"starting"`
	IdleContainers int    `json:"idle_containers"`
	Reason         string `json:"reason"`
}

// Describe returns a function's state as the engine holds it (the store's is older for a
// function that stopped or was replaced since it was read) and its stats.
func (e *Engine) Describe(fn function.Function) (function.State, Stats) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fs := e.fns[fn.ID]
	if fs == nil {
		return fn.State, Stats{Reason: "stopped"}
	}
	st := Stats{Pending: len(fs.queue) + len(fs.delayed) + len(fs.webQueue), Reason: fs.reason}
	for _, c := range fs.containers {
		if !c.live() {
			continue
		}
		st.Containers++
		st.Running += c.busy()
		switch {
		case c.state == containerStarting:
			st.Starting++
		case c.busy() == 0:
			st.IdleContainers++
		}
	}
	return fs.fn.State, st
}

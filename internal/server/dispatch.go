package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/autoscaler"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// dispatcher is the server's half of functions: the queues of inputs (durable in the store,
// mirrored here), the containers of each function and how busy they are, the autoscaler loop,
// schedules, and the streams of each call. One mutex guards it all; store writes happen outside
// it.
type dispatcher struct {
	s *Server

	mu         sync.Mutex
	fns        map[string]*fnState
	calls      map[string]*callState
	inputs     map[string]*queuedInput // open inputs: queued, delayed or running
	containers map[string]*fnContainer // by sandbox ID
	kick       chan struct{}
	logsWake   chan struct{} // closed and replaced when app logs are appended

	// Outputs and logs waiting for the store (see persist).
	wmu    sync.Mutex
	wDone  []function.Input
	wLogs  []store.LogLine
	wWake  chan struct{}
	wFlush sync.Mutex
}

// fnState is one function's queue and containers.
type fnState struct {
	fn         function.Function
	queue      []*queuedInput // ready to run, oldest first
	delayed    []*queuedInput // waiting out a retry backoff
	containers map[string]*fnContainer
	reason     string // the autoscaler's last decision, shown by `gust app`
	// Container start failures back off, so that a broken image or module is not restarted in
	// a tight loop (min_containers would otherwise do so).
	startFailures int
	retryStartAt  time.Time
	nextRun       time.Time // of its schedule
	// avgRun is a moving average of how long the runner takes over an input; it sets how many
	// inputs a container may hold ahead, and how many containers quick inputs need.
	avgRun time.Duration
	// lastBeat is the last heartbeat of the client of a `with app.run()` (fn.Heartbeat).
	lastBeat time.Time
}

// holdAhead is how many inputs beyond its max_inputs a container may hold on its worker: about
// 50 ms of work, so that fast inputs travel in batches while slow ones stay in the queue for
// whichever container frees up first.
func (fs *fnState) holdAhead() int {
	k := 1
	if fs.avgRun > 0 {
		k = int(50*time.Millisecond/fs.avgRun) + 1
	}
	return fs.fn.Spec.MaxInputs * min(k, 32)
}

type queuedInput struct {
	in        workerproto.Input
	callID    string
	index     int
	fnID      string
	attempts  int
	notBefore time.Time
	container string // while running
	cancelled bool   // its output, when it comes, is dropped
}

type fnContainer struct {
	id        string
	fnID      string
	workerID  string
	ready     bool // the runner imported the code and takes inputs
	stopping  bool
	inflight  map[string]*queuedInput
	idleSince time.Time
}

// callState is a call's stream: pre-encoded NDJSON lines (logs, items, outputs) that readers
// follow, and where each output sits among them.
type callState struct {
	call      function.Call
	addMu     sync.Mutex // serialises adding inputs
	lines     [][]byte
	outputPos []int
	nextSeq   int
	open      int // inputs not yet done
	changed   chan struct{}
	lastUsed  time.Time
}

func newDispatcher(s *Server) *dispatcher {
	return &dispatcher{
		s: s, fns: map[string]*fnState{}, calls: map[string]*callState{}, inputs: map[string]*queuedInput{},
		containers: map[string]*fnContainer{}, kick: make(chan struct{}, 1), logsWake: make(chan struct{}), wWake: make(chan struct{}, 1),
	}
}

func (d *dispatcher) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// load restores functions and their open inputs after a restart: every input that was not
// done is queued again (at least once: one that was running when the server stopped runs
// again).
func (d *dispatcher) load(ctx context.Context) error {
	fns, err := d.s.store.ListFunctions(ctx, "", true)
	if err != nil {
		return err
	}
	for _, fn := range fns {
		// After a restart, clients get a full timeout to beat again.
		d.fns[fn.ID] = &fnState{fn: fn, containers: map[string]*fnContainer{}, lastBeat: time.Now()}
	}
	open, err := d.s.store.OpenInputs(ctx)
	if err != nil {
		return err
	}
	var dead []function.Input
	for _, in := range open {
		cs, err := d.callStateLocked(ctx, in.CallID)
		if err != nil {
			return err
		}
		fs := d.fns[in.FunctionID]
		if fs == nil || cs.call.Cancelled {
			in.Status, in.Error = function.InputTerminated, "the function was stopped before this input ran"
			in.Seq = cs.nextSeq
			cs.nextSeq++
			dead = append(dead, in)
			continue
		}
		qi := &queuedInput{in: workerproto.Input{ID: in.ID, CallID: in.CallID, Args: in.Args, Format: in.Format, Method: cs.call.Method},
			callID: in.CallID, index: in.Index, fnID: in.FunctionID, attempts: in.Attempts}
		if cs.call.Params != nil {
			qi.in.Params = &workerproto.Payload{Data: cs.call.Params.Data, Format: cs.call.Params.Format}
		}
		cs.open++
		fs.queue = append(fs.queue, qi)
		d.inputs[in.ID] = qi
	}
	if len(open) > 0 {
		d.s.log.Printf("functions: %d input(s) left open by the last run are queued again", len(open)-len(dead))
	}
	return d.s.store.FinishInputs(ctx, dead)
}

// callStateLocked returns a call's stream, loading a call from the store the first time it
// is asked for (after a restart, or once it was dropped from memory).
func (d *dispatcher) callStateLocked(ctx context.Context, id string) (*callState, error) {
	if cs := d.calls[id]; cs != nil {
		cs.lastUsed = time.Now()
		return cs, nil
	}
	call, err := d.s.store.GetCall(ctx, id)
	if err != nil {
		return nil, err
	}
	cs := &callState{call: call, changed: make(chan struct{}), lastUsed: time.Now()}
	outs, err := d.s.store.CallOutputs(ctx, id, 0)
	if err != nil {
		return nil, err
	}
	for _, in := range outs {
		cs.appendOutput(in)
		cs.nextSeq = max(cs.nextSeq, in.Seq+1)
	}
	d.calls[id] = cs
	return cs, nil
}

func (d *dispatcher) callState(ctx context.Context, id string) (*callState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.callStateLocked(ctx, id)
}

// outputLine is an output as the call stream shows it.
type outputLine struct {
	Index     int    `json:"index"`
	Seq       int    `json:"seq"`
	Status    string `json:"status"`
	Data      []byte `json:"data"`
	Format    string `json:"format"`
	Error     string `json:"error,omitempty"`
	Traceback string `json:"traceback,omitempty"`
	Exc       []byte `json:"exc"`
}

func (cs *callState) append(line []byte) {
	cs.lines = append(cs.lines, line)
	close(cs.changed)
	cs.changed = make(chan struct{})
}

func (cs *callState) appendOutput(in function.Input) {
	b, _ := json.Marshal(map[string]outputLine{"output": {Index: in.Index, Seq: in.Seq, Status: in.Status, Data: in.Result,
		Format: in.Format, Error: in.Error, Traceback: in.Traceback, Exc: in.Exc}})
	cs.outputPos = append(cs.outputPos, len(cs.lines))
	cs.append(append(b, '\n'))
}

// run is the dispatcher's loop: it runs at every kick (new inputs, outputs, containers) and
// at least every 100 ms (retry backoffs, scaledown windows, schedules).
func (d *dispatcher) run(ctx context.Context) {
	go d.writeLoop()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	gc := time.NewTicker(10 * time.Second)
	defer gc.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		case <-gc.C:
			d.dropIdleCalls()
			d.s.expireWorkers()
			if time.Since(lastPrune) > time.Hour {
				lastPrune = time.Now()
				if n, err := d.s.store.Prune(ctx, time.Now().Add(-outputRetention)); err != nil {
					d.s.log.Printf("functions: %v", err)
				} else if n > 0 {
					d.s.log.Printf("functions: forgot %d output(s), log line(s) and call(s) older than %v", n, outputRetention)
				}
			}
		}
		d.dispatch()
	}
}

// dropIdleCalls forgets the streams of finished calls nobody has read for half a minute, so
// that a busy server does not hold every call's lines; a late reader gets the outputs from the
// store (without the logs, which the app's logs keep).
func (d *dispatcher) dropIdleCalls() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, cs := range d.calls {
		if cs.open == 0 && time.Since(cs.lastUsed) > 30*time.Second {
			delete(d.calls, id)
		}
	}
}

type startReq struct {
	fs *fnState
	fc *fnContainer
}

// dispatch hands queued inputs to containers with free slots, then lets the autoscaler start
// and stop containers, and fires due schedules.
func (d *dispatcher) dispatch() {
	now := time.Now()
	sends := map[*fnContainer][]workerproto.Input{}
	var starts []startReq
	var stops []string
	var due []*fnState
	var orphans []string
	d.s.mu.Lock()
	haveWorkers := len(d.s.workers) > 0
	freeMiB := 0 // memory the workers have not promised yet: bounds how many containers start
	for _, wc := range d.s.workers {
		freeMiB += max(0, wc.reg.MemoryMiB-wc.reservedMiB)
	}
	d.s.mu.Unlock()
	d.mu.Lock()
	for _, fs := range d.fns {
		if fs.fn.State == function.StateStopped {
			continue
		}
		if fs.fn.Heartbeat && fs.fn.State == function.StateActive && now.Sub(fs.lastBeat) > d.s.cfg.HeartbeatTimeout {
			orphans = append(orphans, fs.fn.ID)
			continue
		}
		// Retries whose backoff has passed go back in the queue.
		kept := fs.delayed[:0]
		for _, qi := range fs.delayed {
			if now.After(qi.notBefore) {
				fs.queue = append(fs.queue, qi)
			} else {
				kept = append(kept, qi)
			}
		}
		fs.delayed = kept
		if len(fs.queue) > 0 {
			// Least-loaded containers first, so inputs spread over what is warm.
			cs := make([]*fnContainer, 0, len(fs.containers))
			for _, c := range fs.containers {
				if c.ready && !c.stopping {
					cs = append(cs, c)
				}
			}
			sort.Slice(cs, func(i, j int) bool { return len(cs[i].inflight) < len(cs[j].inflight) })
			// Fill every free slot; then, while inputs still wait, give each container as many
			// again to hold ready on its worker, which starts the next the moment one ends
			// instead of waiting for a round trip to here (docs/functions.md, "Prefetch").
			for _, limit := range []int{fs.fn.Spec.MaxInputs, fs.fn.Spec.MaxInputs + fs.holdAhead()} {
				for _, c := range cs {
					for free := limit - len(c.inflight); free > 0 && len(fs.queue) > 0; free-- {
						qi := fs.queue[0]
						fs.queue = fs.queue[1:]
						qi.attempts++
						qi.container = c.id
						c.inflight[qi.in.ID] = qi
						sends[c] = append(sends[c], qi.in)
					}
				}
			}
		}
		dec := autoscaler.Decide(d.scaleConfig(fs), d.scaleState(fs, now))
		fs.reason = dec.Reason
		if dec.Start > 0 && !haveWorkers {
			// Just restarted, or the workers are away: the inputs wait, they do not fail.
			fs.reason = "waiting for a worker to connect; " + dec.Reason
		} else if dec.Start > 0 && now.After(fs.retryStartAt) {
			n := min(dec.Start, freeMiB/fs.fn.Spec.MemoryMiB, maxStarting-starting(fs))
			freeMiB -= n * fs.fn.Spec.MemoryMiB
			if n < dec.Start {
				fs.reason += fmt.Sprintf("; starting %d now (at most %d start at once, and only as many as the workers' free memory holds)", max(n, 0), maxStarting)
			}
			for i := 0; i < n; i++ {
				fc := &fnContainer{id: ids.New(ids.Sandbox), fnID: fs.fn.ID, inflight: map[string]*queuedInput{}, idleSince: now}
				fs.containers[fc.id] = fc
				d.containers[fc.id] = fc
				starts = append(starts, startReq{fs, fc})
			}
		}
		for _, id := range dec.Stop {
			if c := fs.containers[id]; c != nil && !c.stopping {
				c.stopping = true
				stops = append(stops, id)
			}
		}
		if sc := fs.fn.Spec.Schedule; sc != nil && fs.fn.Mode == function.ModeDeployed && fs.fn.State == function.StateActive {
			if fs.nextRun.IsZero() {
				fs.nextRun = sc.Next(now)
			} else if !now.Before(fs.nextRun) {
				fs.nextRun = sc.Next(now)
				due = append(due, fs)
			}
		}
	}
	d.mu.Unlock()

	for c, ins := range sends {
		d.s.mu.Lock()
		wc := d.s.workers[c.workerID]
		d.s.mu.Unlock()
		if wc != nil {
			d.s.assign(wc, workerproto.Assignment{Op: workerproto.OpInputs, SandboxID: c.id, Inputs: ins})
		}
	}
	for _, st := range starts {
		go d.startContainer(st.fs, st.fc)
	}
	for _, id := range stops {
		go d.s.terminate(context.Background(), id, sandbox.Terminated, "scaled down: idle for the function's scaledown_window")
	}
	for _, fs := range due {
		go d.fireSchedule(fs.fn)
	}
	if len(orphans) > 0 {
		go d.stopOrphans(orphans)
	}
}

// stopOrphans stops ephemeral functions whose client stopped sending heartbeats.
func (d *dispatcher) stopOrphans(ids []string) {
	d.mu.Lock()
	for _, id := range ids {
		if fs := d.fns[id]; fs != nil {
			fs.fn.State = function.StateStopped // not again at the next tick
		}
	}
	d.mu.Unlock()
	d.s.log.Printf("stopping %d function(s) of an ephemeral app: no heartbeat from its client for %v", len(ids), d.s.cfg.HeartbeatTimeout)
	if err := d.stopFunctions(ids, fmt.Sprintf("the client that ran the app went away (no heartbeat for %v)", d.s.cfg.HeartbeatTimeout)); err != nil {
		d.s.log.Printf("stopping functions: %v", err)
	}
}

// outputRetention is how long outputs and app logs are kept.
const outputRetention = 7 * 24 * time.Hour

// maxStarting bounds the containers of one function starting at once, so that a large map
// scales up in steps instead of starting thousands of containers on a few cores.
const maxStarting = 4

func starting(fs *fnState) int {
	n := 0
	for _, c := range fs.containers {
		if !c.ready && !c.stopping {
			n++
		}
	}
	return n
}

func (d *dispatcher) scaleConfig(fs *fnState) autoscaler.Config {
	sp := fs.fn.Spec
	cfg := autoscaler.Config{Min: sp.MinContainers, Buffer: sp.BufferContainers, Target: sp.TargetConcurrency(),
		ScaledownWindow: time.Duration(sp.ScaledownWindow * float64(time.Second)), AvgRun: fs.avgRun}
	if sp.MaxContainers != nil {
		cfg.Max = *sp.MaxContainers
	}
	if fs.fn.State != function.StateActive {
		// Replaced by a newer deploy: finish what it has, keep nothing warm, and let idle
		// containers go at once.
		cfg.Min, cfg.Buffer, cfg.ScaledownWindow = 0, 0, 0
	}
	return cfg
}

func (d *dispatcher) scaleState(fs *fnState, now time.Time) autoscaler.State {
	st := autoscaler.State{Queued: len(fs.queue), Now: now}
	for _, c := range fs.containers {
		if c.stopping {
			continue
		}
		st.Containers = append(st.Containers, autoscaler.Container{ID: c.id, Starting: !c.ready, Inflight: len(c.inflight), IdleSince: c.idleSince})
	}
	return st
}

// startContainer creates one function container. A failure fails the function's queued
// inputs with the reason (a missing GPU or image will not fix itself) and backs off.
func (d *dispatcher) startContainer(fs *fnState, fc *fnContainer) {
	sb, err := d.containerSpec(fs.fn)
	if err == nil {
		sb.ID = fc.id
		_, err = d.s.createSandbox(context.Background(), sb, &workerproto.FunctionRun{
			FunctionID: fs.fn.ID, Module: fs.fn.Code.Module, Name: fs.fn.Name, Kind: fs.fn.Spec.Kind,
			MaxInputs: fs.fn.Spec.MaxInputs, CodeBlob: fs.fn.Code.Blob, Timeout: fs.fn.Spec.Timeout,
		}, func(workerID string) {
			d.mu.Lock()
			fc.workerID = workerID
			d.mu.Unlock()
		})
	}
	if err == nil {
		// Stopped while it started (its app stopped, or it was scaled down): stop it now, or
		// nobody would.
		d.mu.Lock()
		stale := fc.stopping || fs.fn.State == function.StateStopped
		d.mu.Unlock()
		if stale {
			d.s.terminate(context.Background(), fc.id, sandbox.Terminated, "its function was stopped while the container started")
		}
		return
	}
	d.s.log.Printf("function %s (%s): container did not start: %v", fs.fn.Name, fs.fn.ID, err)
	d.mu.Lock()
	delete(fs.containers, fc.id)
	delete(d.containers, fc.id)
	fs.startFailures++
	fs.retryStartAt = time.Now().Add(min(time.Duration(1<<min(fs.startFailures, 5))*time.Second, 30*time.Second))
	fs.reason = "container failed to start: " + err.Error()
	var done []function.Input
	if len(fs.containers) == 0 {
		for _, qi := range fs.queue {
			done = append(done, d.finishLocked(qi, function.InputFailure, nil, "", "a container for this function could not start: "+err.Error(), "", nil))
		}
		fs.queue = nil
	}
	d.mu.Unlock()
	d.persist(done, nil)
}

// containerSpec is the sandbox a function's container runs as: its resources, image, and an
// environment of the function's env and secrets.
func (d *dispatcher) containerSpec(fn function.Function) (sandbox.Sandbox, error) {
	sp := fn.Spec
	env := map[string]string{}
	for _, sec := range sp.Secrets {
		if sec.Name != "" {
			stored, err := d.s.store.GetSecret(context.Background(), sec.Name)
			if err != nil {
				return sandbox.Sandbox{}, err
			}
			maps.Copy(env, stored.Env)
		}
		maps.Copy(env, sec.Env)
	}
	maps.Copy(env, sp.Env)
	env["GUST_FUNCTION_ID"] = fn.ID
	env["GUST_IS_REMOTE"] = "1"
	iso := sp.Isolation
	if iso == "" {
		iso = d.s.cfg.DefaultIsolation
	}
	sb := sandbox.Sandbox{
		AppID: fn.AppID, ImageID: sp.ImageID, Isolation: iso, Status: sandbox.Pending, Timeout: sandbox.MaxTimeout.Seconds(),
		CPU: sp.CPU, CPULimit: sp.CPULimit, MemoryMiB: sp.MemoryMiB, Env: env, FunctionID: fn.ID, Tags: map[string]string{"function": fn.Name},
	}
	gpus, _ := function.ParseGPU(sp.GPU)
	for _, g := range gpus {
		sb.GPU = append(sb.GPU, g.String())
	}
	return sb, nil
}

// containerEnded is called when a function container reaches a terminal state: inputs it was
// running are retried or failed.
func (d *dispatcher) containerEnded(sb sandbox.Sandbox) {
	d.mu.Lock()
	fc := d.containers[sb.ID]
	if fc == nil {
		d.mu.Unlock()
		return
	}
	delete(d.containers, sb.ID)
	fs := d.fns[fc.fnID]
	if fs != nil {
		delete(fs.containers, sb.ID)
	}
	// The worker reported the inputs that were running as crashed (an attempt each) before this
	// end; any still here never began in this container, or reached it too late: they run
	// elsewhere, uncounted.
	requeueLocked(fs, fc)
	d.mu.Unlock()
	d.wake()
}

// requeueContainer puts the inputs a container was running back at the front of their queue,
// uncounted: its worker is gone, through no fault of theirs.
func (d *dispatcher) requeueContainer(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fc := d.containers[id]
	if fc == nil {
		return
	}
	requeueLocked(d.fns[fc.fnID], fc)
}

// requeueLocked moves a container's inputs back to the front of the queue, uncounted.
func requeueLocked(fs *fnState, fc *fnContainer) {
	for iid, qi := range fc.inflight {
		delete(fc.inflight, iid)
		if fs == nil || qi.cancelled {
			continue
		}
		qi.attempts--
		qi.container = ""
		fs.queue = append([]*queuedInput{qi}, fs.queue...)
	}
}

// failLocked retries a failed input if its retries allow, or finishes it.
func (d *dispatcher) failLocked(fs *fnState, qi *queuedInput, status, msg, tb string, exc []byte) *function.Input {
	if qi.cancelled {
		return nil
	}
	if fs != nil && fs.fn.State != function.StateStopped && qi.attempts <= fs.fn.Spec.Retries.MaxRetries {
		qi.container = ""
		qi.notBefore = time.Now().Add(fs.fn.Spec.Retries.Delay(qi.attempts))
		fs.delayed = append(fs.delayed, qi)
		return nil
	}
	in := d.finishLocked(qi, status, nil, "", msg, tb, exc)
	return &in
}

// finishLocked ends an input: its output joins the call's stream, and is returned for the
// store.
func (d *dispatcher) finishLocked(qi *queuedInput, status string, data []byte, format, msg, tb string, exc []byte) function.Input {
	delete(d.inputs, qi.in.ID)
	now := time.Now().UTC()
	if format == "" {
		format = qi.in.Format
	}
	in := function.Input{ID: qi.in.ID, CallID: qi.callID, Index: qi.index, Status: status, Attempts: qi.attempts,
		Result: data, Format: format, Error: msg, Traceback: tb, Exc: exc, DoneAt: &now, Seq: -1}
	if cs := d.calls[qi.callID]; cs != nil {
		in.Seq = cs.nextSeq
		cs.nextSeq++
		cs.open--
		cs.appendOutput(in)
	}
	return in
}

// persist queues outputs and log lines for the store. One writer commits whatever has gathered
// in one transaction (group commit): a transaction per output would cap throughput at the
// disk's. An output is in the call's stream before it is in the store; if the server dies in
// between, the input runs again (at least once).
func (d *dispatcher) persist(done []function.Input, logs []store.LogLine) {
	if len(done) == 0 && len(logs) == 0 {
		return
	}
	d.wmu.Lock()
	d.wDone = append(d.wDone, done...)
	d.wLogs = append(d.wLogs, logs...)
	d.wmu.Unlock()
	select {
	case d.wWake <- struct{}{}:
	default:
	}
}

// writeLoop is persist's writer. It outlives the dispatcher's context: outputs reported while
// the worker shuts down are still recorded.
func (d *dispatcher) writeLoop() {
	for range d.wWake {
		d.flushWrites()
	}
}

// flushWrites commits what persist gathered; it returns once it is in the store.
func (d *dispatcher) flushWrites() {
	d.wFlush.Lock()
	defer d.wFlush.Unlock()
	d.wmu.Lock()
	done, logs := d.wDone, d.wLogs
	d.wDone, d.wLogs = nil, nil
	d.wmu.Unlock()
	bg := context.Background()
	if err := d.s.store.FinishInputs(bg, done); err != nil {
		d.s.log.Printf("functions: recording %d output(s): %v", len(done), err)
	}
	if len(logs) > 0 {
		if err := d.s.store.AppendLogs(bg, logs); err != nil {
			d.s.log.Printf("functions: recording logs: %v", err)
		}
		d.mu.Lock()
		close(d.logsWake)
		d.logsWake = make(chan struct{})
		d.mu.Unlock()
	}
}

// handleEvents applies a worker's batch of events.
func (d *dispatcher) handleEvents(evs []workerproto.Event) {
	var done []function.Input
	var logs []store.LogLine
	now := time.Now().UTC()
	d.mu.Lock()
	for _, ev := range evs {
		fc := d.containers[ev.SandboxID]
		if fc == nil {
			continue
		}
		fs := d.fns[fc.fnID]
		if fs == nil {
			continue
		}
		switch ev.Type {
		case workerproto.EventReady:
			fc.ready = true
			fc.idleSince = time.Now()
			fs.startFailures = 0
		case workerproto.EventInitError:
			// The code does not import: every input waiting for this function fails with why.
			fs.startFailures++
			fs.retryStartAt = time.Now().Add(min(time.Duration(1<<min(fs.startFailures, 5))*time.Second, 30*time.Second))
			fs.reason = "the function's module failed to import: " + ev.Error
			msg := "the function's code failed to import in its container: " + ev.Error
			for _, qi := range append(fs.queue, mapsValues(fc.inflight)...) {
				if !qi.cancelled {
					done = append(done, d.finishLocked(qi, function.InputFailure, nil, "", msg, ev.Traceback, nil))
				}
			}
			fs.queue = nil
			fc.inflight = map[string]*queuedInput{}
			logs = append(logs, store.LogLine{AppID: fs.fn.AppID, FunctionID: fs.fn.ID, Stream: "stderr", Data: ev.Traceback, Time: now})
		case workerproto.EventLog:
			ll := store.LogLine{AppID: fs.fn.AppID, FunctionID: fs.fn.ID, InputID: ev.InputID, Stream: ev.Stream, Data: string(ev.Data), Time: now}
			logs = append(logs, ll)
			if qi := d.inputs[ev.InputID]; qi != nil {
				if cs := d.calls[qi.callID]; cs != nil {
					b, _ := json.Marshal(map[string]any{"log": map[string]any{"index": qi.index, "stream": ev.Stream, "data": string(ev.Data)}})
					cs.append(append(b, '\n'))
				}
			}
		case workerproto.EventItem:
			if qi := d.inputs[ev.InputID]; qi != nil && !qi.cancelled {
				if cs := d.calls[qi.callID]; cs != nil {
					b, _ := json.Marshal(map[string]any{"item": map[string]any{"index": qi.index, "data": ev.Data, "format": ev.Format}})
					cs.append(append(b, '\n'))
				}
			}
		case workerproto.EventOutput:
			qi := fc.inflight[ev.InputID]
			if qi == nil {
				continue
			}
			delete(fc.inflight, ev.InputID)
			if len(fc.inflight) == 0 {
				fc.idleSince = time.Now()
			}
			if qi.cancelled {
				continue
			}
			if ev.Status != workerproto.StatusNotStarted && ev.Runtime > 0 {
				run := time.Duration(ev.Runtime * float64(time.Second))
				if fs.avgRun == 0 {
					fs.avgRun = run
				} else {
					fs.avgRun = (4*fs.avgRun + run) / 5
				}
			}
			switch ev.Status {
			case function.InputSuccess:
				done = append(done, d.finishLocked(qi, function.InputSuccess, ev.Data, ev.Format, "", "", nil))
			case workerproto.StatusNotStarted:
				// Held on the worker and never begun (its container ended first): not an
				// attempt.
				qi.attempts--
				qi.container = ""
				fs.queue = append([]*queuedInput{qi}, fs.queue...)
			case function.InputTimeout:
				// The worker is killing the container: send it nothing more.
				fc.stopping = true
				if f := d.failLocked(fs, qi, function.InputTimeout, ev.Error, "", nil); f != nil {
					done = append(done, *f)
				}
			default: // failure, crashed
				if f := d.failLocked(fs, qi, function.InputFailure, ev.Error, ev.Traceback, ev.Exc); f != nil {
					done = append(done, *f)
				}
			}
		}
	}
	d.mu.Unlock()
	d.persist(done, logs)
	d.wake()
}

func mapsValues(m map[string]*queuedInput) []*queuedInput {
	out := make([]*queuedInput, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// enqueue records a call's new inputs and queues them.
func (d *dispatcher) enqueue(ctx context.Context, cs *callState, fs *fnState, args []workerproto.Input) (first int, err error) {
	cs.addMu.Lock()
	defer cs.addMu.Unlock()
	d.mu.Lock()
	call := cs.call
	d.mu.Unlock()
	first = call.Count
	call.Count += len(args)
	now := time.Now().UTC()
	ins := make([]function.Input, len(args))
	for i, a := range args {
		ins[i] = function.Input{ID: ids.New(ids.Input), CallID: call.ID, FunctionID: call.FunctionID, Index: first + i,
			Args: a.Args, Format: a.Format, Status: function.InputPending, Seq: -1, CreatedAt: now}
	}
	if err := d.s.store.AddInputs(ctx, call, ins); err != nil {
		return 0, err
	}
	d.mu.Lock()
	cs.call.Count = call.Count
	cs.open += len(ins)
	for _, in := range ins {
		qi := &queuedInput{in: workerproto.Input{ID: in.ID, CallID: call.ID, Args: in.Args, Format: in.Format, Method: call.Method},
			callID: call.ID, index: in.Index, fnID: call.FunctionID}
		if call.Params != nil {
			qi.in.Params = &workerproto.Payload{Data: call.Params.Data, Format: call.Params.Format}
		}
		d.inputs[in.ID] = qi
		if call.Cancelled || fs.fn.State == function.StateStopped {
			d.finishLocked(qi, function.InputTerminated, nil, "", "the call was cancelled or its function stopped", "", nil)
			continue
		}
		fs.queue = append(fs.queue, qi)
	}
	d.mu.Unlock()
	d.wake()
	return first, nil
}

// fireSchedule makes the input of one scheduled run: no arguments.
func (d *dispatcher) fireSchedule(fn function.Function) {
	ctx := context.Background()
	d.mu.Lock()
	fs := d.fns[fn.ID]
	d.mu.Unlock()
	if fs == nil {
		return
	}
	cs := d.newCall(function.Call{ID: ids.New(ids.FunctionCall), FunctionID: fn.ID, Kind: "schedule", CreatedAt: time.Now().UTC()})
	if _, err := d.enqueue(ctx, cs, fs, []workerproto.Input{{Args: emptyPickledArgs, Format: function.FormatPickle}}); err != nil {
		d.s.log.Printf("schedule of %s: %v", fn.Name, err)
	}
}

// emptyPickledArgs is pickle.dumps(((), {}), protocol=4): a call with no arguments.
var emptyPickledArgs = []byte("\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00)}\x94\x86\x94.")

func (d *dispatcher) newCall(call function.Call) *callState {
	cs := &callState{call: call, changed: make(chan struct{}), lastUsed: time.Now()}
	d.mu.Lock()
	d.calls[call.ID] = cs
	d.mu.Unlock()
	return cs
}

// stopFunctions stops functions for good, in the store first: queued and running inputs end
// terminated, and their containers go.
func (d *dispatcher) stopFunctions(ids []string, why string) error {
	for _, id := range ids {
		if err := d.s.store.SetFunctionState(context.Background(), id, function.StateStopped); err != nil {
			return fmt.Errorf("stopping function %s: %w", id, err)
		}
	}
	var done []function.Input
	var stops []string
	d.mu.Lock()
	for _, id := range ids {
		fs := d.fns[id]
		if fs == nil {
			continue
		}
		fs.fn.State = function.StateStopped
		for _, qi := range append(fs.queue, fs.delayed...) {
			done = append(done, d.finishLocked(qi, function.InputTerminated, nil, "", why, "", nil))
		}
		fs.queue, fs.delayed = nil, nil
		for _, c := range fs.containers {
			for _, qi := range c.inflight {
				if !qi.cancelled {
					qi.cancelled = true
					done = append(done, d.finishLocked(qi, function.InputTerminated, nil, "", why, "", nil))
				}
			}
			if !c.stopping {
				c.stopping = true
				stops = append(stops, c.id)
			}
		}
		fs.reason = "stopped: " + why
		delete(d.fns, id)
	}
	d.mu.Unlock()
	d.persist(done, nil)
	var wg sync.WaitGroup
	for _, id := range stops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.s.terminate(context.Background(), id, sandbox.Terminated, why)
		}()
	}
	wg.Wait()
	return nil
}

// stats is what `gust app` shows per function.
type fnStats struct {
	Pending        int    `json:"pending"`
	Running        int    `json:"running"`
	Containers     int    `json:"containers"`
	Starting       int    `json:"starting"`
	IdleContainers int    `json:"idle_containers"`
	Reason         string `json:"reason"`
}

func (d *dispatcher) stats(id string) fnStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	fs := d.fns[id]
	if fs == nil {
		return fnStats{Reason: "stopped"}
	}
	st := fnStats{Pending: len(fs.queue) + len(fs.delayed), Reason: fs.reason}
	for _, c := range fs.containers {
		if c.stopping {
			continue
		}
		st.Containers++
		st.Running += len(c.inflight)
		switch {
		case !c.ready:
			st.Starting++
		case len(c.inflight) == 0:
			st.IdleContainers++
		}
	}
	return st
}

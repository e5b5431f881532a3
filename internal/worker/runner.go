package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// runner is the worker's end of one function container's runner.
type runner struct {
	fn   workerproto.FunctionRun
	proc Process

	mu    sync.Mutex
	state runnerState // runnerLifecycle
	// wasReady is history, not state: whether the runner ever said ready. Its exit before that
	// is an init error, whichever state the worker has moved it to since.
	wasReady bool
	timers   map[string]*time.Timer // inputs in flight, with their timeout
	started  map[string]time.Time   // when each was handed to the runner
	held     []workerproto.Input    // inputs waiting for a free slot (the server prefetches)
	stderr   bytes.Buffer           // the runner's own stderr before it took over fd 2
}

// moveLocked moves r along runnerLifecycle; r.mu is held.
func (r *runner) moveLocked(to runnerState) error {
	if err := runnerLifecycle.Move(&r.state, to); err != nil {
		return fmt.Errorf("function %s: %w", r.fn.FunctionID, err)
	}
	return nil
}

// open reports whether inputs may start in the runner.
func (r *runner) open() bool { return r.state == runnerStarting || r.state == runnerReady }

// runnerConfig is the runner's command-line argument.
type runnerConfig struct {
	Module    string `json:"module"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	MaxInputs int    `json:"max_inputs"`
	// ModalCompat: the runner makes `import modal` resolve to gust before importing Module.
	ModalCompat bool `json:"modal_compat,omitempty"`
}

// startRunner starts the runner as the container's main process and follows its output.
func (w *Worker) startRunner(b *box, c Container, fn *workerproto.FunctionRun) error {
	cfg, err := json.Marshal(runnerConfig{Module: fn.Module, Name: fn.Name, Kind: fn.Kind, MaxInputs: fn.MaxInputs, ModalCompat: fn.ModalCompat})
	if err != nil {
		return fmt.Errorf("encoding the runner's configuration: %w", err)
	}
	cwd := codeMount
	if b.spec.Workdir != "" {
		cwd = b.spec.Workdir
	}
	extra := map[string]string{"GUST_CONTAINER_ID": b.spec.ID, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
	if w.apiDir != "" {
		// The SDK in the container calls other functions through the worker's socket, with
		// the container's own credential (GUST_TOKEN_ID and GUST_TOKEN_SECRET in its spec).
		extra["GUST_SERVER_URL"] = "unix://" + apiSocketMount + "/api.sock"
	}
	// Exec under b.mu: if the container ends at once, its end then finds its main process.
	b.mu.Lock()
	defer b.mu.Unlock()
	// Followed: the runner's output is its protocol, read here as it comes; none may be dropped.
	p, err := c.Exec(initproto.ExecRequest{Argv: []string{"python3", "-u", "-c", runnerBoot, string(cfg)}, Env: b.env(extra), Cwd: cwd,
		Main: true, Followed: true, User: b.spec.User}, 0)
	if err != nil {
		return err
	}
	b.execs["main"] = p
	r := &runner{fn: *fn, proc: p, state: runnerStarting, timers: map[string]*time.Timer{}, started: map[string]time.Time{}}
	// Follow it even if the container is ending already: a runner that dies at once still
	// says why (an init error).
	go w.followRunner(b, r)
	if b.state != boxStarting {
		return fmt.Errorf("the container was ended (%s) while its runner started", b.state)
	}
	b.runner = r
	return nil
}

// runnerMsg is one line from the runner.
type runnerMsg struct {
	Type      workerproto.EventType    `json:"type"`
	ID        *string                  `json:"id"`
	Stream    string                   `json:"stream"`
	Data      *string                  `json:"data"`
	Format    string                   `json:"format"`
	Status    workerproto.OutputStatus `json:"status"`
	Error     string                   `json:"error"`
	Traceback string                   `json:"traceback"`
	Exc       *string                  `json:"exc"`
}

// maxRunnerLine bounds one line from the runner: the largest result, base64, and its JSON.
const maxRunnerLine = maxEventBytes/3*4 + 1<<20

// followRunner reads the runner's output until it exits.
func (w *Worker) followRunner(b *box, r *runner) {
	var partial []byte
	for {
		chunks, exit, err := r.proc.Next(context.Background())
		if err != nil {
			w.log.Printf("function container %s: reading its runner: %v", b.spec.ID, err)
			return
		}
		for _, ch := range chunks {
			if ch.Stderr {
				r.mu.Lock()
				if r.stderr.Len() < 64<<10 {
					r.stderr.Write(ch.Data)
				}
				r.mu.Unlock()
				w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventLog, Stream: "stderr", Data: ch.Data})
				continue
			}
			// Look for line ends only in what just arrived: a result of many megabytes comes in
			// many chunks, and rescanning the whole line each time would be quadratic.
			scanned := len(partial)
			if len(partial)+len(ch.Data) > maxRunnerLine {
				// No protocol line is this long (the largest result is maxEventBytes, in base64):
				// something else writes to the runner's channel. Drop it rather than hold it.
				w.log.Printf("function container %s: dropped %d bytes of a line from its runner above %d MiB", b.spec.ID, len(partial), maxRunnerLine>>20)
				partial, scanned = nil, 0
			}
			partial = append(partial, ch.Data...)
			for {
				i := bytes.IndexByte(partial[scanned:], '\n')
				if i < 0 {
					break
				}
				i += scanned
				w.runnerLine(b, r, partial[:i])
				partial = partial[i+1:]
				scanned = 0
			}
		}
		if exit != nil {
			w.runnerExited(b, r, exit)
			return
		}
	}
}

// runnerExited reports an init error when the runner exited before it was ever ready.
func (w *Worker) runnerExited(b *box, r *runner, exit *initproto.ExitInfo) {
	r.mu.Lock()
	ready := r.wasReady
	tail := strings.TrimSpace(r.stderr.String())
	r.mu.Unlock()
	if ready {
		return
	}
	msg := fmt.Sprintf("the runner exited with code %d before it was ready", exit.ExitCode)
	if exit.ExitCode == 127 {
		msg = "the image has no python3: function images need Python (Image.debian_slim() has it)"
	}
	if tail != "" {
		msg += ": " + lastLines(tail, 5)
	}
	w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventInitError, Error: msg, Traceback: tail})
}

// b64 decodes a payload of the runner's; what is not base64 is no payload.
func b64(s *string) []byte {
	if s == nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(*s)
	if err != nil {
		return nil
	}
	return b
}

func (w *Worker) runnerLine(b *box, r *runner, line []byte) {
	var m runnerMsg
	if err := json.Unmarshal(line, &m); err != nil {
		// Not the protocol: something wrote to the runner's channel. Keep it as a log line.
		w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventLog, Stream: "stdout", Data: append(append([]byte(nil), line...), '\n')})
		return
	}
	id := ""
	if m.ID != nil {
		id = *m.ID
	}
	ev := workerproto.Event{ContainerID: b.spec.ID, Type: m.Type, InputID: id}
	switch m.Type {
	case workerproto.EventReady:
		r.mu.Lock()
		r.wasReady = true
		if r.state == runnerStarting {
			if err := r.moveLocked(runnerReady); err != nil {
				w.log.Printf("%v", err)
			}
		}
		r.mu.Unlock()
	case workerproto.EventInitError:
		ev.Error, ev.Traceback = m.Error, m.Traceback
	case workerproto.EventLog:
		ev.Stream = m.Stream
		if m.Data != nil {
			ev.Data = []byte(*m.Data)
		}
	case workerproto.EventItem:
		ev.Data, ev.Format = b64(m.Data), m.Format
		// A generator may yield faster than the server takes items: wait for room rather than
		// hold them all (this stops reading the runner, whose writes then block).
		w.events.pushWait(ev)
		return
	case workerproto.EventOutput:
		w.runnerOutput(b, r, id, m)
		return
	default:
		return
	}
	w.events.push(ev)
}

// runnerOutput passes an input's output on, and starts a held input in its slot.
func (w *Worker) runnerOutput(b *box, r *runner, id string, m runnerMsg) {
	r.mu.Lock()
	t, ok := r.timers[id]
	delete(r.timers, id)
	runtime := time.Since(r.started[id])
	delete(r.started, id)
	r.mu.Unlock()
	if !ok {
		return // timed out already, or settled when its container ended
	}
	t.Stop()
	w.events.push(workerproto.Event{
		ContainerID: b.spec.ID, Type: workerproto.EventOutput, InputID: id, Runtime: wire.Duration(runtime),
		Data: b64(m.Data), Format: m.Format, Status: m.Status, Error: m.Error, Traceback: m.Traceback, Exc: b64(m.Exc),
	})
	w.feedRunner(b, r)
}

// runnerInput is an input line for the runner.
type runnerInput struct {
	Type string `json:"type"`
	workerproto.Input
}

// sendInputs hands inputs to a container's runner. Inputs for a container that is gone come
// back as not started, so that the server runs them elsewhere.
func (w *Worker) sendInputs(containerID string, inputs []workerproto.Input) {
	var r *runner
	b := w.box(containerID)
	if b != nil {
		b.mu.Lock()
		if b.state != boxExited {
			r = b.runner
		}
		b.mu.Unlock()
	}
	held := false
	if r != nil {
		r.mu.Lock()
		if r.state != runnerExited {
			// A draining runner starts none of them; they come back not started when its
			// container ends.
			r.held = append(r.held, inputs...)
			held = true
		}
		r.mu.Unlock()
	}
	if !held {
		for _, in := range inputs {
			w.events.push(workerproto.Event{ContainerID: containerID, Type: workerproto.EventOutput, InputID: in.ID, Status: workerproto.StatusNotStarted})
		}
		return
	}
	w.feedRunner(b, r)
}

// feedRunner starts held inputs while the runner has free slots (max_inputs).
func (w *Worker) feedRunner(b *box, r *runner) {
	var buf bytes.Buffer
	timeout := r.fn.Timeout.D()
	r.mu.Lock()
	for r.open() && len(r.held) > 0 && len(r.timers) < max(r.fn.MaxInputs, 1) {
		in := r.held[0]
		r.held = r.held[1:]
		line, err := json.Marshal(runnerInput{Type: "input", Input: in})
		if err != nil {
			w.log.Printf("function container %s: encoding input %s: %v", b.spec.ID, in.ID, err)
			w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventOutput, InputID: in.ID,
				Status: workerproto.StatusFailure, Error: fmt.Sprintf("the worker could not encode the input: %v", err)})
			continue
		}
		buf.Write(line)
		buf.WriteByte('\n')
		id := in.ID
		r.timers[id] = time.AfterFunc(timeout, func() { w.inputTimedOut(b, r, id) })
		r.started[id] = time.Now()
	}
	r.mu.Unlock()
	if buf.Len() == 0 {
		return
	}
	if err := r.proc.WriteStdin(buf.Bytes()); err != nil {
		// The container is ending: its end settles these inputs as crashed.
		w.log.Printf("function container %s: writing inputs: %v", b.spec.ID, err)
	}
}

// release settles the inputs of a container that ended: those the runner was running crashed
// with it (an attempt each); those held for it never began, and the server runs them elsewhere
// without counting an attempt. When the worker itself is shutting down, the running ones are
// not at fault either: they stay open in the store and run again after the restart.
func (w *Worker) release(b *box, r *runner, why string) {
	r.mu.Lock()
	if err := r.moveLocked(runnerExited); err != nil {
		r.mu.Unlock()
		w.log.Printf("%v", err)
		return
	}
	held := r.held
	r.held = nil
	var running []string
	for id, t := range r.timers {
		t.Stop()
		running = append(running, id)
	}
	r.timers = map[string]*time.Timer{}
	r.started = map[string]time.Time{}
	r.mu.Unlock()
	msg := "the container running this input exited"
	if why != "" {
		msg += ": " + why
	}
	status := workerproto.StatusCrashed
	if w.stopping.Load() {
		status = workerproto.StatusNotStarted
	}
	for _, id := range running {
		w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventOutput, InputID: id, Status: status, Error: msg})
	}
	for _, in := range held {
		w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventOutput, InputID: in.ID, Status: workerproto.StatusNotStarted})
	}
}

// inputTimedOut fails an input that ran past the function's timeout and stops its container:
// the only sure way to stop Python code mid-call. Other inputs in it are retried by the server.
func (w *Worker) inputTimedOut(b *box, r *runner, id string) {
	r.mu.Lock()
	_, ok := r.timers[id]
	if ok {
		delete(r.timers, id)
		delete(r.started, id)
		if r.open() {
			// The container is about to be killed: start nothing more in it.
			if err := r.moveLocked(runnerDraining); err != nil {
				w.log.Printf("%v", err)
			}
		}
	}
	r.mu.Unlock()
	if !ok {
		return // its output came first
	}
	msg := fmt.Sprintf("FunctionTimeoutError: the input ran past the function's timeout of %s s", r.fn.Timeout)
	w.events.push(workerproto.Event{ContainerID: b.spec.ID, Type: workerproto.EventOutput, InputID: id, Status: workerproto.StatusTimeout, Error: msg})
	go w.terminate(b.spec.ID, sandbox.Terminated, "an input ran past the function's timeout")
}

// runnerStopWait is how long a stop waits for the runner's @exit hooks.
const runnerStopWait = 5 * time.Second

// stopRunner asks the runner to finish (it runs @exit hooks) and waits a little for it,
// unless an input timed out: then the container is being killed.
func (w *Worker) stopRunner(b *box, r *runner) {
	r.mu.Lock()
	graceful := r.open()
	if graceful {
		if err := r.moveLocked(runnerDraining); err != nil {
			w.log.Printf("%v", err)
		}
	}
	for _, t := range r.timers {
		t.Stop()
	}
	r.mu.Unlock()
	if !graceful {
		return
	}
	if err := r.proc.WriteStdin([]byte("{\"type\":\"shutdown\"}\n")); err != nil {
		w.log.Printf("function container %s: asking its runner to shut down: %v", b.spec.ID, err)
		return
	}
	if err := r.proc.CloseStdin(); err != nil {
		w.log.Printf("function container %s: closing its runner's stdin: %v", b.spec.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runnerStopWait)
	defer cancel()
	// A runner still busy after runnerStopWait is killed with its container: the wait's
	// deadline is the expected way out, not an error.
	_, _ = r.proc.Wait(ctx)
}

package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/reaper"
	"github.com/gust-run/gust/internal/workerproto"
	pythonsdk "github.com/gust-run/gust/sdk/python"
)

// A function container is a sandbox whose main process is the runner (gust._runner, from the
// Python SDK embedded in this binary): the worker writes inputs to its stdin and reads logs,
// generator items and outputs from its stdout, one JSON line each (docs/functions.md,
// "Runner"). This file is that conversation, per-input timeouts, and the batched events it
// produces for the server.

// Where the runner's pieces appear inside a function container.
const (
	sdkMount  = "/.gust/python"
	codeMount = "/.gust/app"
)

// runnerBoot puts the SDK and the user's code first on sys.path and runs the runner.
const runnerBoot = "import sys; sys.path[:0] = ['" + sdkMount + "', '" + codeMount + "']; import gust._runner as r; sys.exit(r.main())"

// runner is the worker's end of one container's runner.
type runner struct {
	fn      workerproto.FunctionRun
	proc    *container.Process
	mu      sync.Mutex
	ready   bool
	timers  map[string]*time.Timer // inputs in flight, with their timeout
	started map[string]time.Time   // when each was handed to the runner
	held    []workerproto.Input    // inputs waiting for a free slot (the server prefetches)
	// closed: an input timed out (the container is being killed) or the container ended.
	// Nothing more starts, and a stop does not wait for @exit hooks.
	closed bool
	stderr bytes.Buffer // the runner's own stderr before it took over fd 2
}

// functionMounts returns the read-only mounts of a function container: the SDK, the code, and
// (under runc) the directory of the worker's API socket.
func (w *Worker) functionMounts(fn *workerproto.FunctionRun, isolation string) ([]container.Mount, error) {
	w.sdkOnce.Do(func() {
		w.sdkDir, w.sdkErr = pythonsdk.Extract(filepath.Join(w.cfg.StateDir, "python"))
		if w.sdkErr == nil {
			w.compilePython(w.sdkDir)
		}
	})
	if w.sdkErr != nil {
		return nil, fmt.Errorf("unpacking the Python SDK for the runner: %w", w.sdkErr)
	}
	_, statErr := os.Stat(w.layers.LayerPath("code-" + fn.CodeBlob))
	code, _, err := w.layers.ExtractLayer(fn.CodeBlob, "/", "code-"+fn.CodeBlob)
	if err != nil {
		return nil, fmt.Errorf("unpacking the function's code: %w", err)
	}
	if statErr != nil {
		w.compilePython(code)
	}
	mounts := []container.Mount{{Source: w.sdkDir, Destination: sdkMount}, {Source: code, Destination: codeMount}}
	if w.apiDir != "" && isolation == container.IsolationRunc {
		// gVisor would need --host-uds=open to connect to it.
		mounts = append(mounts, container.Mount{Source: w.apiDir, Destination: apiSocketMount})
	}
	return mounts, nil
}

// compilePython writes bytecode next to Python sources that containers will see read-only,
// with this machine's python3 when it has one. A container whose Python has the same version
// (the usual case: both Debian's) then loads the SDK without compiling it at every cold start,
// which otherwise costs about 100 ms; other versions ignore the files.
func (w *Worker) compilePython(dir string) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return
	}
	if out, err := reaper.CombinedOutput(exec.Command(py, "-m", "compileall", "-q", "-j", "0", dir)); err != nil {
		w.log.Printf("precompiling %s (containers will compile it instead): %v: %s", dir, err, lastLines(string(out), 3))
	}
}

// startRunner starts the runner as the container's main process and follows its output.
func (w *Worker) startRunner(b *box, fn *workerproto.FunctionRun) error {
	cfg, _ := json.Marshal(map[string]any{"module": fn.Module, "name": fn.Name, "kind": fn.Kind, "max_inputs": fn.MaxInputs})
	cwd := codeMount
	if b.sb.Workdir != nil {
		cwd = *b.sb.Workdir
	}
	extra := map[string]string{"GUST_CONTAINER_ID": b.sb.ID, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
	if w.apiDir != "" && b.sb.Isolation == container.IsolationRunc {
		// The SDK in the container calls other functions through the worker's socket, which
		// adds the token itself.
		extra["GUST_SERVER_URL"] = "unix://" + apiSocketMount + "/api.sock"
		extra["GUST_TOKEN"] = "container"
	}
	env := b.env(extra)
	p, err := b.container.Exec(initproto.ExecRequest{Argv: []string{"python3", "-u", "-c", runnerBoot, string(cfg)}, Env: env, Cwd: cwd, Main: true, User: b.sb.User}, 0)
	if err != nil {
		return err
	}
	r := &runner{fn: *fn, proc: p, timers: map[string]*time.Timer{}, started: map[string]time.Time{}}
	b.mu.Lock()
	b.execs["main"] = p
	b.runner = r
	b.mu.Unlock()
	go w.followRunner(b, r)
	return nil
}

// runnerMsg is one line from the runner.
type runnerMsg struct {
	Type      string  `json:"type"`
	ID        *string `json:"id"`
	Stream    string  `json:"stream"`
	Data      *string `json:"data"`
	Format    string  `json:"format"`
	Status    string  `json:"status"`
	Error     string  `json:"error"`
	Traceback string  `json:"traceback"`
	Exc       *string `json:"exc"`
}

func (w *Worker) followRunner(b *box, r *runner) {
	var partial []byte
	for {
		chunks, exit, err := r.proc.Next(context.Background())
		if err != nil {
			return
		}
		for _, ch := range chunks {
			if ch.Stderr {
				r.mu.Lock()
				if r.stderr.Len() < 64<<10 {
					r.stderr.Write(ch.Data)
				}
				r.mu.Unlock()
				w.events.push(workerproto.Event{SandboxID: b.sb.ID, Type: workerproto.EventLog, Stream: "stderr", Data: ch.Data})
				continue
			}
			// Look for line ends only in what just arrived: a result of many megabytes comes in
			// many chunks, and rescanning the whole line each time would be quadratic.
			scanned := len(partial)
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
			r.mu.Lock()
			ready := r.ready
			tail := strings.TrimSpace(r.stderr.String())
			r.mu.Unlock()
			if !ready {
				msg := fmt.Sprintf("the runner exited with code %d before it was ready", exit.ExitCode)
				if exit.ExitCode == 127 {
					msg = "the image has no python3: function images need Python (Image.debian_slim() has it)"
				}
				if tail != "" {
					msg += ": " + lastLines(tail, 5)
				}
				w.events.push(workerproto.Event{SandboxID: b.sb.ID, Type: workerproto.EventInitError, Error: msg, Traceback: tail})
			}
			return
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

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
		w.events.push(workerproto.Event{SandboxID: b.sb.ID, Type: workerproto.EventLog, Stream: "stdout", Data: append(append([]byte(nil), line...), '\n')})
		return
	}
	id := ""
	if m.ID != nil {
		id = *m.ID
	}
	ev := workerproto.Event{SandboxID: b.sb.ID, Type: m.Type, InputID: id}
	switch m.Type {
	case workerproto.EventReady:
		r.mu.Lock()
		r.ready = true
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
	case workerproto.EventOutput:
		r.mu.Lock()
		t, ok := r.timers[id]
		delete(r.timers, id)
		ev.Runtime = time.Since(r.started[id]).Seconds()
		delete(r.started, id)
		r.mu.Unlock()
		if !ok {
			return // timed out already
		}
		t.Stop()
		ev.Data, ev.Format, ev.Status, ev.Error, ev.Traceback, ev.Exc = b64(m.Data), m.Format, m.Status, m.Error, m.Traceback, b64(m.Exc)
		w.events.push(ev)
		w.feedRunner(b, r)
		return
	default:
		return
	}
	w.events.push(ev)
}

// runnerInput is an input line for the runner.
type runnerInput struct {
	Type string `json:"type"`
	workerproto.Input
}

// sendInputs hands inputs to a container's runner. Inputs for a container that is gone come
// back as not started, so that the server runs them elsewhere.
func (w *Worker) sendInputs(a workerproto.Assignment) {
	b := w.box(a.SandboxID)
	var r *runner
	if b != nil {
		b.mu.Lock()
		r = b.runner
		if b.ended {
			r = nil
		}
		b.mu.Unlock()
	}
	if r == nil {
		for _, in := range a.Inputs {
			w.events.push(workerproto.Event{SandboxID: a.SandboxID, Type: workerproto.EventOutput, InputID: in.ID, Status: workerproto.StatusNotStarted})
		}
		return
	}
	r.mu.Lock()
	r.held = append(r.held, a.Inputs...)
	r.mu.Unlock()
	w.feedRunner(b, r)
}

// feedRunner starts held inputs while the runner has free slots (max_inputs).
func (w *Worker) feedRunner(b *box, r *runner) {
	var buf bytes.Buffer
	timeout := time.Duration(r.fn.Timeout * float64(time.Second))
	r.mu.Lock()
	for !r.closed && len(r.held) > 0 && len(r.timers) < max(r.fn.MaxInputs, 1) {
		in := r.held[0]
		r.held = r.held[1:]
		line, _ := json.Marshal(runnerInput{Type: "input", Input: in})
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
		w.log.Printf("function container %s: writing inputs: %v", b.sb.ID, err)
	}
}

// release settles the inputs of a container that ended: those the runner was running crashed
// with it (an attempt each); those held for it never began, and the server runs them elsewhere
// without counting an attempt. When the worker itself is shutting down, the running ones are
// not at fault either: they stay open in the store and run again after the restart.
func (w *Worker) release(b *box, r *runner, why string) {
	r.mu.Lock()
	r.closed = true
	held := r.held
	r.held = nil
	var running []string
	for id, t := range r.timers {
		t.Stop()
		running = append(running, id)
	}
	r.timers = map[string]*time.Timer{}
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
		w.events.push(workerproto.Event{SandboxID: b.sb.ID, Type: workerproto.EventOutput, InputID: id, Status: status, Error: msg})
	}
	for _, in := range held {
		w.events.push(workerproto.Event{SandboxID: b.sb.ID, Type: workerproto.EventOutput, InputID: in.ID, Status: workerproto.StatusNotStarted})
	}
}

// inputTimedOut fails an input that ran past the function's timeout and stops its container:
// the only sure way to stop Python code mid-call. Other inputs in it are retried by the server.
func (w *Worker) inputTimedOut(b *box, r *runner, id string) {
	r.mu.Lock()
	_, ok := r.timers[id]
	if ok {
		// The container is about to be killed: start nothing more in it.
		delete(r.timers, id)
		delete(r.started, id)
		r.closed = true
	}
	r.mu.Unlock()
	if !ok {
		return // its output came first
	}
	msg := fmt.Sprintf("FunctionTimeoutError: the input ran past the function's timeout of %s s", strconv.FormatFloat(r.fn.Timeout, 'f', -1, 64))
	w.events.push(workerproto.Event{SandboxID: b.sb.ID, Type: workerproto.EventOutput, InputID: id, Status: "timeout", Error: msg})
	go w.terminate(b.sb.ID, "terminated", "an input ran past the function's timeout")
}

// stopRunner asks the runner to finish (it runs @exit hooks) and waits a little for it,
// unless an input timed out.
func (w *Worker) stopRunner(r *runner) {
	r.mu.Lock()
	kill := r.closed
	for _, t := range r.timers {
		t.Stop()
	}
	r.mu.Unlock()
	if kill {
		return
	}
	r.proc.WriteStdin([]byte("{\"type\":\"shutdown\"}\n"))
	r.proc.CloseStdin()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.proc.Wait(ctx)
}

// eventQueue batches events for the server: whatever gathers while one POST is in flight goes
// in the next.
type eventQueue struct {
	w       *Worker
	mu      sync.Mutex
	pending []workerproto.Event
	wake    chan struct{}
	sendMu  sync.Mutex
}

func newEventQueue(w *Worker) *eventQueue {
	return &eventQueue{w: w, wake: make(chan struct{}, 1)}
}

func (q *eventQueue) push(ev workerproto.Event) {
	q.mu.Lock()
	q.pending = append(q.pending, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			q.flush()
			return
		case <-q.wake:
			q.flush()
		}
	}
}

// flush sends everything pending now, and returns once it is sent (or given up on).
func (q *eventQueue) flush() {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for i := 0; i < 50; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := q.w.call(ctx, http.MethodPost, "/v1/workers/"+q.w.id+"/events", workerproto.Events{Events: batch}, nil)
			cancel()
			if err == nil {
				break
			}
			q.w.log.Printf("sending %d function event(s): %v; retrying", len(batch), err)
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// detectGPUs lists the machine's NVIDIA GPUs through nvidia-smi; none without it.
func detectGPUs() []workerproto.GPU {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil
	}
	out, err := reaper.CombinedOutput(exec.Command(path, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"))
	if err != nil {
		return nil
	}
	var gpus []workerproto.GPU
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, mem, ok := strings.Cut(line, ",")
		if !ok {
			continue
		}
		m, _ := strconv.Atoi(strings.TrimSpace(mem))
		gpus = append(gpus, workerproto.GPU{Model: strings.TrimSpace(name), MemoryMiB: m})
	}
	return gpus
}

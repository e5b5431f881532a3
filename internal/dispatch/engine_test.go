package dispatch

import (
	"bytes"
	"context"
	"log"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// The engine's tests drive it step by step, without its loop, root or containers: a real
// SQLite store in a temporary directory, a fake placer that records what the engine asks of
// the fleet, and a clock the test moves.

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type sent struct {
	container string
	inputs    []workerproto.Input
}

// fakePlacer starts containers at once (or fails them with startErr) and records inputs sent
// and containers terminated. A terminated container ends, as the fleet would report.
type fakePlacer struct {
	e        *Engine
	mu       sync.Mutex
	workers  bool
	freeMiB  int
	startErr error
	created  []sandbox.Sandbox
	sends    []sent
	stopped  []string
	changed  chan struct{}
	// blockCreate makes Create wait, as for GPUs other containers hold, until its ctx ends.
	blockCreate bool
}

func newFakePlacer() *fakePlacer {
	return &fakePlacer{workers: true, freeMiB: 1 << 20, changed: make(chan struct{}, 100)}
}

func (p *fakePlacer) HasWorkers() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.workers }
func (p *fakePlacer) FreeMemoryMiB() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.freeMiB
}

func (p *fakePlacer) Create(ctx context.Context, sb sandbox.Sandbox, fn *workerproto.FunctionRun, placed func(string)) (sandbox.Sandbox, error) {
	p.mu.Lock()
	err, block := p.startErr, p.blockCreate
	if err == nil {
		p.created = append(p.created, sb)
	}
	p.mu.Unlock()
	defer p.signal()
	if block {
		<-ctx.Done()
		return sb, ctx.Err()
	}
	if err != nil {
		return sb, err
	}
	placed("wk-1")
	sb.Status = sandbox.Running
	return sb, nil
}

func (p *fakePlacer) Terminate(ctx context.Context, id string, status sandbox.Status, reason string) (sandbox.Sandbox, error) {
	p.mu.Lock()
	p.stopped = append(p.stopped, id)
	p.mu.Unlock()
	p.e.ContainerEnded(sandbox.Sandbox{ID: id, Status: status})
	p.signal()
	return sandbox.Sandbox{ID: id, Status: status}, nil
}

func (p *fakePlacer) SendInputs(workerID, containerID string, ins []workerproto.Input) {
	p.mu.Lock()
	p.sends = append(p.sends, sent{containerID, ins})
	p.mu.Unlock()
}

func (p *fakePlacer) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// takeSends returns the inputs sent since the last call.
func (p *fakePlacer) takeSends() []sent {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sends
	p.sends = nil
	return s
}

// waitFor polls cond (the engine starts containers in goroutines).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// lockedBuffer is the engine's log, read by tests while its goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type harness struct {
	t      *testing.T
	e      *Engine
	p      *fakePlacer
	clock  *fakeClock
	st     *store.Store
	fn     function.Function
	logBuf *lockedBuffer
}

// newHarness publishes one function with the spec changes mod makes.
func newHarness(t *testing.T, mod func(*function.Spec)) *harness {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	clock := &fakeClock{now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	p := newFakePlacer()
	logBuf := &lockedBuffer{}
	e := New(st, p, Config{Clock: clock, Logger: log.New(logBuf, "", 0)})
	p.e = e
	sp := function.Spec{Name: "f", ImageID: "im-1"}
	if mod != nil {
		mod(&sp)
	}
	sp.ApplyDefaults()
	if err := sp.Validate(64, 1<<20); err != nil {
		t.Fatal(err)
	}
	fn := function.Function{ID: "fu-1", AppID: "ap-1", WorkspaceID: "ws-default", Name: "f", Mode: function.ModeEphemeral, State: function.StateActive,
		Spec: sp, Code: function.Code{Blob: "b", Module: "m"}, CreatedAt: clock.Now()}
	if _, err := st.InsertFunctions(context.Background(), []function.Function{fn}, false); err != nil {
		t.Fatal(err)
	}
	e.Publish([]function.Function{fn}, nil)
	h := &harness{t: t, e: e, p: p, clock: clock, st: st, fn: fn, logBuf: logBuf}
	t.Cleanup(func() {
		if strings.Contains(logBuf.String(), "cannot go from") {
			t.Errorf("the engine attempted an illegal transition:\n%s", logBuf.String())
		}
	})
	return h
}

// call makes a map call with n inputs.
func (h *harness) call(n int) function.Call {
	h.t.Helper()
	call := h.e.NewCall(h.fn, CallMap, "", nil, "")
	args := make([]workerproto.Input, n)
	for i := range args {
		args[i] = workerproto.Input{Args: []byte("[1]"), Format: function.FormatJSON}
	}
	if _, err := h.e.Enqueue(context.Background(), call.ID, args); err != nil {
		h.t.Fatal(err)
	}
	return call
}

// readyContainer steps until the engine has started a container, and makes it ready.
func (h *harness) readyContainer() string {
	h.t.Helper()
	before := h.containerIDs()
	h.e.Step()
	var id string
	waitFor(h.t, "a container to start", func() bool {
		for _, c := range h.containerIDs() {
			if !contains(before, c) {
				id = c
				return h.workerOf(c) != ""
			}
		}
		return false
	})
	h.e.HandleEvents("wk-1", []workerproto.Event{{ContainerID: id, Type: workerproto.EventReady}})
	return id
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (h *harness) containerIDs() []string {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	var out []string
	for id := range h.e.containers {
		out = append(out, id)
	}
	return out
}

func (h *harness) workerOf(id string) string {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if c := h.e.containers[id]; c != nil {
		return c.workerID
	}
	return ""
}

func (h *harness) output(container, input string, status workerproto.OutputStatus) {
	h.e.HandleEvents("wk-1", []workerproto.Event{{ContainerID: container, Type: workerproto.EventOutput, InputID: input,
		Status: status, Data: []byte("2"), Format: function.FormatJSON, Runtime: wire.Duration(10 * time.Millisecond), Error: string(status)}})
}

// inputState returns an open input's state and attempts ("" once it is done).
func (h *harness) inputState(id string) (inputState, int) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if qi := h.e.inputs[id]; qi != nil {
		return qi.state, qi.attempts
	}
	return "", 0
}

// outputs reads a call's stream to its end (or a short timeout) and returns it.
func (h *harness) outputs(callID string, until int) string {
	h.t.Helper()
	h.e.FlushWrites()
	var buf bytes.Buffer
	if err := h.e.Stream(context.Background(), &buf, callID, 0, until, 200*time.Millisecond); err != nil {
		h.t.Fatal(err)
	}
	return buf.String()
}

func inputIDs(ss []sent) []string {
	var out []string
	for _, s := range ss {
		for _, in := range s.inputs {
			out = append(out, in.ID)
		}
	}
	return out
}

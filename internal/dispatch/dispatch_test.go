package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

func TestInputMachine(t *testing.T) {
	allowed := map[[2]inputState]bool{
		{inputQueued, inputRunning}: true, {inputQueued, inputHeld}: true, {inputQueued, inputDone}: true,
		{inputHeld, inputRunning}: true, {inputHeld, inputQueued}: true, {inputHeld, inputDelayed}: true, {inputHeld, inputDone}: true,
		{inputRunning, inputQueued}: true, {inputRunning, inputDelayed}: true, {inputRunning, inputDone}: true,
		{inputDelayed, inputQueued}: true, {inputDelayed, inputDone}: true,
	}
	for _, from := range inputMachine.States() {
		for _, to := range inputMachine.States() {
			if got := inputMachine.Can(from, to); got != allowed[[2]inputState{from, to}] {
				t.Errorf("input %s → %s allowed = %v", from, to, got)
			}
		}
	}
}

func TestContainerMachine(t *testing.T) {
	allowed := map[[2]containerState]bool{
		{containerStarting, containerReady}: true, {containerStarting, containerDraining}: true, {containerStarting, containerGone}: true,
		{containerReady, containerDraining}: true, {containerReady, containerGone}: true, {containerDraining, containerGone}: true,
	}
	for _, from := range containerMachine.States() {
		for _, to := range containerMachine.States() {
			if got := containerMachine.Can(from, to); got != allowed[[2]containerState{from, to}] {
				t.Errorf("container %s → %s allowed = %v", from, to, got)
			}
		}
	}
}

// From zero: a queued input starts a container, runs there once it is ready, and its output
// reaches the call's stream and the store.
func TestScaleFromZeroAndRun(t *testing.T) {
	h := newHarness(t, nil)
	call := h.call(1)
	c := h.readyContainer()
	if got := h.p.created[0]; got.FunctionID != h.fn.ID || got.Env["GUST_FUNCTION_ID"] != h.fn.ID || got.Timeout.D() != sandbox.MaxTimeout {
		t.Fatalf("container record %+v", got)
	}
	h.e.Step()
	sends := h.p.takeSends()
	if len(sends) != 1 || sends[0].container != c || len(sends[0].inputs) != 1 {
		t.Fatalf("sends %+v", sends)
	}
	in := sends[0].inputs[0].ID
	if st, attempts := h.inputState(in); st != inputRunning || attempts != 1 {
		t.Fatalf("input is %s after %d attempts, want running after 1", st, attempts)
	}
	h.output(c, in, workerproto.StatusSuccess)
	if out := h.outputs(call.ID, -1); !strings.Contains(out, `"status":"success"`) {
		t.Fatalf("stream %s", out)
	}
	outs, err := h.st.CallOutputs(context.Background(), call.ID, 0)
	if err != nil || len(outs) != 1 || outs[0].Status != function.InputSuccess || outs[0].Attempts != 1 {
		t.Fatalf("stored outputs %+v %v", outs, err)
	}
	info, _ := h.e.Call(context.Background(), call.ID)
	if info.Status() != "done" {
		t.Fatalf("call status %s", info.Status())
	}
}

// A container gets max_inputs inputs to run and more to hold on its worker (prefetch); an
// output starts the oldest held one, as the worker does.
func TestPrefetch(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) { sp.MaxContainers = ptr(1) })
	h.call(5)
	c := h.readyContainer()
	h.e.Step()
	got := inputIDs(h.p.takeSends())
	if len(got) != 2 {
		t.Fatalf("sent %d inputs, want 1 to run and 1 held", len(got))
	}
	if st, _ := h.inputState(got[0]); st != inputRunning {
		t.Fatalf("first input %s", st)
	}
	if st, _ := h.inputState(got[1]); st != inputHeld {
		t.Fatalf("second input %s", st)
	}
	h.output(c, got[0], workerproto.StatusSuccess)
	if st, _ := h.inputState(got[1]); st != inputRunning {
		t.Fatalf("held input did not start when the slot freed: %s", st)
	}
	// With the run time known (10 ms), the container may hold about 50 ms of work ahead.
	h.e.Step()
	if n := len(inputIDs(h.p.takeSends())); n != 3 {
		t.Fatalf("sent %d more, want the 3 left", n)
	}
}

// TestNoPrefetchToCallers: an input that calls its own function (recursion, a method calling
// another of its class) is not held ahead on the caller's busy container, where it would wait
// for the caller, which waits for it; it stays queued, and a new container starts for it.
func TestNoPrefetchToCallers(t *testing.T) {
	h := newHarness(t, nil)
	h.call(1)
	c := h.readyContainer()
	h.e.Step()
	if got := inputIDs(h.p.takeSends()); len(got) != 1 {
		t.Fatalf("sent %d inputs, want 1 to run", len(got))
	}
	nested := h.e.NewCall(h.fn, CallMap, "", nil, c) // made with c's credential
	if _, err := h.e.Enqueue(context.Background(), nested.ID, []workerproto.Input{{Args: []byte("[1]"), Format: function.FormatJSON}}); err != nil {
		t.Fatal(err)
	}
	before := h.containerIDs()
	h.e.Step()
	for _, s := range h.p.takeSends() {
		if s.container == c {
			t.Fatalf("the nested input was sent to its caller's busy container %s", c)
		}
	}
	if len(h.containerIDs()) <= len(before) {
		t.Fatalf("no container started for the nested input (containers %v)", h.containerIDs())
	}
}

// A failure is retried after its backoff, as an attempt; once retries are spent it fails.
func TestRetries(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) {
		sp.Retries = &function.Retries{MaxRetries: 1, BackoffCoefficient: 2, InitialDelay: wire.Duration(time.Second)}
	})
	call := h.call(1)
	c := h.readyContainer()
	h.e.Step()
	in := inputIDs(h.p.takeSends())[0]
	h.output(c, in, workerproto.StatusFailure)
	if st, attempts := h.inputState(in); st != inputDelayed || attempts != 1 {
		t.Fatalf("after a failure: %s, %d attempts", st, attempts)
	}
	h.e.Step()
	if len(h.p.takeSends()) != 0 {
		t.Fatal("retried before its backoff")
	}
	h.clock.advance(1100 * time.Millisecond)
	h.e.Step()
	if got := inputIDs(h.p.takeSends()); len(got) != 1 || got[0] != in {
		t.Fatalf("retry sent %v", got)
	}
	if _, attempts := h.inputState(in); attempts != 2 {
		t.Fatalf("attempts %d, want 2", attempts)
	}
	h.output(c, in, workerproto.StatusFailure)
	out := h.outputs(call.ID, -1)
	if !strings.Contains(out, `"status":"failure"`) {
		t.Fatalf("stream %s", out)
	}
	outs, _ := h.st.CallOutputs(context.Background(), call.ID, 0)
	if len(outs) != 1 || outs[0].Attempts != 2 {
		t.Fatalf("stored %+v", outs)
	}
}

// Inputs that a container never began (held when it ended, or still assigned when it went)
// run elsewhere without costing an attempt; the ones it was running when it crashed cost one.
func TestCrashAccounting(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) { sp.MaxContainers = ptr(1) })
	call := h.call(3)
	c := h.readyContainer()
	h.e.Step()
	got := inputIDs(h.p.takeSends()) // one running, one held
	h.output(c, got[1], workerproto.StatusNotStarted)
	if st, attempts := h.inputState(got[1]); st != inputQueued || attempts != 0 {
		t.Fatalf("a not-started input: %s, %d attempts", st, attempts)
	}
	h.output(c, got[0], workerproto.StatusCrashed)
	h.e.Step()
	again := inputIDs(h.p.takeSends())
	if len(again) == 0 {
		t.Fatal("nothing sent after the crash")
	}
	// The container ends with inputs still assigned: they are queued again, uncounted.
	h.e.ContainerEnded(sandbox.Sandbox{ID: c, FunctionID: h.fn.ID, Status: sandbox.Failed})
	for _, id := range again {
		if st, attempts := h.inputState(id); st != inputQueued || attempts != 0 {
			t.Fatalf("input %s of an ended container: %s, %d attempts", id, st, attempts)
		}
	}
	out := h.outputs(call.ID, 1)
	if !strings.Contains(out, `"status":"failure"`) || !strings.Contains(out, "crashed") {
		t.Fatalf("the crashed input should fail with its one attempt: %s", out)
	}
}

// Cancel ends queued inputs at once and running ones too; a running one's late output is
// dropped, and terminate_containers stops its container.
func TestCancel(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) { sp.MaxContainers = ptr(1) })
	call := h.call(4)
	c := h.readyContainer()
	h.e.Step()
	running := inputIDs(h.p.takeSends())[0]
	n, err := h.e.Cancel(context.Background(), call.ID, true)
	if err != nil || n != 4 {
		t.Fatalf("cancelled %d (%v), want 4", n, err)
	}
	waitFor(t, "the container to be stopped", func() bool {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return len(h.p.stopped) == 1 && h.p.stopped[0] == c
	})
	h.output(c, running, workerproto.StatusSuccess) // too late: dropped
	out := h.outputs(call.ID, -1)
	if strings.Count(out, `"status":"terminated"`) != 4 || strings.Contains(out, `"status":"success"`) {
		t.Fatalf("stream %s", out)
	}
	info, _ := h.e.Call(context.Background(), call.ID)
	if info.Status() != "cancelled" {
		t.Fatalf("status %s", info.Status())
	}
	if _, err := h.e.Enqueue(context.Background(), call.ID, []workerproto.Input{{Args: []byte("[1]"), Format: function.FormatJSON}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.outputs(call.ID, 5), "cancelled") {
		t.Fatal("an input added to a cancelled call should end at once")
	}
}

// An input past its timeout fails with timeout (no retries), and its container takes nothing
// more: it is being killed.
func TestInputTimeout(t *testing.T) {
	h := newHarness(t, nil)
	call := h.call(2)
	c := h.readyContainer()
	h.e.Step()
	in := inputIDs(h.p.takeSends())[0]
	h.output(c, in, workerproto.StatusTimeout)
	h.e.mu.Lock()
	state := h.e.containers[c].state
	h.e.mu.Unlock()
	if state != containerDraining {
		t.Fatalf("container %s after a timeout", state)
	}
	h.e.Step()
	for _, s := range h.p.takeSends() {
		if s.container == c {
			t.Fatal("sent inputs to a container that timed out")
		}
	}
	if out := h.outputs(call.ID, 1); !strings.Contains(out, `"status":"timeout"`) {
		t.Fatalf("stream %s", out)
	}
}

// Idle containers go after the scaledown window; min_containers stay.
func TestScaleDown(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) { sp.ScaledownWindow = wire.Duration(2 * time.Second) })
	h.call(1)
	c := h.readyContainer()
	h.e.Step()
	in := inputIDs(h.p.takeSends())[0]
	h.output(c, in, workerproto.StatusSuccess)
	h.e.Step()
	if len(h.p.stopped) != 0 {
		t.Fatal("stopped before the scaledown window")
	}
	h.clock.advance(3 * time.Second)
	h.e.Step()
	waitFor(t, "the idle container to stop", func() bool {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return len(h.p.stopped) == 1
	})
	waitFor(t, "the container to be gone", func() bool { return len(h.containerIDs()) == 0 })
}

func TestMinContainersAndNoWorkers(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) { sp.MinContainers = 2 })
	h.p.workers = false
	h.e.Step()
	if _, st := h.e.Describe(h.fn); len(h.containerIDs()) != 0 || !strings.Contains(st.Reason, "waiting for a worker") {
		t.Fatalf("started without workers: %+v", st)
	}
	h.p.workers = true
	h.e.Step()
	waitFor(t, "two warm containers", func() bool { return len(h.containerIDs()) == 2 })
}

// A container that cannot start fails the queued inputs with why, and the next start backs
// off.
func TestStartFailure(t *testing.T) {
	h := newHarness(t, nil)
	h.p.startErr = errors.New("no worker has gpu H100")
	call := h.call(2)
	h.e.Step()
	waitFor(t, "the inputs to fail", func() bool {
		info, _ := h.e.Call(context.Background(), call.ID)
		return info.Done == 2
	})
	if out := h.outputs(call.ID, -1); !strings.Contains(out, "could not start: no worker has gpu H100") {
		t.Fatalf("stream %s", out)
	}
	if _, st := h.e.Describe(h.fn); !strings.Contains(st.Reason, "failed to start") {
		t.Fatalf("reason %q", st.Reason)
	}
}

// A container lost with its worker while it started is not the function's failure: the inputs
// wait, and the next step starts another container.
func TestStartLostWithWorker(t *testing.T) {
	h := newHarness(t, nil)
	h.p.startErr = fmt.Errorf("sandbox sb-1 failed to start: its worker restarted: %w", sandbox.ErrWorkerLost)
	call := h.call(1)
	h.e.Step()
	waitFor(t, "the start to fail", func() bool { return len(h.containerIDs()) == 0 && strings.Contains(h.logBuf.String(), "did not start") })
	if info, _ := h.e.Call(context.Background(), call.ID); info.Done != 0 {
		t.Fatal("the input failed with its container's worker")
	}
	h.p.mu.Lock()
	h.p.startErr = nil
	h.p.mu.Unlock()
	c := h.readyContainer()
	h.e.Step()
	if got := inputIDs(h.p.takeSends()); len(got) != 1 {
		t.Fatalf("sent %v to %s, want the waiting input", got, c)
	}
}

// An ephemeral app whose client stops beating is stopped, and its inputs end.
func TestHeartbeatExpiry(t *testing.T) {
	h := newHarness(t, nil)
	h.e.mu.Lock()
	h.e.fns[h.fn.ID].fn.Heartbeat = true
	h.e.mu.Unlock()
	h.e.Step()
	call := h.call(1)
	if h.e.Heartbeat(h.fn.AppID, nil) != 1 {
		t.Fatal("heartbeat found no function")
	}
	h.clock.advance(2 * time.Minute)
	h.e.Step()
	waitFor(t, "the function to stop", func() bool {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		return h.e.fns[h.fn.ID] == nil
	})
	if out := h.outputs(call.ID, -1); !strings.Contains(out, "no heartbeat") {
		t.Fatalf("stream %s", out)
	}
	if _, err := h.e.Active(context.Background(), h.fn.ID); err == nil {
		t.Fatal("a stopped function still takes calls")
	}
}

// After a restart, open inputs are queued again with their attempts.
func TestLoadRequeuesOpenInputs(t *testing.T) {
	h := newHarness(t, nil)
	h.call(3)
	e2 := New(h.st, h.p, Config{Clock: h.clock, Logger: h.e.log})
	if err := e2.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	e2.mu.Lock()
	defer e2.mu.Unlock()
	if fs := e2.fns[h.fn.ID]; fs == nil || len(fs.queue) != 3 {
		t.Fatalf("loaded %+v", fs)
	}
}

func TestUpdateAutoscaler(t *testing.T) {
	h := newHarness(t, nil)
	zero := 0.0
	if _, err := h.e.UpdateAutoscaler(context.Background(), h.fn.ID, AutoscalerPatch{ScaledownWindow: &zero}, 2, 4096); err == nil {
		t.Fatal("a zero scaledown_window was accepted")
	}
	fn, err := h.e.UpdateAutoscaler(context.Background(), h.fn.ID, AutoscalerPatch{MinContainers: ptr(1)}, 2, 4096)
	if err != nil || fn.Spec.MinContainers != 1 {
		t.Fatalf("%+v %v", fn.Spec, err)
	}
	stored, err := h.st.GetFunction(context.Background(), h.fn.ID)
	if err != nil || stored.Spec.MinContainers != 1 {
		t.Fatalf("stored %+v %v", stored.Spec, err)
	}
}

func ptr[T any](v T) *T { return &v }

// A container speaks only for the inputs it holds, and a worker only for its own containers:
// a compromised function cannot put items (pickles the caller's SDK would load) or logs into
// another container's call, nor end its inputs.
func TestForgedEventsDropped(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) { sp.MinContainers = 2; sp.MaxContainers = ptr(2) })
	victimCall := h.call(1)
	h.e.Step()
	waitFor(t, "two containers", func() bool {
		cs := h.containerIDs()
		return len(cs) == 2 && h.workerOf(cs[0]) != "" && h.workerOf(cs[1]) != ""
	})
	cs := h.containerIDs()
	a, b := cs[0], cs[1]
	h.e.HandleEvents("wk-1", []workerproto.Event{{ContainerID: a, Type: workerproto.EventReady}, {ContainerID: b, Type: workerproto.EventReady}})
	h.e.Step()
	var victim, holder string
	for _, s := range h.p.takeSends() {
		if len(s.inputs) > 0 {
			victim, holder = s.inputs[0].ID, s.container
		}
	}
	attacker := a
	if holder == a {
		attacker = b
	}
	forged := []workerproto.Event{
		{ContainerID: attacker, Type: workerproto.EventItem, InputID: victim, Data: []byte("evil pickle"), Format: function.FormatPickle},
		{ContainerID: attacker, Type: workerproto.EventLog, InputID: victim, Stream: "stdout", Data: []byte("forged log")},
		{ContainerID: attacker, Type: workerproto.EventOutput, InputID: victim, Status: workerproto.StatusSuccess, Data: []byte("666"), Format: function.FormatJSON},
	}
	h.e.HandleEvents("wk-1", forged)
	// The holder's own worker name is wk-1 too; another worker naming the holder is refused.
	h.e.HandleEvents("wk-other", []workerproto.Event{
		{ContainerID: holder, Type: workerproto.EventItem, InputID: victim, Data: []byte("evil pickle"), Format: function.FormatPickle},
		{ContainerID: holder, Type: workerproto.EventOutput, InputID: victim, Status: workerproto.StatusSuccess, Data: []byte("666"), Format: function.FormatJSON},
	})
	if st, _ := h.inputState(victim); st != inputRunning {
		t.Fatalf("a forged output ended the input: %s", st)
	}
	h.output(holder, victim, workerproto.StatusSuccess)
	out := h.outputs(victimCall.ID, -1)
	if strings.Contains(out, `"item"`) || strings.Contains(out, "forged log") || strings.Contains(out, "666") {
		t.Fatalf("forged events reached the call's stream: %s", out)
	}
	if !strings.Contains(out, `"status":"success"`) {
		t.Fatalf("the real output is missing: %s", out)
	}
}

// A function's secrets (named and inline) go in the container record's SecretEnv, which the
// fleet sends to the worker and the store never writes; Env keeps the function's own env.
func TestContainerRecordSecrets(t *testing.T) {
	h := newHarness(t, func(sp *function.Spec) {
		sp.Env = map[string]string{"MINE": "env", "SHARED": "env"}
		sp.Secrets = []function.SecretRef{{Name: "api"}, {Env: map[string]string{"INLINE": "inline-value", "SHARED": "secret"}}}
	})
	if _, err := h.st.PutSecret(context.Background(), "ws-default", "api", map[string]string{"API_KEY": "named-value"}, false); err != nil {
		t.Fatal(err)
	}
	h.call(1)
	h.readyContainer()
	got := h.p.created[0]
	wantEnv := map[string]string{"MINE": "env", "SHARED": "env", "GUST_FUNCTION_ID": h.fn.ID, "GUST_IS_REMOTE": "1"}
	wantSecret := map[string]string{"API_KEY": "named-value", "INLINE": "inline-value", "SHARED": "secret"}
	if fmt.Sprint(got.Env) != fmt.Sprint(wantEnv) || fmt.Sprint(got.SecretEnv) != fmt.Sprint(wantSecret) {
		t.Fatalf("container record env %v secret env %v; want %v and %v", got.Env, got.SecretEnv, wantEnv, wantSecret)
	}
}

package worker

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// functionSpec is a function container whose runner runs maxInputs inputs at once, each for
// at most timeout.
func functionSpec(id string, maxInputs int, timeout time.Duration) workerproto.ContainerSpec {
	spec := sandboxSpec(id)
	spec.CPULimit = 0
	spec.Function = &workerproto.FunctionRun{
		FunctionID: "fu-1", Module: "app", Name: "f", Kind: "function", MaxInputs: maxInputs,
		CodeBlob: "c0de", Timeout: wire.Duration(timeout),
	}
	return spec
}

// startFunction creates a function container and waits for its runner to be ready.
func startFunction(t *testing.T, w *Worker, rt *fakeRuntime, srv *fakeServer, spec workerproto.ContainerSpec) *fakeRunner {
	t.Helper()
	n := len(srv.eventsOf(workerproto.EventReady))
	w.create(spec)
	waitFor(t, "the runner to be ready", func() bool { return len(srv.eventsOf(workerproto.EventReady)) > n })
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.runners[len(rt.runners)-1]
}

func input(id, args string) workerproto.Input {
	return workerproto.Input{ID: id, Args: []byte(args), Format: "pickle"}
}

// waitOutputs waits for the outputs of the inputs and returns them by input ID.
func waitOutputs(t *testing.T, srv *fakeServer, ids ...string) map[string]workerproto.Event {
	t.Helper()
	var outs map[string]workerproto.Event
	waitFor(t, "outputs of "+strings.Join(ids, ", "), func() bool {
		outs = srv.outputs()
		for _, id := range ids {
			if _, ok := outs[id]; !ok {
				return false
			}
		}
		return true
	})
	return outs
}

// TestPrefetch checks that inputs beyond max_inputs are held on the worker and fed to the
// runner, in order, as its slots free.
func TestPrefetch(t *testing.T) {
	rt := newFakeRuntime()
	w, srv := newTestWorker(t, rt, Config{})
	startEvents(t, w)
	fr := startFunction(t, w, rt, srv, functionSpec("sb-f", 2, 10*time.Second))
	ids := []string{"in-1", "in-2", "in-3", "in-4", "in-5"}
	var ins []workerproto.Input
	for _, id := range ids {
		ins = append(ins, input(id, "wait"))
	}
	w.sendInputs("sb-f", ins)
	waitFor(t, "two inputs in the runner", func() bool { return len(fr.received()) == 2 })
	time.Sleep(20 * time.Millisecond)
	if got := fr.received(); len(got) != 2 {
		t.Fatalf("the runner got %v with max_inputs 2 and none finished", got)
	}
	close(rt.hold)
	outs := waitOutputs(t, srv, ids...)
	for _, id := range ids {
		if outs[id].Status != workerproto.StatusSuccess {
			t.Errorf("%s: %s, want success", id, outs[id].Status)
		}
	}
	if got := fr.received(); !slices.Equal(got, ids) {
		t.Errorf("the runner got %v, want %v in order", got, ids)
	}
	if fr.peak() != 2 {
		t.Errorf("the runner ran %d inputs at once, want max_inputs 2", fr.peak())
	}
}

// TestOutputRuntime checks that an output carries its payload and how long the runner took.
func TestOutputRuntime(t *testing.T) {
	rt := newFakeRuntime()
	w, srv := newTestWorker(t, rt, Config{})
	startEvents(t, w)
	startFunction(t, w, rt, srv, functionSpec("sb-f", 1, 10*time.Second))
	w.sendInputs("sb-f", []workerproto.Input{input("in-1", "sleep:40ms")})
	out := waitOutputs(t, srv, "in-1")["in-1"]
	if out.Status != workerproto.StatusSuccess || string(out.Data) != "sleep:40ms" || out.Format != "pickle" {
		t.Errorf("output %+v, want success with the input's args as data", out)
	}
	if d := out.Runtime.D(); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("runtime %v, want about 40ms", d)
	}
	if out.ContainerID != "sb-f" {
		t.Errorf("container_id %q, want sb-f", out.ContainerID)
	}
}

// TestInputTimeout checks that an input running past the function's timeout comes back
// timeout and ends its container: the other running input crashed with it, the held one never
// started, and the server sees those outputs before the container's end.
func TestInputTimeout(t *testing.T) {
	rt := newFakeRuntime()
	w, srv := newTestWorker(t, rt, Config{})
	startEvents(t, w)
	startFunction(t, w, rt, srv, functionSpec("sb-f", 2, 200*time.Millisecond))
	w.sendInputs("sb-f", []workerproto.Input{input("in-a", "hang")})
	time.Sleep(50 * time.Millisecond)
	w.sendInputs("sb-f", []workerproto.Input{input("in-b", "hang"), input("in-c", "hang")})

	reports := endOf(t, srv, "sb-f")
	end := reports[len(reports)-1]
	if end.Status != sandbox.Terminated || *end.ExitCode != 137 || !strings.Contains(deref(end.Error), "ran past the function's timeout") {
		t.Errorf("end %s %v %q, want terminated 137 because an input timed out", end.Status, *end.ExitCode, deref(end.Error))
	}
	outs := waitOutputs(t, srv, "in-a", "in-b", "in-c")
	for id, want := range map[string]struct {
		status workerproto.OutputStatus
		err    string
	}{
		"in-a": {workerproto.StatusTimeout, "FunctionTimeoutError: the input ran past the function's timeout of 0.2 s"},
		"in-b": {workerproto.StatusCrashed, "the container running this input exited: an input ran past the function's timeout"},
		"in-c": {workerproto.StatusNotStarted, ""},
	} {
		if got := outs[id]; got.Status != want.status || !strings.Contains(got.Error, want.err) {
			t.Errorf("%s: %s %q, want %s %q", id, got.Status, got.Error, want.status, want.err)
		}
	}
	seq := srv.seq()
	if last := seq[len(seq)-1]; last != "state sb-f terminated" {
		t.Errorf("the server heard %v: the end must come after the outputs", seq)
	}
	if rt.removals("sb-f") == 0 {
		t.Error("the container was not removed")
	}
}

// TestInputsToGoneContainer checks that inputs for a container that is not running here come
// back not started.
func TestInputsToGoneContainer(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone func(t *testing.T, w *Worker, rt *fakeRuntime, srv *fakeServer)
	}{
		{"never here", func(*testing.T, *Worker, *fakeRuntime, *fakeServer) {}},
		{"ended", func(t *testing.T, w *Worker, rt *fakeRuntime, srv *fakeServer) {
			startFunction(t, w, rt, srv, functionSpec("sb-f", 1, time.Second))
			w.terminate("sb-f", sandbox.Terminated, "")
		}},
		{"a plain sandbox", func(t *testing.T, w *Worker, rt *fakeRuntime, srv *fakeServer) {
			w.create(sandboxSpec("sb-f"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newFakeRuntime()
			w, srv := newTestWorker(t, rt, Config{})
			startEvents(t, w)
			tc.gone(t, w, rt, srv)
			w.sendInputs("sb-f", []workerproto.Input{input("in-1", "ok"), input("in-2", "ok")})
			outs := waitOutputs(t, srv, "in-1", "in-2")
			for _, id := range []string{"in-1", "in-2"} {
				if outs[id].Status != workerproto.StatusNotStarted || outs[id].ContainerID != "sb-f" {
					t.Errorf("%s: %+v, want not_started from sb-f", id, outs[id])
				}
			}
		})
	}
}

// TestRunnerInitError checks that a runner dying before it is ready reports an init error
// with its stderr, and that its container ends with the runner's exit code.
func TestRunnerInitError(t *testing.T) {
	rt := newFakeRuntime()
	rt.runnerMode = "init-error"
	w, srv := newTestWorker(t, rt, Config{})
	startEvents(t, w)
	w.create(functionSpec("sb-f", 1, time.Second))
	reports := endOf(t, srv, "sb-f")
	if end := reports[len(reports)-1]; end.Status != sandbox.Finished || *end.ExitCode != 1 {
		t.Errorf("end %s %d, want finished 1", end.Status, *end.ExitCode)
	}
	waitFor(t, "an init error", func() bool { return len(srv.eventsOf(workerproto.EventInitError)) == 1 })
	ev := srv.eventsOf(workerproto.EventInitError)[0]
	if !strings.Contains(ev.Error, "the runner exited with code 1 before it was ready") || !strings.Contains(ev.Error, "No module named 'numpy'") {
		t.Errorf("init error %q, want the exit code and the stderr tail", ev.Error)
	}
	if !strings.Contains(ev.Traceback, "Traceback (most recent call last)") {
		t.Errorf("traceback %q, want the runner's stderr", ev.Traceback)
	}
}

// TestContainerCrash checks that a function container ending by itself settles its inputs:
// the running one crashed (with why), the held one not started.
func TestContainerCrash(t *testing.T) {
	rt := newFakeRuntime()
	w, srv := newTestWorker(t, rt, Config{})
	startEvents(t, w)
	fr := startFunction(t, w, rt, srv, functionSpec("sb-f", 1, 10*time.Second))
	w.sendInputs("sb-f", []workerproto.Input{input("in-1", "hang"), input("in-2", "ok")})
	waitFor(t, "the first input to run", func() bool { return len(fr.received()) == 1 })
	rt.container("sb-f").stop()

	reports := endOf(t, srv, "sb-f")
	if end := reports[len(reports)-1]; end.Status != sandbox.Finished || *end.ExitCode != 137 {
		t.Errorf("end %s %d, want finished 137 (its runner was killed)", end.Status, *end.ExitCode)
	}
	outs := waitOutputs(t, srv, "in-1", "in-2")
	if got := outs["in-1"]; got.Status != workerproto.StatusCrashed || got.Error != "the container running this input exited: the sandbox stopped" {
		t.Errorf("in-1: %s %q, want crashed because its container exited", got.Status, got.Error)
	}
	if got := outs["in-2"]; got.Status != workerproto.StatusNotStarted {
		t.Errorf("in-2: %s, want not_started", got.Status)
	}
	w.sendInputs("sb-f", []workerproto.Input{input("in-3", "ok")})
	if got := waitOutputs(t, srv, "in-3")["in-3"]; got.Status != workerproto.StatusNotStarted {
		t.Errorf("in-3, sent after the end: %s, want not_started", got.Status)
	}
}

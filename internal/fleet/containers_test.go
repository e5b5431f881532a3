package fleet

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// TestCreateSandbox follows a sandbox from Create to its worker and back: the spec the worker
// gets, the running record Create returns, and the capacity it holds until it ends.
func TestCreateSandbox(t *testing.T) {
	env := newTestEnv(t)
	wid := env.register(t, "a")
	w := &fakeWorker{create: runningReport}
	w.start(t, env.f, wid)

	req := env.newSandbox()
	idle := wire.Duration(30 * time.Second)
	req.IdleTimeout = &idle
	var placedOn string
	sb, err := env.f.Create(context.Background(), req, nil, func(id string) { placedOn = id })
	if err != nil {
		t.Fatal(err)
	}
	if placedOn != wid {
		t.Errorf("placed reported worker %q, want %s", placedOn, wid)
	}
	if sb.Status != sandbox.Running || sb.StartedAt == nil || sb.WorkerID != wid || !strings.HasPrefix(sb.ID, "sb-") {
		t.Fatalf("Create returned %s on %q (id %s, started %v), want running on %s", sb.Status, sb.WorkerID, sb.ID, sb.StartedAt, wid)
	}
	if got := env.get(t, sb.ID); got.Status != sandbox.Running {
		t.Fatalf("the store has it %s", got.Status)
	}

	a := w.next(t)
	if a.Op != workerproto.OpCreate || a.Container == nil {
		t.Fatalf("the worker got %+v, want a create", a)
	}
	spec := *a.Container
	wantEnv := map[string]string{"A": "im", "B": "sb", "C": "sb"} // the image's under the sandbox's own
	if spec.ID != sb.ID || spec.Isolation != sandbox.IsolationRunc || !slices.Equal(spec.ImageLayers, []string{"/l1"}) ||
		!maps.Equal(spec.Env, wantEnv) || spec.Workdir != "/w" || spec.User != "u" || spec.CPU != 2 || spec.CPULimit != 2 ||
		spec.MemoryMiB != 512 || spec.Timeout != wire.Duration(time.Minute) || spec.IdleTimeout != idle ||
		spec.Function != nil || spec.BuildEgress || len(spec.Command) != 0 {
		t.Fatalf("the worker was sent %+v", spec)
	}
	if r, m := env.f.counts(wid); r != 1 || m != 512 {
		t.Fatalf("the worker counts %d containers and %d MiB, want 1 and 512", r, m)
	}

	// Terminate asks the worker and returns once it reports the end.
	ended, err := env.f.Terminate(context.Background(), sb.ID, sandbox.Terminated, "")
	if err != nil {
		t.Fatal(err)
	}
	a = w.next(t)
	if a.Op != workerproto.OpTerminate || a.ContainerID != sb.ID || a.EndStatus != sandbox.Terminated {
		t.Fatalf("the worker got %+v, want a terminate of %s", a, sb.ID)
	}
	if ended.Status != sandbox.Terminated || ended.ExitCode == nil || *ended.ExitCode != sandbox.ExitTerminated || ended.FinishedAt == nil {
		t.Fatalf("Terminate returned %s with exit %v, want terminated with 137", ended.Status, ended.ExitCode)
	}
	if r, m := env.f.counts(wid); r != 0 || m != 0 {
		t.Fatalf("after the end the worker counts %d containers and %d MiB, want none", r, m)
	}
	if got := env.endedIDs(); len(got) != 0 {
		t.Fatalf("OnContainerEnd heard of sandboxes %v; it is for function containers", got)
	}
	env.mu.Lock()
	if len(env.anyIDs) != 1 || env.anyIDs[0] != sb.ID || env.anyEnded[0] != sandbox.Terminated {
		t.Fatalf("OnAnyEnd heard of %v (stored %v), want %s once its end was stored (the ingress closes its tunnels then)", env.anyIDs, env.anyEnded, sb.ID)
	}
	env.mu.Unlock()

	// Terminating an ended sandbox returns it as it is and asks the worker nothing.
	again, err := env.f.Terminate(context.Background(), sb.ID, sandbox.Timeout, "late")
	if err != nil || again.Status != sandbox.Terminated {
		t.Fatalf("terminating an ended sandbox: %s, %v", again.Status, err)
	}
	select {
	case a := <-w.seen:
		t.Fatalf("the worker got %+v for an ended sandbox", a)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestCreateSpecDefaults: the sandbox's own workdir wins over the image's, and an image
// without env leaves the sandbox's as it is.
func TestCreateSpecDefaults(t *testing.T) {
	env := newTestEnv(t)
	wid := env.register(t, "a")
	w := &fakeWorker{create: runningReport}
	w.start(t, env.f, wid)
	req := env.newSandbox()
	wd := "/mine"
	req.Workdir = &wd
	req.Command = []string{"sleep", "1"}
	if _, err := env.f.Create(context.Background(), req, nil, nil); err != nil {
		t.Fatal(err)
	}
	spec := w.next(t).Container
	if spec.Workdir != "/mine" || !slices.Equal(spec.Command, []string{"sleep", "1"}) {
		t.Fatalf("spec workdir %q command %v, want /mine and the sandbox's command", spec.Workdir, spec.Command)
	}
}

// TestCreateFunctionContainer: a function container keeps its preset ID, carries what its
// runner runs, gets its function's cpu limit (none: it may burst), and its end reaches the
// function engine.
func TestCreateFunctionContainer(t *testing.T) {
	for _, limit := range []float64{0, 3} {
		env := newTestEnv(t)
		wid := env.register(t, "a")
		w := &fakeWorker{create: runningReport}
		w.start(t, env.f, wid)
		req := env.newSandbox()
		req.ID, req.FunctionID, req.CPU, req.CPULimit = ids.New(ids.Sandbox), "fu-1", 1, limit
		run := &workerproto.FunctionRun{FunctionID: "fu-1", Module: "m", Name: "f", Kind: "function", MaxInputs: 1, CodeBlob: "abc"}
		sb, err := env.f.Create(context.Background(), req, run, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sb.ID != req.ID {
			t.Fatalf("a function container's preset ID %s became %s", req.ID, sb.ID)
		}
		spec := w.next(t).Container
		if spec.CPU != 1 || spec.CPULimit != limit || spec.Function == nil || *spec.Function != *run {
			t.Fatalf("spec cpu %v limit %v function %+v; want 1, %v and the run", spec.CPU, spec.CPULimit, spec.Function, limit)
		}
		if err := env.f.ReportState(context.Background(), wid, sb.ID, workerproto.StateReport{Status: sandbox.Finished, ExitCode: new(int)}); err != nil {
			t.Fatal(err)
		}
		if got := env.endedIDs(); !slices.Equal(got, []string{sb.ID}) {
			t.Fatalf("OnContainerEnd heard of %v, want %s", got, sb.ID)
		}
		if env.ended[0].Status != sandbox.Finished || env.ended[0].FunctionID != "fu-1" {
			t.Fatalf("OnContainerEnd was told %s of %q", env.ended[0].Status, env.ended[0].FunctionID)
		}
	}
}

// TestCreateFails: a worker's failed report makes Create fail with its reason, and gives the
// capacity back.
func TestCreateFails(t *testing.T) {
	env := newTestEnv(t)
	wid := env.register(t, "a")
	w := &fakeWorker{create: func(workerproto.ContainerSpec) *workerproto.StateReport {
		why, code := "runc: no such file", 1
		return &workerproto.StateReport{Status: sandbox.Failed, ExitCode: &code, Error: &why}
	}}
	w.start(t, env.f, wid)
	sb, err := env.f.Create(context.Background(), env.newSandbox(), nil, nil)
	if err == nil {
		t.Fatal("Create succeeded though the worker reported a failure")
	}
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "failed to start: runc: no such file") {
		t.Fatalf("error %q, want unavailable with the worker's reason", err)
	}
	if sb.Status != sandbox.Failed || env.get(t, sb.ID).Status != sandbox.Failed {
		t.Fatalf("the sandbox is %s, want failed", sb.Status)
	}
	if errors.Is(err, sandbox.ErrWorkerLost) {
		t.Fatal("a start the worker refused was marked as a lost worker")
	}
	if r, m := env.f.counts(wid); r != 0 || m != 0 {
		t.Fatalf("the worker counts %d containers and %d MiB after a failed start, want none", r, m)
	}
}

// TestCreateWorkerLost: a start that fails because its worker restarted is marked as a lost
// worker (sandbox.ErrWorkerLost), so that the function engine does not blame the function; a
// start the worker itself refused is not.
func TestCreateWorkerLost(t *testing.T) {
	env := newTestEnv(t)
	env.register(t, "a") // never polls: the start stays pending
	done := make(chan error, 1)
	go func() {
		_, err := env.f.Create(context.Background(), env.newSandbox(), nil, nil)
		done <- err
	}()
	waitFor(t, "the sandbox to be recorded", func() bool {
		sbs, err := env.st.ListSandboxes(context.Background(), storeAll)
		return err == nil && len(sbs) == 1
	})
	env.register(t, "a") // the worker restarted
	err := <-done
	if !errors.Is(err, sandbox.ErrWorkerLost) || !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "its worker restarted") {
		t.Fatalf("error %v, want a lost worker (unavailable) saying why", err)
	}
}

func TestCreateRefused(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	req := env.newSandbox()
	req.AppID = "ap-nothing"
	if _, err := env.f.Create(ctx, req, nil, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown app: %v, want not found", err)
	}
	req = env.newSandbox()
	req.ImageID = "im-nothing"
	if _, err := env.f.Create(ctx, req, nil, nil); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "resolve an image first") {
		t.Fatalf("unknown image: %v, want not found with a hint", err)
	}
	if _, err := env.f.Create(ctx, env.newSandbox(), nil, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("no worker: %v, want unavailable", err)
	}
	sbs, err := env.st.ListSandboxes(ctx, storeAll)
	if err != nil || len(sbs) != 0 {
		t.Fatalf("refused creates left records %v (%v)", sbs, err)
	}
}

// TestCreateClientGone: when the client goes away while its sandbox starts, the sandbox is
// terminated (nobody would know of it) and Create returns the context's error.
func TestCreateClientGone(t *testing.T) {
	env := newTestEnv(t)
	wid := env.register(t, "a")
	w := &fakeWorker{} // never reports a start
	w.start(t, env.f, wid)
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		sb  sandbox.Sandbox
		err error
	}
	got := make(chan result, 1)
	go func() {
		sb, err := env.f.Create(ctx, env.newSandbox(), nil, nil)
		got <- result{sb, err}
	}()
	created := w.next(t)
	cancel()
	r := <-got
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Create returned %v, want the context's error", r.err)
	}
	if a := w.next(t); a.Op != workerproto.OpTerminate || a.ContainerID != created.Container.ID {
		t.Fatalf("the worker got %+v, want a terminate of %s", a, created.Container.ID)
	}
	if st := env.get(t, created.Container.ID); st.Status != sandbox.Terminated {
		t.Fatalf("the abandoned sandbox is %s, want terminated", st.Status)
	}
}

// TestTerminateWorkerGone: a sandbox whose worker is gone ends at once with the status and
// reason asked for.
func TestTerminateWorkerGone(t *testing.T) {
	env := newTestEnv(t)
	sb := env.insert(t, "wk-gone", "fu-1", sandbox.Running)
	got, err := env.f.Terminate(context.Background(), sb.ID, sandbox.Timeout, "it ran too long")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != sandbox.Timeout || got.ExitCode == nil || *got.ExitCode != sandbox.ExitTerminated ||
		got.Error == nil || *got.Error != "it ran too long" || got.FinishedAt == nil {
		t.Fatalf("got %s, exit %v, error %v", got.Status, got.ExitCode, got.Error)
	}
	if st := env.get(t, sb.ID); st.Status != sandbox.Timeout {
		t.Fatalf("the store has it %s", st.Status)
	}
	if ended := env.endedIDs(); !slices.Equal(ended, []string{sb.ID}) {
		t.Fatalf("OnContainerEnd heard of %v", ended)
	}
	if _, err := env.f.Terminate(context.Background(), "sb-nothing", sandbox.Terminated, ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("terminate of an unknown sandbox: %v, want not found", err)
	}
}

// TestTerminateContext: a terminate whose worker does not confirm returns with its context.
func TestTerminateContext(t *testing.T) {
	env := newTestEnv(t)
	wid := env.register(t, "a")
	w := &fakeWorker{ignoreTerminate: true}
	w.start(t, env.f, wid)
	sb := env.insert(t, wid, "", sandbox.Running)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := env.f.Terminate(ctx, sb.ID, sandbox.Terminated, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	if a := w.next(t); a.Op != workerproto.OpTerminate {
		t.Fatalf("the worker got %+v", a)
	}
}

// TestReportState walks reports through the sandbox lifecycle: legal moves are recorded,
// illegal ones refused with a conflict and leave the record as it was.
func TestReportState(t *testing.T) {
	code := func(c int) *int { return &c }
	tests := []struct {
		name    string
		from    sandbox.Status
		report  workerproto.StateReport
		wantErr error // nil: the move is made
	}{
		{"start", sandbox.Pending, workerproto.StateReport{Status: sandbox.Running}, nil},
		{"exit", sandbox.Running, workerproto.StateReport{Status: sandbox.Finished, ExitCode: code(3)}, nil},
		{"fail before start", sandbox.Pending, workerproto.StateReport{Status: sandbox.Failed, ExitCode: code(1)}, nil},
		{"time out", sandbox.Running, workerproto.StateReport{Status: sandbox.Timeout, ExitCode: code(124)}, nil},
		{"start twice", sandbox.Running, workerproto.StateReport{Status: sandbox.Running}, errdefs.ErrConflict},
		{"back to pending", sandbox.Running, workerproto.StateReport{Status: sandbox.Pending}, errdefs.ErrConflict},
		{"a second end", sandbox.Finished, workerproto.StateReport{Status: sandbox.Terminated, ExitCode: code(137)}, errdefs.ErrConflict},
		{"start after the end", sandbox.Terminated, workerproto.StateReport{Status: sandbox.Running}, errdefs.ErrConflict},
		{"unknown status", sandbox.Running, workerproto.StateReport{Status: "exploded"}, errdefs.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t)
			wid := env.register(t, "a")
			sb := env.insert(t, wid, "", tt.from)
			changed := env.f.Watch(sb.ID)
			err := env.f.ReportState(context.Background(), wid, sb.ID, tt.report)
			got := env.get(t, sb.ID)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if got.Status != tt.from {
					t.Fatalf("a refused report moved the sandbox to %s", got.Status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tt.report.Status {
				t.Fatalf("the sandbox is %s, want %s", got.Status, tt.report.Status)
			}
			if tt.report.Status.Terminal() && (got.FinishedAt == nil || got.ExitCode == nil || *got.ExitCode != *tt.report.ExitCode) {
				t.Fatalf("an ended sandbox has finished %v and exit %v", got.FinishedAt, got.ExitCode)
			}
			if tt.report.Status == sandbox.Running && got.StartedAt == nil {
				t.Fatal("a started sandbox has no start time")
			}
			select {
			case <-changed:
			default:
				t.Fatal("watchers were not woken")
			}
		})
	}
	t.Run("unknown worker", func(t *testing.T) {
		env := newTestEnv(t)
		sb := env.insert(t, "wk-gone", "", sandbox.Running)
		err := env.f.ReportState(context.Background(), "wk-gone", sb.ID, workerproto.StateReport{Status: sandbox.Finished, ExitCode: new(int)})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("got %v, want not found", err)
		}
	})
	t.Run("unknown sandbox", func(t *testing.T) {
		env := newTestEnv(t)
		wid := env.register(t, "a")
		err := env.f.ReportState(context.Background(), wid, "sb-nothing", workerproto.StateReport{Status: sandbox.Running})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("got %v, want not found", err)
		}
	})
}

// TestFailLeftovers: what a previous run of the server left pending or running is failed;
// what ended stays as it ended.
func TestFailLeftovers(t *testing.T) {
	env := newTestEnv(t)
	pending := env.insert(t, "wk-old", "", sandbox.Pending)
	running := env.insert(t, "wk-old", "", sandbox.Running)
	fnc := env.insert(t, "wk-old", "fu-1", sandbox.Running)
	finished := env.insert(t, "wk-old", "", sandbox.Finished)
	if err := env.f.FailLeftovers(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []sandbox.Sandbox{pending, running, fnc} {
		got := env.get(t, sb.ID)
		if got.Status != sandbox.Failed || got.ExitCode == nil || *got.ExitCode != sandbox.ExitTerminated ||
			got.Error == nil || !strings.Contains(*got.Error, "server restarted") || got.FinishedAt == nil {
			t.Errorf("leftover %s: %s, exit %v, error %v", sb.ID, got.Status, got.ExitCode, got.Error)
		}
	}
	if got := env.get(t, finished.ID); got.Status != sandbox.Finished || got.Error != nil {
		t.Errorf("a finished sandbox became %s (%v)", got.Status, got.Error)
	}
}

// TestReportStateOnlyOwnContainers: a worker cannot end (or start) another worker's container.
func TestReportStateOnlyOwnContainers(t *testing.T) {
	env := newTestEnv(t)
	a := env.register(t, "a")
	b := env.register(t, "b")
	sb := env.insert(t, a, "", sandbox.Running)
	code := sandbox.ExitTerminated
	err := env.f.ReportState(context.Background(), b, sb.ID, workerproto.StateReport{Status: sandbox.Finished, ExitCode: &code})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("worker b ended worker a's sandbox: %v", err)
	}
	if got := env.get(t, sb.ID).Status; got != sandbox.Running {
		t.Fatalf("the sandbox is %s, want running", got)
	}
	if err := env.f.ReportState(context.Background(), a, sb.ID, workerproto.StateReport{Status: sandbox.Finished, ExitCode: &code}); err != nil {
		t.Fatalf("its own worker: %v", err)
	}
}

// TestCreateSecretEnvNotStored: a function container's secret environment reaches the worker,
// between the image's and the container's own, and never its stored record.
func TestCreateSecretEnvNotStored(t *testing.T) {
	env := newTestEnv(t)
	wid := env.register(t, "a")
	w := &fakeWorker{create: runningReport}
	w.start(t, env.f, wid)
	req := env.newSandbox() // own env B=sb C=sb over the image's A=im B=im
	req.ID, req.FunctionID = ids.New(ids.Sandbox), "fu-1"
	req.SecretEnv = map[string]string{"A": "secret-a", "B": "secret-b", "S": "secret-s"}
	sb, err := env.f.Create(context.Background(), req, &workerproto.FunctionRun{FunctionID: "fu-1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := w.next(t).Container
	// The function's own credential goes with it, and only its hash is kept.
	id, secret := spec.Env["GUST_TOKEN_ID"], spec.Env["GUST_TOKEN_SECRET"]
	tok, err := env.st.GetToken(context.Background(), id)
	if err != nil || !auth.Matches(tok.Hash, secret) || tok.Kind != auth.Container || tok.ContainerID != sb.ID {
		t.Fatalf("the container's credential %s is not stored as its own: %+v, %v", id, tok, err)
	}
	delete(spec.Env, "GUST_TOKEN_ID")
	delete(spec.Env, "GUST_TOKEN_SECRET")
	want := map[string]string{"A": "secret-a", "B": "sb", "C": "sb", "S": "secret-s"}
	if !maps.Equal(spec.Env, want) {
		t.Fatalf("the worker was sent env %v, want %v", spec.Env, want)
	}
	stored := env.get(t, sb.ID)
	if want := map[string]string{"A": "im", "B": "sb", "C": "sb"}; !maps.Equal(stored.Env, want) || stored.SecretEnv != nil {
		t.Fatalf("the stored record has env %v and secret env %v; want %v and none", stored.Env, stored.SecretEnv, want)
	}
	if sb.SecretEnv != nil {
		t.Fatalf("Create returned the secret env %v", sb.SecretEnv)
	}
}

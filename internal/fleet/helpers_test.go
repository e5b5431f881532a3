package fleet

import (
	"context"
	"io"
	"log"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// testEnv is a fleet over a real SQLite store in a temporary directory, with one app and one
// image ("im-1": layer /l1, env A=im B=im, workdir /w, user u).
type testEnv struct {
	f     *Fleet
	st    *store.Store
	appID string

	mu    sync.Mutex
	ended []sandbox.Sandbox // what OnContainerEnd was told
	// anyEnded is what OnAnyEnd was told, with the status the store held at the time.
	anyEnded []sandbox.Status
	anyIDs   []string
	// lost lists the containers OnLost was told of, and their stored status then.
	lost []string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	ctx := context.Background()
	app, err := st.LookupApp(ctx, "ws-default", "a", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(ctx, image.Image{ID: "im-1", Kind: "built", Hash: "h1", Layers: []string{"/l1"},
		Env: map[string]string{"A": "im", "B": "im"}, Workdir: "/w", User: "u", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	env := &testEnv{st: st, appID: app.ID}
	env.f = New(st, Config{Logger: log.New(io.Discard, "", 0)})
	env.f.OnContainerEnd(func(sb sandbox.Sandbox) {
		env.mu.Lock()
		env.ended = append(env.ended, sb)
		env.mu.Unlock()
	})
	env.f.OnAnyEnd(func(sb sandbox.Sandbox) {
		stored, err := st.GetSandbox(context.Background(), sb.ID)
		env.mu.Lock()
		defer env.mu.Unlock()
		if err != nil {
			t.Errorf("OnAnyEnd: reading %s: %v", sb.ID, err)
		}
		env.anyIDs, env.anyEnded = append(env.anyIDs, sb.ID), append(env.anyEnded, stored.Status)
	})
	env.f.OnLost(func(ctx context.Context, sb sandbox.Sandbox, why string) {
		stored, err := st.GetSandbox(ctx, sb.ID)
		env.mu.Lock()
		defer env.mu.Unlock()
		if err != nil || stored.Status != sandbox.Failed || why == "" {
			t.Errorf("OnLost(%s, %q): stored %s, %v; want its failure stored first, and a reason", sb.ID, why, stored.Status, err)
		}
		env.lost = append(env.lost, sb.ID)
	})
	return env
}

// lostIDs lists the containers OnLost was told about, sorted.
func (e *testEnv) lostIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(slices.Values(e.lost))
}

// endedIDs lists the containers OnContainerEnd was told about, in order.
func (e *testEnv) endedIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, sb := range e.ended {
		out = append(out, sb.ID)
	}
	return out
}

// register adds a worker that offers runc and gvisor with 4 cores and 4 GiB.
func (e *testEnv) register(t *testing.T, name string) string {
	t.Helper()
	resp, err := e.f.Register(workerproto.RegisterRequest{Name: name, APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://127.0.0.1:1", CPU: 4, MemoryMiB: 4096,
		Isolation: []string{sandbox.IsolationRunc, sandbox.IsolationGVisor}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.WorkerID == "" {
		t.Fatal("register gave no worker ID")
	}
	return resp.WorkerID
}

// newSandbox is a validated sandbox request of the test app's image.
func (e *testEnv) newSandbox() sandbox.Sandbox {
	return sandbox.Sandbox{AppID: e.appID, ImageID: "im-1", Isolation: sandbox.IsolationRunc, Status: sandbox.Pending,
		Timeout: wire.Duration(time.Minute), CPU: 2, MemoryMiB: 512, Tags: map[string]string{},
		Env: map[string]string{"B": "sb", "C": "sb"}}
}

// insert records a container as if a worker ran it.
func (e *testEnv) insert(t *testing.T, workerID, functionID string, status sandbox.Status) sandbox.Sandbox {
	t.Helper()
	sb := e.newSandbox()
	sb.ID, sb.WorkerID, sb.FunctionID, sb.Status, sb.CreatedAt = ids.New(ids.Sandbox), workerID, functionID, status, time.Now().UTC()
	if err := e.st.InsertSandbox(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	return sb
}

// get reads a container's record.
func (e *testEnv) get(t *testing.T, id string) sandbox.Sandbox {
	t.Helper()
	sb, err := e.st.GetSandbox(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// counts returns what the fleet counts on a worker: containers and promised memory.
func (f *Fleet) counts(id string) (running, reservedMiB int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wc := f.workers[id]
	if wc == nil {
		return -1, -1
	}
	return wc.running, wc.reservedMiB
}

// polling reports whether a long poll of the worker is in progress.
func (f *Fleet) polling(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	wc := f.workers[id]
	return wc != nil && wc.polling > 0
}

// waitFor polls cond until it holds or a few seconds pass.
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

// fakeWorker plays a worker against the fleet directly: it long-polls for assignments, hands
// each to seen, and answers creates with create's report (none if create is nil) and
// terminates with their end status and exit code 137 (unless ignoreTerminate).
type fakeWorker struct {
	seen            chan workerproto.Assignment
	create          func(spec workerproto.ContainerSpec) *workerproto.StateReport
	ignoreTerminate bool
}

func runningReport(workerproto.ContainerSpec) *workerproto.StateReport {
	return &workerproto.StateReport{Status: sandbox.Running}
}

// start runs the worker's loop until the test ends.
func (w *fakeWorker) start(t *testing.T, f *Fleet, workerID string) {
	t.Helper()
	if w.seen == nil {
		w.seen = make(chan workerproto.Assignment, 100)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			as, err := f.Assignments(ctx, workerID, 200*time.Millisecond)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("fake worker: assignments: %v", err)
				}
				return
			}
			for _, a := range as {
				w.seen <- a
				w.handle(ctx, t, f, workerID, a)
			}
		}
	}()
}

func (w *fakeWorker) handle(ctx context.Context, t *testing.T, f *Fleet, workerID string, a workerproto.Assignment) {
	var id string
	var rep *workerproto.StateReport
	switch a.Op {
	case workerproto.OpCreate:
		id = a.Container.ID
		if w.create != nil {
			rep = w.create(*a.Container)
		}
	case workerproto.OpTerminate:
		id = a.ContainerID
		if !w.ignoreTerminate {
			code := sandbox.ExitTerminated
			rep = &workerproto.StateReport{Status: a.EndStatus, ExitCode: &code}
		}
	}
	if rep == nil {
		return
	}
	if err := f.ReportState(ctx, workerID, id, *rep); err != nil && ctx.Err() == nil {
		t.Errorf("fake worker: report %s of %s: %v", rep.Status, id, err)
	}
}

// next returns the next assignment the worker saw.
func (w *fakeWorker) next(t *testing.T) workerproto.Assignment {
	t.Helper()
	select {
	case a := <-w.seen:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("the worker got no assignment")
	}
	return workerproto.Assignment{}
}

// storeAll lists every container, ended or not, function containers among them.
var storeAll = store.SandboxFilter{IncludeFinished: true, Functions: true}

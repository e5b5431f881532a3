package worker

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

// sandboxSpec is a plain sandbox with the default resources.
func sandboxSpec(id string, mods ...func(*workerproto.ContainerSpec)) workerproto.ContainerSpec {
	spec := workerproto.ContainerSpec{
		ID: id, Isolation: sandbox.IsolationRunc, ImageLayers: []string{"/layers/base"},
		CPU: sandbox.DefaultCPU, CPULimit: sandbox.DefaultCPU, MemoryMiB: sandbox.DefaultMemoryMiB,
		Timeout: wire.Duration(10 * time.Second),
	}
	for _, m := range mods {
		m(&spec)
	}
	return spec
}

// endOf waits for a container's end report and returns every report it got.
func endOf(t *testing.T, srv *fakeServer, id string) []workerproto.StateReport {
	t.Helper()
	waitFor(t, "the end of "+id, func() bool {
		for _, r := range srv.reportsFor(id) {
			if r.Status.Terminal() {
				return true
			}
		}
		return false
	})
	time.Sleep(20 * time.Millisecond) // room for a second report that must not come
	return srv.reportsFor(id)
}

func TestEndReport(t *testing.T) {
	exited := func(code int, msg string) Process {
		p := &fakeProcess{changed: make(chan struct{}), exited: make(chan struct{})}
		p.exit = &initproto.ExitInfo{ExitCode: code, Error: msg}
		return p
	}
	running := &fakeProcess{changed: make(chan struct{}), exited: make(chan struct{})}
	for _, tc := range []struct {
		name   string
		status sandbox.Status
		reason string
		main   Process
		want   sandbox.Status
		code   int
		err    string
	}{
		{"terminated", sandbox.Terminated, "", exited(0, ""), sandbox.Terminated, 137, ""},
		{"terminated with a reason", sandbox.Terminated, "the worker shut down", nil, sandbox.Terminated, 137, "the worker shut down"},
		{"timeout", sandbox.Timeout, "the sandbox reached its timeout of 1 s", exited(0, ""), sandbox.Timeout, 124, "the sandbox reached its timeout of 1 s"},
		{"finished", "", "", exited(3, ""), sandbox.Finished, 3, ""},
		{"finished killed", "", "", exited(137, "out of memory"), sandbox.Finished, 137, "out of memory"},
		{"main still running", "", "", running, sandbox.Finished, 137, ""},
		{"no main process", "", "", nil, sandbox.Failed, 137, "the sandbox's init process stopped unexpectedly"},
		{"failed by the server", sandbox.Failed, "the worker did not start the sandbox in time", exited(0, ""), sandbox.Failed, 137, "the worker did not start the sandbox in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := endReport(tc.status, tc.reason, tc.main)
			if st.Status != tc.want || st.ExitCode == nil || *st.ExitCode != tc.code {
				t.Fatalf("got %s with exit code %v, want %s with %d", st.Status, st.ExitCode, tc.want, tc.code)
			}
			if got := deref(st.Error); got != tc.err {
				t.Errorf("error %q, want %q", got, tc.err)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestSandboxEnds checks the state a sandbox reports for each way it can end, that it reports
// it once, and that its container is removed.
func TestSandboxEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    func(*workerproto.ContainerSpec)
		rt      func(*fakeRuntime)
		end     func(w *Worker, rt *fakeRuntime, id string)
		running bool // reported running before its end
		status  sandbox.Status
		code    int
		err     string // in the end's error
	}{
		{name: "finished", spec: command("exit", "3"), running: true, status: sandbox.Finished, code: 3},
		{name: "terminated", spec: command("sleep"), running: true, status: sandbox.Terminated, code: 137,
			end: func(w *Worker, _ *fakeRuntime, id string) { w.terminate(id, sandbox.Terminated, "") }},
		{name: "terminated at its end_status timeout", running: true, status: sandbox.Timeout, code: 124,
			end: func(w *Worker, _ *fakeRuntime, id string) { w.terminate(id, sandbox.Timeout, "") }},
		{name: "timeout", running: true, status: sandbox.Timeout, code: 124, err: "reached its timeout of 0.03 s",
			spec: func(s *workerproto.ContainerSpec) { s.Timeout = wire.Duration(30 * time.Millisecond) }},
		{name: "idle_timeout", running: true, status: sandbox.Timeout, code: 124, err: "idle for its idle_timeout of 0.02 s",
			spec: func(s *workerproto.ContainerSpec) { s.IdleTimeout = wire.Duration(20 * time.Millisecond) }},
		{name: "failed to create", status: sandbox.Failed, err: "creating the container: no space left",
			rt: func(rt *fakeRuntime) { rt.createErr = errors.New("no space left") }},
		{name: "failed to make its workdir", status: sandbox.Failed, err: "cannot create workdir /work: read-only",
			spec: func(s *workerproto.ContainerSpec) { s.Workdir = "/work" },
			rt:   func(rt *fakeRuntime) { rt.fileErr = "read-only file system" }},
		{name: "its init died", running: true, status: sandbox.Failed, code: 137, err: "init process stopped unexpectedly",
			end: func(_ *Worker, rt *fakeRuntime, id string) { rt.container(id).stop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newFakeRuntime()
			if tc.rt != nil {
				tc.rt(rt)
			}
			w, srv := newTestWorker(t, rt, Config{})
			spec := sandboxSpec("sb-1")
			if tc.spec != nil {
				tc.spec(&spec)
			}
			w.create(spec)
			if tc.end != nil {
				tc.end(w, rt, spec.ID)
			}
			reports := endOf(t, srv, spec.ID)
			want := 1
			if tc.running {
				want = 2
				if reports[0].Status != sandbox.Running {
					t.Errorf("first report %s, want running", reports[0].Status)
				}
			}
			if len(reports) != want {
				t.Fatalf("got %d reports %+v, want %d", len(reports), reports, want)
			}
			end := reports[len(reports)-1]
			if end.Status != tc.status {
				t.Errorf("ended %s, want %s", end.Status, tc.status)
			}
			if tc.code != 0 && (end.ExitCode == nil || *end.ExitCode != tc.code) {
				t.Errorf("exit code %v, want %d", end.ExitCode, tc.code)
			}
			if got := deref(end.Error); tc.err == "" && got != "" || !strings.Contains(got, tc.err) {
				t.Errorf("error %q, want %q", got, tc.err)
			}
			if rt.container(spec.ID) != nil && rt.removals(spec.ID) == 0 {
				t.Error("the container was not removed")
			}
		})
	}
}

func command(argv ...string) func(*workerproto.ContainerSpec) {
	return func(s *workerproto.ContainerSpec) { s.Command = argv }
}

// TestTerminateWhileStarting checks that a container terminated before it started reports
// its end once, never running, and is removed once the runtime hands it over.
func TestTerminateWhileStarting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(rt *fakeRuntime, spec *workerproto.ContainerSpec) (gate chan struct{})
		// started says the create has reached the point the case terminates at.
		started func(rt *fakeRuntime, id string) bool
	}{
		{"before the runtime made it",
			func(rt *fakeRuntime, _ *workerproto.ContainerSpec) chan struct{} {
				rt.createGate = make(chan struct{})
				return rt.createGate
			},
			func(rt *fakeRuntime, _ string) bool { return len(rt.entered) > 0 }},
		{"while its workdir is made",
			func(rt *fakeRuntime, spec *workerproto.ContainerSpec) chan struct{} {
				spec.Workdir = "/work"
				rt.fileGate = make(chan struct{})
				return rt.fileGate
			},
			func(rt *fakeRuntime, id string) bool { return rt.container(id) != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newFakeRuntime()
			spec := sandboxSpec("sb-1", command("sleep"))
			gate := tc.setup(rt, &spec)
			w, srv := newTestWorker(t, rt, Config{})
			created := make(chan struct{})
			go func() {
				w.create(spec)
				close(created)
			}()
			waitFor(t, "the create to start", func() bool { return tc.started(rt, spec.ID) })
			w.terminate(spec.ID, sandbox.Terminated, "")
			close(gate)
			<-created
			reports := endOf(t, srv, spec.ID)
			if len(reports) != 1 || reports[0].Status != sandbox.Terminated || *reports[0].ExitCode != 137 {
				t.Fatalf("reports %+v, want one: terminated with 137", reports)
			}
			if rt.container(spec.ID) == nil || rt.removals(spec.ID) == 0 {
				t.Error("the container the runtime made was not removed")
			}
		})
	}
}

// TestTerminateUnknown tells the server of a container it asked to end that is not here.
func TestTerminateUnknown(t *testing.T) {
	w, srv := newTestWorker(t, newFakeRuntime(), Config{})
	w.terminate("sb-gone", sandbox.Timeout, "")
	reports := srv.reportsFor("sb-gone")
	if len(reports) != 1 || reports[0].Status != sandbox.Timeout || *reports[0].ExitCode != 137 {
		t.Fatalf("reports %+v, want one: timeout with 137", reports)
	}
}

// fakeBuildNet is an image build container's network, counting its closes.
type fakeBuildNet struct {
	mu     sync.Mutex
	closes int
}

func (n *fakeBuildNet) NetNSPath() string { return "/proc/1/fd/9" }
func (n *fakeBuildNet) Env() map[string]string {
	return map[string]string{"http_proxy": "http://127.0.0.1:3128"}
}
func (n *fakeBuildNet) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closes++
	return nil
}
func (n *fakeBuildNet) closed() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closes
}

// TestBuildNet checks that an image build container joins the namespace of its egress proxy,
// that its processes are pointed at the proxy, and that the namespace is closed however the
// container ends.
func TestBuildNet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rt    func(*fakeRuntime) (gate chan struct{})
		end   func(w *Worker, rt *fakeRuntime, id string)
		made  bool // the runtime made the container
		noNet bool
	}{
		{name: "finished", made: true},
		{name: "terminated", made: true, end: func(w *Worker, _ *fakeRuntime, id string) { w.terminate(id, sandbox.Terminated, "") }},
		{name: "its init died", made: true, end: func(_ *Worker, rt *fakeRuntime, id string) { rt.container(id).stop() }},
		{name: "failed to create", rt: func(rt *fakeRuntime) chan struct{} { rt.createErr = errors.New("no space left"); return nil }},
		{name: "terminated while the runtime made it", made: true,
			rt: func(rt *fakeRuntime) chan struct{} { rt.createGate = make(chan struct{}); return rt.createGate },
			end: func(w *Worker, rt *fakeRuntime, id string) {
				waitFor(t, "the create to start", func() bool { return len(rt.entered) > 0 })
				w.terminate(id, sandbox.Terminated, "")
			}},
		{name: "no egress proxy on this worker", noNet: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newFakeRuntime()
			var gate chan struct{}
			if tc.rt != nil {
				gate = tc.rt(rt)
			}
			w, srv := newTestWorker(t, rt, Config{})
			n := &fakeBuildNet{}
			if !tc.noNet {
				w.buildNet = func(string) (BuildNet, error) { return n, nil }
			}
			spec := sandboxSpec("sb-1", command("exit", "0"), func(s *workerproto.ContainerSpec) { s.BuildEgress = true })
			if tc.end != nil {
				spec.Command = []string{"sleep"}
			}
			created := make(chan struct{})
			go func() { w.create(spec); close(created) }()
			if tc.end != nil {
				if gate == nil {
					waitFor(t, "the container", func() bool { return rt.container(spec.ID) != nil })
				}
				tc.end(w, rt, spec.ID)
			}
			if gate != nil {
				close(gate)
			}
			<-created
			end := endOf(t, srv, spec.ID)
			if tc.noNet {
				if last := end[len(end)-1]; last.Status != sandbox.Failed || !strings.Contains(deref(last.Error), "no egress proxy") {
					t.Fatalf("a build container on a worker without the proxy: %+v", last)
				}
				return
			}
			c := rt.container(spec.ID)
			if tc.made {
				if c == nil || c.opts.NetNSPath != "/proc/1/fd/9" {
					t.Fatalf("the container should join the proxy's namespace: %+v", c)
				}
				if rt.removals(spec.ID) == 0 {
					t.Error("the container was not removed")
				}
			}
			if c != nil && tc.name == "finished" {
				c.mu.Lock()
				env := c.procs[0].req.Env
				c.mu.Unlock()
				if !slices.Contains(env, "http_proxy=http://127.0.0.1:3128") {
					t.Errorf("the main process's env lacks the proxy: %v", env)
				}
			}
			waitFor(t, "the namespace to close", func() bool { return n.closed() > 0 })
		})
	}
}

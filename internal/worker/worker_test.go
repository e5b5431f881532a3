package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// allRemoved checks that every container the runtime made was removed.
func allRemoved(t *testing.T, rt *fakeRuntime) {
	t.Helper()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, id := range rt.created {
		if rt.removed[id] == 0 {
			t.Errorf("container %s was left behind", id)
		}
	}
}

// TestRunShutdown runs a worker against a fake server, and checks that stopping it terminates
// every container and reports the inputs it interrupted not started: they are not their fault.
func TestRunShutdown(t *testing.T) {
	rt := newFakeRuntime()
	w, srv := newTestWorker(t, rt, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	fn, plain := functionSpec("sb-f", 1, 10*time.Second), sandboxSpec("sb-p", command("sleep"))
	srv.assign <- []workerproto.Assignment{
		{Op: workerproto.OpCreate, Container: &fn},
		{Op: workerproto.OpCreate, Container: &plain},
	}
	waitFor(t, "the runner to be ready", func() bool { return len(srv.eventsOf(workerproto.EventReady)) == 1 })
	srv.assign <- []workerproto.Assignment{{Op: workerproto.OpInputs, ContainerID: "sb-f",
		Inputs: []workerproto.Input{input("in-1", "hang"), input("in-2", "ok")}}}
	waitFor(t, "the first input to run", func() bool { return len(rt.runner(0).received()) == 1 })
	waitFor(t, "the sandbox to run", func() bool { return len(srv.reportsFor("sb-p")) == 1 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	outs := srv.outputs()
	for _, id := range []string{"in-1", "in-2"} {
		if outs[id].Status != workerproto.StatusNotStarted {
			t.Errorf("%s: %s, want not_started", id, outs[id].Status)
		}
	}
	if !strings.Contains(outs["in-1"].Error, "the worker shut down") {
		t.Errorf("in-1: error %q, want it to say the worker shut down", outs["in-1"].Error)
	}
	for _, id := range []string{"sb-f", "sb-p"} {
		reports := srv.reportsFor(id)
		if len(reports) != 2 || reports[1].Status != sandbox.Terminated || deref(reports[1].Error) != "the worker shut down" {
			t.Errorf("%s: reports %+v, want running then terminated because the worker shut down", id, reports)
		}
	}
	srv.mu.Lock()
	registered := srv.registered
	srv.mu.Unlock()
	if registered != 1 {
		t.Errorf("registered %d times, want once", registered)
	}
	allRemoved(t, rt)
}

func TestPoolable(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*workerproto.ContainerSpec)
		want bool
	}{
		{"defaults", func(*workerproto.ContainerSpec) {}, true},
		{"with a command", command("sleep"), true},
		{"function", func(s *workerproto.ContainerSpec) { s.Function = &workerproto.FunctionRun{} }, false},
		{"gvisor", func(s *workerproto.ContainerSpec) { s.Isolation = sandbox.IsolationGVisor }, false},
		{"image build", func(s *workerproto.ContainerSpec) { s.BuildEgress = true }, false},
		{"more cpu", func(s *workerproto.ContainerSpec) { s.CPU, s.CPULimit = 2, 2 }, false},
		{"no cpu cap", func(s *workerproto.ContainerSpec) { s.CPULimit = 0 }, false},
		{"more memory", func(s *workerproto.ContainerSpec) { s.MemoryMiB = 2048 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := poolable(sandboxSpec("sb-1", tc.mod)); got != tc.want {
				t.Errorf("poolable = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWarmPool checks that a sandbox with the pool's spec takes a warm container, and that the
// pool's containers are removed at shutdown.
func TestWarmPool(t *testing.T) {
	rt := newFakeRuntime()
	w, srv := newTestWorker(t, rt, Config{WarmPool: 1})
	w.create(sandboxSpec("sb-1")) // the pool is cold: the runtime makes it, and the pool warms
	poolReady := func() bool {
		w.pool.mu.Lock()
		defer w.pool.mu.Unlock()
		return len(w.pool.ready) == 1
	}
	waitFor(t, "the pool to warm", poolReady)
	w.create(sandboxSpec("sb-2"))
	if rt.container("sb-2") != nil {
		t.Error("sb-2 was made by the runtime, not taken from the pool")
	}
	if r := srv.reportsFor("sb-2"); len(r) != 1 || r[0].Status != sandbox.Running {
		t.Errorf("sb-2 reports %+v, want running", r)
	}
	w.create(sandboxSpec("sb-3", func(s *workerproto.ContainerSpec) { s.MemoryMiB = 2048 }))
	if rt.container("sb-3") == nil {
		t.Error("sb-3 does not have the pool's spec, yet did not get a container of its own")
	}
	waitFor(t, "the pool to warm again", poolReady)
	w.terminate("sb-2", sandbox.Terminated, "")
	w.shutdown()
	allRemoved(t, rt)
}

// TestExecAPI checks the wire of the worker's exec routes: an NDJSON stream of the exec's ID,
// its output (base64) and its exit; its status; and the errors for sandboxes not running.
func TestExecAPI(t *testing.T) {
	rt := newFakeRuntime()
	w, _ := newTestWorker(t, rt, Config{})
	w.create(sandboxSpec("sb-1"))
	api := httptest.NewServer(w.routes())
	defer api.Close()

	status, body := post(t, api.URL+"/v1/sandboxes/sb-1/execs", `{"command": ["echo", "hi"]}`)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if status != http.StatusOK || len(lines) != 3 {
		t.Fatalf("exec answered %d with %q", status, body)
	}
	started := regexp.MustCompile(`^\{"exec_id":"(ex-[a-z0-9]+)"\}$`).FindStringSubmatch(lines[0])
	if started == nil {
		t.Fatalf("first line %s, want the exec's ID", lines[0])
	}
	if lines[1] != `{"stream":"stdout","data":"aGkK"}` || lines[2] != `{"exit_code":0}` {
		t.Errorf("output %s then %s, want hi in base64 then exit code 0", lines[1], lines[2])
	}

	resp, err := http.Get(api.URL + "/v1/sandboxes/sb-1/execs/" + started[1] + "?wait=1")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st["exec_id"] != started[1] || st["running"] != false || st["exit_code"] != float64(0) {
		t.Errorf("exec status %v", st)
	}

	status, body = post(t, api.URL+"/v1/sandboxes/sb-1/execs", `{"command": ["sleep"], "stream": false}`)
	if status != http.StatusOK || !regexp.MustCompile(`^\{"exec_id":"ex-[a-z0-9]+"\}$`).MatchString(strings.TrimSpace(body)) {
		t.Errorf("exec without stream answered %d with %q", status, body)
	}

	w.terminate("sb-1", sandbox.Terminated, "")
	for path, want := range map[string]int{"sb-1": http.StatusConflict, "sb-none": http.StatusNotFound} {
		if status, body := post(t, api.URL+"/v1/sandboxes/"+path+"/execs", `{"command": ["true"]}`); status != want {
			t.Errorf("exec in %s answered %d %q, want %d", path, status, body, want)
		}
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

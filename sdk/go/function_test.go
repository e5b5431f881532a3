package gust

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// functionJSON is a Function doc as the server writes it.
func functionJSON(id, name string) map[string]any {
	return map[string]any{
		"function_id": id, "app_id": "ap-1", "name": name, "kind": "function", "mode": "deployed",
		"state": "active", "methods": map[string]any{}, "is_generator": false, "spec": map[string]any{"name": name},
		"stats": map[string]any{"pending": 1, "running": 2, "containers": 3, "idle_containers": 1, "reason": "queue depth 1"},
	}
}

// testFunction registers the lookup of a deployed function "f" and returns it, its output
// going to buffers.
func testFunction(t *testing.T, f *fakeAPI, c *Client) (fn *Function, stdout, stderr *bytes.Buffer) {
	t.Helper()
	f.handle("POST /v1/functions/lookup", func(w http.ResponseWriter, r *http.Request) {
		body := decodeBody(t, r)
		if body["app_name"] != "my-app" || body["name"] != "f" {
			writeErr(w, http.StatusNotFound, "not_found", "no deployed function f in app my-app")
			return
		}
		writeJSON(w, http.StatusOK, functionJSON("fu-1", "f"))
	})
	fn, err := c.FunctionFromName(t.Context(), "my-app", "f")
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	fn.Stdout, fn.Stderr = stdout, stderr
	return fn, stdout, stderr
}

// callRequest is the body of POST /v1/functions/{id}/calls, with its inputs decoded.
type callRequest struct {
	Kind   string
	Method any
	Stream bool
	Params map[string]any   // decoded JSON params, nil if none
	Inputs []map[string]any // decoded JSON args of each input
	Format []string
}

func decodeCall(t *testing.T, r *http.Request) callRequest {
	t.Helper()
	var raw struct {
		Kind   string `json:"kind"`
		Method any    `json:"method"`
		Stream bool   `json:"stream"`
		Params *struct {
			Data   []byte `json:"data"`
			Format string `json:"format"`
		} `json:"params"`
		Inputs []struct {
			Args   []byte `json:"args"`
			Format string `json:"format"`
		} `json:"inputs"`
	}
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		t.Errorf("call body: %v", err)
	}
	cr := callRequest{Kind: raw.Kind, Method: raw.Method, Stream: raw.Stream}
	if raw.Params != nil {
		if raw.Params.Format != "json" {
			t.Errorf("params format %q", raw.Params.Format)
		}
		json.Unmarshal(raw.Params.Data, &cr.Params)
	}
	for _, in := range raw.Inputs {
		var m map[string]any
		if err := json.Unmarshal(in.Args, &m); err != nil {
			t.Errorf("input args %q are not JSON: %v", in.Args, err)
		}
		cr.Inputs = append(cr.Inputs, m)
		cr.Format = append(cr.Format, in.Format)
	}
	return cr
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func output(seq int, status, data string, extra map[string]any) map[string]any {
	o := map[string]any{"index": 0, "seq": seq, "status": status, "format": "json", "data": nil}
	if data != "" {
		o["data"] = b64(data)
	}
	for k, v := range extra {
		o[k] = v
	}
	return map[string]any{"output": o}
}

func TestFunctionFromName(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	if fn.ID != "fu-1" || fn.AppID != "ap-1" || fn.Name != "f" || fn.Mode != "deployed" || fn.State != "active" {
		t.Errorf("function = %+v", fn)
	}
	want := FunctionStats{Pending: 1, Running: 2, Containers: 3, IdleContainers: 1, Reason: "queue depth 1"}
	if fn.Stats != want {
		t.Errorf("stats = %+v, want %+v", fn.Stats, want)
	}
	_, err := c.FunctionFromName(t.Context(), "my-app", "nope")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing function: %v", err)
	}

	f.handle("GET /v1/functions/fu-1", func(w http.ResponseWriter, r *http.Request) {
		doc := functionJSON("fu-1", "f")
		doc["stats"] = map[string]any{"containers": 0, "reason": "idle past scaledown_window"}
		writeJSON(w, http.StatusOK, doc)
	})
	if err := fn.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fn.Stats.Containers != 0 || fn.Stats.Reason != "idle past scaledown_window" || fn.Stdout == nil {
		t.Errorf("after Refresh: %+v", fn)
	}
}

func TestRemote(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, stdout, stderr := testFunction(t, f, c)
	var got callRequest
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		got = decodeCall(t, r)
		n := startNDJSON(w)
		n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "first_index": 0, "count": 1}})
		n.send(map[string]any{"log": map[string]any{"index": 0, "stream": "stdout", "data": "hello "}})
		n.send(map[string]any{"log": map[string]any{"index": 0, "stream": "stderr", "data": "warn\n"}})
		n.send(map[string]any{"item": map[string]any{"index": 0, "seq": 0, "data": b64("1"), "format": "json"}})
		n.send(map[string]any{"log": map[string]any{"index": 0, "stream": "stdout", "data": "world\n"}})
		n.send(output(0, "success", `{"sum": 3, "names": ["a"]}`, nil))
		n.send(map[string]any{"log": map[string]any{"index": 0, "stream": "stdout", "data": "bye\n"}})
	})
	res, err := fn.Remote(t.Context(), 1, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"sum": 3.0, "names": []any{"a"}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("result = %#v, want %#v", res, want)
	}
	wantCall := callRequest{Kind: "remote", Stream: true, Format: []string{"json"},
		Inputs: []map[string]any{{"args": []any{1.0, "a", nil}, "kwargs": map[string]any{}}}}
	if !reflect.DeepEqual(got, wantCall) {
		t.Errorf("call = %#v, want %#v", got, wantCall)
	}
	if stdout.String() != "hello world\nbye\n" || stderr.String() != "warn\n" {
		t.Errorf("stdout %q, stderr %q", stdout, stderr)
	}

	// Keyword arguments, a typed result, and no arguments at all.
	var typed struct {
		Sum int `json:"sum"`
	}
	if err := fn.RemoteWith(t.Context(), nil, map[string]any{"x": 2}, &typed); err != nil || typed.Sum != 3 {
		t.Errorf("RemoteWith = %+v, %v", typed, err)
	}
	if want := map[string]any{"args": []any{}, "kwargs": map[string]any{"x": 2.0}}; !reflect.DeepEqual(got.Inputs[0], want) {
		t.Errorf("args = %#v, want %#v", got.Inputs[0], want)
	}
	// A result dropped.
	if err := fn.RemoteWith(t.Context(), []any{1}, nil, nil); err != nil {
		t.Error(err)
	}
	// Arguments that are not JSON.
	if _, err := fn.Remote(t.Context(), make(chan int)); err == nil || !strings.Contains(err.Error(), "JSON") {
		t.Errorf("unserialisable argument: %v", err)
	}
}

func TestRemoteErrors(t *testing.T) {
	tb := "Traceback (most recent call last):\n  File \"app.py\", line 3, in f\nValueError: bad\n"
	tests := []struct {
		name   string
		output map[string]any
		check  func(t *testing.T, err error)
	}{
		{"failure", output(0, "failure", "", map[string]any{"error": "ValueError: bad", "traceback": tb}), func(t *testing.T, err error) {
			var re *RemoteError
			if !errors.As(err, &re) || re.Type != "ValueError" || re.Message != "bad" || re.Traceback != tb {
				t.Fatalf("err = %#v", err)
			}
			if !strings.Contains(err.Error(), "ValueError: bad") {
				t.Errorf("message %q", err)
			}
		}},
		{"crash", output(0, "failure", "", map[string]any{"error": "the container exited with code 137 while the input ran"}), func(t *testing.T, err error) {
			var re *RemoteError
			if !errors.As(err, &re) || re.Type != "" || !strings.Contains(re.Message, "137") {
				t.Fatalf("err = %#v", err)
			}
		}},
		{"timeout", output(0, "timeout", "", map[string]any{"error": "the input ran past the function's 5 s timeout"}), func(t *testing.T, err error) {
			if !errors.Is(err, ErrFunctionTimeout) || !strings.Contains(err.Error(), "5 s") {
				t.Fatalf("err = %v", err)
			}
		}},
		{"terminated", output(0, "terminated", "", nil), func(t *testing.T, err error) {
			if !errors.Is(err, ErrInputCancelled) || errors.Is(err, ErrFunctionTimeout) {
				t.Fatalf("err = %v", err)
			}
		}},
		{"pickle", map[string]any{"output": map[string]any{"seq": 0, "status": "success", "format": "pickle", "data": b64("\x80\x04K\x01.")}}, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "pickle") {
				t.Fatalf("err = %v", err)
			}
		}},
		{"api error in stream", map[string]any{"error": map[string]string{"kind": "unavailable", "message": "the server is shutting down"}}, func(t *testing.T, err error) {
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFakeAPI(t)
			fn, _, _ := testFunction(t, f, c)
			f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
				n := startNDJSON(w)
				n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "count": 1}})
				n.send(tt.output)
			})
			_, err := fn.Remote(t.Context(), 1)
			tt.check(t, err)
		})
	}

	t.Run("rejected", func(t *testing.T) {
		f, c := newFakeAPI(t)
		fn, _, _ := testFunction(t, f, c)
		f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
			writeErr(w, http.StatusConflict, "conflict", "function f is stopped: deploy the app again")
		})
		if _, err := fn.Remote(t.Context()); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "deploy the app") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestNewRemoteError(t *testing.T) {
	tests := []struct{ in, typ, msg string }{
		{"ValueError: bad", "ValueError", "bad"},
		{"ValueError: a: b", "ValueError", "a: b"},
		{"mymod.CustomError: x", "mymod.CustomError", "x"},
		{"KeyboardInterrupt", "KeyboardInterrupt", ""},
		{"ZeroDivisionError:", "ZeroDivisionError", ""},
		{"the container crashed: exit 1", "", "the container crashed: exit 1"},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e := newRemoteError(tt.in, "")
			if e.Type != tt.typ || e.Message != tt.msg {
				t.Errorf("newRemoteError(%q) = %q, %q; want %q, %q", tt.in, e.Type, e.Message, tt.typ, tt.msg)
			}
		})
	}
}

// replayCall is a fake call whose stream, like the server's, sends every log and item line
// again from the start (or from after the from-th output) each time it is opened.
type replayCall struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (rc *replayCall) add(lines ...map[string]any) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.lines = append(rc.lines, lines...)
}

// send writes the lines after the from-th output.
func (rc *replayCall) send(n *ndjson, from int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	outputs := 0
	for _, l := range rc.lines {
		if outputs >= from {
			n.send(l)
		}
		if _, ok := l["output"]; ok {
			outputs++
		}
	}
}

func logJSON(data string) map[string]any {
	return map[string]any{"log": map[string]any{"index": 0, "stream": "stdout", "data": data}}
}

func TestRemoteResumes(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, stdout, _ := testFunction(t, f, c)
	rc := &replayCall{}
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "count": 1}})
		rc.add(logJSON("slow\n"))
		rc.send(n, 0)
		n.send(map[string]any{"timeout": true})
	})
	var gets atomic.Int32
	f.handle("GET /v1/calls/fc-1/stream", func(w http.ResponseWriter, r *http.Request) {
		if from := r.URL.Query().Get("from"); from != "0" {
			t.Errorf("from = %q", from)
		}
		if r.URL.Query().Get("timeout") == "" {
			t.Error("no timeout")
		}
		n := startNDJSON(w)
		switch gets.Add(1) {
		case 1:
			rc.add(logJSON("more\n"))
			rc.send(n, 0)
			n.send(map[string]any{"timeout": true}) // still running
		case 2:
			rc.send(n, 0)
			// the connection breaks
		default:
			rc.add(logJSON("done\n"), output(0, "success", "42", nil))
			rc.send(n, 0)
		}
	})
	res, err := fn.Remote(t.Context(), 1)
	if err != nil || res != 42.0 {
		t.Fatalf("Remote = %v, %v", res, err)
	}
	if gets.Load() != 3 || stdout.String() != "slow\nmore\ndone\n" {
		t.Errorf("%d GETs, stdout %q", gets.Load(), stdout)
	}
}

func TestRemoteGen(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	item := func(v string) map[string]any {
		return map[string]any{"item": map[string]any{"index": 0, "data": b64(v), "format": "json"}}
	}
	var rc *replayCall
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		rc = &replayCall{}
		n := startNDJSON(w)
		n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "count": 1}})
		rc.add(item("0"), logJSON("x"), item(`"one"`))
		rc.send(n, 0)
		n.send(map[string]any{"timeout": true})
	})
	f.handle("GET /v1/calls/fc-1/stream", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		rc.add(item("[2]"), output(0, "success", "", nil))
		rc.send(n, 0)
	})
	var got []string
	for v, err := range fn.RemoteGen(t.Context(), []any{3}, nil) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(v))
	}
	if want := []string{"0", `"one"`, "[2]"}; !reflect.DeepEqual(got, want) {
		t.Errorf("items = %q, want %q", got, want)
	}

	// Stopping early.
	got = got[:0]
	for v := range fn.RemoteGen(t.Context(), []any{3}, nil) {
		got = append(got, string(v))
		break
	}
	if len(got) != 1 {
		t.Errorf("items after break = %q", got)
	}
}

func TestClassMethod(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	var got callRequest
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		got = decodeCall(t, r)
		n := startNDJSON(w)
		n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "count": 1}})
		n.send(output(0, "success", `"ok"`, nil))
	})
	if _, err := fn.Method("predict", map[string]any{"size": 3}).Remote(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	if got.Method != "predict" || !reflect.DeepEqual(got.Params, map[string]any{"size": 3.0}) {
		t.Errorf("call = %+v", got)
	}
	if _, err := fn.Remote(t.Context()); err != nil || got.Method != nil || got.Params != nil {
		t.Errorf("plain call after Method: %+v, %v", got, err)
	}
}

func TestSpawnGetCancel(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		if got := decodeCall(t, r); got.Kind != "spawn" || got.Stream {
			t.Errorf("call = %+v", got)
		}
		writeJSON(w, http.StatusCreated, map[string]any{"call_id": "fc-9", "first_index": 0, "count": 1})
	})
	var ready atomic.Bool
	f.handle("GET /v1/calls/fc-9/stream", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		if !ready.Load() {
			time.Sleep(20 * time.Millisecond)
			n.send(map[string]any{"timeout": true})
			return
		}
		n.send(output(0, "success", `{"n": 5}`, nil))
	})
	f.handle("GET /v1/calls/fc-9", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"call_id": "fc-9", "function_id": "fu-1", "count": 1, "done": 0, "status": "pending"})
	})
	var cancelled map[string]any
	f.handle("POST /v1/calls/fc-9/cancel", func(w http.ResponseWriter, r *http.Request) {
		cancelled = decodeBody(t, r)
		writeJSON(w, http.StatusOK, map[string]any{})
	})

	fc, err := fn.Spawn(t.Context(), 5)
	if err != nil || fc.ID != "fc-9" {
		t.Fatalf("Spawn = %+v, %v", fc, err)
	}
	var out struct{ N int }
	if err := fc.Get(t.Context(), 50*time.Millisecond, &out); !errors.Is(err, ErrCallTimeout) {
		t.Fatalf("Get before ready: %v", err)
	}
	ready.Store(true)
	if err := fc.Get(t.Context(), 0, &out); err != nil || out.N != 5 {
		t.Fatalf("Get = %+v, %v", out, err)
	}

	fc2, err := c.FunctionCallFromID(t.Context(), "fc-9")
	if err != nil || fc2.FunctionID != "fu-1" || fc2.Count != 1 || fc2.Status != "pending" {
		t.Fatalf("FunctionCallFromID = %+v, %v", fc2, err)
	}
	if err := fc2.Cancel(t.Context(), true); err != nil || cancelled["terminate_containers"] != true {
		t.Errorf("Cancel: %v, body %v", err, cancelled)
	}
	if _, err := c.FunctionCallFromID(t.Context(), "fc-404"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing call: %v", err)
	}
}

func TestRemoteContextCancel(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "count": 1}})
		<-r.Context().Done()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := fn.Remote(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
}

// Back-to-back calls reuse one connection: a warm round trip must not pay for a handshake.
func TestRemoteReusesConnection(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	addrs := map[string]bool{}
	f.handle("POST /v1/functions/fu-1/calls", func(w http.ResponseWriter, r *http.Request) {
		addrs[r.RemoteAddr] = true
		n := startNDJSON(w)
		n.send(map[string]any{"call": map[string]any{"call_id": "fc-1", "count": 1}})
		n.send(output(0, "success", "1", nil))
	})
	for range 5 {
		if _, err := fn.Remote(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if len(addrs) != 1 {
		t.Errorf("5 calls used %d connections", len(addrs))
	}
}

func TestWithOptions(t *testing.T) {
	f, c := newFakeAPI(t)
	fn, _, _ := testFunction(t, f, c)
	var got map[string]any
	f.handle("POST /v1/functions/fu-1/variants", func(w http.ResponseWriter, r *http.Request) {
		got = decodeBody(t, r)
		if opts, _ := got["options"].(map[string]any); len(opts) == 0 {
			writeErr(w, http.StatusBadRequest, "invalid", "with_options: no options")
			return
		}
		doc := functionJSON("fu-2", "f~abc")
		doc["variant_of"] = "fu-1"
		writeJSON(w, http.StatusOK, doc)
	})
	mem, timeout := 512, 30.0
	m := fn.Method("predict", map[string]any{"size": 3})
	v, err := m.WithOptions(t.Context(), FunctionOptions{MemoryMiB: &mem, TimeoutSeconds: &timeout, GPU: "A100",
		Env: map[string]string{"A": "1"}, Secrets: []string{"openai"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"options": map[string]any{"memory": 512.0, "timeout": 30.0, "gpu": "A100",
		"env": map[string]any{"A": "1"}, "secrets": []any{map[string]any{"name": "openai"}}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request body %v, want %v", got, want)
	}
	if v.ID != "fu-2" || v.VariantOf != "fu-1" || v.method != "predict" || v.params["size"] != 3 || v.c != c {
		t.Fatalf("variant %+v", v)
	}
	if _, err := fn.WithOptions(t.Context(), FunctionOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
}

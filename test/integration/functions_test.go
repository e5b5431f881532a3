package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive functions through the raw API with the "json" payload format, so that they
// test the server, the worker and the runner without the Python client. The module under test
// is plain Python: the runner accepts undecorated functions and classes whose methods carry the
// markers that gust's decorators set (docs/functions.md).

const fnModule = `
import os, sys, time, asyncio, subprocess

def add(a, b):
    print("adding", a, b)
    print("to stderr", file=sys.stderr)
    return a + b

def boom():
    raise ValueError("bad value")

gvisor_add = add  # published again with isolation gvisor

def slow(s):
    time.sleep(s)
    return s

def env(name):
    return os.environ.get(name)

def flaky(n):
    # Fails until it has run n times in this container.
    p = "/tmp/flaky-count"
    c = int(open(p).read()) if os.path.exists(p) else 0
    open(p, "w").write(str(c + 1))
    if c + 1 < n:
        raise RuntimeError("attempt %d fails" % (c + 1))
    return c + 1

def crash():
    os._exit(3)

def chancy(x):
    import random
    if random.random() < 0.05:
        os._exit(1)  # the container dies mid-input
    return x

def gen(n):
    for i in range(n):
        yield i * i

async def aecho(x):
    await asyncio.sleep(0.01)
    return x

def shell():
    subprocess.run(["echo", "from a subprocess"])
    return "ok"

def tick():
    print("tick", time.time())

class Model:
    size = type("P", (), {"_gust_parameter": True, "default": 1})()

    def load(self):
        self.weights = self.size * 10
        self.loads = getattr(self, "loads", 0) + 1
    load._gust_enter = True

    def predict(self, x):
        return {"y": x * self.weights, "loads": self.loads}
    predict._gust_method = True
`

// fnApp is a published app.
type fnApp struct {
	AppID     string            `json:"app_id"`
	AppName   string            `json:"app_name"`
	Functions map[string]string `json:"functions"`
}

// uploadCode tars files and uploads them as a blob.
func uploadCode(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, src := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(src))})
		tw.Write([]byte(src))
	}
	tw.Close()
	var out struct {
		Blob string `json:"blob"`
	}
	req, _ := http.NewRequest("POST", gust.url+"/v1/blobs", &buf)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Blob
}

// publish publishes fnModule's functions named in specs (each needs "name").
func publish(t *testing.T, name, mode string, specs ...map[string]any) fnApp {
	t.Helper()
	blob := uploadCode(t, map[string]string{"fnmod.py": fnModule})
	for _, s := range specs {
		if s["image_id"] == nil {
			s["image_id"] = gust.imageID
		}
	}
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": name, "mode": mode, "code": map[string]string{"blob": blob, "module": "fnmod"}, "functions": specs}, &app); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil) })
	return app
}

func jsonArgs(args ...any) string {
	b, _ := json.Marshal(map[string]any{"args": args, "kwargs": map[string]any{}})
	return base64.StdEncoding.EncodeToString(b)
}

// callResult is what a call's stream said.
type callResult struct {
	CallID  string
	Logs    []string
	Items   []any
	Outputs []map[string]any
	Timeout bool
}

func (r callResult) value(t *testing.T, i int) any {
	t.Helper()
	out := r.Outputs[i]
	if out["status"] != "success" {
		t.Fatalf("output %d: %v", i, out)
	}
	if out["data"] == nil {
		return nil
	}
	b, _ := base64.StdEncoding.DecodeString(out["data"].(string))
	var v any
	json.Unmarshal(b, &v)
	return v
}

// readStream reads an NDJSON call stream.
func readStream(t *testing.T, resp *http.Response) callResult {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b.String())
	}
	var r callResult
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		switch {
		case line["call"] != nil:
			r.CallID = line["call"].(map[string]any)["call_id"].(string)
		case line["log"] != nil:
			r.Logs = append(r.Logs, line["log"].(map[string]any)["data"].(string))
		case line["item"] != nil:
			b, _ := base64.StdEncoding.DecodeString(line["item"].(map[string]any)["data"].(string))
			var v any
			json.Unmarshal(b, &v)
			r.Items = append(r.Items, v)
		case line["output"] != nil:
			r.Outputs = append(r.Outputs, line["output"].(map[string]any))
		case line["timeout"] != nil:
			r.Timeout = true
		}
	}
	return r
}

func post(t *testing.T, path string, body any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", gust.url+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// callRemote calls a function with JSON arguments and returns its stream.
func callRemote(t *testing.T, fnID string, extra map[string]any, args ...any) callResult {
	t.Helper()
	body := map[string]any{"kind": "remote", "stream": true, "inputs": []map[string]any{{"args": jsonArgs(args...), "format": "json"}}}
	for k, v := range extra {
		body[k] = v
	}
	r := readStream(t, post(t, "/v1/functions/"+fnID+"/calls", body))
	if len(r.Outputs) != 1 {
		t.Fatalf("want 1 output, got %+v", r)
	}
	return r
}

func TestFunctionRemote(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-remote", "ephemeral",
		map[string]any{"name": "add"}, map[string]any{"name": "boom"}, map[string]any{"name": "gen", "is_generator": true},
		map[string]any{"name": "aecho"}, map[string]any{"name": "shell"}, map[string]any{"name": "gvisor_add", "isolation": "gvisor"},
		map[string]any{"name": "Model", "kind": "class", "methods": map[string]any{"predict": map[string]any{}}})

	r := callRemote(t, app.Functions["add"], nil, 2, 3)
	if v := r.value(t, 0); v != 5.0 {
		t.Fatalf("add(2, 3) = %v", v)
	}
	logs := strings.Join(r.Logs, "")
	if !strings.Contains(logs, "adding 2 3\n") || !strings.Contains(logs, "to stderr\n") {
		t.Fatalf("remote print did not reach the caller: %q", logs)
	}

	r = callRemote(t, app.Functions["gvisor_add"], nil, 20, 22)
	if v := r.value(t, 0); v != 42.0 || !strings.Contains(strings.Join(r.Logs, ""), "adding 20 22") {
		t.Fatalf("under gVisor: add(20, 22) = %v, logs %q", v, r.Logs)
	}

	r = callRemote(t, app.Functions["boom"], nil)
	out := r.Outputs[0]
	if out["status"] != "failure" || out["error"] != "ValueError: bad value" || !strings.Contains(out["traceback"].(string), `raise ValueError("bad value")`) {
		t.Fatalf("failure output: %v", out)
	}

	r = callRemote(t, app.Functions["gen"], nil, 4)
	if fmt.Sprint(r.Items) != "[0 1 4 9]" || r.Outputs[0]["status"] != "success" {
		t.Fatalf("generator: items %v, output %v", r.Items, r.Outputs)
	}
	if v := callRemote(t, app.Functions["aecho"], nil, "hi").value(t, 0); v != "hi" {
		t.Fatalf("async function returned %v", v)
	}
	r = callRemote(t, app.Functions["shell"], nil)
	if !strings.Contains(strings.Join(r.Logs, ""), "from a subprocess") {
		t.Fatalf("subprocess output not captured: %q", r.Logs)
	}

	// A class: parameters, @enter once per container and parameter set.
	params := func(size int) map[string]any {
		b, _ := json.Marshal(map[string]any{"size": size})
		return map[string]any{"method": "predict", "params": map[string]any{"data": base64.StdEncoding.EncodeToString(b), "format": "json"}}
	}
	for i := 0; i < 2; i++ {
		v := callRemote(t, app.Functions["Model"], params(3), 2).value(t, 0).(map[string]any)
		if v["y"] != 60.0 || v["loads"] != 1.0 {
			t.Fatalf("Model(size=3).predict(2) = %v (want y 60, loaded once)", v)
		}
	}
	if v := callRemote(t, app.Functions["Model"], map[string]any{"method": "predict"}, 2).value(t, 0).(map[string]any); v["y"] != 20.0 {
		t.Fatalf("Model().predict(2) with the default size = %v", v)
	}
}

func TestFunctionTimeoutRetriesCrash(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-retries", "ephemeral",
		map[string]any{"name": "slow", "timeout": 1},
		map[string]any{"name": "flaky", "retries": map[string]any{"max_retries": 2, "initial_delay": 0.1}},
		map[string]any{"name": "crash", "retries": map[string]any{"max_retries": 1, "initial_delay": 0.1}})

	start := time.Now()
	r := callRemote(t, app.Functions["slow"], nil, 30)
	if out := r.Outputs[0]; out["status"] != "timeout" || !strings.Contains(out["error"].(string), "timeout of 1 s") {
		t.Fatalf("slow(30) with timeout=1: %v", out)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the timeout took %v to be reported", d)
	}
	if v := callRemote(t, app.Functions["flaky"], nil, 3).value(t, 0); v != 3.0 {
		t.Fatalf("flaky(3) with 2 retries = %v, want success on the third attempt", v)
	}
	r = callRemote(t, app.Functions["crash"], nil)
	if out := r.Outputs[0]; out["status"] != "failure" || !strings.Contains(out["error"].(string), "exited") {
		t.Fatalf("crash(): %v", out)
	}
}

func TestFunctionMapSpawnCancel(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-map", "ephemeral", map[string]any{"name": "add", "max_containers": 2, "max_inputs": 4}, map[string]any{"name": "slow"})
	inputs := func(from, n int) []map[string]any {
		var ins []map[string]any
		for i := from; i < from+n; i++ {
			ins = append(ins, map[string]any{"args": jsonArgs(i, 1000), "format": "json"})
		}
		return ins
	}
	var head struct {
		CallID string `json:"call_id"`
	}
	if err := api("POST", "/v1/functions/"+app.Functions["add"]+"/calls", map[string]any{"kind": "map", "inputs": inputs(0, 300)}, &head); err != nil {
		t.Fatal(err)
	}
	if err := api("POST", "/v1/calls/"+head.CallID+"/inputs", map[string]any{"inputs": inputs(300, 200)}, nil); err != nil {
		t.Fatal(err)
	}
	r := streamOf(t, head.CallID, 60)
	if len(r.Outputs) != 500 {
		t.Fatalf("map of 500 gave %d outputs (timeout %v)", len(r.Outputs), r.Timeout)
	}
	seen := map[int]bool{}
	for i, out := range r.Outputs {
		idx := int(out["index"].(float64))
		if v := r.value(t, i); v != float64(idx+1000) {
			t.Fatalf("output for index %d = %v", idx, v)
		}
		seen[idx] = true
	}
	if len(seen) != 500 {
		t.Fatalf("%d distinct indexes", len(seen))
	}

	// spawn, then get with a zero timeout (not ready), then wait.
	if err := api("POST", "/v1/functions/"+app.Functions["slow"]+"/calls", map[string]any{"kind": "spawn", "inputs": []map[string]any{{"args": jsonArgs(1), "format": "json"}}}, &head); err != nil {
		t.Fatal(err)
	}
	if r := streamOf(t, head.CallID, 0); !r.Timeout || len(r.Outputs) != 0 {
		t.Fatalf("get(timeout=0) on a running call: %+v", r)
	}
	if r := streamOf(t, head.CallID, 60); len(r.Outputs) != 1 || r.value(t, 0) != 1.0 {
		t.Fatalf("spawned call: %+v", r)
	}

	// cancel a long spawn: its output is terminated.
	if err := api("POST", "/v1/functions/"+app.Functions["slow"]+"/calls", map[string]any{"kind": "spawn", "inputs": []map[string]any{{"args": jsonArgs(60), "format": "json"}}}, &head); err != nil {
		t.Fatal(err)
	}
	if err := api("POST", "/v1/calls/"+head.CallID+"/cancel", map[string]any{"terminate_containers": true}, nil); err != nil {
		t.Fatal(err)
	}
	if r := streamOf(t, head.CallID, 10); len(r.Outputs) != 1 || r.Outputs[0]["status"] != "terminated" {
		t.Fatalf("cancelled call: %+v", r)
	}
}

// streamOf reads a call's stream (GET /v1/calls/{id}/stream?timeout=secs).
func streamOf(t *testing.T, callID string, secs int) callResult {
	t.Helper()
	resp, err := http.DefaultClient.Do(authed("GET", fmt.Sprintf("/v1/calls/%s/stream?timeout=%d", callID, secs)))
	if err != nil {
		t.Fatal(err)
	}
	return readStream(t, resp)
}

func authed(method, path string) *http.Request {
	req, _ := http.NewRequest(method, gust.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	return req
}

func TestFunctionSecretsAndLogs(t *testing.T) {
	needGust(t)
	if err := api("POST", "/v1/secrets", map[string]any{"name": "fn-secret", "env": map[string]string{"API_KEY": "s3cr3t-value"}, "overwrite": true}, nil); err != nil {
		t.Fatal(err)
	}
	app := publish(t, "fn-secrets", "deployed", map[string]any{"name": "env", "secrets": []map[string]any{{"name": "fn-secret"}, {"env": map[string]string{"INLINE": "inline-value"}}}},
		map[string]any{"name": "add"})
	if v := callRemote(t, app.Functions["env"], nil, "API_KEY").value(t, 0); v != "s3cr3t-value" {
		t.Fatalf("secret from_name inside the function: %v", v)
	}
	if v := callRemote(t, app.Functions["env"], nil, "INLINE").value(t, 0); v != "inline-value" {
		t.Fatalf("inline secret inside the function: %v", v)
	}
	callRemote(t, app.Functions["add"], nil, 40, 2)
	// Values never come back from the API.
	for _, path := range []string{"/v1/secrets", "/v1/functions/" + app.Functions["env"], "/v1/apps/" + app.AppID, "/v1/apps"} {
		code, body := raw(t, "GET", path, nil)
		if code != 200 || strings.Contains(body, "s3cr3t-value") || strings.Contains(body, "inline-value") {
			t.Fatalf("GET %s (%d) shows a secret value: %s", path, code, body)
		}
	}
	// Function.from_name finds the deployed function.
	var fn struct {
		ID string `json:"function_id"`
	}
	if err := api("POST", "/v1/functions/lookup", map[string]any{"app_name": "fn-secrets", "name": "env"}, &fn); err != nil || fn.ID != app.Functions["env"] {
		t.Fatalf("lookup: %v %v", fn, err)
	}
	// The app's logs kept the function's print.
	resp, _ := http.DefaultClient.Do(authed("GET", "/v1/apps/"+app.AppID+"/logs"))
	var logs bytes.Buffer
	logs.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(logs.String(), "adding 40 2") {
		t.Fatalf("app logs lack the print: %s", logs.String())
	}
	if strings.Contains(gustLog(), "s3cr3t-value") {
		t.Fatal("the secret value appears in gust's own log")
	}
}

func TestFunctionBadInput(t *testing.T) {
	needGust(t)
	blob := uploadCode(t, map[string]string{"fnmod.py": fnModule})
	bad := []struct {
		name, want string
		spec       map[string]any
	}{
		{"bad gpu", "not a known GPU type", map[string]any{"name": "add", "gpu": "H1000"}},
		{"bad gpu count", "count after ':'", map[string]any{"name": "add", "gpu": "H100:99"}},
		{"max below min", "max_containers (1) is less than min_containers (2)", map[string]any{"name": "add", "min_containers": 2, "max_containers": 1}},
		{"unknown secret", "no-such-secret", map[string]any{"name": "add", "secrets": []map[string]any{{"name": "no-such-secret"}}}},
		{"bad cron", "is not valid", map[string]any{"name": "add", "schedule": map[string]any{"cron": "every day"}}},
		{"unknown image", "not found", map[string]any{"name": "add", "image_id": "im-nope"}},
		{"negative timeout", "timeout must be", map[string]any{"name": "add", "timeout": -1}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if tc.spec["image_id"] == nil {
				tc.spec["image_id"] = gust.imageID
			}
			code, body := raw(t, "POST", "/v1/apps/publish", js(map[string]any{"name": "fn-bad", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "fnmod"}, "functions": []any{tc.spec}}))
			if code < 400 || code >= 500 || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s, want a 4xx saying %q", code, body, tc.want)
			}
		})
	}
	app := publish(t, "fn-bad-calls", "ephemeral", map[string]any{"name": "add"}, map[string]any{"name": "Model", "kind": "class", "methods": map[string]any{"predict": map[string]any{}}},
		map[string]any{"name": "slow", "gpu": "H100"})
	calls := []struct {
		name, path, want string
		body             map[string]any
		status           int
	}{
		{"unknown function", "/v1/functions/fu-nope/calls", "not found", map[string]any{"kind": "remote", "inputs": []map[string]any{{"args": jsonArgs(), "format": "json"}}}, 404},
		{"bad format", "/v1/functions/" + app.Functions["add"] + "/calls", "payload format", map[string]any{"kind": "remote", "inputs": []map[string]any{{"args": jsonArgs(), "format": "yaml"}}}, 400},
		{"no args", "/v1/functions/" + app.Functions["add"] + "/calls", "no args payload", map[string]any{"kind": "remote", "inputs": []map[string]any{{"format": "json"}}}, 400},
		{"unknown method", "/v1/functions/" + app.Functions["Model"] + "/calls", "has no method", map[string]any{"kind": "remote", "method": "nope", "inputs": []map[string]any{{"args": jsonArgs(), "format": "json"}}}, 400},
		{"no gpu worker", "/v1/functions/" + app.Functions["slow"] + "/calls", "no connected worker has gpu", map[string]any{"kind": "remote", "inputs": []map[string]any{{"args": jsonArgs(1), "format": "json"}}}, 503},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			code, body := raw(t, "POST", tc.path, js(tc.body))
			if code != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s, want %d saying %q", code, body, tc.status, tc.want)
			}
		})
	}
}

// appStats returns a function's stats from GET /v1/apps/{id}.
func appStats(t *testing.T, appID, fnID string) map[string]any {
	t.Helper()
	st, err := fetchStats(appID, fnID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// fetchStats is appStats for goroutines, which must not call t.Fatal.
func fetchStats(appID, fnID string) (map[string]any, error) {
	var doc struct {
		Details []struct {
			ID    string         `json:"function_id"`
			Stats map[string]any `json:"stats"`
		} `json:"function_details"`
	}
	if err := api("GET", "/v1/apps/"+appID, nil, &doc); err != nil {
		return nil, err
	}
	for _, d := range doc.Details {
		if d.ID == fnID {
			return d.Stats, nil
		}
	}
	return map[string]any{"containers": 0.0}, nil
}

func TestFunctionAutoscaler(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-scale", "ephemeral",
		map[string]any{"name": "slow", "max_containers": 2, "scaledown_window": 1},
		map[string]any{"name": "add", "min_containers": 1})
	slow := app.Functions["slow"]
	// Six half-second inputs, at most two containers: about 1.5 s, and never a third container.
	maxSeen := make(chan float64)
	stop := make(chan struct{})
	go func() {
		seen := 0.0
		defer func() { maxSeen <- seen }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if st, err := fetchStats(app.AppID, slow); err == nil {
					if c, _ := st["containers"].(float64); c > seen {
						seen = c
					}
				}
			}
		}
	}()
	start := time.Now()
	var ins []map[string]any
	for i := 0; i < 6; i++ {
		ins = append(ins, map[string]any{"args": jsonArgs(0.5), "format": "json"})
	}
	r := readStream(t, post(t, "/v1/functions/"+slow+"/calls", map[string]any{"kind": "map", "stream": true, "inputs": ins}))
	close(stop)
	if len(r.Outputs) != 6 {
		t.Fatalf("6 inputs gave %d outputs", len(r.Outputs))
	}
	elapsed := time.Since(start)
	if seen := <-maxSeen; seen > 2 || seen < 1 {
		t.Fatalf("max_containers=2 but saw %v containers", seen)
	}
	if elapsed > 10*time.Second {
		t.Fatalf("6 inputs of 0.5 s on 2 containers took %v", elapsed)
	}
	// Back to zero after the scaledown window; the reason says so.
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := appStats(t, app.AppID, slow)
		if st["containers"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow did not scale to zero: %v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// min_containers=1 keeps one warm with no inputs at all.
	deadline = time.Now().Add(30 * time.Second)
	for {
		st := appStats(t, app.AppID, app.Functions["add"])
		if st["containers"] == 1.0 && st["idle_containers"] == 1.0 {
			if !strings.Contains(fmt.Sprint(st["reason"]), "steady at 1") {
				t.Fatalf("reason for the warm container: %v", st["reason"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("min_containers=1 did not keep a warm container: %v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestFunctionSchedule(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-schedule", "deployed", map[string]any{"name": "tick", "schedule": map[string]any{"period": 1}})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, _ := http.DefaultClient.Do(authed("GET", "/v1/apps/"+app.AppID+"/logs"))
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if n := strings.Count(b.String(), "tick "); n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Period(seconds=1) ran fewer than 2 times in 20 s: %s", b.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		State string `json:"state"`
	}
	api("GET", "/v1/apps/"+app.AppID, nil, &doc)
	if doc.State != "stopped" {
		t.Fatalf("app state after stop: %q", doc.State)
	}
}

// startGust starts a second gust process (args after the binary) with this run's token. It
// points the API helpers at url until the test ends. A failed test shows the end of its log.
func startGust(t *testing.T, url string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(gust.bin, args...)
	cmd.Env = append(os.Environ(), "GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN="+gust.joinToken)
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the end of the log of gust %s:\n%s", strings.Join(args, " "), out.String())
		}
	})
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	saved := gust.url
	gust.url = url
	t.Cleanup(func() { gust.url = saved })
	for deadline := time.Now().Add(60 * time.Second); ; {
		// Up when it answers, and for `gust up` once its own worker registered, which comes
		// a moment after the API does (a sandbox asked for in between gets a 503).
		if resp, err := http.Get(url + "/v1/health"); err == nil {
			resp.Body.Close()
			if args[0] != "up" || hasWorker(url) {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up (with a worker) in 60 s", strings.Join(args, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hasWorker reports whether the gust at url lists a registered worker.
func hasWorker(url string) bool {
	req, _ := http.NewRequest("GET", url+"/v1/workers", nil)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var out struct {
		Workers []json.RawMessage `json:"workers"`
	}
	return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&out) == nil && len(out.Workers) > 0
}

// tailBuffer keeps the last max bytes written to it, from several goroutines.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	if len(b.b) > b.max {
		b.b = b.b[len(b.b)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// spawnRunningSlow deploys fnModule's slow on the gust at gust.url, spawns slow(secs) and
// waits until it runs. It returns the app and the call.
func spawnRunningSlow(t *testing.T, appName string, secs int) (fnApp, string) {
	t.Helper()
	imageID, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	blob := uploadCode(t, map[string]string{"fnmod.py": fnModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": appName, "mode": "deployed", "code": map[string]string{"blob": blob, "module": "fnmod"},
		"functions": []map[string]any{{"name": "slow", "image_id": imageID}}}, &app); err != nil {
		t.Fatal(err)
	}
	var head struct {
		CallID string `json:"call_id"`
	}
	if err := api("POST", "/v1/functions/"+app.Functions["slow"]+"/calls", map[string]any{"kind": "spawn", "inputs": []map[string]any{{"args": jsonArgs(secs), "format": "json"}}}, &head); err != nil {
		t.Fatal(err)
	}
	for i := 0; appStats(t, app.AppID, app.Functions["slow"])["running"] != 1.0; i++ {
		if i > 400 {
			t.Fatal("the input never started running")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return app, head.CallID
}

// TestFunctionInputsSurviveRestart kills gust (SIGKILL: no clean shutdown) while an input
// runs, starts it again on the same data directory, and gets the result; then the same with a
// clean stop. Inputs are durable and run at least once.
func TestFunctionInputsSurviveRestart(t *testing.T) {
	needGust(t)
	dir := t.TempDir()
	addr := freePort()
	args := []string{"up", "--addr", addr, "--data-dir", dir, "--image-cache", imageCache, "--no-config", "--no-install", "--sandbox-disk", "256"}
	first := startGust(t, "http://"+addr, args...)
	app, callID := spawnRunningSlow(t, "fn-durable", 2)
	first.Process.Kill()
	first.Wait()

	second := startGust(t, "http://"+addr, args...)
	if r := streamOf(t, callID, 120); len(r.Outputs) != 1 || r.value(t, 0) != 2.0 {
		t.Fatalf("after the restart: %+v", r)
	}

	// A clean stop (Ctrl-C) that interrupts an input (longer than the runner's grace) does not
	// fail it either: it runs after the start.
	app, callID = spawnRunningSlow(t, "fn-durable", 9)
	second.Process.Signal(os.Interrupt)
	second.Wait()
	third := startGust(t, "http://"+addr, args...)
	defer func() {
		api("POST", "/v1/apps/"+app.AppID+"/stop", nil, nil)
		third.Process.Signal(os.Interrupt)
		third.Wait()
		if err := checkNoLeftovers(dir); err != nil {
			t.Error(err)
		}
	}()
	if r := streamOf(t, callID, 120); len(r.Outputs) != 1 || r.value(t, 0) != 9.0 {
		t.Fatalf("after a clean stop and start: %+v", r)
	}
}

// TestFunctionEphemeralHeartbeat: an ephemeral app whose client stops sending heartbeats (it
// was killed) is stopped by the server; one that beats stays. The harness sets the timeout to
// 15 s.
func TestFunctionEphemeralHeartbeat(t *testing.T) {
	needGust(t)
	blob := uploadCode(t, map[string]string{"fnmod.py": fnModule})
	publishHB := func(name string) fnApp {
		var app fnApp
		if err := api("POST", "/v1/apps/publish", map[string]any{"name": name, "mode": "ephemeral", "heartbeat": true,
			"code": map[string]string{"blob": blob, "module": "fnmod"}, "functions": []map[string]any{{"name": "add", "image_id": gust.imageID}}}, &app); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", nil, nil) })
		return app
	}
	gone, kept := publishHB("fn-hb-gone"), publishHB("fn-hb-kept")
	callRemote(t, gone.Functions["add"], nil, 1, 2)
	deadline := time.Now().Add(40 * time.Second)
	for {
		api("POST", "/v1/apps/"+kept.AppID+"/heartbeat", map[string]any{}, nil)
		var doc struct {
			State string `json:"state"`
		}
		api("GET", "/v1/apps/"+gone.AppID, nil, &doc)
		if doc.State == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an ephemeral app without heartbeats is still %q after 40 s", doc.State)
		}
		time.Sleep(time.Second)
	}
	var doc struct {
		State string `json:"state"`
	}
	api("GET", "/v1/apps/"+kept.AppID, nil, &doc)
	if doc.State != "ephemeral" {
		t.Fatalf("the app that kept beating is %q", doc.State)
	}
	if v := callRemote(t, kept.Functions["add"], nil, 2, 3).value(t, 0); v != 5.0 {
		t.Fatalf("add on the kept app: %v", v)
	}
	code, body := raw(t, "POST", "/v1/functions/"+gone.Functions["add"]+"/calls", js(map[string]any{"kind": "remote", "inputs": []map[string]any{{"args": jsonArgs(1, 1), "format": "json"}}}))
	if code != 409 || !strings.Contains(body, "stopped") {
		t.Fatalf("calling a stopped function: %d %s", code, body)
	}
}

// TestFunctionImportError: a module that fails to import in the container fails the call with
// the import error and its traceback, rather than hanging or retrying forever.
func TestFunctionImportError(t *testing.T) {
	needGust(t)
	blob := uploadCode(t, map[string]string{"broken.py": "import no_such_module_here\n\ndef f():\n    return 1\n"})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "fn-broken", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "broken"},
		"functions": []map[string]any{{"name": "f", "image_id": gust.imageID}}}, &app); err != nil {
		t.Fatal(err)
	}
	defer api("POST", "/v1/apps/"+app.AppID+"/stop", nil, nil)
	start := time.Now()
	out := callRemote(t, app.Functions["f"], nil).Outputs[0]
	if out["status"] != "failure" || !strings.Contains(fmt.Sprint(out["error"]), "no_such_module_here") || !strings.Contains(fmt.Sprint(out["traceback"]), "broken.py") {
		t.Fatalf("call of a function whose module does not import: %v", out)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the import error took %v to come back", d)
	}
}

// TestFunctionWorkerRestart runs `gust server` and `gust worker` apart, kills the worker
// (SIGKILL) while an input runs, starts it again, and gets the result: the server gives the
// input to the new worker without counting it as a failed attempt.
func TestFunctionWorkerRestart(t *testing.T) {
	needGust(t)
	dir := t.TempDir()
	addr := freePort()
	url := "http://" + addr
	server := startGust(t, url, "server", "--addr", addr, "--data-dir", filepath.Join(dir, "server"), "--image-cache", imageCache, "--no-config", "--no-install")
	defer func() {
		server.Process.Signal(os.Interrupt)
		server.Wait()
	}()
	workerArgs := []string{"worker", "--server", url, "--data-dir", filepath.Join(dir, "worker"), "--image-cache", imageCache, "--no-install", "--sandbox-disk", "256"}
	worker := startGust(t, url, workerArgs...)
	app, callID := spawnRunningSlow(t, "fn-worker-restart", 2)
	worker.Process.Kill()
	worker.Wait()
	worker = startGust(t, url, workerArgs...)
	if r := streamOf(t, callID, 120); len(r.Outputs) != 1 || r.value(t, 0) != 2.0 {
		t.Fatalf("after the worker restarted: %+v", r)
	}

	// A clean stop of the worker (Ctrl-C) that interrupts an input is not the input's failure:
	// the server, still up, hears of no output for it, and it runs on the next worker.
	app, callID = spawnRunningSlow(t, "fn-worker-restart", 9)
	worker.Process.Signal(os.Interrupt)
	worker.Wait()
	if r := streamOf(t, callID, 1); len(r.Outputs) != 0 {
		t.Fatalf("stopping the worker gave the interrupted input an output: %+v", r.Outputs)
	}
	worker = startGust(t, url, workerArgs...)
	defer func() {
		api("POST", "/v1/apps/"+app.AppID+"/stop", nil, nil)
		worker.Process.Signal(os.Interrupt)
		worker.Wait()
		if err := checkNoLeftovers(filepath.Join(dir, "worker")); err != nil {
			t.Error(err)
		}
	}()
	if r := streamOf(t, callID, 120); len(r.Outputs) != 1 || r.value(t, 0) != 9.0 {
		t.Fatalf("after a clean stop of the worker: %+v", r)
	}
}

// TestFunctionExitHookAndImageInUse: a class's @exit methods run when its container is scaled
// down (their output lands in the app's logs), and the image of a running function cannot be
// deleted.
func TestFunctionExitHookAndImageInUse(t *testing.T) {
	needGust(t)
	src := fnModule + `
class Closer:
    def bye(self):
        print("exit hook ran")
    bye._gust_exit = True

    def hello(self):
        return "hi"
    hello._gust_method = True
`
	blob := uploadCode(t, map[string]string{"fnmod.py": src})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "fn-exit", "mode": "ephemeral", "code": map[string]string{"blob": blob, "module": "fnmod"},
		"functions": []map[string]any{{"name": "Closer", "kind": "class", "methods": map[string]any{"hello": map[string]any{}}, "image_id": gust.imageID, "scaledown_window": 1}}}, &app); err != nil {
		t.Fatal(err)
	}
	defer api("POST", "/v1/apps/"+app.AppID+"/stop", nil, nil)
	if v := callRemote(t, app.Functions["Closer"], map[string]any{"method": "hello"}).value(t, 0); v != "hi" {
		t.Fatalf("Closer().hello() = %v", v)
	}
	code, body := raw(t, "DELETE", "/v1/images/"+gust.imageID, nil)
	if code != 409 || !strings.Contains(body, "used by") {
		t.Fatalf("deleting the image of a running function: %d %s", code, body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, _ := http.DefaultClient.Do(authed("GET", "/v1/apps/"+app.AppID+"/logs"))
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if strings.Contains(b.String(), "exit hook ran") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no @exit output after the container scaled down: %s (stats %v)", b.String(), appStats(t, app.AppID, app.Functions["Closer"]))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestFunctionRedeploy: a second deploy replaces the first; Function.from_name finds the new
// version, and the old one's idle containers go at once.
func TestFunctionRedeploy(t *testing.T) {
	needGust(t)
	deploy := func(src string) fnApp {
		blob := uploadCode(t, map[string]string{"v.py": src})
		var app fnApp
		if err := api("POST", "/v1/apps/publish", map[string]any{"name": "fn-redeploy", "mode": "deployed", "code": map[string]string{"blob": blob, "module": "v"},
			"functions": []map[string]any{{"name": "version", "image_id": gust.imageID}}}, &app); err != nil {
			t.Fatal(err)
		}
		return app
	}
	v1 := deploy("def version():\n    return 1\n")
	defer api("POST", "/v1/apps/"+v1.AppID+"/stop", nil, nil)
	if v := callRemote(t, v1.Functions["version"], nil).value(t, 0); v != 1.0 {
		t.Fatalf("v1 = %v", v)
	}
	v2 := deploy("def version():\n    return 2\n")
	var fn struct {
		ID string `json:"function_id"`
	}
	if err := api("POST", "/v1/functions/lookup", map[string]any{"app_name": "fn-redeploy", "name": "version"}, &fn); err != nil || fn.ID != v2.Functions["version"] {
		t.Fatalf("lookup after the redeploy: %v %v", fn, err)
	}
	if v := callRemote(t, fn.ID, nil).value(t, 0); v != 2.0 {
		t.Fatalf("v2 = %v", v)
	}
	deadline := time.Now().Add(10 * time.Second)
	for appStats(t, v1.AppID, v1.Functions["version"])["containers"] != 0.0 {
		if time.Now().After(deadline) {
			t.Fatalf("the replaced version still has containers: %v", appStats(t, v1.AppID, v1.Functions["version"]))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFunctionCrashesOnlyCostTheirOwnAttempts maps over a function whose container dies now and
// then: inputs held for a dying container, or sent to it as it died, run elsewhere without
// losing an attempt, so every input succeeds within its retries.
func TestFunctionCrashesOnlyCostTheirOwnAttempts(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-chaos", "ephemeral", map[string]any{"name": "chancy", "max_containers": 3,
		"retries": map[string]any{"max_retries": 5, "initial_delay": 0, "backoff_coefficient": 1}})
	var ins []map[string]any
	for i := 0; i < 200; i++ {
		ins = append(ins, map[string]any{"args": jsonArgs(i), "format": "json"})
	}
	r := readStream(t, post(t, "/v1/functions/"+app.Functions["chancy"]+"/calls", map[string]any{"kind": "map", "stream": true, "inputs": ins}))
	if len(r.Outputs) != 200 {
		t.Fatalf("%d outputs of 200", len(r.Outputs))
	}
	for i, out := range r.Outputs {
		if out["status"] != "success" {
			t.Fatalf("output %d: %v", i, out)
		}
	}
}

// TestFunctionBufferContainers: while a function has work, buffer_containers idle extras are
// kept ready beside the busy ones.
func TestFunctionBufferContainers(t *testing.T) {
	needGust(t)
	app := publish(t, "fn-buffer", "ephemeral", map[string]any{"name": "slow", "buffer_containers": 1, "scaledown_window": 1})
	fn := app.Functions["slow"]
	var head struct {
		CallID string `json:"call_id"`
	}
	if err := api("POST", "/v1/functions/"+fn+"/calls", map[string]any{"kind": "spawn", "inputs": []map[string]any{{"args": jsonArgs(4), "format": "json"}}}, &head); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := appStats(t, app.AppID, fn)
		if st["running"] == 1.0 && st["containers"] == 2.0 && st["idle_containers"] == 1.0 {
			if !strings.Contains(fmt.Sprint(st["reason"]), "buffer") && !strings.Contains(fmt.Sprint(st["reason"]), "steady at 2") {
				t.Fatalf("reason: %v", st["reason"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no idle buffer container beside the busy one: %v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := streamOf(t, head.CallID, 30); len(r.Outputs) != 1 || r.value(t, 0) != 4.0 {
		t.Fatalf("slow(4): %+v", r)
	}
}

package integration

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/gust-run/gust/sdk/go"
)

// Dicts and Queues, end to end: a Modal program whose functions (real containers) share a
// Dict and a Queue with their caller; the Python SDK's errors at Modal's limits; another
// workspace's objects unreachable through every route, both SDKs and from containers.

// runProgram runs a program of sdk/python/tests/programs with python3 against this gust and
// returns its RESULT lines by key.
func runProgram(t *testing.T, name string, args ...string) map[string]string {
	t.Helper()
	sdk := filepath.Join(repoRoot(), "sdk", "python")
	cmd := exec.Command("python3", append([]string{filepath.Join(sdk, "tests", "programs", name)}, args...)...)
	cmd.Dir = filepath.Join(sdk, "tests", "programs")
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+sdk)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	res := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			k, v, _ := strings.Cut(rest, " ")
			res[k] = v
		}
	}
	t.Logf("%s:\n%s", name, out)
	return res
}

// TestDictQueueProgram: a function puts into a Queue that its caller gets from (each blocked
// get returns promptly after the put), a named Dict shared by the caller and map workers, an
// ephemeral Queue gone after its block, and another workspace's Dict out of a container's reach.
func TestDictQueueProgram(t *testing.T) {
	needGust(t)
	cred, _ := newWorkspace(t, "dq-other")
	var other struct {
		ID string `json:"dict_id"`
	}
	code, body := apiAs(t, cred, "POST", "/v1/dicts", map[string]any{"name": "theirs"})
	if code != 201 {
		t.Fatalf("create a Dict in the other workspace: %d %s", code, body)
	}
	mustJSON(t, body, &other)

	res := runProgram(t, "dictqueue.py", other.ID)
	want := map[string]string{
		"dict_seen":      "['[1, 2, 3]']",
		"dict_created":   "1",
		"dict_has":       "True",
		"dict_keys":      "['from_caller', 'from_fn_0', 'from_fn_1', 'from_fn_2', 'from_fn_3', 'once']",
		"dict_fn_value":  "{'k': 2, 'seen': [1, 2, 3]}",
		"dict_once":      "True",
		"queue_order":    "True",
		"queue_letters":  "['a', 'b', 'c']",
		"producer":       "20",
		"queue_fast":     "True",
		"ephemeral_gone": "True",
		"foreign":        "NotFoundError",
	}
	for k, v := range want {
		if res[k] != v {
			t.Errorf("RESULT %s = %q, want %q", k, res[k], v)
		}
	}
	t.Logf("put in a container -> blocked get in the caller: %s", res["queue_latency_ms"])
}

// TestDictQueueLimits runs the Python SDK's tests of Modal's errors and limits
// (sdk/python/tests/test_dictqueue.py) against this gust.
func TestDictQueueLimits(t *testing.T) {
	needGust(t)
	dir := filepath.Join(repoRoot(), "sdk", "python")
	cmd := exec.Command("python3", "-m", "unittest", "-v", "test_dictqueue")
	cmd.Dir = filepath.Join(dir, "tests")
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python Dict/Queue tests failed: %v", err)
	}
}

// TestDictQueueCrossWorkspace: workspace B's owner, against A's Dict and Queue by ID through
// every route: each answer is 404, and A's contents are unchanged.
func TestDictQueueCrossWorkspace(t *testing.T) {
	needGust(t)
	var d struct {
		ID string `json:"dict_id"`
	}
	var q struct {
		ID string `json:"queue_id"`
	}
	if err := api("POST", "/v1/dicts", map[string]any{"name": "xws-dict"}, &d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api("DELETE", "/v1/dicts/"+d.ID, nil, nil) })
	if err := api("POST", "/v1/queues", map[string]any{"name": "xws-queue"}, &q); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api("DELETE", "/v1/queues/"+q.ID, nil, nil) })
	key := []byte("\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01k\x94.") // pickle.dumps("k", 4)
	val := []byte("\x80\x04K\x01.")
	if err := api("POST", "/v1/dicts/"+d.ID+"/entries", map[string]any{"entries": []map[string]any{{"key": key, "value": val}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := api("POST", "/v1/queues/"+q.ID+"/put", map[string]any{"values": [][]byte{val}}, nil); err != nil {
		t.Fatal(err)
	}
	k64 := base64.RawURLEncoding.EncodeToString(key)
	cred, _ := newWorkspace(t, "dq-xws")
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/dicts/" + d.ID, nil},
		{"DELETE", "/v1/dicts/" + d.ID, nil},
		{"POST", "/v1/dicts/" + d.ID + "/heartbeat", nil},
		{"POST", "/v1/dicts/" + d.ID + "/clear", nil},
		{"GET", "/v1/dicts/" + d.ID + "/len", nil},
		{"POST", "/v1/dicts/" + d.ID + "/entries", map[string]any{"entries": []map[string]any{{"key": key, "value": val}}}},
		{"GET", "/v1/dicts/" + d.ID + "/entries", nil},
		{"GET", "/v1/dicts/" + d.ID + "/entries/" + k64, nil},
		{"DELETE", "/v1/dicts/" + d.ID + "/entries/" + k64, nil},
		{"GET", "/v1/queues/" + q.ID, nil},
		{"DELETE", "/v1/queues/" + q.ID, nil},
		{"POST", "/v1/queues/" + q.ID + "/heartbeat", nil},
		{"POST", "/v1/queues/" + q.ID + "/put", map[string]any{"values": [][]byte{val}}},
		{"POST", "/v1/queues/" + q.ID + "/get", map[string]any{"timeout": 0}},
		{"GET", "/v1/queues/" + q.ID + "/len", nil},
		{"POST", "/v1/queues/" + q.ID + "/clear", map[string]any{"all": true}},
		{"GET", "/v1/queues/" + q.ID + "/items", nil},
	} {
		if code, body := apiAs(t, cred, r.method, r.path, r.body); code != 404 {
			t.Errorf("other workspace: %s %s: %d %s, want 404", r.method, r.path, code, body)
		}
	}
	// Names are per workspace: B's lookup of A's name finds nothing, and B's list is empty.
	if code, body := apiAs(t, cred, "POST", "/v1/dicts/lookup", map[string]any{"name": "xws-dict"}); code != 404 {
		t.Errorf("other workspace: lookup of A's Dict name: %d %s", code, body)
	}
	if code, body := apiAs(t, cred, "GET", "/v1/queues", nil); code != 200 || strings.Contains(body, q.ID) {
		t.Errorf("other workspace: list of Queues: %d %s", code, body)
	}
	// The Go SDK and the CLI from B: not found as well (the CLI runs on the Go SDK).
	cmd := exec.Command(gust.bin, "dict", "items", "xws-dict")
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN=", "GUST_TOKEN_ID="+strings.Split(cred, ":")[0], "GUST_TOKEN_SECRET="+strings.Split(cred, ":")[1])
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not found") {
		t.Errorf("gust dict items from the other workspace: %v %s", err, out)
	}
	// The Python SDK from B: not found, through the Dict's and the Queue's methods.
	py := exec.Command("python3", "-c", `
import sys, gust
from gust.exception import NotFoundError
for f in (lambda: gust.Dict.from_id(sys.argv[1]).get("k"), lambda: gust.Dict.from_id(sys.argv[1]).update(k=2),
          lambda: gust.Queue.from_id(sys.argv[2]).get(block=False), lambda: gust.Queue.from_id(sys.argv[2]).put(1),
          lambda: gust.Dict.from_name("xws-dict").len()):
    try:
        f()
        print("REACHED")
    except NotFoundError:
        print("not found")
`, d.ID, q.ID)
	py.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN=", "GUST_TOKEN_ID="+strings.Split(cred, ":")[0],
		"GUST_TOKEN_SECRET="+strings.Split(cred, ":")[1], "PYTHONPATH="+filepath.Join(repoRoot(), "sdk", "python"))
	if out, err := py.CombinedOutput(); err != nil || strings.Count(string(out), "not found") != 5 {
		t.Errorf("the Python SDK from the other workspace: %v\n%s", err, out)
	}
	// A's contents are intact.
	var got struct {
		Found bool   `json:"found"`
		Value []byte `json:"value"`
	}
	if err := api("GET", "/v1/dicts/"+d.ID+"/entries/"+k64, nil, &got); err != nil || !got.Found || string(got.Value) != string(val) {
		t.Fatalf("A's Dict after B's attempts: %+v %v", got, err)
	}
	var n struct{ Len int }
	if err := api("GET", "/v1/queues/"+q.ID+"/len", nil, &n); err != nil || n.Len != 1 {
		t.Fatalf("A's Queue after B's attempts: %+v %v", n, err)
	}
}

func mustJSON(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
}

// TestDictQueueGoSDKAndCLI: the Go SDK's Dict and Queue (a blocked Get woken by a Put), and
// the CLI's `gust dict ...` and `gust queue ...` over what Python would have pickled.
func TestDictQueueGoSDKAndCLI(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := sdk.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	dname, qname := "cli-dict-"+time.Now().Format("150405.000"), "cli-queue-"+time.Now().Format("150405.000")
	d, err := c.DictFromName(ctx, dname, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.DeleteDict(context.Background(), dname, true)
	list, _ := hex.DecodeString("8004950b000000000000005d94284b018c016194652e") // pickle.dumps([1, 'a'], protocol=4)
	if created, err := d.Put(ctx, sdk.PickleString("greeting"), sdk.PickleString("hello world"), false); err != nil || !created {
		t.Fatalf("put: %v %v", created, err)
	}
	if created, err := d.Put(ctx, sdk.PickleString("greeting"), sdk.PickleString("other"), true); err != nil || created {
		t.Fatalf("put with skipIfExists over an existing key: %v %v", created, err)
	}
	if err := d.Update(ctx, []sdk.DictEntry{{Key: sdk.PickleString("list"), Value: list}}); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Len(ctx); err != nil || n != 2 {
		t.Fatalf("len: %d %v", n, err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gust.bin, args...)
		cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gust %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("dict", "get", dname, "greeting"); strings.TrimSpace(out) != "hello world" {
		t.Errorf("gust dict get: %q", out)
	}
	if out := run("dict", "get", dname, "missing"); strings.TrimSpace(out) != "None" {
		t.Errorf("gust dict get of a missing key: %q", out)
	}
	if out := run("dict", "items", dname); !strings.Contains(out, "greeting") || !strings.Contains(out, "[1, 'a']") {
		t.Errorf("gust dict items: %q", out)
	}
	if out := run("dict", "list"); !strings.Contains(out, dname) {
		t.Errorf("gust dict list: %q", out)
	}
	run("dict", "clear", "--yes", dname)
	if n, _ := d.Len(ctx); n != 0 {
		t.Errorf("len after gust dict clear: %d", n)
	}

	run("queue", "create", qname)
	q, err := c.QueueFromName(ctx, qname, false)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan [][]byte, 1)
	go func() {
		vals, err := q.Get(ctx, 2, sdk.QueueGetOptions{Timeout: 30 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- vals
	}()
	time.Sleep(200 * time.Millisecond)
	putAt := time.Now()
	if err := q.Put(ctx, [][]byte{sdk.PickleString("first")}, sdk.QueuePutOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case vals := <-got:
		if len(vals) != 1 || string(vals[0]) != string(sdk.PickleString("first")) {
			t.Fatalf("blocked get: %q", vals)
		}
		t.Logf("Go SDK: put -> blocked get returned in %v", time.Since(putAt))
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked Get was not woken by the Put")
	}
	if _, err := q.Get(ctx, 1, sdk.QueueGetOptions{Timeout: 100 * time.Millisecond}); !errors.Is(err, sdk.ErrQueueEmpty) {
		t.Fatalf("get on an empty queue with a timeout: %v", err)
	}
	for _, v := range []string{"a", "b", "c"} {
		if err := q.Put(ctx, [][]byte{sdk.PickleString(v)}, sdk.QueuePutOptions{Partition: "p"}); err != nil {
			t.Fatal(err)
		}
	}
	if out := run("queue", "len", qname, "--partition", "p"); strings.TrimSpace(out) != "3" {
		t.Errorf("gust queue len: %q", out)
	}
	if out := run("queue", "peek", qname, "2", "-p", "p"); out != "a\nb\n" {
		t.Errorf("gust queue peek: %q", out)
	}
	if out := run("queue", "list"); !strings.Contains(out, qname) {
		t.Errorf("gust queue list: %q", out)
	}
	run("queue", "clear", qname, "--all", "--yes")
	if out := run("queue", "len", qname, "--total"); strings.TrimSpace(out) != "0" {
		t.Errorf("gust queue len --total after clear: %q", out)
	}
	run("queue", "delete", "--yes", qname)
	if _, err := c.QueueFromName(ctx, qname, false); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("after gust queue delete: %v", err)
	}
}

// TestDictQueueQuota: a workspace's kv_store_mib bounds what its Dicts and Queues hold.
func TestDictQueueQuota(t *testing.T) {
	needGust(t)
	cred, ws := newWorkspace(t, "dq-quota")
	if err := api("PUT", "/v1/workspaces/"+ws+"/quotas", map[string]any{"sandboxes": 0, "cpu": 0, "memory_mib": 0, "gpus": 0,
		"image_disk_mib": 0, "requests_per_second": 0, "kv_store_mib": 1}, nil); err != nil {
		t.Fatal(err)
	}
	code, body := apiAs(t, cred, "POST", "/v1/queues", map[string]any{"name": "q"})
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var q struct {
		ID string `json:"queue_id"`
	}
	mustJSON(t, body, &q)
	item := make([]byte, 600<<10)
	if code, body := apiAs(t, cred, "POST", "/v1/queues/"+q.ID+"/put", map[string]any{"values": [][]byte{item}}); code != 204 {
		t.Fatalf("first put under the quota: %d %s", code, body)
	}
	code, body = apiAs(t, cred, "POST", "/v1/queues/"+q.ID+"/put", map[string]any{"values": [][]byte{item}})
	if code != 403 || !strings.Contains(body, "quota_exceeded") || !strings.Contains(body, "kv_store_mib") {
		t.Fatalf("put over the quota: %d %s", code, body)
	}
	// Taking the item out frees the room.
	if code, body := apiAs(t, cred, "POST", "/v1/queues/"+q.ID+"/get", map[string]any{}); code != 200 {
		t.Fatalf("get: %d %s", code, body)
	}
	if code, body := apiAs(t, cred, "POST", "/v1/queues/"+q.ID+"/put", map[string]any{"values": [][]byte{item}}); code != 204 {
		t.Fatalf("put after a get: %d %s", code, body)
	}
}

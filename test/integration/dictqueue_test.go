package integration

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

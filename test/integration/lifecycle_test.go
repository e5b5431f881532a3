package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type sbState struct {
	ID       string  `json:"sandbox_id"`
	Status   string  `json:"status"`
	ExitCode *int    `json:"exit_code"`
	Error    *string `json:"error"`
}

func waitSandbox(t *testing.T, id string, secs int) sbState {
	t.Helper()
	var sb sbState
	if err := api("GET", "/v1/sandboxes/"+id+"?wait="+itoa(secs), nil, &sb); err != nil {
		t.Fatal(err)
	}
	return sb
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestLifecycle(t *testing.T) {
	needGust(t)
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			t.Run("command exit code", func(t *testing.T) {
				id := createRaw(t, map[string]any{"isolation": iso, "command": []string{"sh", "-c", "echo out; echo err >&2; exit 7"}})
				sb := waitSandbox(t, id, 20)
				if sb.Status != "finished" || sb.ExitCode == nil || *sb.ExitCode != 7 {
					t.Fatalf("got %+v", sb)
				}
				code, body := raw(t, "GET", "/v1/sandboxes/"+id+"/logs", nil)
				if code != 200 || !strings.Contains(body, `"stream":"stdout"`) || !strings.Contains(body, `"stream":"stderr"`) {
					t.Fatalf("logs: %d %s", code, body)
				}
			})
			t.Run("timeout", func(t *testing.T) {
				start := time.Now()
				id := createRaw(t, map[string]any{"isolation": iso, "timeout": 2})
				sb := waitSandbox(t, id, 20)
				if sb.Status != "timeout" || sb.ExitCode == nil || *sb.ExitCode != 124 {
					t.Fatalf("got %+v", sb)
				}
				if d := time.Since(start); d > 6*time.Second {
					t.Fatalf("timeout of 2 s took %v", d)
				}
				if code, _ := raw(t, "POST", "/v1/sandboxes/"+id+"/execs", js(map[string]any{"command": []string{"true"}})); code != 409 {
					t.Fatalf("exec after timeout: %d", code)
				}
			})
			t.Run("idle timeout", func(t *testing.T) {
				id := createRaw(t, map[string]any{"isolation": iso, "idle_timeout": 1, "timeout": 60})
				// Activity holds it off...
				for i := 0; i < 4; i++ {
					execRaw(t, id, "true")
					time.Sleep(400 * time.Millisecond)
				}
				var sb sbState
				api("GET", "/v1/sandboxes/"+id, nil, &sb)
				if sb.Status != "running" {
					t.Fatalf("idle_timeout fired while busy: %+v", sb)
				}
				// ...and a running exec counts as activity.
				execRaw(t, id, "sleep", "2")
				api("GET", "/v1/sandboxes/"+id, nil, &sb)
				if sb.Status != "running" {
					t.Fatalf("idle_timeout fired during an exec: %+v", sb)
				}
				sb = waitSandbox(t, id, 10)
				if sb.Status != "timeout" || sb.Error == nil || !strings.Contains(*sb.Error, "idle") {
					t.Fatalf("got %+v", sb)
				}
			})
			t.Run("snapshot", func(t *testing.T) {
				id := createRaw(t, map[string]any{"isolation": iso})
				execRaw(t, id, "sh", "-c", "echo kept > /root/state.txt && rm /etc/issue && touch /root/u && chown 1000:1001 /root/u")
				var im struct {
					ID string `json:"image_id"`
				}
				if err := api("POST", "/v1/sandboxes/"+id+"/snapshot", nil, &im); err != nil {
					t.Fatal(err)
				}
				id2 := createRaw(t, map[string]any{"isolation": iso, "image_id": im.ID})
				// Owners survive too: under runc the writable layer holds host ids (a user
				// namespace), and the snapshot must hold the ids seen inside.
				out, errOut, _ := execRaw(t, id2, "sh", "-c", "cat /root/state.txt; test -e /etc/issue && echo issue-back || echo issue-gone; stat -c %u:%g /root/state.txt /root/u")
				if out != "kept\nissue-gone\n0:0\n1000:1001\n" {
					t.Fatalf("snapshot lost state: %q %q", out, errOut)
				}
			})
			t.Run("threads", func(t *testing.T) {
				// glibc's pthread_create must work (clone3 falls back to clone under seccomp), and
				// `python` is on the PATH as in Modal's debian_slim.
				id := createRaw(t, map[string]any{"isolation": iso})
				out, errOut, _ := execRaw(t, id, "python", "-c", "import threading; t = threading.Thread(target=print, args=('thread ok',)); t.start(); t.join()")
				if out != "thread ok\n" {
					t.Fatalf("threads: %q %q", out, errOut)
				}
			})
			t.Run("stdin and workdir and env", func(t *testing.T) {
				id := createRaw(t, map[string]any{"isolation": iso, "workdir": "/work/dir", "env": map[string]string{"GREETING": "hi"}})
				out, _, _ := execRaw(t, id, "sh", "-c", "pwd; echo $GREETING")
				if out != "/work/dir\nhi\n" {
					t.Fatalf("got %q", out)
				}
			})
		})
	}
}

func TestListTagsAndNames(t *testing.T) {
	needGust(t)
	tag := "run-" + itoa(int(time.Now().UnixNano()%1e9))
	name := "named-" + tag
	id := createRaw(t, map[string]any{"tags": map[string]string{"suite": tag}, "name": name})
	var list struct {
		Sandboxes []sbState `json:"sandboxes"`
	}
	if err := api("GET", "/v1/sandboxes?tag=suite="+tag, nil, &list); err != nil || len(list.Sandboxes) != 1 || list.Sandboxes[0].ID != id {
		t.Fatalf("list by tag: %+v %v", list, err)
	}
	if code, body := raw(t, "POST", "/v1/sandboxes", js(map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "name": name})); code != 409 {
		t.Fatalf("duplicate name: %d %s", code, body)
	}
	if err := api("GET", "/v1/sandboxes?app_id="+gust.appID+"&name="+name, nil, &list); err != nil || len(list.Sandboxes) != 1 {
		t.Fatalf("list by name: %+v %v", list, err)
	}
	if code, body := raw(t, "PUT", "/v1/sandboxes/"+id+"/tags", js(map[string]any{"tags": map[string]string{"suite": tag + "-b"}})); code != 200 {
		t.Fatalf("set tags: %d %s", code, body)
	}
	if err := api("GET", "/v1/sandboxes?tag=suite="+tag+"-b", nil, &list); err != nil || len(list.Sandboxes) != 1 {
		t.Fatalf("list by new tag: %+v %v", list, err)
	}
}

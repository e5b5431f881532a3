package gust

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCreateSandbox(t *testing.T) {
	tests := []struct {
		name     string
		opts     SandboxOptions
		wantBody map[string]any
	}{
		{name: "minimal", opts: SandboxOptions{App: "ap-1", Image: "im-1"},
			wantBody: map[string]any{"app_id": "ap-1", "image_id": "im-1"}},
		{name: "everything", opts: SandboxOptions{App: "ap-1", Image: "im-1", Command: []string{"sleep", "9"}, Timeout: 90 * time.Second,
			IdleTimeout: 1500 * time.Millisecond, CPU: 0.5, MemoryMiB: 256, Workdir: "/root", Env: map[string]string{"K": "V"},
			BlockNetwork: true, Name: "web", Tags: map[string]string{"t": "1"}, Isolation: IsolationGVisor},
			wantBody: map[string]any{"app_id": "ap-1", "image_id": "im-1", "command": []any{"sleep", "9"}, "timeout": 90.0,
				"idle_timeout": 1.5, "cpu": 0.5, "memory": 256.0, "workdir": "/root", "env": map[string]any{"K": "V"},
				"block_network": true, "name": "web", "tags": map[string]any{"t": "1"}, "isolation": "gvisor"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFakeAPI(t)
			f.handle("POST /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
				if b := decodeBody(t, r); !reflect.DeepEqual(b, tt.wantBody) {
					t.Errorf("body %v\nwant %v", b, tt.wantBody)
				}
				sb := sandboxJSON("sb-7", "running")
				sb["name"], sb["idle_timeout"], sb["workdir"], sb["timeout"] = "web", 1.5, "/root", 90
				sb["tags"] = map[string]string{"t": "1"}
				writeJSON(w, http.StatusCreated, sb)
			})
			sb, err := c.CreateSandbox(t.Context(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if sb.ID != "sb-7" || sb.Status != StatusRunning || sb.Name != "web" || sb.IdleTimeout != 1500*time.Millisecond ||
				sb.Timeout != 90*time.Second || sb.Workdir != "/root" || sb.Tags["t"] != "1" || sb.MemoryMiB != 1024 ||
				sb.StartedAt.IsZero() || !sb.FinishedAt.IsZero() || sb.ExitCode != nil {
				t.Errorf("sandbox %+v", sb)
			}
		})
	}
}

func TestCreateSandboxNeedsAppAndImage(t *testing.T) {
	_, c := newFakeAPI(t)
	for _, o := range []SandboxOptions{{Image: "im-1"}, {App: "ap-1"}} {
		if _, err := c.CreateSandbox(t.Context(), o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestListSandboxes(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("app_id") != "ap-1" || q.Get("include_finished") != "1" || strings.Join(q["tag"], ",") != "a=1,b=2" || q.Has("name") {
			t.Errorf("query %v", q)
		}
		done := sandboxJSON("sb-2", "terminated")
		done["exit_code"], done["finished_at"], done["error"] = 137, "2026-01-02T03:05:00Z", "terminated by the user"
		writeJSON(w, 200, map[string]any{"sandboxes": []any{sandboxJSON("sb-3", "running"), done}})
	})
	sbs, err := c.ListSandboxes(t.Context(), ListOptions{AppID: "ap-1", Tags: map[string]string{"b": "2", "a": "1"}, IncludeFinished: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sbs) != 2 || sbs[0].ID != "sb-3" || sbs[1].Status != StatusTerminated || *sbs[1].ExitCode != 137 ||
		sbs[1].Error != "terminated by the user" || sbs[1].FinishedAt.IsZero() || !sbs[1].Status.Done() || sbs[0].Status.Done() {
		t.Fatalf("sandboxes %+v %+v", sbs[0], sbs[1])
	}
}

func TestSandboxFromName(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("POST /v1/apps/lookup", func(w http.ResponseWriter, r *http.Request) {
		if b := decodeBody(t, r); b["name"] != "my-app" || b["create_if_missing"] != false {
			t.Errorf("lookup %v", b)
		}
		writeJSON(w, 200, map[string]any{"app_id": "ap-5", "name": "my-app", "created_at": "2026-01-01T00:00:00Z"})
	})
	f.handle("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("app_id") != "ap-5" {
			t.Errorf("query %v", q)
		}
		if q.Get("name") == "web" {
			sb := sandboxJSON("sb-9", "running")
			sb["name"] = "web"
			writeJSON(w, 200, map[string]any{"sandboxes": []any{sb}})
			return
		}
		writeJSON(w, 200, map[string]any{"sandboxes": []any{}})
	})
	sb, err := c.SandboxFromName(t.Context(), "my-app", "web")
	if err != nil || sb.ID != "sb-9" || sb.Name != "web" {
		t.Fatalf("SandboxFromName = %+v, %v", sb, err)
	}
	if _, err := c.SandboxFromName(t.Context(), "my-app", "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("missing: %v", err)
	}
}

func TestSandboxWaitPollTerminate(t *testing.T) {
	f, c := newFakeAPI(t)
	var waits atomic.Int32
	var terminated atomic.Bool
	f.handle("GET /v1/sandboxes/sb-1", func(w http.ResponseWriter, r *http.Request) {
		wait := r.URL.Query().Get("wait")
		switch {
		case terminated.Load():
			sb := sandboxJSON("sb-1", "terminated")
			sb["exit_code"] = 137
			writeJSON(w, 200, sb)
		case wait != "" && waits.Add(1) == 2: // the second long poll sees it finish
			if wait != "55" {
				t.Errorf("wait=%s", wait)
			}
			sb := sandboxJSON("sb-1", "finished")
			sb["exit_code"] = 3
			writeJSON(w, 200, sb)
		default:
			writeJSON(w, 200, sandboxJSON("sb-1", "running"))
		}
	})
	f.handle("POST /v1/sandboxes/sb-1/terminate", func(w http.ResponseWriter, r *http.Request) {
		terminated.Store(true)
		sb := sandboxJSON("sb-1", "terminated")
		sb["exit_code"] = 137
		writeJSON(w, 200, sb)
	})
	sb, err := c.Sandbox(t.Context(), "sb-1")
	if err != nil {
		t.Fatal(err)
	}
	if code, err := sb.Poll(t.Context()); code != nil || err != nil {
		t.Fatalf("Poll = %v, %v", code, err)
	}
	code, err := sb.Wait(t.Context())
	if code != 3 || err != nil || sb.Status != StatusFinished || waits.Load() != 2 {
		t.Fatalf("Wait = %d, %v (%s, %d long polls)", code, err, sb.Status, waits.Load())
	}
	if err := sb.Terminate(t.Context()); err != nil || sb.Status != StatusTerminated || *sb.ExitCode != ExitTerminated {
		t.Fatalf("Terminate: %v, %+v", err, sb)
	}
	if code, err := sb.Poll(t.Context()); code == nil || *code != 137 || err != nil {
		t.Fatalf("Poll after terminate = %v, %v", code, err)
	}
}

func TestSandboxTagsSnapshotLogs(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	f.handle("PUT /v1/sandboxes/sb-1/tags", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, r)
		out := sandboxJSON("sb-1", "running")
		out["tags"] = b["tags"]
		writeJSON(w, 200, out)
	})
	f.handle("POST /v1/sandboxes/sb-1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 201, map[string]any{"image_id": "im-snap", "kind": "snapshot", "parent_id": "im-1", "created_at": "2026-01-01T00:00:00Z", "size_bytes": 10})
	})
	f.handle("GET /v1/sandboxes/sb-1/logs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.out("stdout", []byte("a\n"))
		n.out("stderr", []byte("b\n"))
		if r.URL.Query().Get("follow") == "1" {
			n.out("stdout", []byte("c\n"))
			n.send(map[string]any{"exit_code": 0})
		}
	})
	if err := sb.SetTags(t.Context(), map[string]string{"x": "y"}); err != nil || sb.Tags["x"] != "y" {
		t.Fatalf("SetTags: %v, %v", err, sb.Tags)
	}
	im, err := sb.SnapshotFilesystem(t.Context())
	if err != nil || im.ID != "im-snap" || im.Kind != ImageSnapshot || im.ParentID != "im-1" {
		t.Fatalf("snapshot %+v, %v", im, err)
	}
	var out, errOut strings.Builder
	if err := sb.Logs(t.Context(), false, &out, &errOut); err != nil || out.String() != "a\n" || errOut.String() != "b\n" {
		t.Fatalf("logs: %v %q %q", err, out.String(), errOut.String())
	}
	out.Reset()
	if err := sb.Logs(t.Context(), true, &out, nil); err != nil || out.String() != "a\nc\n" {
		t.Fatalf("logs -f: %v %q", err, out.String())
	}
	if err := sb.Logs(t.Context(), false, failingWriter{}, nil); err == nil || !strings.Contains(err.Error(), "writing stdout") {
		t.Fatalf("failing writer: %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

package gust

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestListApps(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"apps": []map[string]any{
			{"app_id": "ap-1", "name": "web", "created_at": "2026-01-02T03:04:05Z", "state": "deployed", "functions": 2, "containers": 3},
			{"app_id": "ap-2", "name": "sandboxes", "created_at": "2026-01-02T03:04:05Z"},
			{"app_id": "ap-3", "name": "alt", "state": "stopped", "function_count": 4, "container_count": 0},
		}})
	})
	apps, err := c.ListApps(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id, name, state string
		fns, ctrs       int
	}
	var got []row
	for _, a := range apps {
		got = append(got, row{a.ID, a.Name, a.State, a.FunctionCount, a.ContainerCount})
	}
	want := []row{{"ap-1", "web", "deployed", 2, 3}, {"ap-2", "sandboxes", "", 0, 0}, {"ap-3", "alt", "stopped", 4, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("apps = %+v, want %+v", got, want)
	}
	if !apps[0].CreatedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("created_at = %v", apps[0].CreatedAt)
	}
}

func TestGetApp(t *testing.T) {
	fn := func(id, name string, containers int) map[string]any {
		doc := functionJSON(id, name)
		doc["stats"] = map[string]any{"pending": 0, "running": 1, "containers": containers, "idle_containers": 0, "reason": "in flight 1"}
		return doc
	}
	tests := []struct {
		name string
		body map[string]any
	}{
		{"server", map[string]any{"app_id": "ap-1", "name": "web", "state": "deployed", "functions": 2, "containers": 3,
			"function_details": []any{fn("fu-2", "g", 2), fn("fu-1", "f", 1)}}},
		{"flat", map[string]any{"app_id": "ap-1", "name": "web", "state": "deployed",
			"functions": []any{fn("fu-2", "g", 2), fn("fu-1", "f", 1)}}},
		{"nested", map[string]any{"app": map[string]any{"app_id": "ap-1", "name": "web", "state": "deployed"},
			"functions": []any{fn("fu-1", "f", 1), fn("fu-2", "g", 2)}}},
		{"by name", map[string]any{"app_id": "ap-1", "name": "web", "state": "deployed",
			"functions": map[string]any{"g": fn("fu-2", "", 2), "f": fn("fu-1", "f", 1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFakeAPI(t)
			f.handle("GET /v1/apps/ap-1", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, tt.body) })
			a, err := c.GetApp(t.Context(), "ap-1")
			if err != nil {
				t.Fatal(err)
			}
			if a.ID != "ap-1" || a.Name != "web" || a.State != "deployed" || a.FunctionCount != 2 || a.ContainerCount != 3 || len(a.Functions) != 2 {
				t.Fatalf("app = %+v", a)
			}
			if a.Functions[0].Name != "f" || a.Functions[1].Name != "g" || a.Functions[1].Stats.Containers != 2 || a.Functions[0].Stats.Reason != "in flight 1" {
				t.Errorf("functions = %+v, %+v", a.Functions[0], a.Functions[1])
			}
			if a.Functions[0].c != c {
				t.Error("functions are not bound to the client")
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, c := newFakeAPI(t)
		if _, err := c.GetApp(t.Context(), "ap-404"); !errors.Is(err, ErrNotFound) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestStopApp(t *testing.T) {
	f, c := newFakeAPI(t)
	var bodies []map[string]any
	f.handle("POST /v1/apps/ap-1/stop", func(w http.ResponseWriter, r *http.Request) {
		bodies = append(bodies, decodeBody(t, r))
		writeJSON(w, http.StatusOK, map[string]any{})
	})
	if err := c.StopApp(t.Context(), "ap-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.StopApp(t.Context(), "ap-1", "fu-1"); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{{}, {"functions": []any{"fu-1"}}}
	if !reflect.DeepEqual(bodies, want) {
		t.Errorf("bodies = %v, want %v", bodies, want)
	}
	if err := c.StopApp(t.Context(), "ap-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing app: %v", err)
	}
}

func appLog(seq int, stream, data string) map[string]any {
	return map[string]any{"log": map[string]any{"seq": seq, "time": "2026-01-02T03:04:05Z", "function_id": "fu-1",
		"input_id": "in-1", "stream": stream, "data": data}}
}

func TestAppLogs(t *testing.T) {
	f, c := newFakeAPI(t)
	var opens atomic.Int32
	var queries []string
	f.handle("GET /v1/apps/ap-1/logs", func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		n := startNDJSON(w)
		switch opens.Add(1) {
		case 1:
			n.send(appLog(1, "stdout", "a\n"))
			n.send(appLog(2, "stderr", "b\n"))
			n.w.Write([]byte(`{"log": {"seq": 3, "da`)) // broken mid-line
		case 2:
			n.send(appLog(2, "stderr", "b\n")) // sent again: skipped
			n.send(appLog(3, "stdout", "c\n"))
		}
	})
	var got []string
	for l, err := range c.AppLogs(t.Context(), "ap-1", AppLogsOptions{Follow: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if l.FunctionID != "fu-1" || l.InputID != "in-1" || l.Time.IsZero() {
			t.Errorf("log = %+v", l)
		}
		got = append(got, l.Stream+":"+l.Data)
	}
	if want := []string{"stdout:a\n", "stderr:b\n", "stdout:c\n"}; !reflect.DeepEqual(got, want) {
		t.Errorf("logs = %q, want %q", got, want)
	}
	if want := []string{"follow=1", "follow=1&since=2"}; !reflect.DeepEqual(queries, want) {
		t.Errorf("queries = %q, want %q", queries, want)
	}
}

func TestAppLogsEnds(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/apps/ap-1/logs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(appLog(1, "stdout", "a\n"))
		if r.URL.Query().Get("follow") == "1" {
			<-r.Context().Done()
			return
		}
		n.send(map[string]any{"error": map[string]string{"kind": "internal", "message": "the store failed"}})
	})
	// An error line ends the sequence with the error.
	var errs []error
	for _, err := range c.AppLogs(t.Context(), "ap-1", AppLogsOptions{}) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrInternal) || !strings.Contains(errs[0].Error(), "store failed") {
		t.Errorf("errs = %v", errs)
	}
	// Ending ctx while following ends it quietly.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := 0
	for _, err := range c.AppLogs(ctx, "ap-1", AppLogsOptions{Follow: true}) {
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
		n++
		cancel()
	}
	if n != 1 {
		t.Errorf("%d logs", n)
	}
	// A missing app.
	for _, err := range c.AppLogs(t.Context(), "ap-404", AppLogsOptions{}) {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("missing app: %v", err)
		}
	}
}

// Details of some functions only (the server leaves out stopped ones) keep the app's count.
func TestGetAppCountBesideDetails(t *testing.T) {
	f, c := newFakeAPI(t)
	f.handle("GET /v1/apps/ap-1", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"app_id": "ap-1", "name": "web", "state": "deployed", "functions": 2, "containers": 0,
			"function_details": []any{functionJSON("fu-1", "f")}})
	})
	a, err := c.GetApp(t.Context(), "ap-1")
	if err != nil || a.FunctionCount != 2 || len(a.Functions) != 1 || a.ContainerCount != 0 {
		t.Errorf("GetApp = %+v, %v", a, err)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func TestPrintApps(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printApps(&b, []*gust.App{
		{ID: "ap-1", Name: "old", State: "stopped", FunctionCount: 1, CreatedAt: now.Add(-90 * time.Minute)},
		{ID: "ap-22", Name: "web", State: "deployed", FunctionCount: 3, ContainerCount: 2, CreatedAt: now.Add(-10 * time.Second)},
		{ID: "ap-3", Name: "sandboxes", CreatedAt: now.Add(-time.Hour)},
	}, now)
	want := "APP ID  NAME       STATE     FUNCTIONS  CONTAINERS  CREATED\n" +
		"ap-22   web        deployed  3          2           10s ago\n" +
		"ap-3    sandboxes  -         0          0           1h ago\n" +
		"ap-1    old        stopped   1          0           1h ago\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintApp(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	a := &gust.App{ID: "ap-1", Name: "web", State: "deployed", CreatedAt: now.Add(-2 * time.Minute), Functions: []*gust.Function{
		{ID: "fu-1", Name: "f", Kind: "function", Mode: "deployed", State: "active",
			Stats: gust.FunctionStats{Pending: 4, Running: 2, Containers: 3, Starting: 1, IdleContainers: 0, Reason: "queue 4,\nin flight 2"}},
		{ID: "fu-2", Name: "Model", Kind: "class", Mode: "deployed", State: "active",
			Methods: map[string]gust.FunctionMethod{"predict": {}, "embed": {}}, Stats: gust.FunctionStats{Containers: 1, IdleContainers: 1}},
	}}
	var b bytes.Buffer
	printApp(&b, a, now)
	want := "app web (ap-1), deployed, created 2m ago\n\n" +
		"FUNCTION                ID    MODE      STATE   PENDING  RUNNING  CONTAINERS      IDLE  AUTOSCALER\n" +
		"f                       fu-1  deployed  active  4        2        3 (1 starting)  0     queue 4, in flight 2\n" +
		"Model (embed, predict)  fu-2  deployed  active  0        0        1               1     -\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	printApp(&b, &gust.App{ID: "ap-2", Name: "empty", State: "stopped", CreatedAt: now}, now)
	if !strings.Contains(b.String(), "no functions") {
		t.Errorf("got %q", b.String())
	}
}

func TestResolveApp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		notFound := func() {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"kind": "not_found", "message": "not found"}})
		}
		switch {
		case r.Method == "GET" && r.URL.Path == "/v1/apps/ap-1":
			json.NewEncoder(w).Encode(map[string]any{"app_id": "ap-1", "name": "web"})
		case r.Method == "POST" && r.URL.Path == "/v1/apps/lookup":
			var body struct {
				Name   string `json:"name"`
				Create bool   `json:"create_if_missing"`
			}
			json.NewDecoder(r.Body).Decode(&body)
			if body.Create {
				t.Error("resolveApp creates apps")
			}
			ids := map[string]string{"web": "ap-1", "ap-named": "ap-7"}
			if id, ok := ids[body.Name]; ok {
				json.NewEncoder(w).Encode(map[string]any{"app_id": id, "name": body.Name})
				return
			}
			notFound()
		default:
			notFound()
		}
	}))
	defer srv.Close()
	c, err := gust.NewClient(gust.Config{ServerURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"ap-1": "ap-1", "web": "ap-1", "ap-named": "ap-7"} {
		if got, err := resolveApp(t.Context(), c, in); err != nil || got != want {
			t.Errorf("resolveApp(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := resolveApp(t.Context(), c, "nope"); err == nil || !strings.Contains(err.Error(), "gust app list") {
		t.Errorf("missing app: %v", err)
	}
}

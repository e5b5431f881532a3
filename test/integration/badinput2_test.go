package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// noRedirects answers a redirect as it is, so that a test sees it instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// hardened sends a request without following redirects and returns the status and body.
func hardened(t *testing.T, method, path string, body []byte) (int, string) {
	t.Helper()
	code, text, err := sendNoRedirect(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, text
}

func sendNoRedirect(method, path string, body []byte) (int, string, error) {
	req, err := http.NewRequest(method, gust.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	token := gust.token
	if path == "/v1/workers/register" {
		token = gust.joinToken // the only credential that registers a worker
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := noRedirects.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), err
}

// sendAll sends the same request n times at once and returns each status and body (or error).
func sendAll(n int, method, path string, body []byte) ([]int, []string) {
	codes, texts := make([]int, n), make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if codes[i], texts[i], err = sendNoRedirect(method, path, body); err != nil {
				texts[i] = err.Error()
			}
		}()
	}
	wg.Wait()
	return codes, texts
}

// serverMemKiB reads the gust process's peak and current resident memory.
func serverMemKiB(t *testing.T) (hwm, rss int) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(gust.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmHWM:" {
			hwm, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rss, _ = strconv.Atoi(f[1])
		}
	}
	return hwm, rss
}

// TestBadInputHardening: the findings of a fuzz run over every route, against the real
// binary: body limits that hold under concurrent large calls, one JSON object per body, text
// that is UTF-8 without NUL, finite numbers, CPU and timeouts the kernel and the messages
// agree with, checked worker registrations, and JSON errors (never a redirect) for odd paths.
func TestBadInputHardening(t *testing.T) {
	needGust(t)
	type expect struct {
		name, method, path string
		body               []byte
		status             int
		says               string
	}
	sandbox := func(fields map[string]any) []byte {
		req := map[string]any{"app_id": gust.appID, "image_id": gust.imageID}
		for k, v := range fields {
			req[k] = v
		}
		return js(req)
	}
	worker := func(field string, value any) []byte {
		req := map[string]any{"name": "w-bad", "addr": "http://127.0.0.1:9", "cpu": 2, "memory": 2048, "isolation": []string{"runc"}}
		req[field] = value
		return js(req)
	}
	var sandboxesBefore struct {
		Sandboxes []any `json:"sandboxes"`
	}
	if err := api("GET", "/v1/sandboxes?include_finished=1", nil, &sandboxesBefore); err != nil {
		t.Fatal(err)
	}
	code, body := hardened(t, "POST", "/v1/blobs", []byte("uploaded seconds ago"))
	if code != 201 {
		t.Fatalf("blob upload: %d %s", code, body)
	}
	var blob struct{ Blob string }
	json.Unmarshal([]byte(body), &blob)

	tests := []expect{
		{"trailing object", "POST", "/v1/apps/lookup", []byte(`{"name":"hardening","create_if_missing":true}{}`), 400, "after the JSON object"},
		{"trailing garbage", "POST", "/v1/apps/lookup", []byte(`{"name":"hardening","create_if_missing":true} x`), 400, "after the JSON object"},
		{"invalid UTF-8 name", "POST", "/v1/apps/lookup", []byte("{\"name\":\"hard\xffening\",\"create_if_missing\":true}"), 400, "UTF-8"},
		{"NUL in an app name", "POST", "/v1/apps/lookup", []byte(`{"name":"hard\u0000ening","create_if_missing":true}`), 400, "app name"},
		{"NUL in a tag", "POST", "/v1/sandboxes", sandbox(map[string]any{"tags": map[string]string{"k": "v\x00"}}), 400, "NUL"},
		{"NaN older_than", "DELETE", "/v1/images?older_than=NaN", nil, 400, "older_than"},
		{"overflowing older_than", "DELETE", "/v1/images?older_than=1e300", nil, 400, "older_than"},
		{"infinite wait", "GET", "/v1/sandboxes/sb-nope?wait=1e400", nil, 400, "wait"},
		{"NaN wait", "GET", "/v1/sandboxes/sb-nope?wait=NaN", nil, 400, "wait"},
		{"cpu under the cgroup minimum", "POST", "/v1/sandboxes", sandbox(map[string]any{"cpu": 0.005}), 400, "between 0.01 and"},
		{"sub-second timeout", "POST", "/v1/sandboxes", sandbox(map[string]any{"timeout": 0.5}), 400, "between 1 and 86400"},
		{"sub-second idle timeout", "POST", "/v1/sandboxes", sandbox(map[string]any{"idle_timeout": 0.2}), 400, "between 1 and 86400"},
		{"climbing worker name", "POST", "/v1/workers/register", worker("name", "../../x"), 400, "name"},
		{"negative worker cpu", "POST", "/v1/workers/register", worker("cpu", -4), 400, "cpu"},
		{"absurd worker memory", "POST", "/v1/workers/register", worker("memory", 1<<40), 400, "memory"},
		{"unknown worker runtime", "POST", "/v1/workers/register", worker("isolation", []string{"kvm"}), 400, "isolation"},
		{"dot-dot in a path", "GET", "/v1/sandboxes/../images", nil, 400, "segment"},
		{"double slash", "GET", "/v1//sandboxes", nil, 400, "segment"},
		{"encoded dot-dot", "GET", "/v1/sandboxes/x%2F..%2F..%2Fimages", nil, 400, "segment"},
		{"wrong method on health", "DELETE", "/v1/health", nil, 405, "not allowed"},
		{"PATCH a sandbox", "PATCH", "/v1/sandboxes/sb-nope", nil, 405, "not allowed"},
		{"OPTIONS", "OPTIONS", "/v1/sandboxes", nil, 405, "not allowed"},
		{"unknown path", "GET", "/v1/nothing-here", nil, 404, "no such endpoint"},
		{"bare /v1", "GET", "/v1", nil, 404, "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := hardened(t, tt.method, tt.path, tt.body)
			var e struct {
				Error struct{ Kind, Message string }
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Kind == "" || e.Error.Message == "" {
				t.Fatalf("%d: the error body is not the JSON error shape: %q", code, body)
			}
			if code != tt.status || !strings.Contains(e.Error.Message, tt.says) {
				t.Fatalf("%d %s, want %d saying %q", code, body, tt.status, tt.says)
			}
		})
	}

	// The refused prunes deleted nothing, and the refused creates left no sandbox behind.
	if code, body := hardened(t, "GET", "/v1/blobs/"+blob.Blob, nil); code != 200 {
		t.Fatalf("a fresh blob is gone after the refused prunes: %d %s", code, body)
	}
	var sandboxesAfter struct {
		Sandboxes []any `json:"sandboxes"`
	}
	if err := api("GET", "/v1/sandboxes?include_finished=1", nil, &sandboxesAfter); err != nil {
		t.Fatal(err)
	}
	if len(sandboxesAfter.Sandboxes) != len(sandboxesBefore.Sandboxes) {
		t.Fatalf("refused creates left sandbox records: %d before, %d after", len(sandboxesBefore.Sandboxes), len(sandboxesAfter.Sandboxes))
	}

	t.Run("body limits", func(t *testing.T) {
		hwm0, rss0 := serverMemKiB(t)
		// Three concurrent 100 MB calls (the fuzz run's) are refused as too large, unread.
		huge := bytes.Repeat([]byte(" "), 100<<20)
		copy(huge, `{"kind":"remote"}`)
		codes, bodies := sendAll(3, "POST", "/v1/functions/fu-nope/calls", huge)
		for i, code := range codes {
			if code != 413 || !strings.Contains(bodies[i], `"too_large"`) || !strings.Contains(bodies[i], "64 MiB") {
				t.Fatalf("a 100 MB call: %d %s", code, bodies[i])
			}
		}
		// One byte over the limit, and a worker's event batch over its own.
		over := huge[:64<<20+1]
		if code, body := hardened(t, "POST", "/v1/calls/fc-nope/inputs", over); code != 413 || !strings.Contains(body, "64 MiB") {
			t.Fatalf("inputs one byte over 64 MiB: %d %s", code, body)
		}
		hwm1, _ := serverMemKiB(t)
		t.Logf("after the refused bodies: peak %d MiB (was %d MiB), resident %d MiB before", hwm1>>10, hwm0>>10, rss0>>10)
		if grown := hwm1 - hwm0; grown > 64<<10 {
			t.Fatalf("refusing oversized bodies raised the server's peak memory by %d MiB", grown>>10)
		}

		// Six concurrent calls just under the limit, with real payloads, are read a few at a
		// time: the server's peak memory stays far below six bodies decoded at once.
		arg := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 1<<20))
		var b strings.Builder
		b.WriteString(`{"kind":"map","inputs":[`)
		for i := 0; i < 44; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`{"args":"` + arg + `"}`)
		}
		b.WriteString(`]}`)
		large := []byte(b.String())
		codes, bodies = sendAll(6, "POST", "/v1/functions/fu-nope/calls", large)
		for i, code := range codes {
			if code != 404 { // read and decoded whole, then the function is not found
				t.Fatalf("a %d MiB call: %d %s", len(large)>>20, code, bodies[i])
			}
		}
		hwm2, rss2 := serverMemKiB(t)
		t.Logf("after six %d MiB calls at once: peak %d MiB, resident %d MiB", len(large)>>20, hwm2>>10, rss2>>10)
		if grown := hwm2 - hwm1; grown > 768<<10 {
			t.Fatalf("six concurrent %d MiB calls raised the server's peak memory by %d MiB", len(large)>>20, grown>>10)
		}
	})
}

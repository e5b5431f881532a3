package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// buildImageAs posts an image definition with credential cred and returns its id, the log
// lines and any error line.
func buildImageAs(t *testing.T, cred string, spec map[string]any) (id string, logs []string, errMsg string) {
	t.Helper()
	b, _ := json.Marshal(spec)
	req, _ := http.NewRequest("POST", gust.url+"/v1/images", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return "", nil, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, buf.String())
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Log   *string `json:"log"`
			Image *struct {
				ID string `json:"image_id"`
			} `json:"image"`
			Error *struct{ Message string } `json:"error"`
		}
		json.Unmarshal(sc.Bytes(), &line)
		switch {
		case line.Log != nil:
			logs = append(logs, *line.Log)
		case line.Image != nil:
			id = line.Image.ID
		case line.Error != nil:
			errMsg = line.Error.Message
		}
	}
	return id, logs, errMsg
}

// catAs starts a sandbox of imageID in app appID as cred and returns what `cat path` prints.
func catAs(t *testing.T, cred, appID, imageID, path string) string {
	t.Helper()
	var sb struct {
		ID string `json:"sandbox_id"`
	}
	code, body := apiAs(t, cred, "POST", "/v1/sandboxes", map[string]any{"app_id": appID, "image_id": imageID, "command": []string{"sleep", "600"}})
	if code != 200 && code != 201 || json.Unmarshal([]byte(body), &sb) != nil || sb.ID == "" {
		t.Fatalf("create sandbox of %s: %d %s", imageID, code, body)
	}
	createdMu.Lock()
	created = append(created, sb.ID)
	createdMu.Unlock()
	defer apiAs(t, cred, "POST", "/v1/sandboxes/"+sb.ID+"/terminate", nil)
	code, body = apiAs(t, cred, "POST", "/v1/sandboxes/"+sb.ID+"/execs", map[string]any{"command": []string{"cat", path}})
	if code != 200 {
		t.Fatalf("exec in %s: %d %s", sb.ID, code, body)
	}
	var out strings.Builder
	exit := -1
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		var line struct {
			Stream   string `json:"stream"`
			Data     string `json:"data"`
			ExitCode *int   `json:"exit_code"`
		}
		json.Unmarshal([]byte(l), &line)
		if line.ExitCode != nil {
			exit = *line.ExitCode
		}
		if line.Stream == "stdout" {
			d, _ := base64.StdEncoding.DecodeString(line.Data)
			out.Write(d)
		}
	}
	if exit != 0 {
		t.Fatalf("cat %s in an image of %s: exit %d, %s", path, imageID, exit, body)
	}
	return strings.TrimSpace(out.String())
}

// TestBuildCachePerWorkspace: built steps are cached per workspace. Workspace B building the
// steps that A built runs them itself: it neither gets A's layer nor learns from a cache hit
// (a fast build) that A built them. A building again gets its own cached layer. Before, the
// cache was keyed by the steps alone and B got A's image.
func TestBuildCachePerWorkspace(t *testing.T) {
	needGust(t)
	a, _ := newWorkspace(t, "cache-a")
	b, _ := newWorkspace(t, "cache-b")
	appA, _ := workspaceAppImage(t, a)
	appB, _ := workspaceAppImage(t, b)
	// The nonce keeps other runs' and tests' builds apart; the stamp differs per build.
	nonce := fmt.Sprint(time.Now().UnixNano())
	spec := map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{"date +%s%N > /stamp # " + nonce}},
	}}
	ran := func(logs []string) bool { return strings.Contains(strings.Join(logs, "\n"), "step 1:") }

	idA, logsA, errMsg := buildImageAs(t, a, spec)
	if errMsg != "" || idA == "" || !ran(logsA) {
		t.Fatalf("A's build: id %q, error %q, logs:\n%s", idA, errMsg, strings.Join(logsA, "\n"))
	}
	stampA := catAs(t, a, appA, idA, "/stamp")

	idB, logsB, errMsg := buildImageAs(t, b, spec)
	if errMsg != "" || idB == "" {
		t.Fatalf("B's build: id %q, error %q, logs:\n%s", idB, errMsg, strings.Join(logsB, "\n"))
	}
	if !ran(logsB) || idB == idA {
		t.Fatalf("B's build of A's steps was a cache hit (image %s, A's %s; logs %q): B learns that A built them and gets A's layer", idB, idA, logsB)
	}
	if stampB := catAs(t, b, appB, idB, "/stamp"); stampB == stampA {
		t.Fatalf("B's image holds A's build output %s", stampA)
	}
	// Neither may use the other's image.
	if code, body := apiAs(t, b, "GET", "/v1/images/"+idA, nil); code != http.StatusNotFound {
		t.Fatalf("B reading A's image: %d %s", code, body)
	}

	idA2, logsA2, errMsg := buildImageAs(t, a, spec)
	if errMsg != "" || idA2 != idA || ran(logsA2) {
		t.Fatalf("A's second build should hit A's cache: id %s (want %s), error %q, logs %q", idA2, idA, errMsg, logsA2)
	}
	if stamp := catAs(t, a, appA, idA2, "/stamp"); stamp != stampA {
		t.Fatalf("A's cached image holds %s, want %s", stamp, stampA)
	}
}

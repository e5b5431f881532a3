package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// execRaw runs a command through the raw HTTP API and returns stdout, stderr and exit code.
func execRaw(t *testing.T, sandboxID string, cmd ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, exit := execStream(t, sandboxID, cmd...)
	return stdout, stderr, exit.ExitCode
}

// execExit runs a command and returns its exit line, with the error text.
func execExit(t *testing.T, sandboxID string, cmd ...string) exitLine {
	t.Helper()
	_, _, exit := execStream(t, sandboxID, cmd...)
	return exit
}

// exitLine is the last line of an exec stream.
type exitLine struct {
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error"`
}

// execStream runs a command and reads its whole NDJSON stream.
func execStream(t *testing.T, sandboxID string, cmd ...string) (string, string, exitLine) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"command": cmd})
	req, _ := http.NewRequest("POST", gust.url+"/v1/sandboxes/"+sandboxID+"/execs", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		t.Fatalf("exec: HTTP %d: %s", resp.StatusCode, buf.String())
	}
	var stdout, stderr strings.Builder
	var exit *exitLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		var line struct {
			Stream   string `json:"stream"`
			Data     string `json:"data"`
			ExitCode *int   `json:"exit_code"`
			Error    string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		d, _ := base64.StdEncoding.DecodeString(line.Data)
		switch {
		case line.ExitCode != nil:
			exit = &exitLine{*line.ExitCode, line.Error}
		case line.Stream == "stdout":
			stdout.Write(d)
		case line.Stream == "stderr":
			stderr.Write(d)
		}
	}
	if exit == nil {
		t.Fatalf("exec %v: the stream ended without an exit line (scan error %v); stdout %q stderr %q", cmd, sc.Err(), stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String(), *exit
}

// created lists the sandboxes this run made, for the leftover check at shutdown.
var (
	createdMu sync.Mutex
	created   []string
)

// createRaw makes a sandbox through the raw API.
func createRaw(t *testing.T, fields map[string]any) string {
	t.Helper()
	req := map[string]any{"app_id": gust.appID, "image_id": gust.imageID}
	for k, v := range fields {
		req[k] = v
	}
	var sb struct {
		ID string `json:"sandbox_id"`
	}
	if err := api("POST", "/v1/sandboxes", req, &sb); err != nil {
		t.Fatalf("create sandbox: %v\n%s", err, gustLog())
	}
	t.Cleanup(func() { api("POST", "/v1/sandboxes/"+sb.ID+"/terminate", nil, nil) })
	createdMu.Lock()
	created = append(created, sb.ID)
	createdMu.Unlock()
	return sb.ID
}

func TestSmokeRawAPI(t *testing.T) {
	needGust(t)
	for _, iso := range []string{"runc", "gvisor"} {
		t.Run(iso, func(t *testing.T) {
			id := createRaw(t, map[string]any{"isolation": iso})
			out, errOut, code := execRaw(t, id, "sh", "-c", "echo hello; echo oops >&2; exit 3")
			if out != "hello\n" || errOut != "oops\n" || code != 3 {
				t.Fatalf("got stdout %q stderr %q code %d", out, errOut, code)
			}
		})
	}
}

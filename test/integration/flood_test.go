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
	"time"
)

// outputLine is one line of an exec's NDJSON output.
type outputLine struct {
	Stream   string `json:"stream"`
	Data     string `json:"data"`
	Dropped  int64  `json:"dropped"`
	ExitCode *int   `json:"exit_code"`
}

// readOutput reads up to limit bytes of an exec's unread output (GET .../output), returning
// the bytes of its stdout and the sum of the drop counts its lines announced.
func readOutput(t *testing.T, sandboxID, execID string, limit int) (stdout []byte, dropped int64) {
	t.Helper()
	req, _ := http.NewRequest("GET", gust.url+"/v1/sandboxes/"+sandboxID+"/execs/"+execID+"/output", nil)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		t.Fatalf("output of %s: HTTP %d: %s", execID, resp.StatusCode, buf.String())
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for len(stdout) < limit && sc.Scan() {
		var line outputLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		dropped += line.Dropped
		if line.Stream == "stdout" && line.Dropped == 0 {
			d, _ := base64.StdEncoding.DecodeString(line.Data)
			stdout = append(stdout, d...)
		}
	}
	return stdout, dropped
}

// TestFloodNobodyReading: sandboxes that print as fast as they can, with nobody reading, must
// not grow the worker's memory (a security issue: one tenant's `yes` took every sandbox on
// the worker down with it). Each sandbox's command is `yes`, and an exec of `yes` that nobody
// reads runs in each too. After a warm-up the gust process's RSS must stay within a small
// bound; then an exec still answers, a reader of the main command gets the drop count, and a
// reader of the exec gets every byte (its output was held back, not dropped).
func TestFloodNobodyReading(t *testing.T) {
	needGust(t)
	const (
		sandboxes = 10
		warmUp    = 3 * time.Second
		flood     = 12 * time.Second
		boundKiB  = 16 << 10 // growth allowed after warm-up (the unfixed worker grew ~100 MiB/s)
	)
	_, before := serverMemKiB(t)
	ids := make([]string, sandboxes)
	execs := make([]string, sandboxes)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = createRaw(t, map[string]any{"command": []string{"yes"}})
			var started struct {
				ExecID string `json:"exec_id"`
			}
			if err := api("POST", "/v1/sandboxes/"+ids[i]+"/execs", map[string]any{"command": []string{"yes", "exec-output"}, "stream": false}, &started); err != nil {
				t.Errorf("exec: %v", err)
			}
			execs[i] = started.ExecID
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	time.Sleep(warmUp)
	_, base := serverMemKiB(t)
	peak := base
	for end := time.Now().Add(flood); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		_, rss := serverMemKiB(t)
		peak = max(peak, rss)
		if rss-base > boundKiB {
			// Stop at once: the unfixed worker grows by about 100 MiB a second.
			t.Fatalf("gust's RSS grew from %d MiB (%d MiB before the sandboxes) to %d MiB with %d sandboxes printing and nobody reading (allowed: +%d MiB)",
				base>>10, before>>10, rss>>10, sandboxes, boundKiB>>10)
		}
	}
	_, end := serverMemKiB(t)
	t.Logf("gust RSS before %d MiB, after warm-up %d MiB, peak %d MiB, end %d MiB (growth %+d KiB) with %d sandboxes flooding",
		before>>10, base>>10, peak>>10, end>>10, peak-base, sandboxes)

	// The worker still serves the flooded sandbox.
	if out, _, code := execRaw(t, ids[0], "echo", "still here"); out != "still here\n" || code != 0 {
		t.Fatalf("exec in a flooded sandbox: %q, exit %d", out, code)
	}
	// The main command's output was kept as a bounded window: a reader learns what it missed.
	out, dropped := readOutput(t, ids[0], "main", 256<<10)
	if dropped == 0 {
		t.Fatalf("the main command's reader got no drop count after %v of `yes`", flood)
	}
	if len(out) == 0 || !isYes(out, "y\n") {
		t.Fatalf("the main command's kept output is not `yes` output: %q...", out[:min(len(out), 64)])
	}
	t.Logf("main: %d bytes dropped before the reader came", dropped)
	// The exec's output was held back (its process blocked in write): every byte arrives.
	out, dropped = readOutput(t, ids[1], execs[1], 4<<20)
	if dropped != 0 {
		t.Fatalf("an exec's reader was told %d bytes were dropped; flow control should have kept them", dropped)
	}
	if len(out) < 4<<20 || !strings.HasPrefix(string(out), "exec-output\n") || !isYes(out, "exec-output\n") {
		t.Fatalf("the exec's output is not every line of `yes` from its start (%d bytes): %q...", len(out), out[:min(len(out), 64)])
	}
}

// isYes reports whether b is whole lines of line, except perhaps a cut first and last one.
func isYes(b []byte, line string) bool {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 && !strings.HasPrefix(s, line) {
		s = s[i+1:]
	}
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i+1]
	}
	return len(s) > 0 && strings.Count(s, line) == len(s)/len(line) && len(s)%len(line) == 0
}

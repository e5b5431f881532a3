package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
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
		warmUp    = time.Second // at least; then until the RSS settles (settledRSS)
		flood     = 12 * time.Second
		boundKiB  = 16 << 10 // growth allowed after warm-up (the unfixed worker grew ~100 MiB/s)
		// settleMax bounds the warm-up: on a busy machine the sandboxes fill their bounded
		// buffers more slowly, so the baseline is taken once the RSS stops growing.
		settleMax = 30 * time.Second
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
	base := settledRSS(t, warmUp, settleMax, before+256<<10)
	peak, over := base, 0
	for end := time.Now().Add(flood); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		_, rss := serverMemKiB(t)
		peak = max(peak, rss)
		// Growth is over the bound for 2 s (4 readings in a row): a moment's spike of garbage
		// that the next GC returns is not growth. Stop then: the unfixed worker grows by about
		// 100 MiB a second.
		if rss-base > boundKiB {
			over++
		} else {
			over = 0
		}
		if over == 4 {
			t.Fatalf("gust's RSS grew from %d MiB (%d MiB before the sandboxes) to %d MiB and stayed over the bound for 2 s with %d sandboxes printing and nobody reading (allowed: +%d MiB)",
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

// settledRSS waits at least least, then until the gust process's RSS (the median of the last
// 2 s of readings: single readings spike by tens of MiB for a moment, garbage that the next GC
// returns) grew by less than 2 MiB over 2 s (its buffers are full), or most has passed, and
// returns that median in KiB. Memory that keeps growing is not hidden by this: it fails once
// over ceiling, and the flood's bound applies after it.
func settledRSS(t *testing.T, least, most time.Duration, ceiling int) int {
	t.Helper()
	start := time.Now()
	time.Sleep(least)
	var medians []int
	var window []int // the last readings, 500 ms apart
	for {
		_, rss := serverMemKiB(t)
		window = append(window, rss)
		if len(window) > 5 {
			window = window[1:]
		}
		m := median(window)
		if m > ceiling {
			t.Fatalf("gust's RSS reached %d MiB while the sandboxes started printing (%d MiB at most): it is not bounded", m>>10, ceiling>>10)
		}
		medians = append(medians, m)
		n := len(medians)
		if n >= 9 && medians[n-1]-medians[n-5] < 2<<10 || time.Since(start) > most {
			t.Logf("gust RSS settled at %d MiB after %v", m>>10, time.Since(start).Round(100*time.Millisecond))
			return m
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func median(v []int) int {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
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

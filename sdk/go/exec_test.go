package gust

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while the output goroutine writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestExecStreamDemux(t *testing.T) {
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	longLine := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB in one chunk: a 5.6 MB JSON line
	tests := []struct {
		name       string
		chunks     [][2]string // stream, data
		exit       map[string]any
		wantStdout string
		wantStderr string
		wantCode   int
		wantErrTxt string
	}{
		{name: "stdout and stderr", chunks: [][2]string{{"stdout", "hello "}, {"stderr", "warn\n"}, {"stdout", "world\n"}},
			exit: map[string]any{"exit_code": 0}, wantStdout: "hello world\n", wantStderr: "warn\n"},
		{name: "nonzero exit", chunks: [][2]string{{"stderr", "sh: nope: not found\n"}}, exit: map[string]any{"exit_code": 127},
			wantStderr: "sh: nope: not found\n", wantCode: 127},
		{name: "binary data", chunks: [][2]string{{"stdout", string(binary)}}, exit: map[string]any{"exit_code": 0}, wantStdout: string(binary)},
		{name: "long line", chunks: [][2]string{{"stdout", string(longLine)}, {"stderr", "e"}}, exit: map[string]any{"exit_code": 3},
			wantStdout: string(longLine), wantStderr: "e", wantCode: 3},
		{name: "exec timeout", chunks: [][2]string{{"stdout", "partial"}}, exit: map[string]any{"exit_code": 124, "error": "exec timed out after 1 s"},
			wantStdout: "partial", wantCode: 124, wantErrTxt: "exec timed out after 1 s"},
		{name: "no output", exit: map[string]any{"exit_code": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFakeAPI(t)
			sb := runningSandbox(t, f, c)
			f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
				b := decodeBody(t, r)
				if cmd, _ := b["command"].([]any); len(cmd) != 2 || cmd[0] != "sh" || b["stream"] != true {
					t.Errorf("exec body %v", b)
				}
				if _, ok := b["pty"]; ok {
					t.Errorf("pty sent without PTY: %v", b)
				}
				n := startNDJSON(w)
				n.send(map[string]string{"exec_id": "ex-1"})
				for _, ch := range tt.chunks {
					n.out(ch[0], []byte(ch[1]))
				}
				n.send(tt.exit)
			})
			var stdout, stderr syncBuffer
			p, err := sb.Exec(t.Context(), ExecOptions{Command: []string{"sh", "-c"}, Stdout: &stdout, Stderr: &stderr})
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != "ex-1" {
				t.Errorf("ID %q", p.ID)
			}
			code, err := p.Wait(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || p.ExitCode != tt.wantCode || p.ExitError != tt.wantErrTxt {
				t.Errorf("exit %d (field %d, %q), want %d %q", code, p.ExitCode, p.ExitError, tt.wantCode, tt.wantErrTxt)
			}
			if stdout.String() != tt.wantStdout || stderr.String() != tt.wantStderr {
				t.Errorf("stdout %d bytes, stderr %q; want %d bytes, %q", len(stdout.String()), stderr.String(), len(tt.wantStdout), tt.wantStderr)
			}
		})
	}
}

// The output arrives while the process runs, not at its end.
func TestExecStreamsAsItArrives(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	release := make(chan struct{})
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-1"})
		n.out("stdout", []byte("first\n"))
		<-release
		n.out("stdout", []byte("second\n"))
		n.send(map[string]any{"exit_code": 0})
	})
	var stdout syncBuffer
	p, err := sb.Exec(t.Context(), ExecOptions{Command: []string{"x"}, Stdout: &stdout})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for stdout.String() != "first\n" {
		if time.Now().After(deadline) {
			t.Fatalf("first output not delivered before exit: %q", stdout.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-p.Done():
		t.Fatal("done before exit")
	default:
	}
	close(release)
	if code, err := p.Wait(t.Context()); code != 0 || err != nil || stdout.String() != "first\nsecond\n" {
		t.Fatalf("Wait = %d, %v; stdout %q", code, err, stdout.String())
	}
}

// A stream that breaks before the exit line is resumed from GET .../output.
func TestExecResumesBrokenStream(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-1"})
		n.out("stdout", []byte("one "))
		// Ends without the exit line: the connection went away.
	})
	f.handle("GET /v1/sandboxes/sb-1/execs/ex-1/output", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.out("stdout", []byte("two"))
		n.send(map[string]any{"exit_code": 5})
	})
	var stdout syncBuffer
	p, err := sb.Exec(t.Context(), ExecOptions{Command: []string{"x"}, Stdout: &stdout})
	if err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(t.Context())
	if code != 5 || err != nil || stdout.String() != "one two" {
		t.Fatalf("Wait = %d, %v; stdout %q", code, err, stdout.String())
	}
}

func TestExecErrors(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, 409, "conflict", "sandbox sb-1 has been terminated and is no longer running; create a new sandbox")
	})
	_, err := sb.Exec(t.Context(), ExecOptions{Command: []string{"true"}})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "no longer running") {
		t.Fatalf("error %v", err)
	}
	if _, err := sb.Exec(t.Context(), ExecOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty command: %v", err)
	}
}

func TestExecStdin(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	var mu sync.Mutex
	var got bytes.Buffer
	eof := make(chan struct{})
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-1"})
		<-eof
		mu.Lock()
		n.out("stdout", got.Bytes())
		mu.Unlock()
		n.send(map[string]any{"exit_code": 0})
	})
	f.handle("POST /v1/sandboxes/sb-1/execs/ex-1/stdin", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("content type %q", ct)
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got.Write(b)
		mu.Unlock()
		if r.URL.Query().Get("eof") == "1" {
			close(eof)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	in := strings.Repeat("line of input\n", 10000) // several 32 KiB writes, in order
	var stdout syncBuffer
	p, err := sb.Exec(t.Context(), ExecOptions{Command: []string{"cat"}, Stdin: strings.NewReader(in), Stdout: &stdout})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(t.Context()); code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", code, err)
	}
	if stdout.String() != in {
		t.Fatalf("echoed %d bytes, want %d", len(stdout.String()), len(in))
	}
	if err := p.CloseStdin(); err != nil {
		t.Errorf("second CloseStdin: %v", err)
	}
	if err := p.WriteStdin([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after close: %v", err)
	}
}

func TestExecManualStdinSignalResize(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	events := make(chan string, 10)
	exited := make(chan struct{})
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, r)
		if b["pty"] != true || b["rows"] != 40.0 || b["cols"] != 120.0 || b["timeout"] != 2.5 || b["workdir"] != "/tmp" {
			t.Errorf("exec body %v", b)
		}
		if env, _ := b["env"].(map[string]any); env["A"] != "1" {
			t.Errorf("env %v", b["env"])
		}
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-2"})
		<-exited
		n.send(map[string]any{"exit_code": 130})
	})
	f.handle("POST /v1/sandboxes/sb-1/execs/ex-2/stdin", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		events <- "stdin:" + string(b) + ":" + r.URL.Query().Get("eof")
		w.WriteHeader(http.StatusNoContent)
	})
	f.handle("POST /v1/sandboxes/sb-1/execs/ex-2/signal", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, r)
		events <- "signal:" + jsonString(b["signal"])
		w.WriteHeader(http.StatusNoContent)
		close(exited)
	})
	f.handle("POST /v1/sandboxes/sb-1/execs/ex-2/resize", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, r)
		events <- "resize:" + jsonString(b["rows"]) + "x" + jsonString(b["cols"])
		w.WriteHeader(http.StatusNoContent)
	})
	p, err := sb.Exec(t.Context(), ExecOptions{Command: []string{"bash"}, PTY: true, Rows: 40, Cols: 120, Timeout: 2500 * time.Millisecond,
		Workdir: "/tmp", Env: map[string]string{"A": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := p.WriteStdin([]byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(ctx, 50, 200); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(ctx, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); code != 130 || err != nil {
		t.Fatalf("Wait = %d, %v", code, err)
	}
	close(events)
	var got []string
	for e := range events {
		got = append(got, e)
	}
	want := []string{"stdin:ls\r:", "resize:50x200", "signal:2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
}

func jsonString(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case string:
		return v
	}
	return ""
}

func TestRun(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	closed := make(chan struct{})
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-1"})
		<-closed // like `cat`: ends at stdin's EOF
		n.out("stdout", []byte("out"))
		n.out("stderr", []byte("err"))
		n.send(map[string]any{"exit_code": 1})
	})
	f.handle("POST /v1/sandboxes/sb-1/execs/ex-1/stdin", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("eof") != "1" {
			t.Error("Run with nil Stdin must close stdin")
		}
		close(closed)
		w.WriteHeader(http.StatusNoContent)
	})
	var tee syncBuffer
	stdout, stderr, code, err := sb.Run(t.Context(), ExecOptions{Command: []string{"cat"}, Stdout: &tee})
	if err != nil || code != 1 || string(stdout) != "out" || string(stderr) != "err" || tee.String() != "out" {
		t.Fatalf("Run = %q, %q, %d, %v (tee %q)", stdout, stderr, code, err, tee.String())
	}
}

// A process that exits before its stdin is closed is not an error for Run.
func TestRunExitedBeforeStdinClose(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-1"})
		n.send(map[string]any{"exit_code": 0})
	})
	f.handle("POST /v1/sandboxes/sb-1/execs/ex-1/stdin", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, 409, "conflict", "the process has already exited; its stdin is closed")
	})
	if _, _, code, err := sb.Run(t.Context(), ExecOptions{Command: []string{"true"}}); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
}

func TestExecContextCancel(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	f.handle("POST /v1/sandboxes/sb-1/execs", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.send(map[string]string{"exec_id": "ex-1"})
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	p, err := sb.Exec(ctx, ExecOptions{Command: []string{"sleep", "inf"}})
	if err != nil {
		t.Fatal(err)
	}
	// Wait's own context bounds only the wait.
	short, cancelShort := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancelShort()
	if _, err := p.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short wait: %v", err)
	}
	cancel()
	if _, err := p.Wait(t.Context()); !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestAttachMain(t *testing.T) {
	f, c := newFakeAPI(t)
	sb := runningSandbox(t, f, c)
	f.handle("GET /v1/sandboxes/sb-1/execs/main/output", func(w http.ResponseWriter, r *http.Request) {
		n := startNDJSON(w)
		n.out("stdout", []byte("main says hi"))
		n.send(map[string]any{"exit_code": 0})
	})
	var out syncBuffer
	p, err := sb.Attach(t.Context(), "main", &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(t.Context()); code != 0 || err != nil || out.String() != "main says hi" {
		t.Fatalf("Wait = %d, %v, %q", code, err, out.String())
	}
}

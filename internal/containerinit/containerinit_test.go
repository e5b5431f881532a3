package containerinit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/initproto"
)

// The test binary doubles as gust-init: with this variable set it runs Run instead of tests.
const childEnv = "GUST_TEST_CONTAINERINIT"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		err := Run()
		var status ExitStatus
		switch {
		case errors.As(err, &status):
			os.Exit(int(status))
		case err != nil:
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// patience bounds every wait of the harness for something that should come at once (a frame,
// an exit, a reaped process): generous, so that a machine busy with other work does not fail
// a test, and only a test that fails anyway waits it out.
const patience = 30 * time.Second

// harness is the worker's end of one gust-init subprocess.
type harness struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	w      *initproto.Writer
	stderr bytes.Buffer
	ready  initproto.ReadyInfo
	done   chan struct{} // init's stdout ended

	mu     sync.Mutex
	frames map[uint32]chan initproto.Frame
	next   uint32
}

func startInit(t *testing.T) *harness {
	t.Helper()
	return startInitWith(t, 0)
}

// startInitWith starts gust-init in new namespaces (syscall.CLONE_NEW* flags) when cloneflags
// is not 0.
func startInitWith(t *testing.T, cloneflags uintptr) *harness {
	t.Helper()
	h := &harness{t: t, done: make(chan struct{}), frames: map[uint32]chan initproto.Frame{}}
	h.cmd = exec.Command(os.Args[0])
	// GORACE: a race-enabled child would otherwise linger a second at exit.
	h.cmd.Env = append(os.Environ(), childEnv+"=1", "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags}
	h.cmd.Stderr = &lockedBuffer{b: &h.stderr, mu: &h.mu}
	in, err := h.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		if cloneflags != 0 {
			t.Skipf("cannot start in new namespaces: %v", err)
		}
		t.Fatal(err)
	}
	h.in, h.w = in, initproto.NewWriter(in)
	t.Cleanup(func() {
		// Teardown of whatever a test left: stdin may be closed and init waited for already,
		// and the tests that care check init's exit themselves.
		_ = h.in.Close()
		select {
		case <-h.done:
		case <-time.After(patience):
			if err := h.cmd.Process.Kill(); err != nil {
				t.Errorf("killing a gust-init that did not end: %v", err)
			}
		}
		_ = h.cmd.Wait()
		if t.Failed() {
			h.mu.Lock()
			t.Logf("gust-init stderr:\n%s", h.stderr.String())
			h.mu.Unlock()
		}
	})
	r := initproto.NewReader(bufio.NewReader(out))
	f, err := r.Read()
	if err != nil || f.Type != initproto.Ready || f.Channel != 0 {
		t.Fatalf("first frame = %+v, %v; want Ready on channel 0", f, err)
	}
	wantPID := h.cmd.Process.Pid
	if cloneflags&syscall.CLONE_NEWPID != 0 {
		wantPID = 1
	}
	if err := json.Unmarshal(f.Payload, &h.ready); err != nil || h.ready.PID != wantPID {
		t.Fatalf("ready info %s: %v; want pid %d", f.Payload, err, wantPID)
	}
	go func() {
		defer close(h.done)
		for {
			f, err := r.Read()
			if err != nil {
				return
			}
			h.channel(f.Channel) <- f
		}
	}()
	return h
}

type lockedBuffer struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (h *harness) channel(ch uint32) chan initproto.Frame {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.frames[ch]
	if c == nil {
		c = make(chan initproto.Frame, 4096)
		h.frames[ch] = c
	}
	return c
}

func (h *harness) newChannel() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	return h.next
}

func (h *harness) send(t initproto.Type, ch uint32, v any) {
	h.t.Helper()
	var b []byte
	switch v := v.(type) {
	case nil:
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := h.w.Write(t, ch, b); err != nil {
		h.t.Fatalf("writing frame to init: %v", err)
	}
}

func (h *harness) start(req initproto.ExecRequest) uint32 {
	h.t.Helper()
	ch := h.newChannel()
	h.send(initproto.ExecStart, ch, req)
	return ch
}

// result is what one exec produced.
type result struct {
	stdout, stderr string
	exit           initproto.ExitInfo
	frames         int
}

// wait collects an exec's output until its Exit frame.
func (h *harness) wait(ch uint32) result {
	h.t.Helper()
	var res result
	var out, errb strings.Builder
	c := h.channel(ch)
	timeout := time.After(patience)
	for {
		select {
		case f := <-c:
			res.frames++
			switch f.Type {
			case initproto.Stdout:
				if len(f.Payload) > chunkSize {
					h.t.Errorf("stdout frame of %d bytes exceeds %d", len(f.Payload), chunkSize)
				}
				out.Write(f.Payload)
			case initproto.Stderr:
				errb.Write(f.Payload)
			case initproto.Exit:
				if err := json.Unmarshal(f.Payload, &res.exit); err != nil {
					h.t.Fatalf("bad exit frame %q: %v", f.Payload, err)
				}
				res.stdout, res.stderr = out.String(), errb.String()
				return res
			default:
				h.t.Fatalf("unexpected frame type %d on exec channel %d", f.Type, ch)
			}
		case <-timeout:
			h.t.Fatalf("channel %d: no exit after %v; stdout so far %q, stderr %q", ch, patience, out.String(), errb.String())
		}
	}
}

// readUntil reads an exec's stdout until it contains want.
func (h *harness) readUntil(ch uint32, want string) string {
	h.t.Helper()
	var out strings.Builder
	c := h.channel(ch)
	timeout := time.After(patience)
	for !strings.Contains(out.String(), want) {
		select {
		case f := <-c:
			if f.Type == initproto.Exit {
				h.t.Fatalf("exec exited (%s) before printing %q; got %q", f.Payload, want, out.String())
			}
			out.Write(f.Payload)
		case <-timeout:
			h.t.Fatalf("no %q after %v; got %q", want, patience, out.String())
		}
	}
	return out.String()
}

func (h *harness) run(req initproto.ExecRequest) result {
	h.t.Helper()
	return h.wait(h.start(req))
}

func (h *harness) file(req initproto.FileRequest, data []byte) (initproto.FileResponse, []byte) {
	h.t.Helper()
	ch := h.newChannel()
	payload, err := initproto.Pack(req, data)
	if err != nil {
		h.t.Fatal(err)
	}
	h.send(initproto.FileOp, ch, payload)
	select {
	case f := <-h.channel(ch):
		if f.Type != initproto.FileDone {
			h.t.Fatalf("file op answered with frame type %d", f.Type)
		}
		var resp initproto.FileResponse
		out, err := initproto.Unpack(f.Payload, &resp)
		if err != nil {
			h.t.Fatal(err)
		}
		return resp, out
	case <-time.After(patience):
		h.t.Fatalf("no answer to file op %+v", req)
	}
	return initproto.FileResponse{}, nil
}

// exitStatus waits for the init process to end and returns its exit code.
func (h *harness) exitStatus() int {
	h.t.Helper()
	errc := make(chan error, 1)
	go func() {
		<-h.done
		errc <- h.cmd.Wait()
	}()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			h.t.Fatal(err)
		}
		return 0
	case <-time.After(patience):
		h.t.Fatal("init did not exit")
	}
	return -1
}

// gone reports whether pid has exited and been reaped (or is at least a zombie no more).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'X'
}

// zombieOrGone reports whether pid has exited (possibly not yet reaped by whoever inherited it).
func zombieOrGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X')
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestExec(t *testing.T) {
	h := startInit(t)
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		req        initproto.ExecRequest
		stdout     string // exact, unless stdoutRe is set
		stdoutRe   string
		stderr     string // substring
		code       int
		signal     int
		errMessage string // substring of ExitInfo.Error
	}{
		{name: "stdout", req: initproto.ExecRequest{Argv: []string{"echo", "hello"}}, stdout: "hello\n"},
		{name: "stderr", req: initproto.ExecRequest{Argv: sh("echo oops >&2")}, stderr: "oops\n"},
		{name: "exit code", req: initproto.ExecRequest{Argv: sh("exit 3")}, code: 3},
		{name: "killed by signal", req: initproto.ExecRequest{Argv: sh("kill -9 $$")}, code: 137, signal: 9},
		{name: "env exactly as given plus default PATH",
			req:    initproto.ExecRequest{Argv: []string{"env"}, Env: []string{"FOO=bar"}},
			stdout: "FOO=bar\nPATH=" + defaultPath + "\n"},
		{name: "PATH from env", req: initproto.ExecRequest{Argv: []string{"sh", "-c", "echo $PATH"}, Env: []string{"PATH=/bin:/usr/bin"}},
			stdout: "/bin:/usr/bin\n"},
		{name: "default cwd", req: initproto.ExecRequest{Argv: []string{"pwd"}}, stdout: "/\n"},
		{name: "cwd", req: initproto.ExecRequest{Argv: []string{"pwd"}, Cwd: dir}, stdout: dir + "\n"},
		{name: "relative path from cwd", req: initproto.ExecRequest{Argv: []string{"./true"}, Cwd: "/bin"}},
		{name: "process group of its own", req: initproto.ExecRequest{Argv: sh(`read -r pid comm state ppid pgrp rest </proc/$$/stat; echo $pgrp; echo $$`)},
			stdoutRe: `^(\d+)\n(\d+)\n$`},
		{name: "not found", req: initproto.ExecRequest{Argv: []string{"no-such-command-xyz"}}, code: 127,
			stderr: `gust: exec "no-such-command-xyz": executable file not found in $PATH` + "\n", errMessage: "not found"},
		{name: "path not found", req: initproto.ExecRequest{Argv: []string{"/no/such/file"}}, code: 127,
			stderr: "no such file or directory"},
		{name: "not executable", req: initproto.ExecRequest{Argv: []string{noexec}}, code: 126, stderr: "permission denied"},
		{name: "directory", req: initproto.ExecRequest{Argv: []string{"/tmp"}}, code: 126, stderr: "is a directory"},
		{name: "bad cwd", req: initproto.ExecRequest{Argv: []string{"true"}, Cwd: "/no/such/dir"}, code: 1,
			stderr: "gust: cannot chdir to /no/such/dir: no such file or directory"},
		{name: "empty argv", req: initproto.ExecRequest{}, code: 127, stderr: "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			res := h.run(tt.req)
			if tt.stdoutRe != "" {
				m := regexp.MustCompile(tt.stdoutRe).FindStringSubmatch(res.stdout)
				if m == nil {
					t.Errorf("stdout = %q, want match for %q", res.stdout, tt.stdoutRe)
				} else if len(m) == 3 && m[1] != m[2] {
					t.Errorf("pgid %s != pid %s", m[1], m[2])
				}
			} else if res.stdout != tt.stdout {
				t.Errorf("stdout = %q, want %q", res.stdout, tt.stdout)
			}
			if !strings.Contains(res.stderr, tt.stderr) || (tt.stderr == "" && res.stderr != "") {
				t.Errorf("stderr = %q, want %q", res.stderr, tt.stderr)
			}
			if res.exit.ExitCode != tt.code || res.exit.Signal != tt.signal {
				t.Errorf("exit = %+v, want code %d signal %d", res.exit, tt.code, tt.signal)
			}
			if !strings.Contains(res.exit.Error, tt.errMessage) || (tt.code < 126 && tt.code != 1 && res.exit.Error != "") {
				t.Errorf("exit error = %q, want %q", res.exit.Error, tt.errMessage)
			}
		})
	}
}

func TestExecStreams(t *testing.T) {
	h := startInit(t)

	t.Run("stdin round trip", func(t *testing.T) {
		h.t = t
		ch := h.start(initproto.ExecRequest{Argv: []string{"cat"}})
		h.send(initproto.Stdin, ch, "ping\n")
		h.readUntil(ch, "ping\n") // streamed before stdin closes: no buffering
		h.send(initproto.Stdin, ch, "pong")
		h.send(initproto.StdinClose, ch, nil)
		res := h.wait(ch)
		if res.stdout != "pong" || res.exit.ExitCode != 0 {
			t.Errorf("got %q, exit %+v", res.stdout, res.exit)
		}
	})

	t.Run("signal to the process group", func(t *testing.T) {
		h.t = t
		ch := h.start(initproto.ExecRequest{Argv: sh("echo started; sleep 30; echo never")})
		h.readUntil(ch, "started\n")
		h.send(initproto.Signal, ch, initproto.SignalRequest{Signal: 9})
		res := h.wait(ch)
		if res.exit.ExitCode != 137 || res.exit.Signal != 9 {
			t.Errorf("exit = %+v, want 137 / 9", res.exit)
		}
	})

	t.Run("large output in chunks", func(t *testing.T) {
		h.t = t
		res := h.run(initproto.ExecRequest{Argv: []string{"head", "-c", "1000000", "/dev/zero"}})
		if len(res.stdout) != 1000000 || res.exit.ExitCode != 0 {
			t.Errorf("got %d bytes, exit %+v", len(res.stdout), res.exit)
		}
	})

	t.Run("background child holding the pipes does not hold the exec", func(t *testing.T) {
		h.t = t
		start := time.Now()
		// The exec ends after drainQuiet of silence; one held by the child would take its 10 s.
		// The bound is far from both, so that a busy machine does not fail it.
		res := h.run(initproto.ExecRequest{Argv: sh("sleep 10 & echo bg")})
		if res.stdout != "bg\n" || res.exit.ExitCode != 0 {
			t.Errorf("got %q, exit %+v", res.stdout, res.exit)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("exec took %v: it waited for the background child", d)
		}
	})

	t.Run("background child writing all the time does not hold the exec", func(t *testing.T) {
		h.t = t
		start := time.Now()
		res := h.run(initproto.ExecRequest{Argv: sh("(while :; do echo x; sleep 0.05; done) & echo bg")})
		if !strings.Contains(res.stdout, "bg\n") || res.exit.ExitCode != 0 {
			t.Errorf("got %q, exit %+v", res.stdout, res.exit)
		}
		// At least drainMax (the output never went quiet), and then it ends: not held for the
		// child's life (wait gives up after patience). The slack is for a busy machine.
		if d := time.Since(start); d < drainMax || d > drainMax+5*time.Second {
			t.Errorf("exec took %v, want about %v", d, drainMax)
		}
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		h.t = t
		res := h.run(initproto.ExecRequest{Argv: sh("sleep 0.2 </dev/null >/dev/null 2>&1 & echo $!")})
		pid, err := strconv.Atoi(strings.TrimSpace(res.stdout))
		if err != nil {
			t.Fatalf("stdout %q: %v", res.stdout, err)
		}
		eventually(t, fmt.Sprintf("orphan %d is reaped", pid), func() bool { return gone(pid) })
	})

	t.Run("concurrent execs", func(t *testing.T) {
		h.t = t
		var chs []uint32
		for i := range 10 {
			chs = append(chs, h.start(initproto.ExecRequest{Argv: []string{"echo", strconv.Itoa(i)}}))
		}
		for i, ch := range chs {
			if res := h.wait(ch); res.stdout != fmt.Sprintf("%d\n", i) {
				t.Errorf("exec %d: %q", i, res.stdout)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		h.t = t
		ch := h.newChannel()
		h.send(initproto.ExecStart, ch, "{not json")
		res := h.wait(ch)
		if res.exit.ExitCode != 126 || !strings.Contains(res.exit.Error, "bad exec request") {
			t.Errorf("exit = %+v", res.exit)
		}
		// Frames for channels with no exec, and of unknown types, are ignored.
		h.send(initproto.Stdin, 9999, "x")
		h.send(initproto.StdinClose, 9999, nil)
		h.send(initproto.Signal, 9999, initproto.SignalRequest{Signal: 9})
		h.send(initproto.Signal, 9999, "garbage")
		h.send(initproto.Resize, 9999, initproto.ResizeRequest{Rows: 1, Cols: 1})
		h.send(initproto.Type(99), 9999, "x")
		if res := h.run(initproto.ExecRequest{Argv: []string{"echo", "alive"}}); res.stdout != "alive\n" {
			t.Errorf("after bad frames: %q", res.stdout)
		}
	})
}

func TestPTY(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx")
	}
	h := startInit(t)

	t.Run("tty", func(t *testing.T) {
		h.t = t
		res := h.run(initproto.ExecRequest{Argv: sh("tty; echo err >&2"), PTY: true})
		if !regexp.MustCompile(`^/dev/pts/\d+\r\nerr\r\n$`).MatchString(res.stdout) || res.stderr != "" {
			t.Errorf("stdout %q stderr %q", res.stdout, res.stderr)
		}
	})

	t.Run("initial size", func(t *testing.T) {
		h.t = t
		res := h.run(initproto.ExecRequest{Argv: []string{"stty", "size"}, PTY: true, Rows: 40, Cols: 120})
		if res.stdout != "40 120\r\n" {
			t.Errorf("stdout %q", res.stdout)
		}
		res = h.run(initproto.ExecRequest{Argv: []string{"stty", "size"}, PTY: true})
		if res.stdout != "24 80\r\n" {
			t.Errorf("default size: stdout %q", res.stdout)
		}
	})

	t.Run("resize and stdin", func(t *testing.T) {
		h.t = t
		ch := h.start(initproto.ExecRequest{Argv: sh("stty -echo; echo ready; read x; stty size; echo got $x"), PTY: true})
		h.readUntil(ch, "ready")
		h.send(initproto.Resize, ch, initproto.ResizeRequest{Rows: 30, Cols: 100})
		h.send(initproto.Stdin, ch, "line\n")
		res := h.wait(ch)
		if !strings.Contains(res.stdout, "30 100\r\ngot line\r\n") || res.exit.ExitCode != 0 {
			t.Errorf("stdout %q exit %+v", res.stdout, res.exit)
		}
	})

	t.Run("stdin close is EOF", func(t *testing.T) {
		h.t = t
		ch := h.start(initproto.ExecRequest{Argv: []string{"cat"}, PTY: true})
		h.send(initproto.StdinClose, ch, nil)
		if res := h.wait(ch); res.exit.ExitCode != 0 {
			t.Errorf("exit %+v", res.exit)
		}
	})

	t.Run("signal", func(t *testing.T) {
		h.t = t
		ch := h.start(initproto.ExecRequest{Argv: sh("echo started; sleep 30"), PTY: true})
		h.readUntil(ch, "started")
		h.send(initproto.Signal, ch, initproto.SignalRequest{Signal: int(syscall.SIGTERM)})
		if res := h.wait(ch); res.exit.ExitCode != 143 || res.exit.Signal != 15 {
			t.Errorf("exit %+v", res.exit)
		}
	})
}

func TestFiles(t *testing.T) {
	h := startInit(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }

	big := p("big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(initproto.MaxFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("big", p("link")); err != nil {
		t.Fatal(err)
	}

	type step struct {
		name    string
		req     initproto.FileRequest
		data    string
		kind    string // expected ErrorKind
		errText string // substring of Error
		out     string // expected data
		check   func(t *testing.T, resp initproto.FileResponse)
	}
	steps := []step{
		{name: "write", req: initproto.FileRequest{Op: initproto.OpWrite, Path: p("a.txt")}, data: "hello"},
		{name: "read", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("a.txt")}, out: "hello"},
		{name: "append", req: initproto.FileRequest{Op: initproto.OpWrite, Path: p("a.txt"), Append: true}, data: " world"},
		{name: "read appended", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("a.txt")}, out: "hello world"},
		{name: "read range", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("a.txt"), Offset: 6, Length: 3}, out: "wor"},
		{name: "read past end", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("a.txt"), Offset: 100}, out: ""},
		{name: "truncate", req: initproto.FileRequest{Op: initproto.OpWrite, Path: p("a.txt")}, data: "new"},
		{name: "read truncated", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("a.txt")}, out: "new"},
		{name: "write with mode", req: initproto.FileRequest{Op: initproto.OpWrite, Path: p("x.sh"), Mode: 0o755}, data: "#!/bin/sh\n"},
		{name: "stat", req: initproto.FileRequest{Op: initproto.OpStat, Path: p("x.sh")}, check: func(t *testing.T, r initproto.FileResponse) {
			if r.Stat == nil || r.Stat.Name != "x.sh" || r.Stat.Path != p("x.sh") || r.Stat.Type != "file" ||
				r.Stat.Size != 10 || r.Stat.Mode != 0o755 || r.Stat.MTime == 0 {
				t.Errorf("stat = %+v", r.Stat)
			}
		}},
		{name: "stat symlink", req: initproto.FileRequest{Op: initproto.OpStat, Path: p("link")}, check: func(t *testing.T, r initproto.FileResponse) {
			if r.Stat == nil || r.Stat.Type != "symlink" {
				t.Errorf("stat = %+v", r.Stat)
			}
		}},
		{name: "stat missing", req: initproto.FileRequest{Op: initproto.OpStat, Path: p("missing")}, kind: initproto.ErrNotFound,
			errText: "no such file or directory: " + p("missing")},
		{name: "read missing", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("missing")}, kind: initproto.ErrNotFound},
		{name: "write without parent", req: initproto.FileRequest{Op: initproto.OpWrite, Path: p("no/such/file")}, data: "x",
			kind: initproto.ErrNotFound},
		{name: "too large", req: initproto.FileRequest{Op: initproto.OpRead, Path: big}, kind: initproto.ErrTooLarge},
		{name: "too large through symlink", req: initproto.FileRequest{Op: initproto.OpRead, Path: p("link")}, kind: initproto.ErrTooLarge},
		{name: "large file in range", req: initproto.FileRequest{Op: initproto.OpRead, Path: big, Offset: initproto.MaxFileBytes - 2, Length: 10},
			out: "\x00\x00\x00"},
		{name: "read directory", req: initproto.FileRequest{Op: initproto.OpRead, Path: dir}, kind: initproto.ErrInvalid},
		{name: "read procfs", req: initproto.FileRequest{Op: initproto.OpRead, Path: "/proc/self/comm"}, check: nil},
		{name: "not absolute", req: initproto.FileRequest{Op: initproto.OpRead, Path: "a.txt"}, kind: initproto.ErrInvalid,
			errText: "not absolute"},
		{name: "unknown op", req: initproto.FileRequest{Op: "chmod", Path: dir}, kind: initproto.ErrInvalid},
		{name: "mkdir", req: initproto.FileRequest{Op: initproto.OpMkdir, Path: p("d")}},
		{name: "mkdir existing", req: initproto.FileRequest{Op: initproto.OpMkdir, Path: p("d")}, kind: initproto.ErrExists},
		{name: "mkdir existing with parents", req: initproto.FileRequest{Op: initproto.OpMkdir, Path: p("d"), Parents: true}},
		{name: "mkdir over a file", req: initproto.FileRequest{Op: initproto.OpMkdir, Path: p("a.txt"), Parents: true}, kind: initproto.ErrExists},
		{name: "mkdir without parent", req: initproto.FileRequest{Op: initproto.OpMkdir, Path: p("e/f")}, kind: initproto.ErrNotFound},
		{name: "mkdir parents", req: initproto.FileRequest{Op: initproto.OpMkdir, Path: p("d/e/f"), Parents: true, Mode: 0o700}},
		{name: "stat dir", req: initproto.FileRequest{Op: initproto.OpStat, Path: p("d/e/f")}, check: func(t *testing.T, r initproto.FileResponse) {
			if r.Stat == nil || r.Stat.Type != "directory" || r.Stat.Mode != 0o700 {
				t.Errorf("stat = %+v", r.Stat)
			}
		}},
		{name: "list", req: initproto.FileRequest{Op: initproto.OpList, Path: dir}, check: func(t *testing.T, r initproto.FileResponse) {
			var names []string
			for _, e := range r.Entries {
				names = append(names, e.Name+":"+e.Type)
				if e.Path != p(e.Name) {
					t.Errorf("entry path %q", e.Path)
				}
			}
			if got, want := strings.Join(names, " "), "a.txt:file big:file d:directory link:symlink x.sh:file"; got != want {
				t.Errorf("list = %s, want %s", got, want)
			}
		}},
		{name: "list a file", req: initproto.FileRequest{Op: initproto.OpList, Path: p("a.txt")}, kind: initproto.ErrInvalid},
		{name: "list missing", req: initproto.FileRequest{Op: initproto.OpList, Path: p("missing")}, kind: initproto.ErrNotFound},
		{name: "remove non-empty", req: initproto.FileRequest{Op: initproto.OpRemove, Path: p("d")}, kind: initproto.ErrInvalid,
			errText: "recursive"},
		{name: "remove recursive", req: initproto.FileRequest{Op: initproto.OpRemove, Path: p("d"), Recursive: true}},
		{name: "remove file", req: initproto.FileRequest{Op: initproto.OpRemove, Path: p("a.txt")}},
		{name: "removed", req: initproto.FileRequest{Op: initproto.OpStat, Path: p("a.txt")}, kind: initproto.ErrNotFound},
		{name: "remove missing", req: initproto.FileRequest{Op: initproto.OpRemove, Path: p("a.txt")}, kind: initproto.ErrNotFound},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			h.t = t
			resp, out := h.file(s.req, []byte(s.data))
			if resp.ErrorKind != s.kind || !strings.Contains(resp.Error, s.errText) || (s.kind == "" && resp.Error != "") {
				t.Errorf("error = %q (%s), want kind %q with %q", resp.Error, resp.ErrorKind, s.kind, s.errText)
			}
			if s.out != "" && string(out) != s.out {
				t.Errorf("data = %q, want %q", out, s.out)
			}
			if s.check != nil {
				s.check(t, resp)
			}
		})
	}

	t.Run("malformed request", func(t *testing.T) {
		h.t = t
		ch := h.newChannel()
		h.send(initproto.FileOp, ch, []byte{0, 0, 0, 9, '{'})
		f := <-h.channel(ch)
		var resp initproto.FileResponse
		if _, err := initproto.Unpack(f.Payload, &resp); err != nil || f.Type != initproto.FileDone || resp.ErrorKind != initproto.ErrInvalid {
			t.Errorf("frame %d %q: %v", f.Type, f.Payload, err)
		}
	})
}

func TestMainExitEndsInit(t *testing.T) {
	tests := []struct {
		name string
		req  initproto.ExecRequest
		out  string
		code int
	}{
		{"exit code", initproto.ExecRequest{Argv: sh("echo bye; exit 7"), Main: true}, "bye\n", 7},
		{"success", initproto.ExecRequest{Argv: []string{"true"}, Main: true}, "", 0},
		{"not found", initproto.ExecRequest{Argv: []string{"no-such-command-xyz"}, Main: true}, "", 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startInit(t)
			res := h.run(tt.req)
			if res.stdout != tt.out || res.exit.ExitCode != tt.code {
				t.Errorf("got %q exit %+v", res.stdout, res.exit)
			}
			if code := h.exitStatus(); code != tt.code {
				t.Errorf("init exited %d, want %d", code, tt.code)
			}
		})
	}

	t.Run("SIGTERM to init goes to main", func(t *testing.T) {
		h := startInit(t)
		ch := h.start(initproto.ExecRequest{Argv: sh("echo started; exec sleep 30"), Main: true})
		h.readUntil(ch, "started")
		if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if res := h.wait(ch); res.exit.ExitCode != 143 {
			t.Errorf("exit %+v", res.exit)
		}
		if code := h.exitStatus(); code != 143 {
			t.Errorf("init exited %d", code)
		}
	})
}

func TestStdinEOFEndsInit(t *testing.T) {
	h := startInit(t)
	ch := h.start(initproto.ExecRequest{Argv: sh("echo $$; exec sleep 30")})
	out := h.readUntil(ch, "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("stdout %q", out)
	}
	bg := h.start(initproto.ExecRequest{Argv: sh("sleep 30 </dev/null >/dev/null 2>&1 & echo $!")})
	bgPid, err := strconv.Atoi(strings.TrimSpace(h.wait(bg).stdout))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.in.Close(); err != nil {
		t.Fatal(err)
	}
	if code := h.exitStatus(); code != 0 {
		t.Errorf("init exited %d, want 0", code)
	}
	eventually(t, "the exec is killed", func() bool { return zombieOrGone(pid) })
	eventually(t, "the orphan is killed", func() bool { return zombieOrGone(bgPid) })
}

// TestAsPID1 runs gust-init as PID 1 of new PID and network namespaces, as in a container.
func TestAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for new namespaces")
	}
	h := startInitWith(t, syscall.CLONE_NEWPID|syscall.CLONE_NEWNET)

	t.Run("loopback is up", func(t *testing.T) {
		h.t = t
		if _, err := exec.LookPath("ip"); err != nil {
			t.Skip("no ip command")
		}
		res := h.run(initproto.ExecRequest{Argv: []string{"ip", "-o", "link", "show", "lo"}})
		if !strings.Contains(res.stdout, ",UP") {
			t.Errorf("ip link show lo: %q %q", res.stdout, res.stderr)
		}
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		h.t = t
		pidFile := filepath.Join(t.TempDir(), "pid")
		res := h.run(initproto.ExecRequest{Argv: sh(hostPIDScript(pidFile, "sleep 0.2") + " &")})
		if res.exit.ExitCode != 0 {
			t.Fatalf("exit %+v: %s", res.exit, res.stderr)
		}
		pid := readPID(t, pidFile)
		eventually(t, fmt.Sprintf("orphan %d is reaped", pid), func() bool { return gone(pid) })
	})

	t.Run("stdin EOF kills everything", func(t *testing.T) {
		h.t = t
		pidFile := filepath.Join(t.TempDir(), "pid")
		res := h.run(initproto.ExecRequest{Argv: sh("setsid -f " + hostPIDScript(pidFile, "sleep 30"))})
		if res.exit.ExitCode != 0 {
			t.Fatalf("exit %+v: %s", res.exit, res.stderr)
		}
		pid := readPID(t, pidFile)
		if gone(pid) {
			t.Fatalf("sleep %d already gone", pid)
		}
		if err := h.in.Close(); err != nil {
			t.Fatal(err)
		}
		if code := h.exitStatus(); code != 0 {
			t.Errorf("init exited %d", code)
		}
		eventually(t, "the detached process is killed", func() bool { return zombieOrGone(pid) })
	})
}

// hostPIDScript is a shell command that writes its pid as this test sees it (the host's /proc
// is mounted here) to pidFile, then execs cmd with no stdio.
func hostPIDScript(pidFile, cmd string) string {
	return fmt.Sprintf(`sh -c 'read -r p rest </proc/self/stat; echo $p >%[1]s.tmp; mv %[1]s.tmp %[1]s; exec %[2]s' </dev/null >/dev/null 2>&1`,
		pidFile, cmd)
}

func readPID(t *testing.T, pidFile string) int {
	t.Helper()
	var pid int
	eventually(t, "the pid file is written", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

// TestOutputFlowControl: init sends no more of an exec's output than the window until the
// worker gives credit back, and the process blocks in write meanwhile; with credit, every byte
// arrives, in order, and the exit after it.
func TestOutputFlowControl(t *testing.T) {
	h := startInit(t)
	const total = 8 << 20
	ch := h.start(initproto.ExecRequest{Argv: sh(fmt.Sprintf("head -c %d /dev/zero; echo done >&2", total)), Env: []string{"PATH=/usr/bin:/bin"}})
	c := h.channel(ch)
	got := 0
	// Nobody gives credit: output stops at the window (and a chunk per pump in flight).
	for quiet := time.After(700 * time.Millisecond); quiet != nil; {
		select {
		case f := <-c:
			if f.Type != initproto.Stdout {
				t.Fatalf("frame type %d before any credit, %d bytes in; want only stdout", f.Type, got)
			}
			got += len(f.Payload)
			quiet = time.After(700 * time.Millisecond)
		case <-quiet:
			quiet = nil
		}
	}
	if got < initproto.OutputWindow || got > initproto.OutputWindow+2*chunkSize {
		t.Fatalf("without credit init sent %d bytes; want the window, %d", got, initproto.OutputWindow)
	}
	// Credit for what arrived, as a reader takes it: the rest follows, then the exit.
	h.send(initproto.Credit, ch, initproto.CreditPayload(uint32(got)))
	var stderr string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-c:
			switch f.Type {
			case initproto.Stdout:
				for _, b := range f.Payload {
					if b != 0 {
						t.Fatalf("stdout byte %d is %d, want 0", got, b)
					}
				}
				got += len(f.Payload)
				h.send(initproto.Credit, ch, initproto.CreditPayload(uint32(len(f.Payload))))
			case initproto.Stderr:
				stderr += string(f.Payload)
				h.send(initproto.Credit, ch, initproto.CreditPayload(uint32(len(f.Payload))))
			case initproto.Exit:
				if got != total || stderr != "done\n" {
					t.Fatalf("exit after %d bytes of stdout and stderr %q; want %d and \"done\\n\"", got, stderr, total)
				}
				return
			}
		case <-timeout:
			t.Fatalf("no exit 10 s after credit; %d of %d bytes arrived", got, total)
		}
	}
}

// TestOutputFlowControlExit: a process that exited is not held open by output nobody reads:
// what it left in its pipe goes out beyond the window, then its exit.
func TestOutputFlowControlExit(t *testing.T) {
	h := startInit(t)
	// A little over the window: it fits the pipe once init has sent the window.
	res := h.run(initproto.ExecRequest{Argv: sh(fmt.Sprintf("head -c %d /dev/zero", initproto.OutputWindow+32<<10)), Env: []string{"PATH=/usr/bin:/bin"}})
	if res.exit.ExitCode != 0 || len(res.stdout) != initproto.OutputWindow+32<<10 {
		t.Fatalf("exit %+v after %d bytes; want 0 after %d", res.exit, len(res.stdout), initproto.OutputWindow+32<<10)
	}
}

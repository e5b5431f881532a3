package containerinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/initproto"
)

const (
	// chunkSize bounds one Stdout or Stderr frame.
	chunkSize = 32 << 10
	// After a process has exited its Exit frame waits for its output to end (EOF on its
	// pipes, EIO on its PTY master). A background child that inherited them (`sh -c 'server
	// &'`) must not hold the exec open for its whole life, though: once the output has been
	// silent for drainQuiet (drainQuietPTY for a PTY, whose master gVisor never ends), or
	// drainMax has passed, what is buffered is read and the Exit frame is sent. Later output
	// on pipes is read and dropped, so the child gets no SIGPIPE; a PTY is closed (hangup).
	drainQuiet    = 250 * time.Millisecond
	drainQuietPTY = 50 * time.Millisecond
	drainMax      = 2 * time.Second
	// drainFinal is how long the last read of what is buffered may take.
	drainFinal = 20 * time.Millisecond
)

// process is one exec: a child of init and the goroutines that serve it.
type process struct {
	s    *server
	ch   uint32
	main bool
	pid  int
	pty  *os.File   // the PTY master, or nil for pipes
	outs []*os.File // where output is read from
	in   *inbox     // stdin waiting to be written
	inW  *os.File   // where stdin is written: a pipe or the PTY master

	// Set by the reaper under s.mu.
	reaped bool
	status unix.WaitStatus
	exited chan struct{} // closed once reaped

	readers sync.WaitGroup // the output pumps
	lastOut atomic.Int64   // unix nanoseconds of the latest output

	outMu sync.Mutex // orders output frames before the Exit frame
	ended bool       // Exit sent: later output is dropped

	// Flow control (initproto.OutputWindow): unacked is output sent that the worker has not
	// credited back. A pump waits for window before it sends, and meanwhile reads no more of
	// its pipe, so that a process whose output nobody reads blocks in write instead of making
	// the worker hold it. After the process has exited the window doubles: what it left in its
	// pipes then goes out at once and its Exit frame is not held back by an absent reader;
	// once wait cuts the exec short (a background child still writing), output that finds no
	// window is dropped, as output after the Exit frame already is.
	flowMu  sync.Mutex
	flow    *sync.Cond
	unacked int64
	exitedW bool // the process has exited: the doubled window applies
	cut     bool
}

// acquire waits until n bytes of output may be sent, and counts them; false: drop them.
func (p *process) acquire(n int) bool {
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	for {
		window := int64(initproto.OutputWindow)
		if p.exitedW {
			window *= 2
		}
		if p.unacked < window {
			p.unacked += int64(n)
			return true
		}
		if p.cut {
			return false
		}
		p.flow.Wait()
	}
}

// credit gives back window that the worker is done with.
func (p *process) credit(n int64) {
	p.flowMu.Lock()
	p.unacked = max(p.unacked-n, 0)
	p.flowMu.Unlock()
	p.flow.Broadcast()
}

// setFlow marks the process exited (exited) or its exec cut short (cut), waking the pumps.
func (p *process) setFlow(exited, cut bool) {
	p.flowMu.Lock()
	p.exitedW = p.exitedW || exited
	p.cut = p.cut || cut
	p.flowMu.Unlock()
	p.flow.Broadcast()
}

// startError is why an exec could not start, with the shell's exit code for it.
type startError struct {
	code int
	msg  string
}

func (e *startError) Error() string { return e.msg }

// startExec handles an ExecStart frame. Whatever goes wrong, the channel gets an Exit frame.
func (s *server) startExec(ch uint32, payload []byte) {
	var req initproto.ExecRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		s.failExec(ch, false, &startError{126, fmt.Sprintf("gust: bad exec request: %v", err)})
		return
	}
	if err := s.spawn(ch, req); err != nil {
		var se *startError
		if !errors.As(err, &se) {
			se = &startError{126, "gust: " + err.Error()}
		}
		s.failExec(ch, req.Main, se)
	}
}

// failExec reports an exec that never started: its message on stderr, then its Exit frame.
func (s *server) failExec(ch uint32, main bool, se *startError) {
	if err := s.send(initproto.Stderr, ch, []byte(se.msg+"\n")); err != nil {
		s.logf("channel %d: %v", ch, err)
	}
	if err := s.sendJSON(initproto.Exit, ch, initproto.ExitInfo{ExitCode: se.code, Error: se.msg}); err != nil {
		s.logf("channel %d: %v", ch, err)
	}
	if main {
		s.mainExited(se.code)
	}
}

func (s *server) mainExited(code int) {
	select {
	case s.mainExit <- code:
	default:
	}
}

// spawn starts the process of an exec and the goroutines that serve it.
func (s *server) spawn(ch uint32, req initproto.ExecRequest) (retErr error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return &startError{127, "gust: exec: no command given"}
	}
	env := req.Env
	pathEnv, ok := lookupEnv(env, "PATH")
	if !ok {
		pathEnv = defaultPath
		env = append(env[:len(env):len(env)], "PATH="+defaultPath)
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if fi, err := os.Stat(cwd); err != nil {
		return &startError{1, fmt.Sprintf("gust: cannot chdir to %s: %s", cwd, errnoText(err))}
	} else if !fi.IsDir() {
		return &startError{1, fmt.Sprintf("gust: cannot chdir to %s: not a directory", cwd)}
	}
	argv0, err := lookPath(req.Argv[0], pathEnv, cwd)
	if err != nil {
		return err
	}

	// The child's ends of its stdio are closed once spawn returns, whether it started or not.
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	closeLater := func(fs ...*os.File) {
		for _, f := range fs {
			cleanup = append(cleanup, func() { closeFiles(f) })
		}
	}

	p := &process{s: s, ch: ch, main: req.Main, exited: make(chan struct{})}
	p.flow = sync.NewCond(&p.flowMu)
	p.lastOut.Store(time.Now().UnixNano())
	attr := &syscall.ProcAttr{Dir: cwd, Env: env}
	// Parent ends of the stdio: where stdin goes and where output comes from.
	var stdinW *os.File
	var outs []*os.File
	var outTypes []initproto.Type
	if req.PTY {
		master, tty, err := openPTY()
		if err != nil {
			return &startError{1, fmt.Sprintf("gust: cannot allocate a PTY: %v", err)}
		}
		closeLater(tty)
		rows, cols := req.Rows, req.Cols
		if rows == 0 {
			rows = 24
		}
		if cols == 0 {
			cols = 80
		}
		if err := setWinsize(master, rows, cols); err != nil {
			closeFiles(master)
			return &startError{1, fmt.Sprintf("gust: cannot set the PTY size: %v", err)}
		}
		fd := tty.Fd()
		attr.Files = []uintptr{fd, fd, fd}
		attr.Sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		p.pty = master
		stdinW = master
		outs, outTypes = []*os.File{master}, []initproto.Type{initproto.Stdout}
		defer func() {
			if retErr != nil {
				closeFiles(master)
			}
		}()
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("stdio pipe: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			closeFiles(inR, inW)
			return fmt.Errorf("stdio pipe: %w", err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			closeFiles(inR, inW, outR, outW)
			return fmt.Errorf("stdio pipe: %w", err)
		}
		closeLater(inR, outW, errW)
		attr.Files = []uintptr{inR.Fd(), outW.Fd(), errW.Fd()}
		attr.Sys = &syscall.SysProcAttr{Setpgid: true}
		stdinW = inW
		outs, outTypes = []*os.File{outR, errR}, []initproto.Type{initproto.Stdout, initproto.Stderr}
		defer func() {
			if retErr != nil {
				closeFiles(inW, outR, errR)
			}
		}()
	}

	if req.User != "" {
		cred, home, err := lookupUser(req.User)
		if err != nil {
			return &startError{126, "gust: " + err.Error()}
		}
		attr.Sys.Credential = cred
		if v, _ := lookupEnv(attr.Env, "HOME"); v == "/root" && home != "" {
			attr.Env = withEnv(attr.Env, "HOME", home)
		}
	}
	// Start and register under mu: the reaper cannot take the status before the pid is known.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return &startError{137, "gust: init is shutting down"}
	}
	if s.execs[ch] != nil {
		s.mu.Unlock()
		return &startError{126, fmt.Sprintf("gust: channel %d already has a running exec", ch)}
	}
	pid, _, err := syscall.StartProcess(argv0, req.Argv, attr)
	if err != nil {
		s.mu.Unlock()
		code := 126
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		return &startError{code, fmt.Sprintf("gust: exec %q: %s", req.Argv[0], errnoText(err))}
	}
	p.pid = pid
	p.in = newInbox()
	p.inW = stdinW
	s.pids[pid] = p
	s.execs[ch] = p
	s.mu.Unlock()

	p.outs = outs
	for i, f := range outs {
		p.readers.Add(1)
		go p.pump(f, outTypes[i])
	}
	go p.feed()
	go p.wait()
	return nil
}

// openPTY opens a PTY pair. pty.Open leaves the master in blocking mode (it calls Fd), so the
// master is duplicated into a non-blocking descriptor that Go's poller manages: a read blocked
// on it then ends when it is closed, and it ties up no thread.
func openPTY() (master, tty *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer closeFiles(m) // the duplicate below is the master from now on
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		closeFiles(t)
		return nil, nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd) // a descriptor just made, never used
		closeFiles(t)
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), t, nil
}

// setWinsize sets a PTY's window size without taking the master out of non-blocking mode.
func setWinsize(master *os.File, rows, cols uint16) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	if err != nil {
		return err
	}
	return ioErr
}

func (p *process) resize(rows, cols uint16) {
	if p.pty == nil {
		p.s.logf("channel %d: resize of an exec without a PTY; ignored", p.ch)
		return
	}
	if err := setWinsize(p.pty, rows, cols); err != nil {
		p.s.logf("channel %d: resize: %v", p.ch, err)
	}
}

// pump streams one output of the process to the worker until it ends. The master of a PTY ends
// with EIO once every slave descriptor is closed. When wait cuts the exec short with a read
// deadline, a pipe is still read to its end, and what it brings dropped.
func (p *process) pump(f *os.File, t initproto.Type) {
	counted := true
	defer func() {
		if counted {
			p.readers.Done()
		}
	}()
	if p.pty == nil {
		defer closeFiles(f)
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 && p.acquire(n) {
			p.lastOut.Store(time.Now().UnixNano())
			p.emit(t, buf[:n])
		}
		if err == nil {
			continue
		}
		if counted && p.pty == nil && errors.Is(err, os.ErrDeadlineExceeded) {
			counted = false
			p.readers.Done()
			if f.SetReadDeadline(time.Time{}) == nil {
				continue
			}
		}
		return
	}
}

func (p *process) emit(t initproto.Type, b []byte) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if p.ended {
		return
	}
	if err := p.s.send(t, p.ch, b); err != nil && !errors.Is(err, errOutClosed) {
		p.s.logf("channel %d: sending output: %v", p.ch, err)
	}
}

// feed writes stdin to the process as it arrives.
func (p *process) feed() {
	w := p.inW
	for {
		b, eof, ok := p.in.next()
		if !ok {
			break
		}
		if eof {
			if p.pty != nil {
				// A PTY has no end of its own; ^D is EOF to a reader in canonical mode. A failed
				// write means the process is gone, which its exit reports.
				_, _ = w.Write([]byte{4})
			}
			break
		}
		if _, err := w.Write(b); err != nil {
			p.in.stop()
			break
		}
	}
	if p.pty == nil {
		closeFiles(w) // the process reads EOF
	}
}

// wait sends the Exit frame once the process has been reaped and its output drained.
func (p *process) wait() {
	<-p.exited
	p.setFlow(true, false)
	drained := make(chan struct{})
	go func() {
		p.readers.Wait()
		close(drained)
	}()
	exitedAt := time.Now()
	quiet := drainQuiet
	if p.pty != nil {
		quiet = drainQuietPTY
	}
	t := time.NewTimer(quiet)
	for waiting := true; waiting; {
		select {
		case <-drained:
			waiting = false
		case now := <-t.C:
			silent := now.Sub(time.Unix(0, p.lastOut.Load()))
			left := drainMax - now.Sub(exitedAt)
			if silent < quiet && left > 0 {
				t.Reset(min(quiet-silent, left))
				continue
			}
			if p.pty == nil { // a PTY under gVisor always comes here
				p.s.logf("channel %d: process %d exited but its output is still open (a background child?); ending the exec",
					p.ch, p.pid)
			}
			for _, f := range p.outs {
				if err := f.SetReadDeadline(now.Add(drainFinal)); err != nil {
					p.s.logf("channel %d: %v", p.ch, err)
					closeFiles(f) // cannot happen for pollable files; ends the pump all the same
				}
			}
			p.setFlow(true, true) // a pump waiting for window reads on, and drops
			<-drained
			waiting = false
		}
	}
	t.Stop()

	code, sig := exitCode(p.status)
	p.s.mu.Lock()
	if p.s.execs[p.ch] == p {
		delete(p.s.execs, p.ch)
	}
	p.s.mu.Unlock()
	p.in.stop()

	p.outMu.Lock()
	p.ended = true
	err := p.s.sendJSON(initproto.Exit, p.ch, initproto.ExitInfo{ExitCode: code, Signal: sig})
	p.outMu.Unlock()
	if err != nil && !errors.Is(err, errOutClosed) {
		p.s.logf("channel %d: sending exit: %v", p.ch, err)
	}
	// Ends the feeder if it is blocked on a pipe that a background child holds but does not
	// read, or on the PTY master (where it also ends a pump still reading).
	closeFiles(p.inW)
	if p.main {
		p.s.mainExited(code)
	}
}

// exitCode turns a wait status into the shell's convention.
func exitCode(ws unix.WaitStatus) (code, sig int) {
	switch {
	case ws.Exited():
		return ws.ExitStatus(), 0
	case ws.Signaled():
		return 128 + int(ws.Signal()), int(ws.Signal())
	default:
		return 255, 0
	}
}

// lookPath finds the executable for argv[0] the way a shell does: names with a slash are
// paths (relative to cwd), others are searched in pathEnv. The error is a *startError with
// exit code 127 (not found) or 126 (found but not executable).
func lookPath(file, pathEnv, cwd string) (string, error) {
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		if err := checkExecutable(p); err != nil {
			code := 126
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
				code = 127
			}
			return "", &startError{code, fmt.Sprintf("gust: exec %q: %s", file, errnoText(err))}
		}
		return p, nil
	}
	var denied error
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if denied == nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) &&
			!errors.Is(err, syscall.EISDIR) {
			denied = err
		}
	}
	if denied != nil {
		return "", &startError{126, fmt.Sprintf("gust: exec %q: %s", file, errnoText(denied))}
	}
	return "", &startError{127, fmt.Sprintf("gust: exec %q: executable file not found in $PATH", file)}
}

// checkExecutable reports whether path is a file this process may execute.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return syscall.EISDIR
	}
	if fi.Mode()&0o111 == 0 {
		return syscall.EACCES
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return err
	}
	return nil
}

// errnoText is an error's errno text ("no such file or directory") without the path that
// os wraps around it.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

func lookupEnv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// inbox queues stdin for a process without bound, so that a process that does not read its
// stdin never blocks the frame reader (and with it every other exec).
type inbox struct {
	mu      sync.Mutex
	cond    *sync.Cond
	bufs    [][]byte
	eof     bool // StdinClose received: deliver what is queued, then close
	stopped bool // the process is gone: drop everything
}

func newInbox() *inbox {
	q := &inbox{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *inbox) push(b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.eof || q.stopped || len(b) == 0 {
		return
	}
	q.bufs = append(q.bufs, b)
	q.cond.Signal()
}

func (q *inbox) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.eof = true
	q.cond.Signal()
}

func (q *inbox) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	q.bufs = nil
	q.cond.Signal()
}

// next returns the next bytes to write; eof once StdinClose has been reached; ok false once
// stopped.
func (q *inbox) next() (b []byte, eof, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.stopped && len(q.bufs) == 0 && !q.eof {
		q.cond.Wait()
	}
	if q.stopped {
		return nil, false, false
	}
	if len(q.bufs) > 0 {
		b = q.bufs[0]
		q.bufs[0] = nil
		q.bufs = q.bufs[1:]
		return b, false, true
	}
	return nil, true, true
}

// closeFiles closes pipe ends and PTY descriptors. Their errors are dropped on purpose: closing
// one loses nothing (what was written is in the kernel's buffer, or its write already failed),
// and it fails only for a descriptor already closed, as when wait and feed both end a stdin.
func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// Package containerinit is gust-init, the PID 1 of every gust container. The worker starts each
// container with the gust binary bind-mounted read-only at /.gust/gust and the process
// ["/.gust/gust", "container-init"]; this package is what that command runs.
//
// gust-init serves the worker over its own stdio with the frames of internal/initproto: it reads
// requests on stdin and answers on stdout; stderr carries its own diagnostics. It starts
// processes (with pipes or a PTY) and streams their output, delivers stdin, signals and window
// sizes, answers file operations, and reaps every child, orphans included. It exits when the
// container's main process does (with its exit code) or when the worker closes its stdin (after
// killing everything it started).
//
// Reaping: one goroutine, woken by SIGCHLD, calls wait4(-1) and hands each status to the exec
// that owns the pid. Execs are started and entered in the pid table under the same lock the
// reaper takes, so no status can be reaped before its owner is known; statuses of unknown pids
// (orphans) are discarded. Nothing in this package waits for a child any other way.
//
// Imported only by cmd/gust (the hidden `gust container-init` command).
package containerinit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/initproto"
)

// defaultPath is the PATH an exec gets (and is looked up in) when its environment has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExitStatus is the error Run returns when init should exit with a nonzero status: the exit
// code of the container's main process, or 128+N after a terminating signal N.
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Run serves the worker on the process's stdin and stdout until the main process exits (it
// then returns nil or an ExitStatus carrying the main process's code), the worker closes stdin
// (nil), or the stream is corrupt (an error).
func Run() error {
	return run(os.Stdin, os.Stdout, os.Stderr)
}

// server is the state of one gust-init.
type server struct {
	w      *initproto.Writer
	stderr io.Writer

	// outMu guards outClosed: every frame is sent under a read lock, and shutdown takes the
	// write lock so that no frame is half written when init exits.
	outMu     sync.RWMutex
	outClosed atomic.Bool

	// mu guards the exec tables and is held across process start and by the reaper.
	mu      sync.Mutex
	execs   map[uint32]*process // by channel, until the exec's Exit frame
	pids    map[int]*process    // by pid, until reaped
	closing bool

	mainExit chan int // the main process's exit code, once
}

func run(stdin io.Reader, stdout, stderr io.Writer) error {
	s := &server{
		w:        initproto.NewWriter(stdout),
		stderr:   stderr,
		execs:    map[uint32]*process{},
		pids:     map[int]*process{},
		mainExit: make(chan int, 1),
	}
	s.setup()

	// Writes to a closed worker pipe must fail with EPIPE rather than kill init; notifying (not
	// ignoring) keeps SIGPIPE's default disposition for the processes init starts.
	pipeSigs := make(chan os.Signal, 1)
	signal.Notify(pipeSigs, syscall.SIGPIPE)
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(pipeSigs)
	defer signal.Stop(chld)
	defer signal.Stop(sigs)
	go func() {
		for range pipeSigs {
		}
	}()
	go s.reapLoop(chld)

	if err := s.sendJSON(initproto.Ready, 0, initproto.ReadyInfo{PID: os.Getpid()}); err != nil {
		s.shutdown()
		return fmt.Errorf("gust-init: send ready frame: %w", err)
	}

	readDone := make(chan error, 1)
	go func() {
		readDone <- s.serve(initproto.NewReader(bufio.NewReaderSize(stdin, 64<<10)))
	}()
	for {
		select {
		case err := <-readDone:
			s.shutdown()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return fmt.Errorf("gust-init: reading from the worker: %w", err)
		case code := <-s.mainExit:
			s.shutdown()
			if code == 0 {
				return nil
			}
			return ExitStatus(code)
		case sig := <-sigs:
			if s.forward(sig) {
				continue
			}
			n := int(sig.(syscall.Signal))
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
				s.logf("no main process to forward %v to: stopping", sig)
				s.shutdown()
				return ExitStatus(128 + n)
			}
			s.logf("no main process to forward %v to: ignored", sig)
		}
	}
}

// setup makes init undumpable, brings up loopback and makes init the reaper of orphans.
func (s *server) setup() {
	// Other processes in the container must not reach init's pipes to the worker through
	// /proc/1/fd.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		s.logf("prctl(PR_SET_DUMPABLE): %v", err)
	}
	// As PID 1 init inherits every orphan in its namespace; elsewhere (tests) ask for them.
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			s.logf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
		}
	}
	if err := loopbackUp(); err != nil {
		s.logf("bringing up lo: %v", err)
	}
}

// loopbackUp sets IFF_UP on lo when it is down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }() // a socket used for two ioctls only
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// logf writes a diagnostic to init's stderr. A failed write is dropped: there is nowhere left to
// report it.
func (s *server) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(s.stderr, "gust-init: "+format+"\n", args...)
}

var errOutClosed = errors.New("gust-init is shutting down")

// send writes one frame to the worker.
func (s *server) send(t initproto.Type, ch uint32, payload []byte) error {
	s.outMu.RLock()
	defer s.outMu.RUnlock()
	if s.outClosed.Load() {
		return errOutClosed
	}
	return s.w.Write(t, ch, payload)
}

func (s *server) sendJSON(t initproto.Type, ch uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.send(t, ch, b)
}

// serve reads frames until the stream ends.
func (s *server) serve(r *initproto.Reader) error {
	for {
		f, err := r.Read()
		if err != nil {
			return err
		}
		s.handle(f)
	}
}

// handle acts on one frame from the worker. Requests that may take long (file operations) run
// in their own goroutines; the rest are quick.
func (s *server) handle(f initproto.Frame) {
	defer s.recoverf("frame type %d on channel %d", f.Type, f.Channel)
	switch f.Type {
	case initproto.ExecStart:
		s.startExec(f.Channel, f.Payload)
	case initproto.Stdin:
		if p := s.exec(f.Channel, f.Type); p != nil {
			p.in.push(f.Payload)
		}
	case initproto.StdinClose:
		if p := s.exec(f.Channel, f.Type); p != nil {
			p.in.close()
		}
	case initproto.Signal:
		var req initproto.SignalRequest
		if err := json.Unmarshal(f.Payload, &req); err != nil {
			s.logf("channel %d: bad signal request: %v", f.Channel, err)
			return
		}
		s.signalExec(f.Channel, req.Signal)
	case initproto.Resize:
		var req initproto.ResizeRequest
		if err := json.Unmarshal(f.Payload, &req); err != nil {
			s.logf("channel %d: bad resize request: %v", f.Channel, err)
			return
		}
		if p := s.exec(f.Channel, f.Type); p != nil {
			p.resize(req.Rows, req.Cols)
		}
	case initproto.FileOp:
		go s.fileOp(f.Channel, f.Payload)
	case initproto.Credit:
		n, err := initproto.ParseCredit(f.Payload)
		if err != nil {
			s.logf("channel %d: %v", f.Channel, err)
			return
		}
		// Credit for an exec that has ended is expected (the worker reads behind init): no log.
		s.mu.Lock()
		p := s.execs[f.Channel]
		s.mu.Unlock()
		if p != nil {
			p.credit(int64(n))
		}
	default:
		s.logf("channel %d: ignoring frame of unknown type %d", f.Channel, f.Type)
	}
}

// recoverf keeps a bug in one request from taking the whole container down with init.
func (s *server) recoverf(format string, args ...any) {
	if r := recover(); r != nil {
		s.logf("panic handling "+format+": %v\n%s", append(args, r, debug.Stack())...)
	}
}

// exec returns the running exec on a channel, or nil (logged) if there is none.
func (s *server) exec(ch uint32, t initproto.Type) *process {
	s.mu.Lock()
	p := s.execs[ch]
	s.mu.Unlock()
	if p == nil {
		s.logf("channel %d: no exec for frame type %d; ignored", ch, t)
	}
	return p
}

// signalExec sends sig to an exec's process group. It holds mu so that the leader cannot be
// reaped (and its pid reused) between the check and the kill.
func (s *server) signalExec(ch uint32, sig int) {
	if sig <= 0 || sig > 64 {
		s.logf("channel %d: invalid signal %d", ch, sig)
		return
	}
	s.mu.Lock()
	p := s.execs[ch]
	var err error
	if p == nil || p.reaped {
		err = errors.New("no running exec to signal")
	} else if kerr := unix.Kill(-p.pid, unix.Signal(sig)); kerr != nil {
		err = fmt.Errorf("kill(-%d, %d): %w", p.pid, sig, kerr)
	}
	s.mu.Unlock()
	// Logged outside mu: a slow stderr must not stall the reaper.
	if err != nil {
		s.logf("channel %d: %v", ch, err)
	}
}

// forward passes a signal that init received on to the main process, if there is one running.
func (s *server) forward(sig os.Signal) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	forwarded := false
	for _, p := range s.execs {
		if p.main && !p.reaped {
			_ = unix.Kill(-p.pid, sig.(syscall.Signal)) // ESRCH: the group has just gone
			forwarded = true
		}
	}
	return forwarded
}

// reapLoop reaps children whenever SIGCHLD arrives, and every few seconds in case one was
// missed.
func (s *server) reapLoop(chld <-chan os.Signal) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-chld:
		case <-t.C:
		}
		s.reap()
	}
}

func (s *server) reap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if p, ok := s.pids[pid]; ok {
			delete(s.pids, pid)
			p.status = ws
			p.reaped = true
			close(p.exited)
		}
	}
}

// shutdown stops output to the worker and kills every process init started. As PID 1 that is
// every other process in the container; the kernel would kill them anyway once init exits.
func (s *server) shutdown() {
	s.mu.Lock()
	s.closing = true
	var groups []int
	for _, p := range s.pids {
		groups = append(groups, p.pid)
	}
	s.mu.Unlock()

	s.outClosed.Store(true)
	// Wait (a little) for a frame being written to finish, so the stream ends on a frame
	// boundary; a worker that stopped reading must not keep init alive.
	locked := make(chan struct{})
	go func() {
		s.outMu.Lock()
		close(locked)
		// Left locked: nothing is sent after shutdown.
	}()
	select {
	case <-locked:
	case <-time.After(time.Second):
		s.logf("a frame to the worker is still being written; exiting anyway")
	}

	// Kills at shutdown: ESRCH (already gone) is the only failure, and it is the aim.
	if os.Getpid() == 1 {
		_ = unix.Kill(-1, unix.SIGKILL)
		return
	}
	for _, pgid := range groups {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
	killDescendants()
}

// killDescendants SIGKILLs every descendant of this process (orphans that were re-parented to
// it included). Only used when init is not PID 1, i.e. in tests.
func killDescendants() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; fields resume after the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], pid)
	}
	queue := append([]int(nil), children[os.Getpid()]...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		_ = unix.Kill(pid, unix.SIGKILL) // ESRCH: already gone
		queue = append(queue, children[pid]...)
	}
}

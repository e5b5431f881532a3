// Package reaper makes the gust process the reaper of the containers it starts. Container
// runtimes started with --detach leave the container's first process (and gVisor's sandbox and
// gofer) orphaned; without a subreaper they would become zombies of the machine's init, which
// on some machines never reaps them. Children that gust starts and waits for itself must go
// through Start/Run here, so that the reaper never steals their exit status from os/exec.
//
// Imported by internal/container (which enables it), and by whatever else starts processes in
// gust and waits for them: the image builder, the worker, cmd/gust's benchmarks.
package reaper

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	mu        sync.Mutex
	managed   = map[int]bool{}
	once      sync.Once
	enableErr error
)

// Enable marks this process a child subreaper and starts reaping orphans. Safe to call twice;
// every call returns the first one's result. With an error nothing was started: orphans of
// detached containers go to the machine's init instead.
func Enable() error {
	once.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			enableErr = fmt.Errorf("reaper: becoming a child subreaper: %w", err)
			return
		}
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, syscall.SIGCHLD)
		go func() {
			t := time.NewTicker(2 * time.Second)
			for {
				select {
				case <-ch:
				case <-t.C:
				}
				Reap()
			}
		}()
	})
	return enableErr
}

// Start starts cmd, registering it so that the reaper leaves it to cmd.Wait.
func Start(cmd *exec.Cmd) error {
	mu.Lock()
	defer mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	managed[cmd.Process.Pid] = true
	return nil
}

// Wait waits for a command started with Start.
func Wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	mu.Lock()
	delete(managed, cmd.Process.Pid)
	mu.Unlock()
	return err
}

// Run starts cmd and waits for it.
func Run(cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
	return Wait(cmd)
}

// CombinedOutput runs cmd and returns its stdout and stderr together.
func CombinedOutput(cmd *exec.Cmd) ([]byte, error) {
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := Run(cmd)
	return b.Bytes(), err
}

// Reap collects every zombie child that is not a managed command.
func Reap() {
	mu.Lock()
	defer mu.Unlock()
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || managed[pid] {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		f := bytes.Fields(b[i+2:])
		if len(f) < 2 || string(f[0]) != "Z" {
			continue
		}
		if ppid, err := strconv.Atoi(string(f[1])); err != nil || ppid != self {
			continue
		}
		var ws unix.WaitStatus
		// Its status is nobody's: an orphan's. ECHILD means another wait took it first.
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

package network

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// IPv4 forwarding is a setting of the whole network namespace, which other programs (and
// other gust workers) may rely on too. A worker turns it on at start if it is off, and the
// last worker of the namespace to stop turns it back off; a setting that was on already is
// left on. The workers of a namespace meet in a directory under /run/gust named after the
// namespace: "orig" holds the value found before a worker changed it, and each running
// worker holds a file named <tag>.<pid>. A worker killed with SIGKILL leaves its file; the
// next worker to stop removes it (its process is gone), and only then can forwarding be
// restored: after a crash, starting and stopping a worker once puts it back.

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// forwardDir is the meeting directory of the calling thread's network namespace.
func forwardDir(runDir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", err
	}
	return filepath.Join(runDir, fmt.Sprintf("ip_forward-%d", st.Ino)), nil
}

// lockFile opens (making it if need be) and takes an exclusive flock on path; closing the file
// releases it, as does the process's death.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockForward takes the directory's lock; the returned func releases it. The last worker
// removes the directory while holding the lock, so a lock taken on a file that is no longer
// the directory's is taken again.
func lockForward(dir string) (func(), error) {
	for {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		f, err := lockFile(filepath.Join(dir, "lock"))
		if err != nil {
			return nil, err
		}
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(filepath.Join(dir, "lock"), &now) == nil && held.Ino == now.Ino {
			return func() { f.Close() }, nil
		}
		f.Close()
	}
}

// enableForward turns forwarding on for this worker (holder names it in the directory).
func enableForward(runDir, holder string) error {
	dir, err := forwardDir(runDir)
	if err != nil {
		return err
	}
	unlock, err := lockForward(dir)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := os.ReadFile(ipForward)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(cur)) != "1" {
		if _, err := os.Stat(filepath.Join(dir, "orig")); os.IsNotExist(err) {
			if err := os.WriteFile(filepath.Join(dir, "orig"), cur, 0o600); err != nil {
				return err
			}
		}
		if err := os.WriteFile(ipForward, []byte("1"), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, holder+"."+strconv.Itoa(os.Getpid())), nil, 0o600)
}

// releaseForward forgets this worker, and restores forwarding's original value when no
// running worker of the namespace remains and one of them changed it. It reports whether it
// restored it.
func releaseForward(runDir, holder string) (bool, error) {
	dir, err := forwardDir(runDir)
	if err != nil {
		return false, err
	}
	unlock, err := lockForward(dir)
	if err != nil {
		return false, err
	}
	defer unlock()
	_ = os.Remove(filepath.Join(dir, holder+"."+strconv.Itoa(os.Getpid())))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		i := strings.LastIndexByte(e.Name(), '.')
		if i < 0 {
			continue // lock, orig
		}
		pid, err := strconv.Atoi(e.Name()[i+1:])
		if err != nil {
			continue
		}
		if unix.Kill(pid, 0) == syscall.ESRCH {
			_ = os.Remove(filepath.Join(dir, e.Name())) // a worker killed before it could stop
			continue
		}
		return false, nil // another worker still runs
	}
	// The last worker: restore what the first found, and leave no directory behind.
	orig, err := os.ReadFile(filepath.Join(dir, "orig"))
	if err != nil && !os.IsNotExist(err) {
		return false, err
	}
	if err == nil {
		if err := os.WriteFile(ipForward, orig, 0o644); err != nil {
			return false, err
		}
	}
	return err == nil, os.RemoveAll(dir)
}

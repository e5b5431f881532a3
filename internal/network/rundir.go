package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The containers' resolv.conf lives in RunDir/net-<tag> (Config.ResolvDir's default). Its
// worker holds a shared flock on the directory's ownerFile while it runs; Close removes the
// directory, and New removes those of other tags whose owner is gone (killed: the kernel
// released its lock). A lock, not the bridge: a worker in another network namespace (a test's)
// has a bridge this one cannot see, but the same /run. Directories without an ownerFile, from
// gusts before it, are left alone: nothing says whether their worker runs.

// ownerFile is the file in a resolv.conf directory whose lock says its worker runs.
const ownerFile = ".owner"

// sweepAge is how old a directory must be for a sweep to look at it: a worker makes its
// directory, then locks it.
const sweepAge = time.Minute

// claimResolvDir makes the manager's directory and takes its owner lock. A sweep that held
// the lock meanwhile may have removed the directory under it: then it makes it again.
func (m *Manager) claimResolvDir() error {
	for try := 0; ; try++ {
		if err := os.MkdirAll(m.cfg.ResolvDir, 0o711); err != nil {
			return err
		}
		if err := os.Chmod(m.cfg.ResolvDir, 0o711); err != nil {
			return err
		}
		path := filepath.Join(m.cfg.ResolvDir, ownerFile)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
			f.Close()
			return fmt.Errorf("locking %s: %w", path, err)
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			m.owner = f
			return nil
		}
		f.Close()
		if try == 2 {
			return fmt.Errorf("%s keeps going away", path)
		}
	}
}

// removeResolvDir removes the manager's resolv.conf, its owner file and its directory (if
// nothing else is in it).
func (m *Manager) removeResolvDir() {
	var errs []error
	for _, name := range []string{"resolv.conf", ownerFile} {
		if err := os.Remove(filepath.Join(m.cfg.ResolvDir, name)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	if m.owner != nil {
		m.owner.Close()
		m.owner = nil
	}
	if err := os.Remove(m.cfg.ResolvDir); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		m.cfg.Logf("network: %v", err)
	}
}

// sweepResolvDirs removes the RunDir/net-<tag> directories of other tags whose worker is gone.
func (m *Manager) sweepResolvDirs() {
	dirs, _ := filepath.Glob(filepath.Join(m.cfg.RunDir, "net-*"))
	for _, d := range dirs {
		if filepath.Base(d) == "net-"+m.cfg.Tag || filepath.Clean(d) == filepath.Clean(m.cfg.ResolvDir) {
			continue
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < sweepAge {
			continue
		}
		f, err := os.OpenFile(filepath.Join(d, ownerFile), os.O_RDWR, 0)
		if err != nil {
			continue // no owner file: not ours to judge
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // its worker runs
			continue
		}
		_ = os.Remove(filepath.Join(d, "resolv.conf"))
		_ = os.Remove(filepath.Join(d, ownerFile))
		f.Close()
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			m.cfg.Logf("network: removing a stopped worker's %s: %v", d, err)
		}
	}
}

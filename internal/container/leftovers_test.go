package container

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCleanupLeftoverRoots: a root still mounted in the roots directory whose bundle is gone (a
// gust killed between the two) is unmounted and removed at the next start; another state
// directory's roots are not touched.
func TestCleanupLeftoverRoots(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and no -short: it mounts")
	}
	init := filepath.Join(t.TempDir(), "gust")
	if err := os.WriteFile(init, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rt, err := New(Config{StateDir: t.TempDir(), InitBinary: init})
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(Config{StateDir: t.TempDir(), InitBinary: init})
	if err != nil {
		t.Fatal(err)
	}
	if rt.cfg.RootsDir == other.cfg.RootsDir {
		t.Fatalf("two state directories share the roots directory %s", rt.cfg.RootsDir)
	}
	t.Cleanup(func() { os.Remove(rt.cfg.RootsDir); os.Remove(other.cfg.RootsDir) }) // runs last
	mountAt := func(r *Runtime, id string) string {
		dir := filepath.Join(r.cfg.RootsDir, id)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH); os.Remove(dir) })
		return dir
	}
	orphan := mountAt(rt, "sb-orphan")
	others := mountAt(other, "sb-orphan")

	rt.CleanupLeftovers(t.Logf)
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphaned root %s still there (%v)", orphan, err)
	}
	if !isMountPoint(t, others) {
		t.Errorf("%s was unmounted, but it belongs to another state directory", others)
	}
}

func isMountPoint(t *testing.T, dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

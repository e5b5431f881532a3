package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/image"
)

// TestFailedStartLeavesNothing starts real containers whose init exits at once or cannot run,
// under runc and gVisor: Create fails, and neither a cgroup, a bundle nor runtime state remains.
func TestFailedStartLeavesNothing(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and no -short: it runs real containers")
	}
	builder, err := image.NewBuilder("/var/cache/gust-test/layers") // the integration tests' cache
	if err != nil {
		t.Fatal(err)
	}
	layer, err := builder.EnsureDebianSlim(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	runsc, _ := FindRunsc()
	parent := fmt.Sprintf("gust-failtest-%d", os.Getpid())
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
		for _, d := range append(dirs, "/sys/fs/cgroup/"+parent) {
			os.Remove(d)
		}
	})
	for _, tc := range []struct {
		name, iso, init string
		mode            os.FileMode
	}{
		// An init that exits before it says it is ready...
		{"runc init exits", IsolationRunc, "#!/bin/sh\necho failing on purpose >&2\nexit 3\n", 0o755},
		{"gvisor init exits", IsolationGVisor, "#!/bin/sh\necho failing on purpose >&2\nexit 3\n", 0o755},
		// ...and one the runtime cannot execute, so `run` itself fails after the sandbox booted.
		{"runc init not executable", IsolationRunc, "not a program", 0o644},
		{"gvisor init not executable", IsolationGVisor, "not a program", 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iso := tc.iso
			init := filepath.Join(t.TempDir(), "gust")
			if err := os.WriteFile(init, []byte(tc.init), tc.mode); err != nil {
				t.Fatal(err)
			}
			rt, err := New(Config{StateDir: t.TempDir(), InitBinary: init, RunscPath: runsc, CgroupParent: parent})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Close() })
			id := fmt.Sprintf("failstart-%d", time.Now().UnixNano()%1e9)
			c, err := rt.Create(context.Background(), CreateOptions{ID: id, Isolation: iso, Layers: []string{layer},
				CPU: 1, MemoryMiB: 256, DiskMiB: 64, ReadyTimeout: 20 * time.Second, Logf: t.Logf})
			if err == nil {
				rt.Remove(c)
				t.Fatal("a container whose init exits at once started")
			}
			t.Logf("Create failed as it should: %v", err)
			cg := rt.cfg.cgroupsPath(id)
			left, _ := filepath.Glob("/sys/fs/cgroup/*" + cg)
			if _, err := os.Stat("/sys/fs/cgroup" + cg); err == nil {
				left = append(left, "/sys/fs/cgroup"+cg)
			}
			if len(left) > 0 {
				t.Errorf("cgroups remain: %v", left)
				rt.removeCgroups(id)
			}
			if _, err := os.Stat(rt.cfg.bundleDir(id)); err == nil {
				t.Errorf("bundle remains: %s", rt.cfg.bundleDir(id))
			}
			if _, err := os.Stat(filepath.Join(rt.cfg.runtimeRoot(iso), id)); err == nil {
				t.Errorf("runtime state remains: %s", filepath.Join(rt.cfg.runtimeRoot(iso), id))
			}
		})
	}
}

package container

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A root over idmapped layers shows the layers' files with host ids shifted into the
// containers' range, keeps the layer on disk untouched, and the writable layer's view for
// snapshots shows what was written there with the ids it has inside.
func TestIDMappedRoot(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (mounts)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	layer, rootfs, rw, view := filepath.Join(dir, "layer"), filepath.Join(dir, "rootfs"), filepath.Join(dir, "rw"), filepath.Join(dir, "view")
	for _, d := range []string{layer, rootfs, rw} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(layer, "etc-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(layer, "etc-file"), 0, 42); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", rw, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unmount(rw)
	upper, work := filepath.Join(rw, "upper"), filepath.Join(rw, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shift, unshift := &userNS{m: shiftMap}, &userNS{m: unshiftMap}
	ns, err := shift.get(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := mountIDMappedOverlay(rootfs, upper, work, []string{layer}, ns); err != nil {
		t.Fatal(err)
	}
	defer unmount(rootfs)
	owner := func(p string) [2]uint32 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return [2]uint32{st.Uid, st.Gid}
	}
	if got := owner(filepath.Join(rootfs, "etc-file")); got != [2]uint32{100000, 100042} {
		t.Errorf("a layer's root:42 file is %v through the root, want the host range's 100000:100042", got)
	}
	if got := owner(rootfs); got != [2]uint32{100000, 100000} {
		t.Errorf("the root directory is %v, want the container's root 100000:100000", got)
	}
	if got := owner(filepath.Join(layer, "etc-file")); got != [2]uint32{0, 42} {
		t.Errorf("the layer on disk changed owner to %v", got)
	}
	// What the container's user 1000 writes (host 101000) is 1000 in the snapshot view.
	written := filepath.Join(rootfs, "written")
	if err := os.WriteFile(written, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(written, 101000, 101001); err != nil {
		t.Fatal(err)
	}
	uns, err := unshift.get(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := mountView(rw, view, uns); err != nil {
		t.Fatal(err)
	}
	defer unmount(view)
	if got := owner(filepath.Join(view, "upper", "written")); got != [2]uint32{1000, 1001} {
		t.Errorf("the snapshot view shows %v, want the ids inside 1000:1001", got)
	}
	if got := owner(filepath.Join(upper, "written")); got != [2]uint32{101000, 101001} {
		t.Errorf("the writable layer holds %v, want host ids 101000:101001", got)
	}
}

package container

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/reaper"
)

// runc containers run in a user namespace: root inside is an unprivileged id range on the host.
// Every runc container gets the same range. Containers are already apart in their own pid,
// mount, IPC, UTS, cgroup and network namespaces, so a shared range gives one no reach into
// another; what it buys is speed and simplicity: one user namespace, made once per worker,
// serves all idmapped mounts, and nothing needs allocating, persisting or reclaiming across
// restarts. The range is above the ids that distributions hand out to people (1000–60000 by
// default) and to systemd's dynamic users, as /etc/subuid conventions do.
const (
	hostIDBase = 100000
	idMapSize  = 65536 // ids 0–65535 inside: everything a Debian image uses, nobody included
)

// idMappings is the uid and gid map of runc containers.
func idMappings() []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: hostIDBase, Size: idMapSize}}
}

// shiftMap maps the ids on disk to the containers' host range (0 → hostIDBase), for the
// image layers under a container's root; unshiftMap maps them back (hostIDBase → 0), to read
// what a container wrote with the ids it has inside.
var (
	shiftMap   = syscall.SysProcIDMap{ContainerID: 0, HostID: hostIDBase, Size: idMapSize}
	unshiftMap = syscall.SysProcIDMap{ContainerID: hostIDBase, HostID: 0, Size: idMapSize}
)

// userNS holds a user namespace with one mapping, for idmapped mounts. Any namespace with
// the same mapping serves, so one per worker is made, on first use, and kept.
type userNS struct {
	m  syscall.SysProcIDMap
	mu sync.Mutex
	f  *os.File
}

// get makes the namespace on first use and returns it; exe is a binary to start in it. A
// failure is not kept: the next container tries again.
func (u *userNS) get(exe string) (*os.File, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.f == nil {
		f, err := newUserNS(exe, u.m)
		if err != nil {
			return nil, err
		}
		u.f = f
	}
	return u.f, nil
}

// newUserNS starts exe in a new user namespace with mapping m, stopped by ptrace at its exec
// so that it runs none of its code, opens the namespace and kills it: the open file keeps the
// namespace alive.
func newUserNS(exe string, m syscall.SysProcIDMap) (*os.File, error) {
	ms := []syscall.SysProcIDMap{m}
	cmd := exec.Command(exe)
	cmd.Args = []string{"gust-userns"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER, UidMappings: ms, GidMappings: ms,
		Ptrace: true, Pdeathsig: syscall.SIGKILL,
	}
	if err := reaper.Start(cmd); err != nil {
		return nil, fmt.Errorf("user namespace for idmapped mounts: %w", err)
	}
	defer func() {
		// A traced, stopped process dies of SIGKILL at once; its exit status says nothing.
		_ = cmd.Process.Kill()
		_ = reaper.Wait(cmd)
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("user namespace for idmapped mounts: %w", err)
	}
	return f, nil
}

// idmappedClone returns a detached copy of the mount at dir (just dir's tree, like a bind
// mount) whose ids are shifted by userns's mapping: a file owned by uid 0 on disk is owned by
// hostIDBase through it, and a file created through it by hostIDBase is stored as uid 0.
func idmappedClone(dir string, userns *os.File) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("runtime: clone mount %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		closePipeEnds(f)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			err = fmt.Errorf("%w: %w", errNoIDMap, err)
		}
		return nil, fmt.Errorf("runtime: idmap mount %s: %w", dir, err)
	}
	return f, nil
}

// mountIDMappedOverlay mounts at rootfs an overlay of lower (top first) under upper and
// work, the image layers seen through idmapped mounts: their files keep their owners inside
// the container's user namespace (root-owned /usr is root's, not nobody's) while staying
// shared and untouched on disk. The writable layer is not idmapped (overlayfs creates its
// work files as the mounter, host root, whom the mapping cannot express), so what the
// container writes is stored with its host ids; UnshiftedUpper reads it back with the ids it
// has inside.
func mountIDMappedOverlay(rootfs, upper, work string, lower []string, userns *os.File) error {
	var fds []*os.File
	defer func() { closePipeEnds(fds...) }()
	paths := make([]string, len(lower))
	for i, l := range lower {
		f, err := idmappedClone(l, userns)
		if err != nil {
			return err
		}
		fds = append(fds, f)
		paths[i] = fdPath(f)
	}
	// The merged root takes the upper directory's owner: the container's root.
	if err := os.Lchown(upper, hostIDBase, hostIDBase); err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	// The layers are detached mounts named by their descriptors: overlayfs resolves and holds
	// them at mount time, so they need no place in the tree and go with the overlay.
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(paths, ":"), upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("runtime: mount overlay root over idmapped layers: %w", err)
	}
	return nil
}

func fdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// errNoIDMap is wrapped by errors from a kernel or filesystem that cannot idmap mounts.
var errNoIDMap = errors.New("this kernel cannot idmap mounts of the image layers' filesystem (runc containers need Linux 5.19 or later, and a layer directory on ext4, xfs, btrfs or tmpfs)")

// upperView is where, in a bundle, UpperDir mounts its view of the writable layer.
const upperView = "rw-view"

// mountView mounts at dst an idmapped copy of the mount at src.
func mountView(src, dst string, userns *os.File) error {
	f, err := idmappedClone(src, userns)
	if err != nil {
		return err
	}
	defer closePipeEnds(f)
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.MoveMount(int(f.Fd()), "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach %s: %w", dst, err)
	}
	return nil
}

// userNamespaced says whether a container runs in a user namespace: runc containers do,
// except image builds. The layer a build produces must keep its files' ids and file
// capabilities (dpkg setcap's ping, for one) exactly as written; inside a user namespace
// those would be written as the host range's (v3 capabilities rooted at hostIDBase). gVisor
// containers run on gVisor's own kernel, whose root is not the host's.
func userNamespaced(opts CreateOptions) bool {
	return opts.Isolation != IsolationGVisor && !opts.ExactIDs
}

// openToSearch makes dir searchable by others (mode 0711) and checks that every directory
// above it is: a container whose root is an unprivileged host id must be able to walk down to
// its root filesystem. It changes only dir, which is gust's own; a parent that is closed is
// the machine owner's choice, so it says which one to open.
func openToSearch(dir string) error {
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("runc containers run as an unprivileged host user, which cannot reach their root filesystems below %s (mode %v): make it searchable with chmod o+x %s, or choose another data directory", d, fi.Mode().Perm(), d)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// makeRootDir makes the mount point of a container's root and returns it: the bundle's rootfs
// directory, or for a container in a user namespace a directory in RootsDir, which its root
// user can reach, with the bundle's rootfs a symbolic link to it so that releaseRootDir
// finds it.
func (r *Runtime) makeRootDir(bundle string, opts CreateOptions) (string, error) {
	link := filepath.Join(bundle, "rootfs")
	if !userNamespaced(opts) {
		if err := os.Mkdir(link, 0o755); err != nil {
			return "", fmt.Errorf("runtime: make bundle: %w", err)
		}
		return link, nil
	}
	dir := filepath.Join(r.cfg.RootsDir, opts.ID)
	if err := os.MkdirAll(r.cfg.RootsDir, 0o711); err != nil { // made by New, but /run may be cleaned
		return "", fmt.Errorf("runtime: make roots directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("runtime: make root mount point: %w", err)
	}
	if err := os.Symlink(dir, link); err != nil {
		return "", errors.Join(fmt.Errorf("runtime: make bundle: %w", err), os.Remove(dir))
	}
	return dir, nil
}

// releaseRootDir unmounts a bundle's root and, if it was mounted in RootsDir, removes its
// mount point there.
func releaseRootDir(bundle string) error {
	link := filepath.Join(bundle, "rootfs")
	dir, err := os.Readlink(link)
	if err != nil { // a directory, or nothing
		return unmount(link)
	}
	if err := unmount(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// RootOnHost is the host uid and gid of root inside runc containers: files a container must
// own (a volume's, mounted in) belong to it on the host.
const RootOnHost = hostIDBase

// IDMapSize is how many ids runc containers have (0 to IDMapSize-1 inside, RootOnHost and up
// on the host).
const IDMapSize = idMapSize

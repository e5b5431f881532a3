package volume

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/ids"
)

// Materialize makes dir hold version m: directories, symlinks, and files as hard links to
// their blobs (copies where a link cannot serve: another mode or owner than the blob's,
// another file system, too many links). Each path is owned by its entry's uid and gid, as ids
// maps them to the host (dir itself by the containers' root). It builds beside dir and
// renames, so a half-made version is never seen; an existing dir is kept as it is (versions
// never change).
func (b *Blobs) Materialize(m *Manifest, dir string, ids IDs) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	tmp := dir + ".tmp-" + tmpSuffix()
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp) // best effort: a failed version is rebuilt next time
		}
	}()
	if err := os.Lchown(tmp, ids.Host(0), ids.Host(0)); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	var files []Entry
	for _, e := range m.Sorted() {
		// Everything is made below a directory made here: never through a symlink.
		if parent := path.Dir(e.Path); parent != "." {
			if d, ok := m.Entries[parent]; !ok || d.Type != Dir {
				return fmt.Errorf("volume: corrupt version: %s is not below a directory", e.Path)
			}
		}
		p := filepath.Join(tmp, filepath.FromSlash(e.Path))
		switch e.Type {
		case Dir:
			if err := os.Mkdir(p, fs.FileMode(e.Mode&0o777)|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("volume: %w", err)
			}
		case Symlink:
			if err := os.Symlink(e.Target, p); err != nil {
				return fmt.Errorf("volume: %w", err)
			}
		case File:
			files = append(files, e)
			continue // once the directories are made
		}
		if err := os.Lchown(p, ids.Host(e.UID), ids.Host(e.GID)); err != nil {
			return fmt.Errorf("volume: %w", err)
		}
	}
	if err := b.placeFiles(files, tmp, ids); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return nil // another container made it first
		}
		return fmt.Errorf("volume: %w", err)
	}
	ok = true
	return nil
}

// tmpSuffix names a version's directory while it is made.
func tmpSuffix() string { return ids.Random(8) }

// placeFiles makes files under tmp (their directories exist).
func (b *Blobs) placeFiles(files []Entry, tmp string, ids IDs) error {
	for _, e := range files {
		p := filepath.Join(tmp, filepath.FromSlash(e.Path))
		uid, gid := ids.Host(e.UID), ids.Host(e.GID)
		owned, err := b.placeFile(e, p, uid, gid, ids.Host(0))
		if err == nil && !owned {
			err = os.Lchown(p, uid, gid)
		}
		if err != nil {
			return fmt.Errorf("volume: %w", err)
		}
	}
	return nil
}

// placeFile makes file e at p, a link to its blob where the blob's mode is e's (a blob linked
// from a container's layer has the mode the file had there) and its owner too, else a copy.
// A blob that no version owns yet (the host's root owns it: an upload, a copy) may be linked
// for a file of the containers' root (root), which the caller's chown then makes it: every
// link to a blob has the blob's one owner. owned reports that p belongs to uid:gid already.
func (b *Blobs) placeFile(e Entry, p string, uid, gid, root int) (owned bool, _ error) {
	src := b.Path(e.Blob)
	special := fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if fi, err := os.Stat(src); err == nil && fi.Mode()&special == 0 && e.Mode&0o7000 == 0 && uint32(fi.Mode().Perm()) == e.Mode&0o777 {
		st, ok := fi.Sys().(*syscall.Stat_t)
		owned = ok && int(st.Uid) == uid && int(st.Gid) == gid
		unowned := ok && st.Uid == 0 && st.Gid == 0 && uid == root && gid == root
		if owned || unowned {
			if err := os.Link(src, p); err == nil {
				return owned, nil
			}
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("volume: file %s: %w", e.Path, err)
	}
	defer in.Close()
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(e.Mode&0o777))
	if err != nil {
		return false, fmt.Errorf("volume: %w", err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(p, fs.FileMode(e.Mode&0o7777))
	}
	if err != nil {
		return false, fmt.Errorf("volume: file %s: %w", e.Path, err)
	}
	return false, nil
}

// State is what a scan remembers of a path in an upper layer, to tell what changed since.
type State struct {
	Kind   byte // 'f' file, 'd' dir, 'l' symlink, 'w' whiteout
	Mode   uint32
	Size   int64
	Mtime  int64 // ns
	Ctime  int64 // ns
	Ino    uint64
	UID    uint32 // on the host
	GID    uint32
	Opaque bool
	Target string
}

// Found is one change a scan found. A file put needs the content of Source, a path relative
// to Root (the upper layer scanned), to be opened with OpenBeneath: it becomes the entry's blob.
type Found struct {
	Change Change
	Root   string
	Source string
}

// The upper layer is a container's to change while it is scanned and read: every step below
// is taken relative to a directory already opened and checked, never through a symlink, so
// that a directory swapped for a link cannot lead the worker (root on the host) elsewhere.

// OpenBeneath opens the regular file rel below root for reading, refusing any symlink on the
// way and anything but a regular file (a fifo does not block it).
func OpenBeneath(root, rel string) (*os.File, error) {
	dir, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	defer dir.Close()
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, fmt.Errorf("volume: open %s: %w", rel, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(root, rel))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("volume: %s is no longer a regular file: %w", rel, fs.ErrNotExist)
	}
	return f, nil
}

// Scan finds what changed in an overlay's upper layer since the scan whose states prev holds:
// new and changed files, directories and symlinks become puts; whiteouts, directories made
// opaque (emptied and made again) and paths that left the layer become deletes. prefix is
// the volume path the layer's root stands for (a mount's sub_path). It returns the changes in
// the order to apply them and the states for the next scan. Owners are read through ids.
func Scan(upper, prefix string, prev map[string]State, ids IDs) ([]Found, map[string]State, error) {
	next := map[string]State{}
	var dels, puts []Found
	root, err := os.Open(upper)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, prev, nil
		}
		return nil, prev, fmt.Errorf("volume: scan %s: %w", upper, err)
	}
	defer root.Close()
	var walk func(dir *os.File, rel string) error
	walk = func(dir *os.File, rel string) error {
		names, err := dir.Readdirnames(-1)
		if err != nil {
			return fmt.Errorf("volume: scan %s: %w", rel, err)
		}
		sort.Strings(names)
		dfd := int(dir.Fd())
		for _, name := range names {
			r := path.Join(rel, name)
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // gone since the listing
			}
			s := State{Mode: st.Mode & 0o7777, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino, UID: st.Uid, GID: st.Gid}
			e := Entry{Path: path.Join(prefix, r), Mode: s.Mode, Size: st.Size, Mtime: st.Mtim.Sec, UID: ids.Inside(st.Uid), GID: ids.Inside(st.Gid)}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFCHR:
				if st.Rdev != 0 {
					continue // a device node is no file of a volume
				}
				s = State{Kind: 'w'}
				next[r] = s
				if prev[r] != s {
					dels = append(dels, Found{Change: Change{Op: OpDelete, Entry: Entry{Path: e.Path}}})
				}
			case unix.S_IFDIR:
				fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					continue // replaced since the listing: the next scan sees what it became
				}
				sub := os.NewFile(uintptr(fd), name)
				s.Kind = 'd'
				s.Size, s.Mtime, s.Ctime, s.Ino = 0, 0, 0, 0 // a chown changes UID and GID
				s.Opaque = opaque(fd)
				next[r] = s
				if old, seen := prev[r]; !seen || old != s {
					if s.Opaque && !old.Opaque {
						puts = append(puts, Found{Change: Change{Op: OpDelete, Entry: Entry{Path: e.Path}}})
					}
					e.Type, e.Size = Dir, 0
					puts = append(puts, Found{Change: Change{Op: OpPut, Entry: e}})
				}
				err = walk(sub, r)
				sub.Close()
				if err != nil {
					return err
				}
			case unix.S_IFLNK:
				buf := make([]byte, 4096)
				n, err := unix.Readlinkat(dfd, name, buf)
				if err != nil {
					continue
				}
				s.Kind, s.Target = 'l', string(buf[:n])
				next[r] = s
				if prev[r] != s {
					e.Type, e.Target, e.Size = Symlink, s.Target, 0
					puts = append(puts, Found{Change: Change{Op: OpPut, Entry: e}})
				}
			case unix.S_IFREG:
				s.Kind = 'f'
				next[r] = s
				if prev[r] != s {
					e.Type = File
					puts = append(puts, Found{Change: Change{Op: OpPut, Entry: e}, Root: upper, Source: r})
				}
			}
			// Sockets and fifos stay in the container.
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return nil, prev, err
	}
	var gone []string
	for rel := range prev {
		if _, ok := next[rel]; !ok {
			gone = append(gone, rel)
		}
	}
	sort.Strings(gone)
	var out []Found
	for _, rel := range gone {
		if prev[rel].Kind != 'w' { // a whiteout that left: what replaced it is a put
			out = append(out, Found{Change: Change{Op: OpDelete, Entry: Entry{Path: path.Join(prefix, rel)}}})
		}
	}
	out = append(out, dels...)
	return append(out, puts...), next, nil
}

// opaque reports whether overlayfs marked the directory open at fd opaque (made again after
// a delete).
func opaque(fd int) bool {
	buf := make([]byte, 2)
	n, err := unix.Fgetxattr(fd, "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/errdefs"
)

// Every tar gust unpacks comes from a user (add_local files, function code, OCI archives and
// registry layers) and is unpacked as root on the worker. So the extractor works through an
// os.Root opened on the target, resolving every name beneath it, and never resolves a name
// through a symlink at all: links in an archive are stored as links, pointing anywhere, and an
// entry that would be written through one is refused. A directory or file entry whose name is
// a link replaces the link. Names that climb with ".." or start with "/" are cleaned into the
// target. Device nodes and fifos are refused, setuid and setgid bits dropped (setgid stays on
// directories, where it only picks the group of new files), and an archive may expand to at
// most archiveLimits.

// tarKind says what a tar is, and so what its entries may be.
type tarKind int

const (
	// localFiles are add_local files and function code: ownership is not kept, directories
	// stay usable by their owner.
	localFiles tarKind = iota
	// imageLayer is an OCI image layer: ownership is kept, and OCI whiteouts become
	// overlayfs ones (a 0/0 character device for a deleted file, the trusted.overlay.opaque
	// xattr for a directory replaced whole).
	imageLayer
	// layoutArchive is an uploaded OCI image layout: only its directories and regular files
	// are read, so links in it are not made.
	layoutArchive
)

// extractLimits bound what one archive may expand to: a gzip bomb or a stream of empty
// entries is refused, not unpacked onto the worker's disk.
type extractLimits struct {
	Bytes   int64 // of the tar stream, and of the files it makes
	Entries int
}

// archiveLimits are the limits of every extraction; tests lower them.
var archiveLimits = extractLimits{Bytes: DefaultArchiveLimit, Entries: 1_000_000}

// DefaultArchiveLimit is the most one archive may expand to unless SetArchiveLimit says
// otherwise.
const DefaultArchiveLimit = 8 << 30

// SetArchiveLimit sets the most one archive (add_local files, function code, an OCI archive
// or layer) may expand to, in bytes (the daemons' --archive-limit). Call it once, at start,
// before any extraction.
func SetArchiveLimit(bytes int64) {
	if bytes > 0 {
		archiveLimits.Bytes = bytes
	}
}

// extractor unpacks one tar.
type extractor struct {
	root    *os.Root
	base    string // where entries go, relative to root
	kind    tarKind
	limits  extractLimits
	written int64
}

// extractTar unpacks the tar r under dir/remote. It reads r to its end, so that a hash taken
// over r covers the whole stream.
func extractTar(r io.Reader, dir, remote string, kind tarKind) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer func() { _ = root.Close() }() // a directory opened to resolve names: nothing to flush
	x := &extractor{root: root, base: path.Clean("/" + remote)[1:], kind: kind, limits: archiveLimits}
	if x.base == "" {
		x.base = "."
	}
	if err := root.MkdirAll(x.base, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", remote, err)
	}
	in := &cappedReader{r: r, limit: x.limits.Bytes}
	tr := tar.NewReader(in)
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return tarError(err)
		}
		if n >= x.limits.Entries {
			return errdefs.TooLarge("the archive has more than %d entries, the most gust unpacks from one archive", x.limits.Entries)
		}
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
	// The end-of-archive blocks and any padding after them.
	if _, err := io.Copy(io.Discard, in); err != nil {
		return tarError(err)
	}
	return nil
}

// tarError describes an error reading a tar, keeping a too-large one as it is.
func tarError(err error) error {
	if errors.Is(err, errdefs.ErrTooLarge) {
		return err
	}
	return errdefs.Invalid("not a valid tar: %v", err)
}

// cappedReader fails once more than limit bytes have been read through it.
type cappedReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return n, tooBig(c.limit)
	}
	return n, err
}

func tooBig(limit int64) error {
	return errdefs.TooLarge("the archive expands to more than %s, the most gust unpacks from one archive; make the image or the files smaller", sizeString(limit))
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// rel maps a name in the archive to its path relative to the root: cleaned as if it were
// absolute, so that ".." and a leading "/" stay beneath base.
func (x *extractor) rel(name string) string {
	return path.Join(x.base, path.Clean("/" + name)[1:])
}

// entry makes the file of one tar entry, its body read from tr.
func (x *extractor) entry(tr io.Reader, hdr *tar.Header) error {
	name := x.rel(hdr.Name)
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return errdefs.Invalid("the archive holds %q, a device node or fifo: gust refuses them in images and uploaded files (the container runtime makes /dev)", hdr.Name)
	case tar.TypeSymlink, tar.TypeLink:
		if x.kind == layoutArchive {
			return nil // an image layout is read by the names of its blobs, never through links
		}
	case tar.TypeDir, tar.TypeReg, tar.TypeGNUSparse:
	default:
		return nil // headers that make no file (GNU volume labels and the like)
	}
	if name == x.base && hdr.Typeflag != tar.TypeDir {
		return errdefs.Invalid("the archive's entry %q names the directory it unpacks into", hdr.Name)
	}
	if err := x.parents(hdr.Name, name); err != nil {
		return err
	}
	if x.kind == imageLayer {
		if done, err := x.whiteout(hdr.Name, name); done || err != nil {
			return err
		}
	}
	var err error
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.dir(name)
	case tar.TypeSymlink:
		err = x.symlink(name, hdr.Linkname)
	case tar.TypeLink:
		err = x.hardLink(hdr, name)
	default:
		err = x.file(tr, name, hdr.Size)
	}
	if err == nil {
		err = x.finish(name, hdr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return nil
}

// parents makes the directories above name (an entry of the archive called orig), refusing a
// path through a symlink: an earlier entry may have planted one to lead the extraction out.
func (x *extractor) parents(orig, name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := x.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", orig, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return errdefs.Invalid("the archive's entry %q goes through the symlink %s: gust never writes through a link; put the entry at the link's target instead", orig, strings.TrimPrefix(p, x.base+"/"))
		}
		if !fi.IsDir() {
			return errdefs.Invalid("the archive's entry %q is beneath %s, which is not a directory", orig, strings.TrimPrefix(p, x.base+"/"))
		}
	}
	if err := x.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", orig, err)
	}
	return nil
}

// dir makes the directory name, replacing a file or link that an earlier entry put there (a
// link is removed, never followed).
func (x *extractor) dir(name string) error {
	fi, err := x.root.Lstat(name)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		if err := x.root.Remove(name); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return x.root.Mkdir(name, 0o700)
}

// file writes a regular file's body from r to name, replacing what was there.
func (x *extractor) file(r io.Reader, name string, size int64) error {
	x.written += size
	if x.written > x.limits.Bytes {
		return tooBig(x.limits.Bytes)
	}
	if err := x.remove(name); err != nil {
		return err
	}
	// O_EXCL: made new here, never opened through a link.
	f, err := x.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// symlink makes name a link to target, which is stored as it is and never followed here.
func (x *extractor) symlink(name, target string) error {
	if err := x.root.RemoveAll(name); err != nil {
		return err
	}
	return x.root.Symlink(target, name)
}

// hardLink makes name a hard link to an earlier entry of the archive. Its target is resolved
// like an entry's name, within the root and through no symlink, so it cannot reach a file
// outside.
func (x *extractor) hardLink(hdr *tar.Header, name string) error {
	src := x.rel(hdr.Linkname)
	if err := x.parents(hdr.Linkname, src); err != nil {
		return err
	}
	fi, err := x.root.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return errdefs.Invalid("the archive's hard link %q points at %q, which is not an earlier entry of the archive", hdr.Name, hdr.Linkname)
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errdefs.Invalid("the archive's hard link %q points at the directory %q", hdr.Name, hdr.Linkname)
	}
	if src == name {
		return nil
	}
	if err := x.remove(name); err != nil {
		return err
	}
	return x.root.Link(src, name)
}

// finish gives an entry its owner (in an image layer) and mode.
func (x *extractor) finish(name string, hdr *tar.Header) error {
	if x.kind == imageLayer {
		if err := x.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeGNUSparse {
		return nil
	}
	mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSticky | fs.ModeSetgid)
	if hdr.Typeflag != tar.TypeDir {
		mode &^= fs.ModeSetgid | fs.ModeSticky
	} else if x.kind != imageLayer {
		mode |= 0o700
	}
	// Root.Chmod would follow a link; name was just made by this extractor, and is checked.
	fi, err := x.root.Lstat(name)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%s became a symlink while it was extracted", name)
	}
	return x.root.Chmod(name, mode)
}

// remove removes the file at name, if there is one, so that an entry can replace it.
func (x *extractor) remove(name string) error {
	if err := x.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// whiteout turns an OCI whiteout entry into its overlayfs form; done reports it was one. Its
// directory has been made by parents, and holds no symlink.
func (x *extractor) whiteout(orig, name string) (done bool, err error) {
	dir, file := path.Split(name)
	if dir == "" {
		dir = "."
	}
	switch {
	case file == ".wh..wh..opq":
		return true, x.inDir(dir, func(fd int) error {
			return unix.Fsetxattr(fd, "trusted.overlay.opaque", []byte("y"), 0)
		})
	case strings.HasPrefix(file, ".wh."):
		gone := strings.TrimPrefix(file, ".wh.")
		if gone == "" || gone == "." || gone == ".." {
			return true, errdefs.Invalid("the layer's whiteout %q names no file", orig)
		}
		if err := x.root.RemoveAll(path.Join(dir, gone)); err != nil {
			return true, fmt.Errorf("%s: %w", orig, err)
		}
		return true, x.inDir(dir, func(fd int) error { return unix.Mknodat(fd, gone, unix.S_IFCHR, 0) })
	}
	return false, nil
}

// inDir calls fn with a descriptor of the directory dir, opened beneath the root.
func (x *extractor) inDir(dir string, fn func(fd int) error) error {
	f, err := x.root.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // opened to name the directory: nothing to flush
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	if fnErr != nil {
		return fmt.Errorf("%s: %w", dir, fnErr)
	}
	return nil
}

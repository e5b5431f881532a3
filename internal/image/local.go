package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/errdefs"
)

// Local files (Image.add_local_file / add_local_dir) reach the server as a tar blob, stored by
// its SHA-256, and become a layer by extraction: no build container is needed.

var blobRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// MaxBlobBytes bounds one upload of local files.
const MaxBlobBytes = 2 << 30

func (b *Builder) blobPath(sum string) string { return filepath.Join(b.Dir, "blobs", sum+".tar") }

// BlobPath is where an uploaded blob is kept; Prune keeps the blobs named in its inUse set.
func (b *Builder) BlobPath(sum string) string { return b.blobPath(sum) }

// HasBlob reports whether a blob was uploaded.
func (b *Builder) HasBlob(sum string) bool {
	if !blobRE.MatchString(sum) {
		return false
	}
	_, err := os.Stat(b.blobPath(sum))
	return err == nil
}

// PutBlob stores r (a tar stream) and returns its SHA-256.
func (b *Builder) PutBlob(r io.Reader) (string, error) {
	dir := filepath.Join(b.Dir, "blobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("image: storing upload: %w", err)
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return "", fmt.Errorf("image: storing upload: %w", err)
	}
	// Renamed away on success; otherwise best effort, and a prune removes a leftover.
	defer func() { _ = os.Remove(f.Name()) }()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, MaxBlobBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("image: storing upload: %w", err)
	}
	if n > MaxBlobBytes {
		return "", errdefs.TooLarge("local files of more than %d GiB in one image step; add them in parts", MaxBlobBytes>>30)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(f.Name(), b.blobPath(sum)); err != nil {
		return "", fmt.Errorf("image: storing upload: %w", err)
	}
	return sum, nil
}

// ExtractLayer makes the layer named hash from a blob, placing its entries under remote.
// Entries may not climb out of the layer, and nothing is written through a symlink.
func (b *Builder) ExtractLayer(sum, remote, hash string) (string, int64, error) {
	dir := b.LayerPath(hash)
	if _, err := os.Stat(dir); err == nil {
		return dir, DirSize(dir), nil
	}
	f, err := os.Open(b.blobPath(sum))
	if err != nil {
		return "", 0, errdefs.NotFound("uploaded files %s are gone; upload them again", sum)
	}
	defer func() { _ = f.Close() }() // read only
	// A temporary directory of its own: several containers of one function may unpack the
	// same code at once, and the first rename wins.
	tmp, err := os.MkdirTemp(b.Dir, filepath.Base(dir)+".tmp-")
	if err != nil {
		return "", 0, fmt.Errorf("image: extracting files: %w", err)
	}
	// Renamed away on success; otherwise best effort, and a prune removes a leftover.
	defer func() { _ = os.RemoveAll(tmp) }()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", 0, fmt.Errorf("image: extracting files: %w", err)
	}
	if err := extractTar(f, tmp, remote, false); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr != nil {
			return "", 0, err
		}
	}
	return dir, DirSize(dir), nil
}

// extractTar unpacks a tar under root/remote. With oci set it is an image layer: ownership is
// kept, hard links are made, and OCI whiteouts become overlayfs ones (a 0/0 character device
// for a deleted file, the trusted.overlay.opaque xattr for a directory replaced whole).
func extractTar(r io.Reader, root, remote string, oci bool) error {
	base := filepath.Join(root, filepath.FromSlash(path.Clean("/"+remote)))
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return errdefs.Invalid("not a valid tar: %v", err)
		}
		if err := extractEntry(tr, hdr, root, base, oci); err != nil {
			return err
		}
	}
}

// extractEntry makes the file of one tar entry under base (within root), its body read from tr.
func extractEntry(tr io.Reader, hdr *tar.Header, root, base string, oci bool) error {
	name := path.Clean("/" + hdr.Name) // rooted, so ".." cannot climb above remote
	target := filepath.Join(base, filepath.FromSlash(name))
	if err := noSymlinkBetween(root, filepath.Dir(target)); err != nil {
		return err
	}
	if oci {
		if done, err := whiteout(target); done || err != nil {
			return err
		}
	}
	mode := os.FileMode(hdr.Mode) & 0o7777
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(target, mode|0o700*boolBits(!oci)); err != nil {
			return err
		}
	case tar.TypeReg:
		if err := writeEntry(tr, target, mode); err != nil {
			return err
		}
	case tar.TypeSymlink:
		// Links are made, never followed: a link may point anywhere in the image.
		if err := os.RemoveAll(target); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
	case tar.TypeLink:
		if !oci {
			return nil
		}
		src := filepath.Join(base, filepath.FromSlash(path.Clean("/"+hdr.Linkname)))
		if err := noSymlinkBetween(root, filepath.Dir(src)); err != nil {
			return err
		}
		if err := removeIfThere(target); err != nil {
			return err
		}
		if err := os.Link(src, target); err != nil {
			return fmt.Errorf("hard link %s: %w", hdr.Name, err)
		}
	default:
		// Devices and fifos: the runtime makes /dev; local source files have none.
		return nil
	}
	if !oci {
		return nil
	}
	if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir || hdr.Typeflag == tar.TypeReg {
		return os.Chmod(target, mode)
	}
	return nil
}

// writeEntry writes a regular file's body from r to target, replacing what was there.
func writeEntry(r io.Reader, target string, mode os.FileMode) error {
	if err := removeIfThere(target); err != nil {
		return err
	}
	out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Chmod(target, mode) // past the umask
}

// removeIfThere removes the file at p, if there is one, so that an entry can replace it.
func removeIfThere(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func boolBits(b bool) os.FileMode {
	if b {
		return 1
	}
	return 0
}

// whiteout turns an OCI whiteout entry into its overlayfs form; done reports it was one.
func whiteout(target string) (done bool, err error) {
	dir, file := filepath.Split(target)
	switch {
	case file == ".wh..wh..opq":
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return true, err
		}
		return true, unix.Setxattr(filepath.Clean(dir), "trusted.overlay.opaque", []byte("y"), 0)
	case strings.HasPrefix(file, ".wh."):
		gone := filepath.Join(dir, strings.TrimPrefix(file, ".wh."))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return true, err
		}
		if err := os.RemoveAll(gone); err != nil {
			return true, err
		}
		return true, unix.Mknod(gone, unix.S_IFCHR, 0)
	}
	return false, nil
}

// noSymlinkBetween refuses a path whose directories below root include a symlink, which an
// earlier tar entry could have planted to write outside the layer.
func noSymlinkBetween(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return errdefs.Invalid("local file path leaves the image layer")
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." || part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return errdefs.Invalid("local files write through the symlink %s; refusing", strings.TrimPrefix(cur, root))
		}
	}
	return nil
}

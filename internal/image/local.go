package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
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
// Entries may not climb out of the layer, and nothing is written through a symlink (see
// extractTar).
func (b *Builder) ExtractLayer(sum, remote, hash string) (string, int64, error) {
	if !blobRE.MatchString(sum) {
		return "", 0, errdefs.Invalid("%q does not name uploaded files: a blob is named by its SHA-256 in hex", sum)
	}
	if hash == "" || hash == "." || hash == ".." || strings.ContainsRune(hash, '/') {
		return "", 0, errdefs.Invalid("%q cannot name a layer", hash)
	}
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
	// same code at once, and the first to finish places it.
	tmp, err := layerTemp(dir)
	if err != nil {
		return "", 0, fmt.Errorf("image: extracting files: %w", err)
	}
	// Renamed away on success; otherwise best effort, and a prune removes a leftover.
	defer func() { _ = os.RemoveAll(tmp) }()
	if err := extractTar(f, tmp, remote, localFiles); err != nil {
		return "", 0, fmt.Errorf("image: extracting uploaded files %s: %w", sum[:12], err)
	}
	if err := placeLayer(tmp, dir); err != nil {
		return "", 0, err
	}
	return dir, DirSize(dir), nil
}

// layerTemp makes a directory beside dir, unique to one extraction, for a layer to be made in
// before placeLayer puts it at dir.
func layerTemp(dir string) (string, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return "", err
	}
	// MkdirTemp makes it 0700; a layer's top is a container's /.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", errors.Join(err, os.RemoveAll(tmp))
	}
	return tmp, nil
}

// placeLayer renames a finished layer from tmp to dir, never over another: when another
// extraction of the same layer finished first, dir is used as it is and tmp is left for the
// caller to remove.
func placeLayer(tmp, dir string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A filesystem without RENAME_NOREPLACE: a plain rename fails over a directory that
		// is not empty, and one that is empty holds the same (empty) layer.
		err = os.Rename(tmp, dir)
	}
	if err == nil {
		return nil
	}
	if fi, serr := os.Lstat(dir); serr == nil && fi.IsDir() {
		return nil // the caller removes tmp, as after any failure
	}
	return fmt.Errorf("image: placing layer %s: %w", filepath.Base(dir), err)
}

package volume

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"
)

var blobRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Blobs is the content-addressed store of file contents and manifests, a directory beside the
// image layers (LAYER_DIR/volumes/blobs): every machine that sees the layers sees it.
type Blobs struct {
	Dir string
}

// BlobsIn returns the blob store under a layer directory.
func BlobsIn(layerDir string) *Blobs {
	return &Blobs{Dir: filepath.Join(layerDir, "volumes", "blobs")}
}

// Path is where blob sum is kept.
func (b *Blobs) Path(sum string) string { return filepath.Join(b.Dir, sum[:2], sum) }

// Stat returns a blob's size, or an error if it is not stored.
func (b *Blobs) Stat(sum string) (int64, error) {
	if !blobRE.MatchString(sum) {
		return 0, fmt.Errorf("volume: %q is not a SHA-256", sum)
	}
	fi, err := os.Stat(b.Path(sum))
	if err != nil {
		return 0, fmt.Errorf("volume: blob %s: %w", sum, err)
	}
	return fi.Size(), nil
}

// Put stores what r holds (at most limit bytes; more is an error) and returns its SHA-256
// and size, synced. The file is readable by all (mode 0644): workers link it into versions.
func (b *Blobs) Put(r io.Reader, limit int64) (string, int64, error) {
	return b.put(r, limit, true)
}

// Upload is Put without the sync: for a client's upload, which the commit that names it
// syncs (Sync), many files at once.
func (b *Blobs) Upload(r io.Reader, limit int64) (string, int64, error) {
	return b.put(r, limit, false)
}

// Sync makes blobs sums durable (their data and the directories naming them), a few at once.
func (b *Blobs) Sync(sums []string) error {
	seen := map[string]bool{}
	var todo []string
	for _, sum := range sums {
		if blobRE.MatchString(sum) && !seen[sum] {
			seen[sum] = true
			todo = append(todo, sum)
		}
	}
	errs := make(chan error, len(todo))
	sem := make(chan struct{}, syncParallel)
	for _, sum := range todo {
		sem <- struct{}{}
		go func(sum string) {
			defer func() { <-sem }()
			errs <- b.syncExisting(b.Path(sum))
		}(sum)
	}
	var all []error
	for range todo {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// syncParallel is how many blobs Sync syncs at once: they wait for the disk, not the CPU.
const syncParallel = 16

func (b *Blobs) put(r io.Reader, limit int64, sync bool) (string, int64, error) {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return "", 0, fmt.Errorf("volume: blob store: %w", err)
	}
	f, err := os.CreateTemp(b.Dir, "put-*")
	if err != nil {
		return "", 0, fmt.Errorf("volume: blob store: %w", err)
	}
	defer func() { _ = os.Remove(f.Name()) }() // renamed away on success
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil && n <= limit {
		// Durable before it is placed: a commit that names it is acknowledged only after.
		if err = f.Chmod(0o644); err == nil && sync {
			err = syncFile(f)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("volume: storing a blob: %w", err)
	}
	if n > limit {
		return "", 0, fmt.Errorf("volume: a file of more than %d bytes: %w", limit, errTooLarge)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := b.place(f.Name(), sum, sync); err != nil {
		return "", 0, err
	}
	return sum, n, nil
}

var errTooLarge = errors.New("too large")

// IsTooLarge reports whether Put refused a blob over its limit.
func IsTooLarge(err error) bool { return errors.Is(err, errTooLarge) }

// place renames a finished temporary file (mode 0644; synced when sync is set) to blob sum (an
// existing blob is the same bytes), and syncs the directory that names it when sync is set.
func (b *Blobs) place(tmp, sum string, sync bool) error {
	dst := b.Path(sum)
	if touch(dst) {
		if !sync {
			return nil
		}
		return b.syncExisting(dst)
	}
	if err := b.mkdirFor(dst); err != nil {
		return fmt.Errorf("volume: storing blob %s: %w", sum, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("volume: storing blob %s: %w", sum, err)
	}
	if !sync {
		return nil
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("volume: storing blob %s: %w", sum, err)
	}
	return nil
}

// touch reports whether blob file p exists, and makes it new again: a prune running now took
// it for unused, and a commit is about to use it.
func touch(p string) bool {
	now := time.Now()
	return os.Chtimes(p, now, now) == nil
}

// Durability: a blob is synced (its data, then the directory entry that names it) before the
// call that stores it returns, so that a commit acknowledged after it survives a crash of the
// machine. syncFile and syncDir are variables for the tests.
var (
	syncFile = func(f *os.File) error { return f.Sync() }
	syncDir  = func(dir string) error {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := syncFile(d); err != nil {
			return fmt.Errorf("syncing %s: %w", dir, err)
		}
		return nil
	}
)

// syncExisting makes sure a blob that another call stored (and may not have synced yet, if it
// is still running) is durable: cheap when it is already.
func (b *Blobs) syncExisting(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	defer f.Close()
	if err := syncFile(f); err != nil {
		return fmt.Errorf("volume: syncing %s: %w", p, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	return nil
}

// mkdirFor makes the directory of blob path p, syncing the store's directory when it is new.
func (b *Blobs) mkdirFor(p string) error {
	dir := filepath.Dir(p)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// PutFile stores the content of open file f, copied, and returns its SHA-256 and size.
func (b *Blobs) PutFile(f *os.File) (string, int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("volume: %w", err)
	}
	return b.Put(f, 1<<62)
}

// Open opens blob sum for reading.
func (b *Blobs) Open(sum string) (*os.File, error) {
	if !blobRE.MatchString(sum) {
		return nil, fmt.Errorf("volume: %q is not a SHA-256", sum)
	}
	f, err := os.Open(b.Path(sum))
	if err != nil {
		return nil, fmt.Errorf("volume: blob %s: %w", sum, err)
	}
	return f, nil
}

// ReadManifest returns version sum; "" is the empty version.
func (b *Blobs) ReadManifest(sum string) (*Manifest, error) {
	if sum == "" {
		return NewManifest(), nil
	}
	f, err := b.Open(sum)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("volume: manifest %s: %w", sum, err)
	}
	return DecodeManifest(data)
}

// WriteManifest stores m and returns its SHA-256, the version's name.
func (b *Blobs) WriteManifest(m *Manifest) (string, error) {
	data, err := m.Encode()
	if err != nil {
		return "", err
	}
	sum, _, err := b.Put(bytes.NewReader(data), int64(len(data)))
	return sum, err
}

// Missing returns the first blob that m's files name and the store lacks ("" if none).
func (b *Blobs) Missing(m *Manifest) string {
	for _, e := range m.Entries {
		if e.Type != File {
			continue
		}
		if _, err := os.Stat(b.Path(e.Blob)); errors.Is(err, fs.ErrNotExist) {
			return e.Blob
		}
	}
	return ""
}

// Hash returns the SHA-256 and size of the content of open file f.
func (b *Blobs) Hash(f *os.File) (string, int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("volume: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("volume: hashing %s: %w", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Link makes open file f blob sum by a hard link to its inode, where nothing will write it
// any more (a stopped container's layer): no copy, but a sync of what of the file is not on
// the disk yet. A blob already stored is kept.
func (b *Blobs) Link(f *os.File, sum string) error { return b.link(f, sum, true) }

// LinkUnsynced is Link without the syncs, for a caller that links many files at once: it
// calls SyncFS before (the files' data is on the disk before any link names it) and after
// (the links).
func (b *Blobs) LinkUnsynced(f *os.File, sum string) error { return b.link(f, sum, false) }

// SyncFS syncs the whole file system of the blob store (syncfs(2)): one call for what many
// syncs of files and directories would do.
func (b *Blobs) SyncFS() error {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return fmt.Errorf("volume: blob store: %w", err)
	}
	d, err := os.Open(b.Dir)
	if err != nil {
		return fmt.Errorf("volume: blob store: %w", err)
	}
	defer d.Close()
	if err := syncFS(d); err != nil {
		return fmt.Errorf("volume: syncing the blob store's file system: %w", err)
	}
	return nil
}

// syncFS is syncfs(2), a variable for the tests.
var syncFS = func(d *os.File) error { return unix.Syncfs(int(d.Fd())) }

func (b *Blobs) link(f *os.File, sum string, sync bool) error {
	if !blobRE.MatchString(sum) {
		return fmt.Errorf("volume: %q is not a SHA-256", sum)
	}
	dst := b.Path(sum)
	if touch(dst) {
		if !sync {
			return nil
		}
		return b.syncExisting(dst)
	}
	if err := b.mkdirFor(dst); err != nil {
		return fmt.Errorf("volume: storing blob %s: %w", sum, err)
	}
	// The data first (the link names the inode with whatever of it reached the disk).
	if sync {
		if err := syncFile(f); err != nil {
			return fmt.Errorf("volume: syncing blob %s: %w", sum, err)
		}
	}
	if err := unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if !sync {
				return nil
			}
			return b.syncExisting(dst)
		}
		return fmt.Errorf("volume: linking blob %s: %w", sum, err)
	}
	if !sync {
		return nil
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("volume: storing blob %s: %w", sum, err)
	}
	return nil
}

// Prune removes the blobs that no version in keep names (nor is itself one of) and that are
// older than grace: the files and manifests of versions no volume has any more. Blobs made
// for a commit still in progress are younger than grace. It returns how many went and their
// bytes.
func (b *Blobs) Prune(keep []string, grace time.Duration) (int, int64, error) {
	live := map[string]bool{}
	for _, head := range keep {
		if head == "" {
			continue
		}
		live[head] = true
		m, err := b.ReadManifest(head)
		if err != nil {
			return 0, 0, fmt.Errorf("volume: prune: version %s: %w", head, err)
		}
		for _, e := range m.Entries {
			if e.Type == File {
				live[e.Blob] = true
			}
		}
	}
	var n int
	var freed int64
	cutoff := time.Now().Add(-grace)
	err := filepath.WalkDir(b.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || live[d.Name()] {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil // gone since the listing, or recent
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		n++
		freed += fi.Size()
		return nil
	})
	if err != nil {
		return n, freed, fmt.Errorf("volume: prune: %w", err)
	}
	return n, freed, nil
}

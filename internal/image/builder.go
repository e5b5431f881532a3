package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/reaper"
)

// BasePythonVersion is the Python that Debian bookworm, the base of every image, provides.
const BasePythonVersion = "3.11"

// baseDefinition is hashed to name the base layer; change it and the layer is rebuilt.
type baseDefinition struct {
	Distro   string   `json:"distro"`
	Variant  string   `json:"variant"`
	Packages []string `json:"packages"`
	Version  int      `json:"version"`
}

// debianSlim is Image.debian_slim(): like Modal's, it has `python` and `pip` on the PATH.
var debianSlim = baseDefinition{
	Distro: "bookworm", Variant: "minbase", Version: 1,
	Packages: []string{"python3", "python3-pip", "python-is-python3", "ca-certificates", "procps"},
}

// pythonReleases maps each python_version gust offers to the Debian release whose python3 it
// is: gust takes Python from Debian's packages rather than building it, so the versions are
// those Debian ships. The default (bookworm's 3.11) keeps its hash from before others existed.
var pythonReleases = map[string]baseDefinition{
	BasePythonVersion: debianSlim,
	"3.13":            {Distro: "trixie", Variant: "minbase", Version: 1, Packages: debianSlim.Packages},
}

// PythonVersions lists the python_version values gust offers, oldest first.
func PythonVersions() []string {
	out := make([]string, 0, len(pythonReleases))
	for v := range pythonReleases {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// base returns the base definition of a python_version ("" is the default); ok is false for
// one gust does not offer.
func base(pythonVersion string) (baseDefinition, bool) {
	if pythonVersion == "" {
		return debianSlim, true
	}
	d, ok := pythonReleases[pythonVersion]
	return d, ok
}

// Builder makes layers under Dir. Two requests for the same layer at once build it once.
type Builder struct {
	Dir string

	mu       sync.Mutex
	inflight map[string]*build
}

type build struct {
	done chan struct{}
	err  error
	logs *broadcast
}

// NewBuilder returns a Builder keeping layers in dir.
func NewBuilder(dir string) (*Builder, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return &Builder{Dir: dir, inflight: map[string]*build{}}, nil
}

// CheckPythonVersion says whether gust offers a Python version.
func CheckPythonVersion(v string) error {
	if _, ok := base(v); ok {
		return nil
	}
	offered := make([]string, 0, len(pythonReleases))
	for _, pv := range PythonVersions() {
		offered = append(offered, fmt.Sprintf("%s (Debian %s)", pv, pythonReleases[pv].Distro))
	}
	return errdefs.Invalid("python_version %q is not available: gust images take Python from Debian's releases, which offer %s; "+
		"use one of those, or omit python_version for %s", v, strings.Join(offered, ", "), BasePythonVersion)
}

// DebianSlimHash is the content hash that names the default base layer.
func DebianSlimHash() string { return hashOf(debianSlim) }

// BaseHash names the base layer of a python_version checked by CheckPythonVersion.
func BaseHash(pythonVersion string) string {
	d, _ := base(pythonVersion)
	return hashOf(d)
}

func hashOf(v baseDefinition) string {
	b, _ := json.Marshal(v) // strings, a list of them and an int: it cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// LayerPath returns where the layer with a hash lives.
func (b *Builder) LayerPath(hash string) string { return filepath.Join(b.Dir, hash) }

// CheckSnapshotLayer refuses a snapshot layer that a worker reported unless it is a snapshot
// directory directly in the layer directory: a worker must not make "/" (or another image's
// layer, or a host path) a layer that other sandboxes then mount.
func (b *Builder) CheckSnapshotLayer(p string) error {
	name := filepath.Base(p)
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || filepath.Dir(p) != filepath.Clean(b.Dir) || !strings.HasPrefix(name, "snap-") {
		return errdefs.Invalid("the worker reported snapshot layer %q, which is not a snapshot in the layer directory %s", p, b.Dir)
	}
	return nil
}

// EnsureDebianSlim returns the default base layer's directory (see EnsureBase).
func (b *Builder) EnsureDebianSlim(ctx context.Context, logs io.Writer) (string, error) {
	return b.EnsureBase(ctx, "", logs)
}

// EnsureBase returns the directory of the base layer of a python_version (checked by
// CheckPythonVersion), building it with debootstrap of its Debian release if it is not cached.
// Build output goes to logs as it is produced.
func (b *Builder) EnsureBase(ctx context.Context, pythonVersion string, logs io.Writer) (string, error) {
	def, ok := base(pythonVersion)
	if !ok {
		return "", CheckPythonVersion(pythonVersion)
	}
	hash := hashOf(def)
	dir := b.LayerPath(hash)
	if _, err := os.Stat(filepath.Join(dir, "usr")); err == nil {
		return dir, nil
	}
	b.mu.Lock()
	bl, ok := b.inflight[hash]
	if !ok {
		bl = &build{done: make(chan struct{}), logs: &broadcast{}}
		b.inflight[hash] = bl
		go func() {
			bl.err = b.debootstrap(def, dir, bl.logs)
			bl.logs.close()
			close(bl.done)
			b.mu.Lock()
			delete(b.inflight, hash)
			b.mu.Unlock()
		}()
	}
	b.mu.Unlock()
	if logs != nil {
		bl.logs.follow(ctx, logs)
	}
	select {
	case <-bl.done:
		return dir, bl.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// DebootstrapArgs are the arguments that build the base into dir; the benchmark runs the same
// command to compare gust's cold build with the machine's own debootstrap.
func DebootstrapArgs(dir string) []string { return debootstrapArgs(debianSlim, dir) }

func debootstrapArgs(def baseDefinition, dir string) []string {
	args := []string{"--variant=" + def.Variant, "--include=" + strings.Join(def.Packages, ","), def.Distro, dir}
	if m := os.Getenv("GUST_DEBIAN_MIRROR"); m != "" {
		args = append(args, m)
	}
	return args
}

// debootstrap builds the base into a temporary directory and renames it into place, so a failed
// or interrupted build leaves no partial layer.
func (b *Builder) debootstrap(def baseDefinition, dir string, logs io.Writer) error {
	start := time.Now()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errdefs.Unavailable("debootstrap is not installed: run `apt-get install debootstrap` (gust up installs it when it starts)")
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("image: removing an interrupted base build: %w", err)
	}
	logf(logs, "Building base image: debootstrap --variant=%s %s with %s\n", def.Variant, def.Distro, strings.Join(def.Packages, ", "))
	cmd := exec.Command("debootstrap", debootstrapArgs(def, tmp)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logf(logs, "%s\n", sc.Text())
		}
		// A line too long for the scanner must not block debootstrap on a full pipe.
		_, _ = io.Copy(io.Discard, pr) // reading a pipe into Discard cannot fail
	}()
	err := reaper.Run(cmd)
	_ = pw.Close() // closing a PipeWriter always succeeds
	<-copied
	if err != nil {
		_ = os.RemoveAll(tmp) // best effort: the next build removes it first
		return fmt.Errorf("image: debootstrap failed: %v (see the log above)", err)
	}
	if err := finishBase(tmp); err != nil {
		_ = os.RemoveAll(tmp) // best effort: the next build removes it first
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp) // best effort: the next build removes it first
		return fmt.Errorf("image: %w", err)
	}
	logf(logs, "Built base image in %.1f s\n", time.Since(start).Seconds())
	return nil
}

// finishBase trims a fresh debootstrap tree in root and adds what gust needs in it.
func finishBase(root string) error {
	// Package caches are dead weight in every container; apt wants their partial/ directories.
	for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
			return fmt.Errorf("image: trimming the base image: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(root, d, "partial"), 0o755); err != nil {
			return fmt.Errorf("image: trimming the base image: %w", err)
		}
	}
	// The mount point for gust-init, so that containers need not create it in their writable
	// layer.
	if err := os.MkdirAll(filepath.Join(root, ".gust"), 0o755); err != nil {
		return fmt.Errorf("image: base image: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, ".gust", "gust"), nil, 0o755); err != nil {
		return fmt.Errorf("image: base image: %w", err)
	}
	return nil
}

// logf writes a line of build log. Its error is dropped on purpose: the log goes to whoever
// waits for the build, and one of them going away must not fail a build that others share.
func logf(w io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(w, format, args...)
}

// Snapshot copies a container's writable layer into a new layer named id and returns its
// directory. cp -a keeps overlayfs whiteouts (character devices) and opaque-directory xattrs.
func (b *Builder) Snapshot(upper, id string) (string, error) {
	dir := filepath.Join(b.Dir, id)
	tmp := dir + ".tmp"
	// A leftover would make cp copy upper into it instead of as it.
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("image: snapshot: removing a leftover copy: %w", err)
	}
	out, err := reaper.CombinedOutput(exec.Command("cp", "-a", upper, tmp))
	if err != nil {
		_ = os.RemoveAll(tmp) // best effort: a prune removes it, not being in use
		return "", fmt.Errorf("image: snapshot copy: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp) // best effort: a prune removes it, not being in use
		return "", fmt.Errorf("image: %w", err)
	}
	return dir, nil
}

// DirSize adds up the sizes of the regular files under dir; what it cannot read counts nothing.
func DirSize(dir string) int64 {
	var n int64
	// The walk function never returns an error, so neither does WalkDir.
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// broadcast fans one build's log out to every client waiting on it, including late joiners.
type broadcast struct {
	mu     sync.Mutex
	lines  []byte
	closed bool
	wake   chan struct{}
}

func (b *broadcast) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.lines = append(b.lines, p...)
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
	return len(p), nil
}

func (b *broadcast) close() {
	b.mu.Lock()
	b.closed = true
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}

func (b *broadcast) follow(ctx context.Context, w io.Writer) {
	off := 0
	for {
		b.mu.Lock()
		chunk := b.lines[off:]
		off = len(b.lines)
		closed := b.closed
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		if len(chunk) > 0 {
			if _, err := w.Write(chunk); err != nil {
				return // the follower is gone; the build goes on for the others
			}
		}
		if closed {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

// PruneResult says what a prune removed.
type PruneResult struct {
	Layers     int   `json:"layers_removed"`
	Blobs      int   `json:"blobs_removed"`
	FreedBytes int64 `json:"freed_bytes"`
	KeptBytes  int64 `json:"kept_bytes"`
}

// Prune removes layer directories that no image uses, and uploaded blobs (clients upload them
// again when needed). Anything touched in the last grace period is kept: a build in progress
// makes layers before its image is recorded.
func (b *Builder) Prune(inUse map[string]bool, grace time.Duration) (PruneResult, error) {
	var r PruneResult
	entries, err := os.ReadDir(b.Dir)
	if err != nil {
		return r, fmt.Errorf("image: prune: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(b.Dir, e.Name())
		if e.Name() == "blobs" {
			if err := pruneBlobs(p, inUse, grace, &r); err != nil {
				return r, err
			}
			continue
		}
		size := DirSize(p)
		fi, err := e.Info()
		if inUse[p] || err != nil || time.Since(fi.ModTime()) < grace {
			r.KeptBytes += size
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return r, fmt.Errorf("image: prune %s: %w", p, err)
		}
		r.Layers++
		r.FreedBytes += size
	}
	return r, nil
}

// pruneBlobs removes the uploaded blobs in dir that are not in use and older than grace.
func pruneBlobs(dir string, inUse map[string]bool, grace time.Duration, r *PruneResult) error {
	blobs, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("image: prune: %w", err)
	}
	for _, bl := range blobs {
		p := filepath.Join(dir, bl.Name())
		fi, err := bl.Info()
		if err != nil || time.Since(fi.ModTime()) <= grace || inUse[p] {
			continue // gone since the listing, recent, or in use
		}
		if err := os.Remove(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("image: prune %s: %w", p, err)
		}
		r.FreedBytes += fi.Size()
		r.Blobs++
	}
	return nil
}

// DiskUsage adds up the layer directory.
func (b *Builder) DiskUsage() int64 { return DirSize(b.Dir) }

// Scratch returns the empty layer that `FROM scratch` images start from.
func (b *Builder) Scratch() (string, error) {
	dir := b.LayerPath("scratch")
	return dir, os.MkdirAll(dir, 0o755)
}

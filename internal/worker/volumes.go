package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/volume"
	"github.com/gust-run/gust/internal/workerproto"
)

// Volumes in containers. At mount time the worker asks the server for the volume's current
// version and materializes it once per version (LAYER_DIR/volumes/cache/<version>: hard links
// to the blobs). Each mount is an overlay over that version with an upper layer of the
// container's own, mounted on the host at a mount point that is a shared bind of itself
// (STATE_DIR/volumes/<container>/m<i>); the container binds that point with rslave
// propagation, so a new overlay stacked there on reload appears inside at once. Commits scan
// the upper layer (volume.Scan), store what changed in the blob store and send the changes to
// the server. They happen when the container asks (the worker's socket, /.gust/vol/ctl.sock:
// vol.commit() and vol.reload()), every commitEvery in the background, and when the container
// ends (commitMode says how each stores the files). Read-only mounts are read-only overlays of
// the version.

const (
	volCtlMount = "/.gust/vol"
	commitEvery = 5 * time.Second
	// hashEvery is how often files that stopped changing are hashed ahead of a commit, which
	// then has only the newest files left to hash.
	hashEvery = 500 * time.Millisecond
)

// volumeServer is what the worker asks the server about volumes (workerproto.ServerClient).
type volumeServer interface {
	VolumeHead(ctx context.Context, vid, cid string) (string, error)
	CommitVolume(ctx context.Context, vid, cid string, changes any) (string, error)
}

// boxVolumes are one container's volume mounts.
type boxVolumes struct {
	w      *Worker
	id     string
	dir    string
	mu     sync.Mutex // orders commits and reloads
	mounts []*volMount
	ln     net.Listener
	srv    *http.Server
	stop   chan struct{}
	done   chan struct{} // closed when commitLoop ends
	// looping is set once commitLoop runs (mountAll); closed once close has committed for
	// the last time: nothing mounts or commits after it.
	looping, closed bool
	// gvisor: a gVisor container, whose mounts cannot be replaced while it runs: its versions
	// are mounted before it starts, commits copy, and reload is refused.
	gvisor bool
	// freeze stops the container's processes until thaw (container.Container.Freeze), so that
	// a swap of its mounts is invisible to it; nil under gVisor.
	freeze func(timeout time.Duration) (thaw func() error, err error)
	// hashes are the files of upper layers hashed ahead of a commit (prehash), by path.
	hashMu sync.Mutex
	hashes map[string]hashedFile
}

type volMount struct {
	vid, path, sub string
	ro             bool
	point          string         // the host mount point the container binds
	rw             string         // the current upper and work directories' parent; "" when read-only
	lower          string         // the version's directory (or its sub_path) under the layers
	vdir           string         // the version's directory, held in the worker's versionCache
	frozen         []string       // committed upper layers' parents, newest first (commitSwap)
	unsent         []volume.Found // of frozen layers, not yet committed
	lastCommit     time.Time      // of this mount's changes (or its mount)
	gen            int
	version        string
	prev           map[string]volume.State
	mounted        bool
}

// volumeIDs maps the owners of volumes' files: runc containers' user namespace (under gVisor,
// files the host sees outside that range read as root's).
var volumeIDs = volume.IDs{Base: container.RootOnHost, Size: container.IDMapSize}

func (w *Worker) volumesRoot() string { return filepath.Join(w.cfg.StateDir, "volumes") }

func (w *Worker) volumeBlobs() *volume.Blobs { return volume.BlobsIn(w.cfg.LayerDir) }

// attachVolumes mounts a container's volumes on the host and returns the binds that show
// them inside. On failure nothing is left mounted.
func (w *Worker) attachVolumes(ctx context.Context, spec workerproto.ContainerSpec) (_ *boxVolumes, _ []container.Mount, retErr error) {
	if _, ok := w.server.(volumeServer); !ok {
		return nil, nil, errors.New("this worker's server cannot mount volumes")
	}
	bv := &boxVolumes{w: w, id: spec.ID, dir: filepath.Join(w.volumesRoot(), spec.ID), stop: make(chan struct{}), done: make(chan struct{}),
		gvisor: spec.Isolation == sandbox.IsolationGVisor}
	if err := os.MkdirAll(bv.dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("volumes: %w", err)
	}
	defer func() {
		if retErr != nil {
			bv.release()
		}
	}()
	var mounts []container.Mount
	for i, vm := range spec.Volumes {
		m := &volMount{vid: vm.VolumeID, path: vm.Path, sub: vm.SubPath, ro: vm.ReadOnly, point: filepath.Join(bv.dir, fmt.Sprintf("m%d", i))}
		bv.mounts = append(bv.mounts, m)
		if err := os.Mkdir(m.point, 0o755); err != nil {
			return nil, nil, fmt.Errorf("volumes: %w", err)
		}
		if err := unix.Mount(m.point, m.point, "", unix.MS_BIND, ""); err != nil {
			return nil, nil, fmt.Errorf("volumes: bind %s: %w", m.point, err)
		}
		m.mounted = true
		if err := unix.Mount("", m.point, "", unix.MS_SHARED, ""); err != nil {
			return nil, nil, fmt.Errorf("volumes: share %s: %w", m.point, err)
		}
		// The bare point is read-only inside; the container is frozen whenever a commit or a
		// reload swaps the mount stacked on it, so that it never sees the bare point.
		opts := []string{"rbind", "rslave", "nosuid", "nodev", "ro"}
		if bv.gvisor {
			// runsc's gofer serves the mount as it is when the sandbox starts: the version is
			// mounted first (mountAll), and never replaced.
			opts = []string{"rbind", "nosuid", "nodev"}
			if m.ro {
				opts = append(opts, "ro")
			}
		}
		mounts = append(mounts, container.Mount{Source: m.point, Destination: m.path, Options: opts})
	}
	ctl := filepath.Join(bv.dir, "ctl")
	if err := os.Mkdir(ctl, 0o755); err != nil {
		return nil, nil, fmt.Errorf("volumes: %w", err)
	}
	sock := filepath.Join(ctl, "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("volumes: control socket: %w", err)
	}
	bv.ln = ln
	if err := os.Chmod(sock, 0o666); err != nil {
		return nil, nil, fmt.Errorf("volumes: control socket: %w", err)
	}
	bv.srv = &http.Server{ReadHeaderTimeout: apiHeaderTimeout, Handler: bv.routes()}
	go func() { _ = bv.srv.Serve(ln) }() // ends when release closes it
	mounts = append(mounts, container.Mount{Source: ctl, Destination: volCtlMount})
	return bv, mounts, nil
}

// mountAll mounts each volume's current version at its point, once the container exists: the
// container binds the bare point, and the version's mount, stacked on it, reaches the
// container through propagation (as a reload's does later). A version mounted before the
// container binds the point would be bound itself, and a reload could not replace it.
func (bv *boxVolumes) mountAll(ctx context.Context) error {
	srv := bv.w.server.(volumeServer)
	bv.mu.Lock()
	defer bv.mu.Unlock()
	for _, m := range bv.mounts {
		head, err := srv.VolumeHead(ctx, m.vid, bv.id)
		if err != nil {
			return fmt.Errorf("volume %s: %w", m.vid, err)
		}
		if err := bv.mountVersion(m, head); err != nil {
			return err
		}
		m.lastCommit = time.Now()
	}
	bv.looping = true
	go bv.commitLoop()
	return nil
}

// mountVersion materializes version head and mounts it at m's point: an overlay with a fresh
// upper layer, or a read-only overlay. The directories of the layers it replaces go.
func (bv *boxVolumes) mountVersion(m *volMount, head string) error {
	bl := bv.w.volumeBlobs()
	name := head
	if name == "" {
		name = "empty"
	}
	vdir := filepath.Join(filepath.Dir(bl.Dir), "cache", name)
	bv.w.volCache.hold(vdir) // before the check: an eviction now would take it from under the mount
	if err := bv.useVersion(m, vdir); err != nil {
		return err
	}
	if _, err := os.Stat(vdir); err != nil {
		// Not materialized on this worker yet (a cached version never changes).
		man, err := bl.ReadManifest(head)
		if err != nil {
			return fmt.Errorf("volume %s: %w", m.vid, err)
		}
		if err := bl.Materialize(man, vdir, volumeIDs); err != nil {
			return fmt.Errorf("volume %s: %w", m.vid, err)
		}
	}
	empty := filepath.Join(bv.dir, "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	if err := os.Lchown(empty, container.RootOnHost, container.RootOnHost); err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	lower := filepath.Join(vdir, filepath.FromSlash(m.sub))
	if fi, err := os.Stat(lower); err != nil || !fi.IsDir() {
		lower = empty // a sub_path the version lacks starts empty; the container's writes create it
	}
	m.version = head
	if m.ro {
		// An overlay of two lower layers and no upper one is read-only in itself (a bind made
		// read-only by a remount would reach the container writable: remounts do not propagate).
		opts := fmt.Sprintf("lowerdir=%s:%s", lower, empty)
		if err := unix.Mount("overlay", m.point, "overlay", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("volume %s: read-only overlay: %w", m.vid, err)
		}
		return nil
	}
	old := append(m.frozen, m.rw)
	m.lower, m.frozen, m.rw = lower, nil, ""
	if err := bv.mountLayers(m); err != nil {
		return err
	}
	bv.removeDirs(old)
	return nil
}

// useVersion makes vdir m's version directory, letting go of the one it had (held already).
func (bv *boxVolumes) useVersion(m *volMount, vdir string) error {
	if m.vdir != "" {
		bv.w.volCache.release(m.vdir, bv.w.log.Printf)
	}
	m.vdir = vdir
	return nil
}

// versionCache counts the mounts of each materialized version on this worker, and removes a
// version's directory once no mount has used it for cacheKeep.
type versionCache struct {
	mu   sync.Mutex
	uses map[string]int
}

// cacheKeep is how long an unused materialized version stays for the next mount.
const cacheKeep = 10 * time.Minute

func (c *versionCache) hold(dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.uses == nil {
		c.uses = map[string]int{}
	}
	c.uses[dir]++
}

func (c *versionCache) release(dir string, logf func(string, ...any)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uses[dir]--
	if c.uses[dir] > 0 {
		return
	}
	delete(c.uses, dir)
	time.AfterFunc(cacheKeep, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.uses[dir] > 0 {
			return // mounted again meanwhile
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("volume cache: %v", err)
		}
	})
}

// maxFrozen bounds the committed upper layers a mount stacks (commitSwap) before the next
// commit mounts the volume's newest version instead.
const maxFrozen = 16

// mountLayers mounts m's overlay: a fresh upper layer over its frozen ones (newest first) and
// its version.
func (bv *boxVolumes) mountLayers(m *volMount) error {
	m.gen++
	m.rw = filepath.Join(bv.dir, fmt.Sprintf("%s.rw%d", filepath.Base(m.point), m.gen))
	upper, work := filepath.Join(m.rw, "upper"), filepath.Join(m.rw, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("volumes: %w", err)
		}
	}
	if err := os.Lchown(upper, container.RootOnHost, container.RootOnHost); err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	m.prev = map[string]volume.State{}
	lowers := make([]string, 0, len(m.frozen)+1)
	for _, f := range m.frozen {
		lowers = append(lowers, filepath.Join(f, "upper"))
	}
	lowers = append(lowers, m.lower)
	// volatile: an unmount (a commit's or a reload's) does not write the layer's dirty pages
	// out first; the layer is the container's alone and never mounted again as an upper one.
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,volatile", strings.Join(lowers, ":"), upper, work)
	if err := unix.Mount("overlay", m.point, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("volume %s: overlay: %w", m.vid, err)
	}
	return nil
}

func (bv *boxVolumes) removeDirs(dirs []string) {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			bv.w.log.Printf("container %s: volumes: %v", bv.id, err)
		}
	}
}

// commitMode says how a commit stores the files a container wrote.
type commitMode int

const (
	// commitCopy copies them: the container may go on writing them.
	commitCopy commitMode = iota
	// commitBackground is commitCopy, put off while files are still being written (changed
	// in the last busyWindow), for at most busyMax since the last commit: a large file is
	// not copied again every few seconds while it grows.
	commitBackground
	// commitSwap freezes the upper layer (unmounting the mount, with the container's
	// processes frozen, which fails while files are open: then it copies), mounts a fresh
	// upper layer over it, thaws the container and links the old layer's files into the blob
	// store: the container's view is unchanged, and it never sees the bare mount point.
	// Explicit commits.
	commitSwap
	// commitFrozen links them: nothing can write them any more (the container is gone, or
	// the mount is unmounted).
	commitFrozen
)

// hashedFile is a source hashed before the unmount of a swap, and its state then.
type hashedFile struct {
	sum  string
	size int64
	st   unix.Stat_t
}

// commitLocked sends what m's container changed since the last commit; bv.mu is held.
func (bv *boxVolumes) commitLocked(ctx context.Context, m *volMount, mode commitMode) error {
	if m.ro || m.rw == "" {
		return nil
	}
	found, next, err := volume.Scan(filepath.Join(m.rw, "upper"), m.sub, m.prev, volumeIDs)
	if err != nil {
		return err
	}
	if len(found) == 0 && len(m.unsent) == 0 {
		return nil
	}
	if mode == commitSwap && bv.gvisor {
		mode = commitCopy // the sandbox's gofer would go on writing the frozen layer
	}
	if mode == commitBackground {
		if time.Since(m.lastCommit) < busyMax && stillWritten(found, time.Now().Add(-busyWindow)) {
			return nil
		}
		mode = commitCopy
	}
	if mode == commitSwap {
		// Hash while the container still sees its files: the unmount lasts only the links.
		bv.keepHashes(found, bv.forEachSource(found, 0, func(f *volume.Found) (any, error) {
			file, err := volume.OpenBeneath(f.Root, f.Source)
			if err != nil {
				return nil, err
			}
			defer file.Close()
			h := hashedFile{}
			if err := unix.Fstat(int(file.Fd()), &h.st); err != nil {
				return nil, err
			}
			if c, ok := bv.cachedHash(f, h.st); ok {
				return c, nil
			}
			h.sum, h.size, err = bv.w.volumeBlobs().Hash(file)
			return h, err
		}))
		thaw, err := bv.freezeFor("commit")
		if err == nil {
			err = unix.Unmount(m.point, 0)
			if err != nil {
				err = errors.Join(err, thaw())
			}
		}
		if err == nil {
			return bv.commitSwapped(ctx, m, found, thaw)
		}
		if !errors.Is(err, unix.EBUSY) {
			bv.w.log.Printf("container %s: volume %s: swap for commit: %v; copying", bv.id, m.vid, err)
		}
		// Files are open: copy them, as a background commit does.
	}
	changes, err := bv.storeFound(found, mode == commitFrozen)
	if err != nil {
		return err
	}
	if err := bv.send(ctx, m, changes); err != nil {
		return err
	}
	m.prev = next
	return nil
}

// freezeTimeout bounds how long a swap waits for the container's processes to stop.
const freezeTimeout = time.Second

// freezeFor freezes the container for a swap of its mounts (what) and returns what thaws it.
func (bv *boxVolumes) freezeFor(what string) (func() error, error) {
	if bv.freeze == nil {
		return nil, fmt.Errorf("%s: the container cannot be frozen", what)
	}
	return bv.freeze(freezeTimeout)
}

// commitSwapped ends a swap commit (commitSwap) once m's overlay is unmounted and the container
// frozen: a fresh upper layer is mounted over the old one, the container thawed (it saw no
// moment without its files), and the old layer, which nothing can write any more, scanned
// again (found, the scan before the freeze, misses what was written since), linked into the
// blob store and sent. Every maxFrozen commits, the volume's newest version is mounted
// instead, while the container is still frozen.
func (bv *boxVolumes) commitSwapped(ctx context.Context, m *volMount, found []volume.Found, thaw func() error) error {
	upper, prev := filepath.Join(m.rw, "upper"), m.prev
	if len(m.frozen) >= maxFrozen {
		found = bv.rescan(upper, m.sub, prev, found)
		changes, serr := bv.storeFound(found, true)
		if serr == nil {
			serr = bv.send(ctx, m, changes)
		}
		var head string
		var merr error
		if serr == nil {
			if head, merr = bv.w.server.(volumeServer).VolumeHead(ctx, m.vid, bv.id); merr == nil {
				if merr = bv.mountVersion(m, head); merr == nil {
					return thaw()
				}
			}
		}
		if serr != nil {
			m.unsent = append(m.unsent, found...) // they go with the next commit
		}
		m.frozen = append([]string{m.rw}, m.frozen...)
		return errors.Join(serr, merr, bv.mountLayers(m), thaw())
	}
	m.frozen = append([]string{m.rw}, m.frozen...)
	if err := bv.mountLayers(m); err != nil {
		m.unsent = append(m.unsent, bv.rescan(upper, m.sub, prev, found)...)
		return errors.Join(err, thaw())
	}
	if err := thaw(); err != nil {
		bv.w.log.Printf("container %s: volumes: %v", bv.id, err)
	}
	found = bv.rescan(upper, m.sub, prev, found)
	changes, err := bv.storeFound(found, true)
	if err == nil {
		err = bv.send(ctx, m, changes)
	}
	if err != nil {
		// The frozen layer's changes were not sent: they go with the next commit.
		m.unsent = append(m.unsent, found...)
	}
	return err
}

// rescan returns what the unmounted upper layer holds that changed since prev; found (the scan
// before the unmount) if it cannot be read.
func (bv *boxVolumes) rescan(upper, sub string, prev map[string]volume.State, found []volume.Found) []volume.Found {
	all, _, err := volume.Scan(upper, sub, prev, volumeIDs)
	if err != nil {
		bv.w.log.Printf("container %s: volumes: scanning a frozen layer again: %v", bv.id, err)
		return found
	}
	return all
}

// keepHashes keeps the hashes that forEachSource made of found's files (hashedFile, by index)
// for the commit's storeFound (cachedHash).
func (bv *boxVolumes) keepHashes(found []volume.Found, res []any) {
	bv.hashMu.Lock()
	defer bv.hashMu.Unlock()
	if bv.hashes == nil {
		bv.hashes = map[string]hashedFile{}
	}
	for i, r := range res {
		if h, ok := r.(hashedFile); ok {
			bv.hashes[hashKey(&found[i])] = h
		}
	}
}

// Background commits wait for files to stop changing (commitBackground).
const (
	busyWindow = 2 * time.Second
	busyMax    = time.Minute
)

// stillWritten reports whether a file of found changed after since.
func stillWritten(found []volume.Found, since time.Time) bool {
	for _, f := range found {
		if f.Source != "" && f.Change.Entry.Mtime >= since.Unix() {
			return true
		}
	}
	return false
}

// send commits changes (after what earlier commits could not send) to the server.
func (bv *boxVolumes) send(ctx context.Context, m *volMount, changes []volume.Change) error {
	var all []volume.Change
	if len(m.unsent) > 0 {
		// A frozen layer's changes that an earlier commit could not send: linked again.
		earlier, err := bv.storeFound(m.unsent, true)
		if err != nil {
			return err
		}
		all = earlier
	}
	all = append(all, changes...)
	if len(all) == 0 {
		return nil
	}
	if _, err := bv.w.server.(volumeServer).CommitVolume(ctx, m.vid, bv.id, all); err != nil {
		return fmt.Errorf("committing volume %s: %w", m.vid, err)
	}
	m.unsent = nil
	m.lastCommit = time.Now()
	return nil
}

// forEachSource runs f over the founds that have a source file, a few at a time (hashing and
// copying are a commit's cost: as many as there are CPUs, or at least n), and returns what
// each gave, by index; an error is kept as it.
func (bv *boxVolumes) forEachSource(found []volume.Found, n int, f func(*volume.Found) (any, error)) []any {
	out := make([]any, len(found))
	sem := make(chan struct{}, max(2, n, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i := range found {
		if found[i].Source == "" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			v, err := f(&found[i])
			if err != nil {
				out[i] = err
			} else {
				out[i] = v
			}
		}(i)
	}
	wg.Wait()
	return out
}

// storeFound puts found's source files in the blob store, by hard link when link is set
// (nobody can write them any more) and else by copy, and returns the changes to commit. Hashes
// made earlier (prehash, keepHashes) serve where the file has not changed since.
func (bv *boxVolumes) storeFound(found []volume.Found, link bool) (_ []volume.Change, retErr error) {
	bl := bv.w.volumeBlobs()
	// Links mostly wait for their files to reach the disk (volume.Blobs syncs them): more at
	// once. Many files are synced with their file system instead, once before they are
	// linked and once after.
	n, linkFile := 0, bl.Link
	if link {
		n = syncParallel
		if sources(found) > syncFSAbove {
			if err := bl.SyncFS(); err != nil {
				return nil, err
			}
			linkFile = bl.LinkUnsynced
			defer func() {
				if err := bl.SyncFS(); err != nil && retErr == nil {
					retErr = err
				}
			}()
		}
	}
	res := bv.forEachSource(found, n, func(f *volume.Found) (any, error) {
		file, err := volume.OpenBeneath(f.Root, f.Source)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		if !link {
			sum, n, err := bl.PutFile(file)
			return hashedFile{sum: sum, size: n}, err
		}
		var h hashedFile
		var st unix.Stat_t
		if err := unix.Fstat(int(file.Fd()), &st); err != nil {
			return nil, err
		}
		if p, ok := bv.cachedHash(f, st); ok {
			h = p
		} else if h.sum, h.size, err = bl.Hash(file); err != nil {
			return nil, err
		}
		if err := linkFile(file, h.sum); err != nil {
			// Another file system, or too many links: copy.
			sum, n, err := bl.PutFile(file)
			return hashedFile{sum: sum, size: n}, err
		}
		return h, nil
	})
	changes := make([]volume.Change, 0, len(found))
	for i, f := range found {
		if f.Source != "" {
			switch r := res[i].(type) {
			case error:
				if errors.Is(r, os.ErrNotExist) || errors.Is(r, unix.ENOENT) {
					continue // gone since the scan: the next scan sees what replaced it
				}
				return nil, r
			case hashedFile:
				f.Change.Entry.Blob, f.Change.Entry.Size = r.sum, r.size
			}
		}
		changes = append(changes, f.Change)
	}
	return changes, nil
}

// syncParallel is how many files a commit that links them stores at once; past syncFSAbove
// files, it syncs the file system (twice) rather than each file and directory.
const (
	syncParallel = 16
	syncFSAbove  = 64
)

// sources counts the founds that have a source file.
func sources(found []volume.Found) int {
	n := 0
	for _, f := range found {
		if f.Source != "" {
			n++
		}
	}
	return n
}

// cachedHash returns prehash's hash of f's source if the file is as it was then.
func (bv *boxVolumes) cachedHash(f *volume.Found, st unix.Stat_t) (hashedFile, bool) {
	bv.hashMu.Lock()
	defer bv.hashMu.Unlock()
	h, ok := bv.hashes[hashKey(f)]
	return h, ok && sameFile(h.st, st)
}

// prehashFile hashes one file for prehash, unless it changed after quiet (unix ns) or while
// it was hashed.
func (bv *boxVolumes) prehashFile(bl *volume.Blobs, f *volume.Found, quiet int64) {
	file, err := volume.OpenBeneath(f.Root, f.Source)
	if err != nil {
		return
	}
	defer file.Close()
	var st, after unix.Stat_t
	if unix.Fstat(int(file.Fd()), &st) != nil || st.Mtim.Nano() > quiet {
		return
	}
	if _, ok := bv.cachedHash(f, st); ok {
		return
	}
	sum, n, err := bl.Hash(file)
	if err != nil || unix.Fstat(int(file.Fd()), &after) != nil || !sameFile(st, after) {
		return
	}
	// Start writing it to the disk now: the commit that stores it syncs it (volume.Blobs),
	// and then has less left to wait for.
	_ = unix.SyncFileRange(int(file.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	bv.hashMu.Lock()
	if bv.hashes == nil {
		bv.hashes = map[string]hashedFile{}
	}
	bv.hashes[hashKey(f)] = hashedFile{sum: sum, size: n, st: st}
	bv.hashMu.Unlock()
}

func hashKey(f *volume.Found) string { return f.Root + "\x00" + f.Source }

// prehash hashes the files of the upper layers that have not changed for a moment and are
// not hashed yet, so that a commit has fewer to hash. A file that changes while it is hashed
// is left for later; a file that changes afterwards no longer matches its state here.
func (bv *boxVolumes) prehash() {
	bv.mu.Lock()
	var uppers []string
	for _, m := range bv.mounts {
		if !m.ro && m.rw != "" {
			uppers = append(uppers, filepath.Join(m.rw, "upper"))
		}
	}
	bv.mu.Unlock()
	bl := bv.w.volumeBlobs()
	quiet := time.Now().Add(-50 * time.Millisecond).UnixNano()
	for _, upper := range uppers {
		files, _, err := volume.Scan(upper, "", nil, volumeIDs)
		if err != nil {
			continue // the next tick tries again
		}
		for i := range files {
			f := &files[i]
			if f.Source == "" {
				continue
			}
			select {
			case <-bv.stop:
				return
			default:
			}
			bv.prehashFile(bl, f, quiet)
		}
	}
}

// sameFile reports whether a file is as it was when hashed.
func sameFile(a, b unix.Stat_t) bool {
	return a.Ino == b.Ino && a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}

// commit commits every writable mount, or volume vid's alone when vid is set.
func (bv *boxVolumes) commit(ctx context.Context, vid string, mode commitMode) error {
	bv.mu.Lock()
	defer bv.mu.Unlock()
	if bv.closed {
		return nil
	}
	var errs []error
	for _, m := range bv.mounts {
		if vid == "" || m.vid == vid {
			errs = append(errs, bv.commitLocked(ctx, m, mode))
		}
	}
	return errors.Join(errs...)
}

// errOpenFiles is Modal's refusal of a reload while files under the mount are open.
var errOpenFiles = errdefs.Conflict("there are open files preventing the operation: close every file (and leave every directory) under the volume's mount before reload()")

// reload commits volume vid's mounts (every volume's when vid is "") and mounts its newest
// version in their place.
func (bv *boxVolumes) reload(ctx context.Context, vid string) error {
	if bv.gvisor {
		return errdefs.Invalid("reload() of a volume is not supported in gVisor containers: gust cannot replace a mount inside a running gVisor sandbox. commit() works there, and a new container mounts the newest version; use isolation \"runc\" to reload")
	}
	bv.mu.Lock()
	defer bv.mu.Unlock()
	if bv.closed {
		return errdefs.Conflict("the container has ended")
	}
	srv := bv.w.server.(volumeServer)
	for _, m := range bv.mounts {
		if vid != "" && m.vid != vid {
			continue
		}
		if err := bv.reloadOne(ctx, srv, m); err != nil {
			return err
		}
	}
	return nil
}

// reloadOne commits m and mounts the volume's newest version in its place, with the container
// frozen (when it can be) so that none of its processes sees the mount point bare meanwhile.
func (bv *boxVolumes) reloadOne(ctx context.Context, srv volumeServer, m *volMount) (retErr error) {
	thaw, err := bv.freezeFor("reload")
	if err != nil {
		bv.w.log.Printf("container %s: volume %s: reloading unfrozen: %v", bv.id, m.vid, err)
	} else {
		defer func() { retErr = errors.Join(retErr, thaw()) }()
	}
	if err := unix.Unmount(m.point, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return errOpenFiles
		}
		return fmt.Errorf("volume %s: unmount for reload: %w", m.vid, err)
	}
	// Unmounted, the layer cannot change: its files are linked, not copied.
	err = bv.commitLocked(ctx, m, commitFrozen)
	var head string
	if err == nil {
		head, err = srv.VolumeHead(ctx, m.vid, bv.id)
	}
	if err != nil {
		// Show the container its files again, as they were.
		if !m.ro {
			m.frozen = append([]string{m.rw}, m.frozen...)
			return errors.Join(err, bv.mountLayers(m))
		}
		return errors.Join(err, bv.mountVersion(m, m.version))
	}
	return bv.mountVersion(m, head)
}

// commitLoop commits in the background until the container ends.
func (bv *boxVolumes) commitLoop() {
	defer close(bv.done)
	t := time.NewTicker(hashEvery)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-bv.stop:
			return
		case <-t.C:
			if time.Since(last) < commitEvery {
				bv.prehash()
				continue
			}
			last = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			if err := bv.commit(ctx, "", commitBackground); err != nil {
				bv.w.log.Printf("container %s: background commit: %v", bv.id, err)
			}
			cancel()
		}
	}
}

// close ends a container's volumes once the container is gone: a last commit (when commit
// is set: the container ran), then every mount and directory goes.
func (bv *boxVolumes) close(commit bool) {
	if bv == nil {
		return
	}
	select {
	case <-bv.stop:
		return // closed already
	default:
	}
	close(bv.stop)
	bv.mu.Lock()
	looping := bv.looping
	bv.mu.Unlock()
	if looping {
		<-bv.done
	}
	if commit {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if err := bv.commit(ctx, "", commitFrozen); err != nil {
			bv.w.log.Printf("container %s: last commit of its volumes: %v", bv.id, err)
		}
		cancel()
	}
	bv.mu.Lock()
	bv.closed = true
	bv.mu.Unlock()
	bv.release()
}

// release unmounts everything and removes the container's volume directory.
func (bv *boxVolumes) release() {
	defer func() {
		for _, m := range bv.mounts {
			if m.vdir != "" {
				bv.w.volCache.release(m.vdir, bv.w.log.Printf)
				m.vdir = ""
			}
		}
	}()
	if bv.srv != nil {
		_ = bv.srv.Close() // closes the listener too
	} else if bv.ln != nil {
		_ = bv.ln.Close()
	}
	if err := unmountUnder(bv.dir); err != nil {
		bv.w.log.Printf("container %s: volumes: %v", bv.id, err)
		return
	}
	if err := os.RemoveAll(bv.dir); err != nil {
		bv.w.log.Printf("container %s: volumes: %v", bv.id, err)
	}
}

// unmountUnder detaches every mount at or below dir, deepest (and latest) first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	// Stacked mounts repeat a path: unmount each as often as it appears, deepest first.
	sort.SliceStable(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cleanupVolumes removes what an earlier worker's containers left mounted.
func (w *Worker) cleanupVolumes() {
	root := w.volumesRoot()
	if _, err := os.Stat(root); err != nil {
		return
	}
	if err := unmountUnder(root); err != nil {
		w.log.Printf("volumes left by an earlier worker: %v", err)
		return
	}
	if err := os.RemoveAll(root); err != nil {
		w.log.Printf("volumes left by an earlier worker: %v", err)
	}
}

// routes is the control socket's API, for the container's SDK: POST /commit and POST
// /reload, each with ?volume_id= (every mount when absent).
func (bv *boxVolumes) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /commit", func(rw http.ResponseWriter, r *http.Request) {
		bv.answer(rw, bv.commit(r.Context(), r.URL.Query().Get("volume_id"), commitSwap))
	})
	mux.HandleFunc("POST /reload", func(rw http.ResponseWriter, r *http.Request) {
		bv.answer(rw, bv.reload(r.Context(), r.URL.Query().Get("volume_id")))
	})
	mux.HandleFunc("GET /mounts", func(rw http.ResponseWriter, r *http.Request) {
		var out []map[string]any
		for _, m := range bv.mounts {
			out = append(out, map[string]any{"volume_id": m.vid, "path": m.path, "read_only": m.ro})
		}
		httpapi.WriteJSON(rw, http.StatusOK, map[string]any{"mounts": out})
	})
	return mux
}

func (bv *boxVolumes) answer(rw http.ResponseWriter, err error) {
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	httpapi.WriteJSON(rw, http.StatusOK, json.RawMessage(`{"ok":true}`))
}

// handleReloadVolumes reloads a running sandbox's volumes (Sandbox.reload_volumes()).
func (w *Worker) handleReloadVolumes(rw http.ResponseWriter, r *http.Request) {
	b, _, err := w.running(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	b.mu.Lock()
	bv := b.vols
	b.mu.Unlock()
	if bv == nil {
		httpapi.WriteJSON(rw, http.StatusOK, json.RawMessage(`{"ok":true}`))
		return
	}
	bv.answer(rw, bv.reload(r.Context(), ""))
}

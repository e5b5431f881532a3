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
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
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
// the server. They happen when the container asks (gust-init's socket, /.gust/vol/ctl.sock:
// vol.commit() and vol.reload()), every commitEvery in the background, and when the container
// ends. Read-only mounts are read-only binds of the version.

const (
	volCtlMount = "/.gust/vol"
	commitEvery = 5 * time.Second
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
	// looping is set once commitLoop runs (mountAll).
	looping bool
}

type volMount struct {
	vid, path, sub string
	ro             bool
	point          string // the host mount point the container binds
	rw             string // the current upper and work directories' parent; "" when read-only
	gen            int
	version        string
	prev           map[string]volume.State
	mounted        bool
}

func (w *Worker) volumesRoot() string { return filepath.Join(w.cfg.StateDir, "volumes") }

func (w *Worker) volumeBlobs() *volume.Blobs { return volume.BlobsIn(w.cfg.LayerDir) }

// attachVolumes mounts a container's volumes on the host and returns the binds that show
// them inside. On failure nothing is left mounted.
func (w *Worker) attachVolumes(ctx context.Context, spec workerproto.ContainerSpec) (_ *boxVolumes, _ []container.Mount, retErr error) {
	if _, ok := w.server.(volumeServer); !ok {
		return nil, nil, errors.New("this worker's server cannot mount volumes")
	}
	bv := &boxVolumes{w: w, id: spec.ID, dir: filepath.Join(w.volumesRoot(), spec.ID), stop: make(chan struct{}), done: make(chan struct{})}
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
		opts := []string{"rbind", "rslave", "nosuid", "nodev"}
		if m.ro {
			opts = append(opts, "ro")
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
	}
	bv.looping = true
	go bv.commitLoop()
	return nil
}

// mountVersion materializes version head and mounts it at m's point: an overlay with a fresh
// upper layer, or a read-only bind.
func (bv *boxVolumes) mountVersion(m *volMount, head string) error {
	bl := bv.w.volumeBlobs()
	man, err := bl.ReadManifest(head)
	if err != nil {
		return fmt.Errorf("volume %s: %w", m.vid, err)
	}
	name := head
	if name == "" {
		name = "empty"
	}
	vdir := filepath.Join(filepath.Dir(bl.Dir), "cache", name)
	if err := bl.Materialize(man, vdir, container.RootOnHost, container.RootOnHost); err != nil {
		return fmt.Errorf("volume %s: %w", m.vid, err)
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
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", m.point, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("volume %s: overlay: %w", m.vid, err)
	}
	return nil
}

// commit sends what m's container changed since the last commit; bv.mu is held.
func (bv *boxVolumes) commitLocked(ctx context.Context, m *volMount) error {
	if m.ro || m.rw == "" {
		return nil
	}
	found, next, err := volume.Scan(filepath.Join(m.rw, "upper"), m.sub, m.prev)
	if err != nil || len(found) == 0 {
		return err
	}
	bl := bv.w.volumeBlobs()
	changes := make([]volume.Change, 0, len(found))
	for _, f := range found {
		if f.Source != "" {
			sum, n, err := bl.PutFile(f.Source)
			if errors.Is(err, os.ErrNotExist) {
				continue // gone since the scan: the next scan sees what replaced it
			}
			if err != nil {
				return err
			}
			f.Change.Entry.Blob, f.Change.Entry.Size = sum, n
		}
		changes = append(changes, f.Change)
	}
	if _, err := bv.w.server.(volumeServer).CommitVolume(ctx, m.vid, bv.id, changes); err != nil {
		return fmt.Errorf("committing volume %s: %w", m.vid, err)
	}
	m.prev = next
	return nil
}

// commit commits every writable mount, or volume vid's alone when vid is set.
func (bv *boxVolumes) commit(ctx context.Context, vid string) error {
	bv.mu.Lock()
	defer bv.mu.Unlock()
	var errs []error
	for _, m := range bv.mounts {
		if vid == "" || m.vid == vid {
			errs = append(errs, bv.commitLocked(ctx, m))
		}
	}
	return errors.Join(errs...)
}

// errOpenFiles is Modal's refusal of a reload while files under the mount are open.
var errOpenFiles = errdefs.Conflict("there are open files preventing the operation: close every file (and leave every directory) under the volume's mount before reload()")

// reload commits volume vid's mounts (every volume's when vid is "") and mounts its newest
// version in their place.
func (bv *boxVolumes) reload(ctx context.Context, vid string) error {
	bv.mu.Lock()
	defer bv.mu.Unlock()
	srv := bv.w.server.(volumeServer)
	for _, m := range bv.mounts {
		if vid != "" && m.vid != vid {
			continue
		}
		if err := bv.commitLocked(ctx, m); err != nil {
			return err
		}
		head, err := srv.VolumeHead(ctx, m.vid, bv.id)
		if err != nil {
			return err
		}
		if err := unix.Unmount(m.point, 0); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return errOpenFiles
			}
			return fmt.Errorf("volume %s: unmount for reload: %w", m.vid, err)
		}
		old := m.rw
		if err := bv.mountVersion(m, head); err != nil {
			return err
		}
		if old != "" {
			if err := os.RemoveAll(old); err != nil {
				bv.w.log.Printf("container %s: volume %s: %v", bv.id, m.vid, err)
			}
		}
	}
	return nil
}

// commitLoop commits in the background until the container ends.
func (bv *boxVolumes) commitLoop() {
	defer close(bv.done)
	t := time.NewTicker(commitEvery)
	defer t.Stop()
	for {
		select {
		case <-bv.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			if err := bv.commit(ctx, ""); err != nil {
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
		if err := bv.commit(ctx, ""); err != nil {
			bv.w.log.Printf("container %s: last commit of its volumes: %v", bv.id, err)
		}
		cancel()
	}
	bv.release()
}

// release unmounts everything and removes the container's volume directory.
func (bv *boxVolumes) release() {
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
		bv.answer(rw, bv.commit(r.Context(), r.URL.Query().Get("volume_id")))
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

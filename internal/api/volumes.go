package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/volume"
)

// Modal's Volumes: named or ephemeral objects of a workspace (as Dicts are) whose versions
// are manifests in the volume blob store beside the image layers (internal/volume). Clients
// read a version's files and change it by commits (uploads, removes, copies); containers
// mount it and their worker commits what they write (the worker routes at the end).

const (
	// volumeFileLimit bounds one uploaded file.
	volumeFileLimit = 64 << 30
	// volumeCommitBody bounds a commit's list of changes.
	volumeCommitBody = 64 << 20
	// commitRetries bounds how often a commit is applied again when another moved the head.
	commitRetries = 20
)

func (a *API) volumeRoutes(rt *router) {
	kindRoutes(rt, namedObjects[store.Volume]{what: "Volume", plural: "volumes",
		create: a.store.CreateVolume, list: a.store.ListVolumes, get: a.store.GetVolume,
		del: a.store.DeleteVolume, beat: a.store.HeartbeatVolume,
		show: func(_ context.Context, _ string, v store.Volume, _ bool) (any, error) {
			return volumeJSON{v.ID, v}, nil
		},
	})
	rt.handle("POST /v1/volumes/lookup", a.handleVolumeLookup) // lookup takes Modal's version= too
	rt.handle("PUT /v1/volumes/{id}/name", a.handleVolumeRename)
	rt.handle("GET /v1/volumes/{id}/entries", a.handleVolumeEntries)
	rt.handle("GET /v1/volumes/{id}/content", a.handleVolumeContent)
	rt.handle("POST /v1/volumes/{id}/blobs", a.handleVolumeBlob)
	rt.handle("POST /v1/volumes/{id}/commit", a.handleVolumeCommit)
	rt.handle("POST /v1/volumes/{id}/remove", a.handleVolumeRemove)
	rt.handle("POST /v1/volumes/{id}/copy", a.handleVolumeCopy)
	rt.handle("GET /v1/workers/{wid}/volumes/{vid}", a.handleWorkerVolume)
	rt.handle("POST /v1/workers/{wid}/volumes/{vid}/commit", a.handleWorkerVolumeCommit)
}

// volumeJSON is a volume as the API shows it.
type volumeJSON struct {
	ID string `json:"volume_id"`
	store.Volume
}

func (a *API) blobs() *volume.Blobs { return volume.BlobsIn(a.layers.Dir) }

func (a *API) handleVolumeLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		lookupReq
		Version *int `json:"version"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Version != nil && *req.Version != 1 && *req.Version != 2 {
		httpapi.WriteError(w, errdefs.Invalid("Volume version must be 1 or 2 (Modal's VolumeFS versions), got %d", *req.Version))
		return
	}
	p := principal(r)
	v, err := a.store.LookupVolume(r.Context(), p.WorkspaceID, req.Name, p.TokenID, mayCreate(p, req.CreateIfMissing))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, volumeJSON{v.ID, v})
}

func (a *API) handleVolumeRename(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ws := principal(r).WorkspaceID
	if err := a.store.RenameVolume(r.Context(), ws, r.PathValue("id"), req.Name); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	v, err := a.store.GetVolume(r.Context(), ws, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, volumeJSON{v.ID, v})
}

// headOf returns a volume of the caller's workspace and its current version.
func (a *API) headOf(r *http.Request) (store.Volume, *volume.Manifest, error) {
	v, err := a.store.GetVolume(r.Context(), principal(r).WorkspaceID, r.PathValue("id"))
	if err != nil {
		return v, nil, err
	}
	m, err := a.blobs().ReadManifest(v.Head)
	return v, m, err
}

// fileEntryJSON is a FileEntry as Modal's clients see it.
type fileEntryJSON struct {
	Path  string           `json:"path"`
	Type  volume.EntryType `json:"type"`
	Mtime int64            `json:"mtime"`
	Size  int64            `json:"size"`
}

// handleVolumeEntries lists ?path= (a directory: its children, or all below it with
// ?recursive=1; a file: itself).
func (a *API) handleVolumeEntries(w http.ResponseWriter, r *http.Request) {
	_, m, err := a.headOf(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	p, err := volume.CleanPath(r.URL.Query().Get("path"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	e, ok := m.Get(p)
	if !ok {
		httpapi.WriteError(w, errdefs.NotFound("No such file or directory: '%s'", r.URL.Query().Get("path")))
		return
	}
	list := []volume.Entry{e}
	if e.Type == volume.Dir {
		list = m.List(p, r.URL.Query().Get("recursive") == "1")
	}
	out := make([]fileEntryJSON, len(list))
	for i, e := range list {
		out[i] = fileEntryJSON{e.Path, e.Type, e.Mtime, e.Size}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"entries": out})
}

// handleVolumeContent answers a file's bytes (?path=).
func (a *API) handleVolumeContent(w http.ResponseWriter, r *http.Request) {
	_, m, err := a.headOf(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	raw := r.URL.Query().Get("path")
	p, err := volume.CleanPath(raw)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	e, ok := m.Get(p)
	if !ok {
		httpapi.WriteError(w, errdefs.NotFound("No such file: '%s'", raw))
		return
	}
	if e.Type != volume.File {
		httpapi.WriteError(w, errdefs.Invalid("'%s' is a %s, not a file", raw, e.Type))
		return
	}
	f, err := a.blobs().Open(e.Blob)
	if err != nil {
		httpapi.WriteError(w, fmt.Errorf("volume file %s: %w", raw, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(e.Size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f) // a client gone mid-file is its own loss
}

// handleVolumeBlob stores an uploaded file's bytes and answers their SHA-256, which a commit
// then names.
func (a *API) handleVolumeBlob(w http.ResponseWriter, r *http.Request) {
	ws := principal(r).WorkspaceID
	if _, err := a.store.GetVolume(r.Context(), ws, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// An upload bigger than the room the quota leaves could never be committed: refused
	// before it fills the disk.
	limit := int64(volumeFileLimit)
	overQuota := func(int64) error { return nil }
	if wsp, err := a.store.GetWorkspace(r.Context(), ws); err != nil {
		httpapi.WriteError(w, err)
		return
	} else if quota := int64(wsp.Quotas.VolumeMiB) << 20; quota > 0 {
		used, err := a.store.VolumeUsage(r.Context(), ws)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		overQuota = func(n int64) error {
			return errdefs.WithKind(errdefs.ErrQuota, fmt.Sprintf("quota volume_mib is %d for this workspace and its volumes hold %.1f MiB; this file is larger than the %.1f MiB left (remove files or volumes, or ask the operator for more)",
				quota>>20, float64(used)/(1<<20), float64(max(0, quota-used))/(1<<20)))
		}
		if r.ContentLength > quota-used {
			httpapi.WriteError(w, overQuota(r.ContentLength))
			return
		}
		limit = min(limit, max(0, quota-used))
	}
	sum, n, err := a.blobs().Upload(r.Body, limit) // synced by the commit that names it
	if volume.IsTooLarge(err) {
		err = overQuota(limit + 1)
		if err == nil {
			err = errdefs.TooLarge("a file of a volume may be at most %d GiB", volumeFileLimit>>30)
		}
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.store.GrantVolumeBlobs(r.Context(), ws, sum); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"blob": sum, "size": n})
}

// commit applies change to volume id's newest version and makes the result its head,
// again if another commit got there first. change may refuse with an error.
// commitAndAnswer commits change to volume id and answers with the volume's new version.
func (a *API) commitAndAnswer(ctx context.Context, w http.ResponseWriter, ws, id string, change func(m *volume.Manifest) error) {
	v, err := a.commit(ctx, ws, id, change)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, volumeJSON{v.ID, v})
}

func (a *API) commit(ctx context.Context, ws, id string, change func(m *volume.Manifest) error) (store.Volume, error) {
	mu := a.volumeLock(id)
	mu.Lock()
	defer mu.Unlock()
	w, err := a.store.GetWorkspace(ctx, ws)
	if err != nil {
		return store.Volume{}, err
	}
	quota := int64(w.Quotas.VolumeMiB) << 20
	bl := a.blobs()
	for try := 0; ; try++ {
		v, err := a.store.GetVolume(ctx, ws, id)
		if err != nil {
			return v, err
		}
		m, err := bl.ReadManifest(v.Head)
		if err != nil {
			return v, err
		}
		if err := change(m); err != nil {
			return v, err
		}
		head, err := bl.WriteManifest(m)
		if err != nil {
			return v, err
		}
		err = a.store.SetVolumeHead(ctx, ws, id, v.Head, head, m.Bytes(), quota)
		if errors.Is(err, store.ErrStaleHead) && try < commitRetries {
			continue
		}
		if err != nil {
			return v, err
		}
		v.Head, v.Bytes, v.Commits = head, m.Bytes(), v.Commits+1
		return v, nil
	}
}

// volumeLocks orders the commits to one volume that this server makes (SetVolumeHead's
// check covers commits of other servers).
var volumeLocks sync.Map

func (a *API) volumeLock(id string) *sync.Mutex {
	mu, _ := volumeLocks.LoadOrStore(id, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// checkChanges validates changes and fills each file's size from its stored blob, and syncs
// the blobs a client uploaded.
// A client's commit may name only blobs its workspace holds (GrantVolumeBlob); a worker's
// names the files its container wrote, which it stored itself, and grants them to the
// container's workspace.
func (a *API) checkChanges(ctx context.Context, ws string, changes []volume.Change, fromWorker bool) error {
	bl := a.blobs()
	var uploaded, written []string
	for i := range changes {
		c := &changes[i]
		if err := c.Check(); err != nil {
			return err
		}
		if c.Op == volume.OpPut && c.Entry.Type == volume.File {
			n, err := bl.Stat(c.Entry.Blob)
			granted := fromWorker
			if err == nil && !granted {
				if granted, err = a.store.VolumeBlobGranted(ctx, ws, c.Entry.Blob); err != nil {
					return err
				}
			}
			if err != nil || !granted { // the same answer either way: nothing about others' files
				return errdefs.Invalid("file %s: blob %s is not stored; POST the file's bytes to /v1/volumes/{id}/blobs first", c.Entry.Path, c.Entry.Blob)
			}
			c.Entry.Size = n
			if fromWorker {
				written = append(written, c.Entry.Blob)
			} else {
				uploaded = append(uploaded, c.Entry.Blob)
			}
		}
		if c.Entry.Mtime == 0 {
			c.Entry.Mtime = time.Now().Unix()
		}
		if c.Entry.Mode == 0 {
			c.Entry.Mode = 0o644
			if c.Entry.Type == volume.Dir {
				c.Entry.Mode = 0o755
			}
		}
	}
	if err := a.store.GrantVolumeBlobs(ctx, ws, written...); err != nil {
		return err
	}
	// Uploads are not synced one by one (Blobs.Upload): the commit syncs them before it is
	// acknowledged. A worker syncs the files it stores.
	return bl.Sync(uploaded)
}

// handleVolumeCommit applies a client's changes (batch_upload): {"changes": [...], "force":
// false}. Without force, a put over an existing file is refused (409), as Modal's is.
func (a *API) handleVolumeCommit(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Changes []volume.Change `json:"changes"`
		Force   bool            `json:"force"`
	}
	if err := httpapi.DecodeJSON(r, &req, volumeCommitBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.checkChanges(r.Context(), principal(r).WorkspaceID, req.Changes, false); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.commitAndAnswer(r.Context(), w, principal(r).WorkspaceID, r.PathValue("id"), func(m *volume.Manifest) error {
		if !req.Force {
			for _, c := range req.Changes {
				if e, ok := m.Entries[c.Entry.Path]; ok && c.Op == volume.OpPut && e.Type != volume.Dir {
					return errdefs.Conflict("%s: already exists (pass force=True to overwrite)", c.Entry.Path)
				}
			}
		}
		m.Apply(req.Changes, time.Now().Unix())
		return nil
	})
}

// handleVolumeRemove removes {"path", "recursive"}: a non-empty directory needs recursive.
func (a *API) handleVolumeRemove(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Path      string `json:"path"`
		Recursive bool   `json:"recursive"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	p, err := volume.CleanPath(req.Path)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if p == "" {
		httpapi.WriteError(w, errdefs.Invalid("the volume's root cannot be removed; delete the volume instead"))
		return
	}
	a.commitAndAnswer(r.Context(), w, principal(r).WorkspaceID, r.PathValue("id"), func(m *volume.Manifest) error {
		e, ok := m.Get(p)
		if !ok {
			return errdefs.NotFound("No such file or directory: '%s'", req.Path)
		}
		if e.Type == volume.Dir && !req.Recursive && len(m.List(p, false)) > 0 {
			return errdefs.Invalid("'%s' is a non-empty directory; pass recursive=True to remove it and everything in it", req.Path)
		}
		m.Remove(p)
		return nil
	})
}

// handleVolumeCopy copies {"src_paths", "dst_path", "recursive"} within the volume, as
// Modal's copy_files: one source to a new name, or sources into an existing directory.
func (a *API) handleVolumeCopy(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Src       []string `json:"src_paths"`
		Dst       string   `json:"dst_path"`
		Recursive bool     `json:"recursive"`
	}
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if len(req.Src) == 0 {
		httpapi.WriteError(w, errdefs.Invalid("copy_files needs at least one source path"))
		return
	}
	dst, err := volume.CleanPath(req.Dst)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.commitAndAnswer(r.Context(), w, principal(r).WorkspaceID, r.PathValue("id"), func(m *volume.Manifest) error {
		return volume.Copy(m, req.Src, dst, req.Recursive, time.Now().Unix())
	})
}

// workerContainerVolume checks that container ?container= (or the body's) runs on worker wid
// and mounts volume vid, writable when write is set.
func (a *API) workerContainerVolume(r *http.Request, cid string, write bool) (string, error) {
	wid, vid := r.PathValue("wid"), r.PathValue("vid")
	sb, err := a.store.GetSandbox(r.Context(), cid)
	if err != nil || sb.WorkerID != wid {
		return "", errdefs.NotFound("container %q is not on worker %s", cid, wid)
	}
	for _, m := range sb.Volumes {
		if m.VolumeID == vid && (!write || !m.ReadOnly) {
			return sb.WorkspaceID, nil
		}
	}
	return "", errdefs.NotFound("container %s has no %s mount of volume %s", cid, map[bool]string{true: "writable", false: ""}[write], vid)
}

// handleWorkerVolume answers a volume's current version to the worker that mounts it.
func (a *API) handleWorkerVolume(w http.ResponseWriter, r *http.Request) {
	ws, err := a.workerContainerVolume(r, r.URL.Query().Get("container"), false)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	v, err := a.store.GetVolume(r.Context(), ws, r.PathValue("vid"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, volumeJSON{v.ID, v})
}

// handleWorkerVolumeCommit applies what a container wrote under a volume's mount, which its
// worker found and stored in the blob store: last write wins per file.
func (a *API) handleWorkerVolumeCommit(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ContainerID string          `json:"container_id"`
		Changes     []volume.Change `json:"changes"`
	}
	if err := httpapi.DecodeJSON(r, &req, volumeCommitBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ws, err := a.workerContainerVolume(r, req.ContainerID, true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.checkChanges(r.Context(), ws, req.Changes, true); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.commitAndAnswer(r.Context(), w, ws, r.PathValue("vid"), func(m *volume.Manifest) error {
		m.Apply(req.Changes, time.Now().Unix())
		return nil
	})
}

// pruneVolumeBlobs removes the volume blobs that no volume's current version uses (the
// image prune's part for volumes), adding them to res.
func (a *API) pruneVolumeBlobs(ctx context.Context, grace time.Duration, res *image.PruneResult) error {
	vs, err := a.store.VolumeSizes(ctx)
	if err != nil {
		return err
	}
	heads := make([]string, len(vs))
	for i, v := range vs {
		heads[i] = v.Head
	}
	n, freed, err := a.blobs().Prune(heads, grace)
	res.Blobs += n
	res.FreedBytes += freed
	return err
}

// RunVolumes drops ephemeral volumes whose client stopped beating, every minute until ctx
// ends, and meters what volumes hold (storage class volume).
func (a *API) RunVolumes(ctx context.Context) {
	a.MeterStorage(a.volumeSizes)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := a.store.ExpireVolumes(ctx, time.Now()); err != nil && ctx.Err() == nil {
				a.log.Printf("expiring ephemeral volumes: %v", err)
			}
		}
	}
}

// volumeSizes is the storage meter's source of volumes: each one's current bytes.
func (a *API) volumeSizes(ctx context.Context) ([]metering.StorageObject, error) {
	vs, err := a.store.VolumeSizes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]metering.StorageObject, 0, len(vs))
	for _, v := range vs {
		out = append(out, metering.StorageObject{ID: v.ID, WorkspaceID: v.WorkspaceID, Class: metering.StorageVolume, Name: v.Name, Bytes: v.Bytes, Since: v.CreatedAt})
	}
	return out, nil
}

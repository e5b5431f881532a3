package api

import (
	"errors"
	"fmt"
	"net/http"
	"os"

	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/image"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/imagebuild"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
)

func (a *API) imageRoutes(rt *router) {
	rt.handle("POST /v1/images", a.handleImageCreate)
	rt.handle("GET /v1/images", a.handleImageList)
	rt.handle("GET /v1/images/{id}", a.handleImageGet)
	rt.handle("DELETE /v1/images/{id}", a.handleImageDelete)
	rt.handle("DELETE /v1/images", a.handleImagePrune)
	rt.handle("POST /v1/blobs", a.handleBlobPut)
	rt.handle("GET /v1/blobs/{sum}", a.handleBlobGet)
}

// handleImageCreate resolves an image, streaming build logs as NDJSON; the last line is the
// image or an error.
func (a *API) handleImageCreate(w http.ResponseWriter, r *http.Request) {
	var req imagebuild.Request
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Kind == imagebuild.KindFromID {
		if err := a.checkImage(r, req.ImageID); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	if req.Kind == image.KindOCIArchive {
		if err := a.checkBlob(r, req.Blob); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	for i, st := range req.Steps {
		if st.Blob != "" {
			if err := a.checkBlob(r, st.Blob); err != nil {
				httpapi.WriteError(w, fmt.Errorf("step %d (%s): %w", i+1, st.Type, err))
				return
			}
		}
	}
	if err := a.builds.Check(r.Context(), req); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if principal(r).Kind == auth.Container {
		// A function's code may use images that exist, never build one.
		im, ok, err := a.builds.Cached(r.Context(), principal(r).WorkspaceID, req)
		if err == nil && !ok {
			err = errdefs.WithKind(errdefs.ErrForbidden, "function containers may use images that are built already, not build new ones: build this image outside first (e.g. reference it in the function's decorator)")
		}
		if err == nil {
			err = a.store.GrantImage(r.Context(), principal(r).WorkspaceID, im.ID)
		}
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		sendLast(httpapi.StartNDJSON(w), map[string]any{"image": im})
		return
	}
	n := httpapi.StartNDJSON(w)
	im, err := a.builds.Build(r.Context(), principal(r).WorkspaceID, req, &httpapi.LogWriter{N: n})
	if err == nil {
		// Bases are shared and built steps cached per workspace; this workspace may now use
		// this image.
		err = a.store.GrantImage(r.Context(), principal(r).WorkspaceID, im.ID)
	}
	if err != nil {
		sendLast(n, httpapi.ErrorLine(err))
		return
	}
	sendLast(n, map[string]any{"image": im})
}

// sendLast writes a stream's last line. Its error is dropped on purpose: a client that went
// away has nothing left to read, and what the stream reported is recorded already.
func sendLast(n *httpapi.NDJSON, v any) { _ = n.Send(v) }

// handleImageDelete forgets an image; its layers go at the next prune unless another image
// shares them. An image that a running sandbox or an active function uses stays.
func (a *API) handleImageDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ws := principal(r).WorkspaceID
	if err := a.checkImage(r, id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	live, err := a.store.ListSandboxes(r.Context(), store.SandboxFilter{WorkspaceID: ws, Functions: true})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, sb := range live {
		if sb.ImageID == id {
			httpapi.WriteError(w, errdefs.Conflict("image %s is used by running sandbox %s; terminate it first", id, sb.ID))
			return
		}
	}
	fns, err := a.store.ListFunctions(r.Context(), "", true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, fn := range fns {
		if fn.Spec.ImageID == id && fn.WorkspaceID == ws {
			httpapi.WriteError(w, errdefs.Conflict("image %s is used by function %s (%s); stop its app first (gust app stop)", id, fn.Name, fn.ID))
			return
		}
	}
	// The record goes with its last workspace: others that resolved the same image keep it.
	othersUse, err := a.store.ReleaseImage(r.Context(), ws, id)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if othersUse {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := a.store.DeleteImage(r.Context(), id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleImagePrune (DELETE /v1/images) removes layers that no image uses: image GC.
func (a *API) handleImagePrune(w http.ResponseWriter, r *http.Request) {
	// The grace protects what builds in progress uploaded; ten years is the most it can be.
	secs, err := querySeconds(r, "older_than", (10 * time.Minute).Seconds(), 10*365*24*3600)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	grace := wire.Seconds(secs).D()
	ims, err := a.store.ListImages(r.Context(), "")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	inUse := map[string]bool{}
	for _, im := range ims {
		for _, l := range im.Layers {
			inUse[l] = true
		}
	}
	// Functions that may still start containers need their code: its blob and unpacked layer.
	fns, err := a.store.ListFunctions(r.Context(), "", true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, fn := range fns {
		inUse[a.layers.BlobPath(fn.Code.Blob)] = true
		inUse[a.layers.LayerPath("code-"+fn.Code.Blob)] = true
	}
	// Volumes' blobs and the workers' materialized versions are not image layers.
	inUse[a.layers.LayerPath("volumes")] = true
	res, err := a.layers.Prune(inUse, grace)
	if err == nil {
		err = a.store.ForgetBlobs(r.Context(), func(sum string) bool {
			if id, ok := store.SnapshotOfGrant(sum); ok {
				_, err := a.store.GetImage(r.Context(), id)
				return !errors.Is(err, errdefs.ErrNotFound)
			}
			return a.layers.HasBlob(sum)
		})
	}
	if err == nil {
		err = a.pruneVolumeBlobs(r.Context(), grace, &res)
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
}

// handleBlobPut stores local files (a tar) for an add_local step or a function's code.
func (a *API) handleBlobPut(w http.ResponseWriter, r *http.Request) {
	sum, err := a.layers.PutBlob(r.Body)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// The blob store is shared (by content); what a workspace uploaded is its own to use,
	// and counts against its image_disk_mib quota.
	ws := principal(r).WorkspaceID
	var size int64
	if fi, err := os.Stat(a.layers.BlobPath(sum)); err == nil {
		size = fi.Size()
	}
	w2, err := a.store.GetWorkspace(r.Context(), ws)
	if err == nil {
		err = a.store.GrantBlob(r.Context(), ws, sum, size, int64(w2.Quotas.ImageDiskMiB)<<20)
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]string{"blob": sum})
}

// handleBlobGet says whether a blob is stored, so clients upload each set of files once.
func (a *API) handleBlobGet(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sum")
	if err := a.checkBlob(r, sum); err != nil || !a.layers.HasBlob(sum) {
		httpapi.WriteError(w, errdefs.NotFound("blob %s is not stored", sum))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"blob": sum})
}

func (a *API) handleImageGet(w http.ResponseWriter, r *http.Request) {
	if err := a.checkImage(r, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	im, err := a.store.GetImage(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, im)
}

func (a *API) handleImageList(w http.ResponseWriter, r *http.Request) {
	ims, err := a.store.ListImages(r.Context(), principal(r).WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"images": ims, "disk_bytes": a.layers.DiskUsage()})
}

// checkBlob returns an error unless r's workspace uploaded the blob: another's is not found.
func (a *API) checkBlob(r *http.Request, sum string) error {
	ok, err := a.store.HasBlobGrant(r.Context(), principal(r).WorkspaceID, sum)
	if err != nil {
		return err
	}
	if !ok {
		return errdefs.NotFound("blob %s was not uploaded by this workspace; POST it to /v1/blobs first", sum)
	}
	return nil
}

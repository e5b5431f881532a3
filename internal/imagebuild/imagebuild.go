// Package imagebuild makes the images that sandboxes and functions run from: the base Debian
// image (debootstrap), the empty one, images pulled from a registry or read from an OCI
// archive, and images built by steps over another (apt_install, pip_install, run_commands,
// env, workdir, add_local ...). Each step that runs commands is a cached layer, made in a build
// container that the fleet places like any sandbox. Imported by internal/api and
// internal/server.
package imagebuild

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// Store is what builds record: images, and the app that holds build containers.
type Store interface {
	GetImage(ctx context.Context, id string) (image.Image, error)
	ImageByHash(ctx context.Context, hash string) (image.Image, bool, error)
	PutImage(ctx context.Context, im image.Image) error
	LookupApp(ctx context.Context, ws, name string, create bool) (store.App, error)
}

var _ Store = (*store.Store)(nil)

// Fleet runs build containers.
type Fleet interface {
	Capacity() (cpu float64, memMiB int)
	Create(ctx context.Context, sb sandbox.Sandbox, fn *workerproto.FunctionRun, placed func(workerID string)) (sandbox.Sandbox, error)
	Terminate(ctx context.Context, id string, status sandbox.Status, reason string) (sandbox.Sandbox, error)
	Client(sb sandbox.Sandbox) (*workerproto.WorkerClient, error)
}

// Builder builds images.
type Builder struct {
	store  Store
	fleet  Fleet
	layers *image.Builder
	log    *log.Logger
}

// New returns a builder that keeps layers in layers.
func New(st Store, fleet Fleet, layers *image.Builder, logger *log.Logger) *Builder {
	if logger == nil {
		logger = log.Default()
	}
	return &Builder{store: st, fleet: fleet, layers: layers, log: logger}
}

type billedToKey struct{}

// billTo returns a context whose builds the usage ledger bills to workspace ws (the one
// that asked), rather than to the system workspace that runs them.
func billTo(ctx context.Context, ws string) context.Context {
	return context.WithValue(ctx, billedToKey{}, ws)
}

func billedTo(ctx context.Context) string {
	ws, _ := ctx.Value(billedToKey{}).(string)
	return ws
}

// Kind "from_id": steps over an existing image.
const KindFromID = "from_id"

// Request is an image a client asks for: a base, and steps over it.
type Request struct {
	Kind          string       `json:"kind"`
	PythonVersion string       `json:"python_version"`
	ImageID       string       `json:"image_id"` // kind from_id
	Ref           string       `json:"ref"`      // kind registry
	Blob          string       `json:"blob"`     // kind oci_archive: an uploaded archive
	Steps         []image.Step `json:"steps"`
	ForceBuild    bool         `json:"force_build"`
}

// Check refuses a request that cannot build, before anything starts.
func (b *Builder) Check(ctx context.Context, req Request) error {
	switch req.Kind {
	case image.KindDebianSlim, image.KindScratch:
	case KindFromID:
		if _, err := b.store.GetImage(ctx, req.ImageID); err != nil {
			return err
		}
	case image.KindRegistry:
		if req.Ref == "" {
			return errdefs.Invalid("kind registry needs ref, e.g. \"127.0.0.1:5000/team/app:v1\"")
		}
	case image.KindOCIArchive:
		if !b.layers.HasBlob(req.Blob) {
			return errdefs.NotFound("archive %q was not uploaded; POST it to /v1/blobs first", req.Blob)
		}
	default:
		return errdefs.Invalid("image kind %q is not supported; use debian_slim, scratch, from_id, registry or oci_archive", req.Kind)
	}
	if err := image.CheckPythonVersion(req.PythonVersion); err != nil {
		return err
	}
	if err := image.ValidateSteps(req.Steps); err != nil {
		return err
	}
	for i, st := range req.Steps {
		if st.Type == "add_local" && !b.layers.HasBlob(st.Blob) {
			return errdefs.NotFound("step %d (add_local): blob %s was not uploaded; POST it to /v1/blobs first", i+1, st.Blob)
		}
	}
	return nil
}

// Build resolves a checked request of workspace ws to an image, writing build logs to logs.
// Built steps are cached per workspace (image.StepHash) and their build containers billed to
// ws; bases are shared.
func (b *Builder) Build(ctx context.Context, ws string, req Request, logs io.Writer) (image.Image, error) {
	ctx = billTo(ctx, ws)
	var im image.Image
	var err error
	switch req.Kind {
	case KindFromID:
		im, err = b.store.GetImage(ctx, req.ImageID)
	case image.KindDebianSlim:
		im, err = b.baseImage(ctx, req.PythonVersion, logs)
	case image.KindScratch:
		im, err = b.scratchImage(ctx)
	case image.KindRegistry:
		im, err = b.ociImage(ctx, req.Kind)(b.layers.FromRegistry(ctx, req.Ref, logs))
	case image.KindOCIArchive:
		im, err = b.ociImage(ctx, req.Kind)(b.layers.FromOCIArchive(req.Blob, logs))
	}
	if err == nil && len(req.Steps) > 0 {
		im, err = b.buildSteps(ctx, ws, im, req.Steps, req.ForceBuild, logs)
	}
	return im, err
}

// Cached returns the image a checked request of workspace ws resolves to when it is built
// already (by ws: built steps are cached per workspace), without building or pulling
// anything; ok is false otherwise (and always for registry and archive images, whose content
// is known only once read). Function containers may only resolve images this way.
func (b *Builder) Cached(ctx context.Context, ws string, req Request) (im image.Image, ok bool, err error) {
	var hash string
	switch req.Kind {
	case KindFromID:
		base, err := b.store.GetImage(ctx, req.ImageID)
		if err != nil {
			return image.Image{}, false, err
		}
		hash = base.Hash
	case image.KindDebianSlim:
		hash = image.BaseHash(req.PythonVersion)
	case image.KindScratch:
		hash = "scratch"
	default:
		return image.Image{}, false, nil
	}
	for _, st := range req.Steps {
		hash = image.StepHash(ws, hash, st)
	}
	im, ok, err = b.store.ImageByHash(ctx, hash)
	if err != nil || !ok || !layersExist(im.Layers) {
		return image.Image{}, false, err
	}
	return im, true, nil
}

// ociImage records an image pulled from a registry or read from an archive.
func (b *Builder) ociImage(ctx context.Context, kind string) func(image.OCIImage, error) (image.Image, error) {
	return func(oi image.OCIImage, err error) (image.Image, error) {
		if err != nil {
			return image.Image{}, err
		}
		hash := "oci:" + oi.Digest
		hex := strings.TrimPrefix(oi.Digest, "sha256:")
		im := image.Image{ID: "im-" + hex[:24], Kind: kind, Hash: hash, Layers: oi.Layers, Env: oi.Env,
			Workdir: oi.Workdir, SizeBytes: oi.SizeBytes, CreatedAt: time.Now().UTC()}
		return im, b.store.PutImage(ctx, im)
	}
}

// scratchImage is the empty image of `FROM scratch`.
func (b *Builder) scratchImage(ctx context.Context) (image.Image, error) {
	dir, err := b.layers.Scratch()
	if err != nil {
		return image.Image{}, err
	}
	im := image.Image{ID: "im-scratch", Kind: image.KindScratch, Hash: "scratch", Layers: []string{dir}, CreatedAt: time.Now().UTC()}
	return im, b.store.PutImage(ctx, im)
}

// baseImage returns Image.debian_slim(python_version=...), building it with debootstrap the
// first time.
func (b *Builder) baseImage(ctx context.Context, pythonVersion string, logs io.Writer) (image.Image, error) {
	hash := image.BaseHash(pythonVersion)
	id := "im-" + hash[:24]
	im, ok, err := b.store.ImageByHash(ctx, hash)
	if err != nil {
		return image.Image{}, fmt.Errorf("looking up the base image: %w", err)
	}
	if ok && layersExist(im.Layers) {
		return im, nil
	}
	start := time.Now()
	cachedBefore := true
	if _, err := os.Stat(b.layers.LayerPath(hash)); err != nil {
		cachedBefore = false
		logf(logs, "Building image %s\n", id)
	}
	dir, err := b.layers.EnsureBase(ctx, pythonVersion, logs)
	if err != nil {
		return image.Image{}, fmt.Errorf("building image %s: %w", id, err)
	}
	if !cachedBefore {
		logf(logs, "Built image %s in %.1f s\n", id, time.Since(start).Seconds())
	}
	im = image.Image{ID: id, Kind: image.KindDebianSlim, Hash: hash, Layers: []string{dir}, SizeBytes: image.DirSize(dir), CreatedAt: time.Now().UTC()}
	return im, b.store.PutImage(ctx, im)
}

func layersExist(layers []string) bool {
	for _, l := range layers {
		if _, err := os.Stat(l); err != nil {
			return false
		}
	}
	return true
}

// logf writes to a build's log. A write fails only when the client went away; the build goes
// on (its ctx says when to stop) and its image is recorded for the next request.
func logf(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }

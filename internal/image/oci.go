package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gust-run/gust/internal/errdefs"
)

// OCI images (Image.from_registry, Image.from_oci_archive) become gust layers one for one:
// each OCI layer is unpacked once into a directory named by its diff ID, with its whiteouts in
// overlayfs form, so images that share layers share them on disk too.

// OCIImage is what an OCI image contributes to a gust image.
type OCIImage struct {
	Digest    string
	Layers    []string
	Env       map[string]string
	Workdir   string
	SizeBytes int64
}

// FromRegistry pulls ref. Registries on loopback and *.local are spoken to over plain HTTP,
// as go-containerregistry does by default.
func (b *Builder) FromRegistry(ctx context.Context, ref string, logs io.Writer) (OCIImage, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return OCIImage{}, errdefs.Invalid("image reference %q is not valid: %v", ref, err)
	}
	logf(logs, "Pulling %s\n", r.Name())
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return OCIImage{}, errdefs.Unavailable("pulling %s: %v", r.Name(), err)
	}
	return b.unpack(img, logs)
}

// FromOCIArchive reads an uploaded archive: an OCI image layout in a tar, or a `docker save`
// tarball.
func (b *Builder) FromOCIArchive(sum string, logs io.Writer) (OCIImage, error) {
	if !b.HasBlob(sum) {
		return OCIImage{}, errdefs.NotFound("archive %s was not uploaded; POST it to /v1/blobs first", sum)
	}
	tmp, err := os.MkdirTemp(b.Dir, "archive-")
	if err != nil {
		return OCIImage{}, fmt.Errorf("image: reading archive %s: %w", sum[:12], err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort: a prune removes a leftover
	f, err := os.Open(b.blobPath(sum))
	if err != nil {
		return OCIImage{}, fmt.Errorf("image: reading archive %s: %w", sum[:12], err)
	}
	err = extractTar(f, tmp, "/", false)
	_ = f.Close() // read only
	if err != nil {
		return OCIImage{}, errdefs.Invalid("the archive is not a tar: %v", err)
	}
	var img v1.Image
	if _, err := os.Stat(filepath.Join(tmp, "index.json")); err == nil {
		idx, err := layout.ImageIndexFromPath(tmp)
		if err != nil {
			return OCIImage{}, errdefs.Invalid("reading the OCI layout: %v", err)
		}
		m, err := idx.IndexManifest()
		if err != nil || len(m.Manifests) == 0 {
			return OCIImage{}, errdefs.Invalid("the OCI layout has no image")
		}
		if img, err = idx.Image(m.Manifests[0].Digest); err != nil {
			return OCIImage{}, errdefs.Invalid("the OCI layout's first manifest is not an image: %v", err)
		}
	} else if img, err = tarball.ImageFromPath(b.blobPath(sum), nil); err != nil {
		return OCIImage{}, errdefs.Invalid("the archive is neither an OCI image layout nor a docker-save tarball: %v", err)
	}
	logf(logs, "Reading image archive %s\n", sum[:12])
	return b.unpack(img, logs)
}

func (b *Builder) unpack(img v1.Image, logs io.Writer) (OCIImage, error) {
	digest, err := img.Digest()
	if err != nil {
		return OCIImage{}, errdefs.Invalid("image digest: %v", err)
	}
	out := OCIImage{Digest: digest.String(), Env: map[string]string{}}
	layers, err := img.Layers()
	if err != nil {
		return out, errdefs.Invalid("image layers: %v", err)
	}
	for i, l := range layers {
		diff, err := l.DiffID()
		if err != nil {
			return out, errdefs.Invalid("layer %d: %v", i+1, err)
		}
		dir := b.LayerPath("oci-" + diff.Hex)
		if _, err := os.Stat(dir); err != nil {
			logf(logs, "  layer %d/%d %s\n", i+1, len(layers), diff.Hex[:12])
			if err := unpackLayer(l, dir); err != nil {
				return out, fmt.Errorf("layer %d (%s): %w", i+1, diff.Hex[:12], err)
			}
		}
		out.Layers = append(out.Layers, dir)
		out.SizeBytes += DirSize(dir)
	}
	if len(out.Layers) == 0 {
		return out, errdefs.Invalid("the image has no layers")
	}
	cfg, err := img.ConfigFile()
	if err == nil && cfg != nil {
		for _, kv := range cfg.Config.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				out.Env[k] = v
			}
		}
		out.Workdir = cfg.Config.WorkingDir
	}
	return out, nil
}

// unpackLayer extracts one layer into dir through a temporary directory, so a failure leaves
// nothing half-made.
func unpackLayer(l v1.Layer, dir string) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }() // read only
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("removing an interrupted unpack: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := extractTar(rc, tmp, "/", true); err != nil {
		_ = os.RemoveAll(tmp) // best effort: the next unpack removes it first
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp) // best effort: the next unpack removes it first
		return err
	}
	return nil
}

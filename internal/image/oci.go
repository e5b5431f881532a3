package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	err = extractTar(f, tmp, "/", layoutArchive)
	_ = f.Close() // read only
	if err != nil {
		return OCIImage{}, fmt.Errorf("image: reading archive %s: %w", sum[:12], err)
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
	cfg, err := img.ConfigFile()
	if err != nil || cfg == nil {
		return out, errdefs.Invalid("the image's config cannot be read: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return out, errdefs.Invalid("image layers: %v", err)
	}
	if len(layers) == 0 {
		return out, errdefs.Invalid("the image has no layers")
	}
	// The config's diff IDs name the layers on disk; each is checked as its layer is unpacked.
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return out, errdefs.Invalid("the image's config lists %d layers (rootfs.diff_ids) but its manifest %d", len(cfg.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		diff := cfg.RootFS.DiffIDs[i]
		if diff.Algorithm != "sha256" || !blobRE.MatchString(diff.Hex) {
			return out, errdefs.Invalid("layer %d: diff ID %q is not a SHA-256", i+1, diff.String())
		}
		dir := b.LayerPath("oci-" + diff.Hex)
		if _, err := os.Stat(dir); err != nil {
			logf(logs, "  layer %d/%d %s\n", i+1, len(layers), diff.Hex[:12])
			if err := unpackLayer(l, diff.Hex, dir); err != nil {
				return out, fmt.Errorf("image: layer %d (%s): %w", i+1, diff.Hex[:12], err)
			}
		}
		out.Layers = append(out.Layers, dir)
		out.SizeBytes += DirSize(dir)
	}
	for _, kv := range cfg.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out.Env[k] = v
		}
	}
	out.Workdir = cfg.Config.WorkingDir
	return out, nil
}

// unpackLayer extracts one layer into dir, which is named by the diff ID that the image's
// config claims for it. The diff ID is checked against the content as it is unpacked, so that
// an image cannot plant other content under a popular layer's ID. The layer is made in a
// directory of its own and renamed into place once checked: a failure leaves nothing, and two
// pulls of one layer at once both succeed with one directory.
func unpackLayer(l v1.Layer, diffHex, dir string) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return fmt.Errorf("reading the layer: %w", err)
	}
	defer func() { _ = rc.Close() }() // read only
	tmp, err := layerTemp(dir)
	if err != nil {
		return fmt.Errorf("unpacking the layer: %w", err)
	}
	// Renamed away on success; otherwise best effort, and a prune removes a leftover.
	defer func() { _ = os.RemoveAll(tmp) }()
	h := sha256.New()
	if err := extractTar(io.TeeReader(rc, h), tmp, "/", imageLayer); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffHex {
		return errdefs.Invalid("the layer's content has diff ID sha256:%s, but the image's config says sha256:%s: the image is corrupt or forged; rebuild or re-push it", got, diffHex)
	}
	return placeLayer(tmp, dir)
}

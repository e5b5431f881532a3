package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gust-run/gust/internal/errdefs"
)

// ociArchive makes an OCI image layout with the given layers (uncompressed tars; the layout
// holds them gzipped), its config changed by fix if set, as a tar for FromOCIArchive.
func ociArchive(t *testing.T, fix func(*v1.ConfigFile), layers ...[]byte) []byte {
	t.Helper()
	img := testImage(t, fix, layers...)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return tarDir(t, dir)
}

// testImage makes an image of the given layers (uncompressed tars), its config changed by fix
// if set.
func testImage(t *testing.T, fix func(*v1.ConfigFile), layers ...[]byte) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, data := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	if fix != nil {
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cfg = cfg.DeepCopy()
		fix(cfg)
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// tarDir makes a tar of the directories and regular files under dir.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func putBlob(t *testing.T, b *Builder, data []byte) string {
	t.Helper()
	sum, err := b.PutBlob(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// dockerSave makes a `docker save` tarball of the image with the given layers, its config
// changed by fix if set.
func dockerSave(t *testing.T, fix func(*v1.ConfigFile), layers ...[]byte) []byte {
	t.Helper()
	img := testImage(t, fix, layers...)
	var buf bytes.Buffer
	if err := tarball.Write(name.MustParseReference("gust.test/app:v1"), img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pullFuncs are the ways an OCI image reaches the builder.
var pullFuncs = []struct {
	name string
	pull func(t *testing.T, b *Builder, fix func(*v1.ConfigFile), layers ...[]byte) (OCIImage, error)
}{
	{"registry", func(t *testing.T, b *Builder, fix func(*v1.ConfigFile), layers ...[]byte) (OCIImage, error) {
		reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(reg.Close)
		ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://") + "/team/app:v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, testImage(t, fix, layers...)); err != nil {
			t.Fatal(err)
		}
		return b.FromRegistry(context.Background(), ref.String(), io.Discard)
	}},
	{"oci layout", func(t *testing.T, b *Builder, fix func(*v1.ConfigFile), layers ...[]byte) (OCIImage, error) {
		return b.FromOCIArchive(putBlob(t, b, ociArchive(t, fix, layers...)), io.Discard)
	}},
	{"docker save", func(t *testing.T, b *Builder, fix func(*v1.ConfigFile), layers ...[]byte) (OCIImage, error) {
		return b.FromOCIArchive(putBlob(t, b, dockerSave(t, fix, layers...)), io.Discard)
	}},
}

func TestOCILayerDiffIDIsChecked(t *testing.T) {
	good := tarBytes(t, reg("etc/base", 0o644, "the real base"))
	evil := tarBytes(t, reg("etc/base", 0o644, "poisoned"))
	goodDiff := sha256Hex(good)
	claim := func(cfg *v1.ConfigFile) { cfg.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: goodDiff} }
	for _, via := range pullFuncs {
		t.Run(via.name, func(t *testing.T) {
			b := newBuilder(t)
			// An image that claims the good layer's diff ID for other content is refused,
			// and caches nothing under either ID.
			if _, err := via.pull(t, b, claim, evil); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("want an invalid error for a diff ID that does not match, got %v", err)
			}
			checkNoLayers(t, b)

			// The honest image still works, with its own content.
			im, err := via.pull(t, b, nil, good)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{b.LayerPath("oci-" + goodDiff)}; !slices.Equal(im.Layers, want) {
				t.Fatalf("layers %v, want %v", im.Layers, want)
			}
			hasFile("etc/base", "the real base")(t, "", im.Layers[0])
		})
	}
}

func TestOCILayerConcurrentPulls(t *testing.T) {
	var ents []ent
	for i := range 300 {
		ents = append(ents, reg(fmt.Sprintf("d/f%03d", i), 0o644, "x"))
	}
	b := newBuilder(t)
	sum := putBlob(t, b, ociArchive(t, nil, tarBytes(t, ents...)))
	const n = 8
	var wg sync.WaitGroup
	results := make([]OCIImage, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = b.FromOCIArchive(sum, io.Discard) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		if !slices.Equal(results[i].Layers, results[0].Layers) {
			t.Fatalf("pull %d: layers %v, want %v", i, results[i].Layers, results[0].Layers)
		}
	}
	entries, err := os.ReadDir(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != "blobs" {
			names = append(names, e.Name())
		}
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], "oci-") {
		t.Fatalf("layer directory holds %v, want one oci- layer", names)
	}
	files, err := os.ReadDir(filepath.Join(b.Dir, names[0], "d"))
	if err != nil || len(files) != len(ents) {
		t.Fatalf("the layer holds %d files (%v), want %d", len(files), err, len(ents))
	}
}

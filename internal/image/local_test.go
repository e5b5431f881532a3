package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

func tarOf(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := []byte("data")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractLayer(t *testing.T) {
	b := newBuilder(t)
	sum, err := b.PutBlob(bytes.NewReader(tarOf(t,
		tar.Header{Name: "dir", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "dir/file", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "../../escape", Typeflag: tar.TypeReg, Mode: 0o644},
	)))
	if err != nil {
		t.Fatal(err)
	}
	dir, _, err := b.ExtractLayer(sum, "/app", "h1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "app/dir/file")); err != nil {
		t.Fatal(err)
	}
	// ".." is clamped to the remote directory, never above it.
	if _, err := os.Stat(filepath.Join(dir, "app/escape")); err != nil {
		t.Fatalf("clamped entry missing: %v", err)
	}
}

func TestExtractLayerRefusesWritingThroughSymlinks(t *testing.T) {
	outside := t.TempDir()
	b := newBuilder(t)
	sum, err := b.PutBlob(bytes.NewReader(tarOf(t,
		tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: outside},
		tar.Header{Name: "evil/pwned", Typeflag: tar.TypeReg, Mode: 0o644},
	)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ExtractLayer(sum, "/", "h2"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("want an invalid error, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatal("a tar entry was written through a symlink outside the layer")
	}
	if _, err := os.Stat(b.LayerPath("h2")); err == nil {
		t.Fatal("a failed extraction left a layer behind")
	}
}

func newBuilder(t *testing.T) *Builder {
	t.Helper()
	b, err := NewBuilder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A worker reports where it saved a snapshot; only a snapshot directory in the layer
// directory may become a layer that other sandboxes mount.
func TestCheckSnapshotLayer(t *testing.T) {
	b, err := NewBuilder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{filepath.Join(b.Dir, "snap-abc123"), true},
		{"/", false},
		{"/etc", false},
		{filepath.Join(b.Dir, "snap-abc", "..", "..", "etc"), false},
		{filepath.Join(b.Dir, "other-image-layer"), false},
		{filepath.Join(b.Dir, "snap-x", "nested"), false},
		{"snap-relative", false},
		{b.Dir + "/snap-a/", false},
	} {
		if err := b.CheckSnapshotLayer(tc.path); (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}

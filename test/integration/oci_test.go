package integration

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ociLayer makes a layer from name → content (a directory when content is "/").
func ociLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if content == "/" {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755})
			continue
		}
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
		tw.Write([]byte(content))
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testOCIImage(t *testing.T) v1.Image {
	img, err := mutate.AppendLayers(empty.Image,
		ociLayer(t, map[string]string{"etc/": "/", "etc/greeting": "hello", "data/": "/", "data/keep": "keep", "opq/dir/": "/", "opq/dir/old": "old"}),
		ociLayer(t, map[string]string{"etc/.wh.greeting": "", "opq/dir/.wh..wh..opq": "", "opq/dir/new": "new", "data/x": "x"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.Config.Env = []string{"FOO=bar"}
	cfg.Config.WorkingDir = "/data"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkOCISandbox starts a sandbox from the image and reads its files through gust-init (the
// image has no shell): whiteouts and opaque directories must have their overlayfs meaning.
func checkOCISandbox(t *testing.T, imageID string) {
	t.Helper()
	sb := createRaw(t, map[string]any{"image_id": imageID})
	for path, want := range map[string]string{"/data/x": "x", "/data/keep": "keep", "/opq/dir/new": "new"} {
		if code, body := raw(t, "GET", "/v1/sandboxes/"+sb+"/files?path="+path, nil); code != 200 || body != want {
			t.Fatalf("%s: %d %q, want %q", path, code, body, want)
		}
	}
	for _, gone := range []string{"/etc/greeting", "/opq/dir/old"} {
		if code, _ := raw(t, "GET", "/v1/sandboxes/"+sb+"/files?path="+gone, nil); code != 404 {
			t.Fatalf("%s should be deleted by the upper layer's whiteout, got %d", gone, code)
		}
	}
	var im struct {
		Env     map[string]string `json:"env"`
		Workdir string            `json:"workdir"`
	}
	if err := api("GET", "/v1/images/"+imageID, nil, &im); err != nil || im.Env["FOO"] != "bar" || im.Workdir != "/data" {
		t.Fatalf("image config not carried over: %+v %v", im, err)
	}
}

func TestImageFromRegistry(t *testing.T) {
	needGust(t)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref := strings.TrimPrefix(reg.URL, "http://") + "/team/app:v1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img := testOCIImage(t)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	id, logs, errMsg := buildImage(t, map[string]any{"kind": "registry", "ref": ref})
	if errMsg != "" || id == "" {
		t.Fatalf("pull: %s %v", errMsg, logs)
	}
	checkOCISandbox(t, id)

	// The same image as an OCI archive gives the same gust image.
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		hdr, _ := tar.FileInfoHeader(fi, "")
		hdr.Name = rel
		tw.WriteHeader(hdr)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(path)
			tw.Write(b)
		}
		return nil
	})
	tw.Close()
	code, body := raw(t, "POST", "/v1/blobs", buf.Bytes())
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	sum := body[strings.Index(body, `"blob":"`)+8:]
	sum = sum[:64]
	id2, _, errMsg := buildImage(t, map[string]any{"kind": "oci_archive", "blob": sum})
	if errMsg != "" || id2 != id {
		t.Fatalf("archive: id %s (want %s) %s", id2, id, errMsg)
	}

	// A missing image is a clear error, not a hang.
	_, _, errMsg = buildImage(t, map[string]any{"kind": "registry", "ref": strings.TrimPrefix(reg.URL, "http://") + "/team/nope:v1"})
	if errMsg == "" {
		t.Fatal("pulling a missing image succeeded")
	}
}

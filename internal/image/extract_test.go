package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/errdefs"
)

// ent is one tar entry of a test archive.
type ent struct {
	hdr  tar.Header
	body string
}

func reg(name string, mode int64, body string) ent {
	return ent{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, body}
}
func dirEnt(name string, mode int64) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}
func sym(name, target string) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}
func hard(name, target string) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}
func node(name string, typ byte) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: typ, Mode: 0o666, Devmajor: 1, Devminor: 3}}
}

func tarBytes(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// extractModes are the two ways a user's tar becomes a layer: add_local (and function code),
// and an OCI image's layer (registries and archives share the code that unpacks it).
var extractModes = []struct {
	name    string
	extract func(t *testing.T, b *Builder, data []byte) (string, error)
}{
	{"add_local", func(t *testing.T, b *Builder, data []byte) (string, error) {
		sum, err := b.PutBlob(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		dir, _, err := b.ExtractLayer(sum, "/", "layer")
		return dir, err
	}},
	{"oci_layer", func(t *testing.T, b *Builder, data []byte) (string, error) {
		sum, err := b.PutBlob(bytes.NewReader(ociArchive(t, nil, data)))
		if err != nil {
			t.Fatal(err)
		}
		im, err := b.FromOCIArchive(sum, io.Discard)
		if err != nil {
			return "", err
		}
		return im.Layers[0], nil
	}},
}

// outsideDir makes a directory beside the layers that no extraction may touch.
func outsideDir(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	if err := os.Chmod(out, 0o750); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"secret": "secret", "victim": "orig"} {
		if err := os.WriteFile(filepath.Join(out, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkOutsideUntouched fails unless out is as outsideDir made it.
func checkOutsideUntouched(t *testing.T, out string) {
	t.Helper()
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("the outside directory's mode changed to %v", fi.Mode())
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("the outside directory has %d entries, want 2: %v", len(entries), entries)
	}
	for name, want := range map[string]string{"secret": "secret", "victim": "orig"} {
		p := filepath.Join(out, name)
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v, want %q", name, got, err, want)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Nlink != 1 || st.Mode&0o7777 != 0o600 {
			t.Errorf("%s: nlink %d, mode %o: the extraction reached it", name, st.Nlink, st.Mode&0o7777)
		}
	}
	if _, err := unix.Getxattr(out, "trusted.overlay.opaque", make([]byte, 8)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("the outside directory got an opaque xattr (%v)", err)
	}
}

// hostileCase is an archive that tries to reach out of the directory it unpacks into.
type hostileCase struct {
	name  string
	ents  func(out string) []ent // out: the directory it must not touch
	want  error                  // the kind of error, or nil: neutralised
	check func(t *testing.T, out, layer string)
}

func hostileCases() []hostileCase {
	up := strings.Repeat("../", 40)
	return []hostileCase{
		{"symlink then directory", func(out string) []ent {
			return []ent{sym("d", out), dirEnt("d", 0o777)}
		}, nil, isRealDir("d", 0o777)},
		{"relative symlink then directory", func(out string) []ent {
			return []ent{sym("d", up+out[1:]), dirEnt("d", 0o777)}
		}, nil, isRealDir("d", 0o777)},
		{"symlink then file beneath it", func(out string) []ent {
			return []ent{sym("evil", out), reg("evil/pwned", 0o644, "x")}
		}, errdefs.ErrInvalid, nil},
		{"symlink then file over it", func(out string) []ent {
			return []ent{sym("v", filepath.Join(out, "victim")), reg("v", 0o644, "evil")}
		}, nil, hasFile("v", "evil")},
		{"dot-dot entry", func(out string) []ent {
			return []ent{reg(up+out[1:]+"/dotdot", 0o644, "x")}
		}, nil, hasFile("@OUT@/dotdot", "x")},
		{"absolute entry", func(out string) []ent {
			return []ent{reg(out+"/abs", 0o644, "x")}
		}, nil, hasFile("@OUT@/abs", "x")},
		{"hard link to a file outside", func(out string) []ent {
			return []ent{hard("hl", filepath.Join(out, "secret"))}
		}, errdefs.ErrInvalid, nil},
		{"hard link climbing out", func(out string) []ent {
			return []ent{hard("hl", up+out[1:]+"/secret")}
		}, errdefs.ErrInvalid, nil},
		{"hard link through a symlink", func(out string) []ent {
			return []ent{sym("s", out), hard("hl", "s/secret")}
		}, errdefs.ErrInvalid, nil},
		{"character device", func(string) []ent { return []ent{node("dev/evil", tar.TypeChar)} }, errdefs.ErrInvalid, nil},
		{"block device", func(string) []ent { return []ent{node("dev/evil", tar.TypeBlock)} }, errdefs.ErrInvalid, nil},
		{"fifo", func(string) []ent { return []ent{node("dev/evil", tar.TypeFifo)} }, errdefs.ErrInvalid, nil},
		{"setuid and setgid files", func(string) []ent {
			return []ent{reg("suid", 0o4755, "x"), reg("sgid", 0o2755, "x"), reg("both", 0o6711, "x")}
		}, nil, func(t *testing.T, _, layer string) {
			for name, want := range map[string]os.FileMode{"suid": 0o755, "sgid": 0o755, "both": 0o711} {
				fi, err := os.Lstat(filepath.Join(layer, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != want {
					t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
				}
			}
		}},
		{"opaque whiteout through a symlink", func(out string) []ent {
			return []ent{sym("d", out), reg("d/.wh..wh..opq", 0o644, "")}
		}, errdefs.ErrInvalid, nil},
		{"whiteout through a symlink", func(out string) []ent {
			return []ent{sym("d", out), reg("d/.wh.secret", 0o644, "")}
		}, errdefs.ErrInvalid, nil},
	}
}

func TestExtractHostileArchives(t *testing.T) {
	for _, mode := range extractModes {
		for _, tt := range hostileCases() {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				out := outsideDir(t)
				b := newBuilder(t)
				layer, err := mode.extract(t, b, tarBytes(t, tt.ents(out)...))
				checkOutsideUntouched(t, out)
				if tt.want != nil {
					if !errors.Is(err, tt.want) {
						t.Fatalf("want a %v error, got %v", tt.want, err)
					}
					checkNoLayers(t, b)
					return
				}
				if err != nil {
					t.Fatalf("extraction failed: %v", err)
				}
				if tt.check != nil {
					tt.check(t, out, layer)
				}
			})
		}
	}
}

// isRealDir checks that name in the layer is a directory, not a link, with mode perm.
func isRealDir(name string, perm os.FileMode) func(t *testing.T, out, layer string) {
	return func(t *testing.T, _, layer string) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(layer, name))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != perm {
			t.Errorf("%s: %v, want a directory %v", name, fi.Mode(), perm)
		}
	}
}

// hasFile checks that name (with @OUT@ standing for the outside directory) is a regular file in
// the layer holding body.
func hasFile(name, body string) func(t *testing.T, out, layer string) {
	return func(t *testing.T, out, layer string) {
		t.Helper()
		p := filepath.Join(layer, strings.ReplaceAll(name, "@OUT@", out))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !fi.Mode().IsRegular() || string(got) != body {
			t.Errorf("%s: %v %q %v, want a file holding %q", name, fi.Mode(), got, err, body)
		}
	}
}

// checkNoLayers fails if b.Dir holds anything but uploaded blobs: a refused archive leaves no
// layer and no temporary directory behind.
func checkNoLayers(t *testing.T, b *Builder) {
	t.Helper()
	entries, err := os.ReadDir(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "blobs" {
			t.Errorf("a refused extraction left %s behind", e.Name())
		}
	}
}

func TestExtractNormalArchives(t *testing.T) {
	ents := []ent{
		dirEnt("etc", 0o755),
		reg("etc/conf", 0o644, "conf"),
		dirEnt("tmp", 0o1777),
		dirEnt("private", 0o700),
		dirEnt("shared", 0o2775), // setgid stays on a directory
		sym("etc/link", "conf"),
		sym("abs", "/etc/conf"),
		hard("etc/hard", "etc/conf"),
		reg("bin/tool", 0o755, "#!/bin/sh\n"),
		dirEnt("bin", 0o755),
		reg("etc/conf2", 0o640, "first"),
		reg("etc/conf2", 0o600, "second"), // a later entry replaces an earlier one
	}
	for _, mode := range extractModes {
		t.Run(mode.name, func(t *testing.T) {
			b := newBuilder(t)
			layer, err := mode.extract(t, b, tarBytes(t, ents...))
			if err != nil {
				t.Fatal(err)
			}
			hasFile("etc/conf", "conf")(t, "", layer)
			hasFile("etc/conf2", "second")(t, "", layer)
			hasFile("bin/tool", "#!/bin/sh\n")(t, "", layer)
			isRealDir("tmp", 0o777)(t, "", layer)
			isRealDir("private", 0o700)(t, "", layer)
			checkMode(t, filepath.Join(layer, "tmp"), os.ModeDir|os.ModeSticky|0o777)
			checkMode(t, filepath.Join(layer, "etc/conf2"), 0o600)
			checkMode(t, filepath.Join(layer, "shared"), os.ModeDir|os.ModeSetgid|0o775)
			for link, want := range map[string]string{"etc/link": "conf", "abs": "/etc/conf"} {
				if got, err := os.Readlink(filepath.Join(layer, link)); err != nil || got != want {
					t.Errorf("%s: %q %v, want a link to %q", link, got, err, want)
				}
			}
			a, errA := os.Stat(filepath.Join(layer, "etc/conf"))
			h, errH := os.Stat(filepath.Join(layer, "etc/hard"))
			if errA != nil || errH != nil || !os.SameFile(a, h) {
				t.Errorf("etc/hard is not a hard link of etc/conf (%v, %v)", errA, errH)
			}
		})
	}
}

func checkMode(t *testing.T, p string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
	}
}

func TestExtractWhiteoutsAndOwnership(t *testing.T) {
	b := newBuilder(t)
	own := reg("owned", 0o644, "x")
	own.hdr.Uid, own.hdr.Gid = 1234, 5678
	layer, err := extractModes[1].extract(t, b, tarBytes(t,
		dirEnt("gone", 0o755),
		reg("gone/.wh.file", 0o644, ""),
		reg("opq/.wh..wh..opq", 0o644, ""),
		own,
	))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(layer, "gone/file"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("gone/file is not an overlayfs whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	n, err := unix.Getxattr(filepath.Join(layer, "opq"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opq is not opaque: %q %v", buf[:n], err)
	}
	if err := unix.Lstat(filepath.Join(layer, "owned"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("owned: uid %d gid %d, want 1234 5678", st.Uid, st.Gid)
	}
	if _, err := os.Lstat(filepath.Join(layer, "gone/.wh.file")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the whiteout entry itself was extracted (%v)", err)
	}
}

// withLimits lowers the extraction limits for one test.
func withLimits(t *testing.T, bytes int64, entries int) {
	t.Helper()
	old := archiveLimits
	archiveLimits = extractLimits{Bytes: bytes, Entries: entries}
	t.Cleanup(func() { archiveLimits = old })
}

func TestExtractLimits(t *testing.T) {
	t.Run("gzip bomb", func(t *testing.T) {
		withLimits(t, 1<<20, 1000)
		b := newBuilder(t)
		archive := ociArchive(t, nil, tarBytes(t, reg("zeros", 0o644, string(make([]byte, 16<<20)))))
		if len(archive) > 256<<10 {
			t.Fatalf("the archive is %d bytes: not a bomb", len(archive))
		}
		sum, err := b.PutBlob(bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.FromOCIArchive(sum, io.Discard); !errors.Is(err, errdefs.ErrTooLarge) {
			t.Fatalf("want a too-large error, got %v", err)
		}
		checkNoLayers(t, b)
	})
	for _, mode := range extractModes {
		t.Run(mode.name+"/bytes", func(t *testing.T) {
			withLimits(t, 1<<20, 1000)
			b := newBuilder(t)
			big := tarBytes(t, reg("a", 0o644, strings.Repeat("x", 600<<10)), reg("b", 0o644, strings.Repeat("y", 600<<10)))
			if _, err := mode.extract(t, b, big); !errors.Is(err, errdefs.ErrTooLarge) {
				t.Fatalf("want a too-large error, got %v", err)
			}
			checkNoLayers(t, b)
		})
		t.Run(mode.name+"/entries", func(t *testing.T) {
			withLimits(t, 1<<30, 12)
			b := newBuilder(t)
			var many []ent
			for i := range 30 {
				many = append(many, reg(strings.Repeat("f", i+1), 0o644, ""))
			}
			if _, err := mode.extract(t, b, tarBytes(t, many...)); !errors.Is(err, errdefs.ErrTooLarge) {
				t.Fatalf("want a too-large error, got %v", err)
			}
			checkNoLayers(t, b)
		})
	}
}

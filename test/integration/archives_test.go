package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Malicious archives through the real API: add_local files (a tar uploaded as a blob and
// unpacked by the server), an OCI image archive (its gzip layers unpacked by the server) and
// function code (unpacked by the worker). Each is refused or neutralised, and the host paths
// they aim at stay as they were.

// tarEnt is one entry of a test archive.
type tarEnt struct {
	hdr  tar.Header
	body string
}

func tReg(name string, mode int64, body string) tarEnt {
	return tarEnt{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body))}, body}
}
func tDir(name string, mode int64) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}
func tSym(name, target string) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}
func tHard(name, target string) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}
func tChar(name string) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}
}

func makeTar(t *testing.T, ents ...tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
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

// zeros reads as n zero bytes.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// gzLayer is a gzip-compressed layer: its bytes and the SHA-256 of the tar inside (its diff
// ID).
type gzLayer struct {
	gz     []byte
	diffID string
}

// gzipLayer compresses a tar stream into a layer, hashing the stream as it goes: a stream of a
// gigabyte of zeros becomes about a megabyte, and never lies on disk or in memory whole.
func gzipLayer(t *testing.T, stream io.Reader) gzLayer {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(zw, h), stream); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gzLayer{gz: buf.Bytes(), diffID: "sha256:" + hex.EncodeToString(h.Sum(nil))}
}

// bombStream is a tar holding one file of size zero bytes.
func bombStream(size int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
		if err == nil {
			_, err = io.Copy(tw, &zeros{size})
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// ociArchiveOf is an OCI image layout, as a tar, of one image with these layers; diffIDs, if
// not nil, replace what the config claims the layers hold.
func ociArchiveOf(t *testing.T, layers []gzLayer, diffIDs []string) []byte {
	t.Helper()
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		blobs[d] = b
		return "sha256:" + d, len(b)
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	var layerDescs []desc
	var ids []string
	for _, l := range layers {
		d, n := put(l.gz)
		layerDescs = append(layerDescs, desc{"application/vnd.oci.image.layer.v1.tar+gzip", d, n})
		ids = append(ids, l.diffID)
	}
	if diffIDs != nil {
		ids = diffIDs
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	cd, cn := put(cfg)
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{"application/vnd.oci.image.config.v1+json", cd, cn}, "layers": layerDescs})
	md, mn := put(man)
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{{"application/vnd.oci.image.manifest.v1+json", md, mn}}})
	ents := []tarEnt{tReg("oci-layout", 0o644, `{"imageLayoutVersion":"1.0.0"}`), tReg("index.json", 0o644, string(index)),
		tDir("blobs/", 0o755), tDir("blobs/sha256/", 0o755)}
	for d, b := range blobs {
		ents = append(ents, tReg("blobs/sha256/"+d, 0o644, string(b)))
	}
	return makeTar(t, ents...)
}

// uploadBlob stores data with POST /v1/blobs and returns its name.
func uploadBlob(t *testing.T, data []byte) string {
	t.Helper()
	code, body := raw(t, "POST", "/v1/blobs", data)
	if code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	var out struct {
		Blob string `json:"blob"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.Blob == "" {
		t.Fatalf("upload answer %s: %v", body, err)
	}
	return out.Blob
}

// hostTarget is a directory on the host that archives aim at, with its state to compare.
type hostTarget struct {
	dir   string
	state string
}

func newHostTarget(t *testing.T) *hostTarget {
	t.Helper()
	dir, err := os.MkdirTemp("", "gust-tf-victim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"secret": "host secret", "victim": "orig"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := &hostTarget{dir: dir}
	h.state = pathState(t, dir)
	return h
}

// pathState describes dir and what is in it: names, modes, owners, link counts, contents.
func pathState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "%s %o %d:%d\n", dir, st.Mode, st.Uid, st.Gid)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "%s %o %d:%d nlink %d %q\n", e.Name(), st.Mode, st.Uid, st.Gid, st.Nlink, data)
	}
	return b.String()
}

func (h *hostTarget) check(t *testing.T, after string) {
	t.Helper()
	if got := pathState(t, h.dir); got != h.state {
		t.Fatalf("after %s the host's %s changed:\n%s\nwas:\n%s", after, h.dir, got, h.state)
	}
}

// TestEscapeMaliciousArchives sends hostile tars through add_local, an OCI archive image and
// function code, to a gust with --archive-limit 64 (MiB): links out, "../" and absolute
// names, device nodes and setuid files, a gzip layer expanding to 1 GiB, a layer whose diff
// ID is not what the image config claims. Each is refused (an error naming what was wrong) or
// neutralised (the entry lands inside the image, the bits are dropped), and the host
// directories they aim at, /etc included, are as they were.
func TestEscapeMaliciousArchives(t *testing.T) {
	needGust(t)
	dir := t.TempDir()
	addr := freePort()
	dataDir := filepath.Join(dir, "data")
	g := startGust(t, "http://"+addr, "up", "--addr", addr, "--data-dir", dataDir, "--image-cache", imageCache, "--no-config", "--no-install",
		"--sandbox-disk", "256", "--warm-pool", "0", "--archive-limit", "64")
	defer func() {
		stopDaemon(g)
		if err := checkNoLeftovers(dataDir); err != nil {
			t.Error(err)
		}
	}()
	base, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "archives", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	host := newHostTarget(t)
	var etcMode unix.Stat_t
	unix.Stat("/etc", &etcMode)
	defer func() {
		// Should /etc ever be reached, put its mode back before failing.
		var now unix.Stat_t
		if unix.Stat("/etc", &now); now.Mode != etcMode.Mode || now.Uid != etcMode.Uid || now.Gid != etcMode.Gid {
			os.Chmod("/etc", os.FileMode(etcMode.Mode&0o777))
			os.Chown("/etc", int(etcMode.Uid), int(etcMode.Gid))
			t.Errorf("/etc changed from mode %o %d:%d to %o %d:%d", etcMode.Mode, etcMode.Uid, etcMode.Gid, now.Mode, now.Uid, now.Gid)
		}
	}()
	up := strings.Repeat("../", 30)
	v := host.dir

	// inSandbox runs a shell command in a sandbox of image and returns its output.
	inSandbox := func(t *testing.T, image, cmd string) string {
		t.Helper()
		var sb struct {
			ID string `json:"sandbox_id"`
		}
		if err := api("POST", "/v1/sandboxes", map[string]any{"app_id": app.AppID, "image_id": image, "isolation": "runc"}, &sb); err != nil {
			t.Fatal(err)
		}
		createdMu.Lock()
		created = append(created, sb.ID)
		createdMu.Unlock()
		defer api("POST", "/v1/sandboxes/"+sb.ID+"/terminate", nil, nil)
		out, errOut, code := execRaw(t, sb.ID, "sh", "-c", cmd)
		if code != 0 {
			t.Fatalf("%s in the sandbox: exit %d %s %s", cmd, code, out, errOut)
		}
		return out
	}

	t.Run("add_local", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			ents    []tarEnt
			refused string // a word of the error, or "" when the build succeeds
			inside  string // then: a command in a sandbox of the image, and
			want    string // its output
		}{
			{"symlink to /etc then directory 0777", []tarEnt{tSym("d", "/etc"), tDir("d", 0o777)}, "", "stat -c %F:%a /x/d", "directory:777\n"},
			{"symlink then directory 0777", []tarEnt{tSym("d", v), tDir("d", 0o777)}, "", "stat -c %F:%a /x/d", "directory:777\n"},
			{"symlink then file beneath it", []tarEnt{tSym("e", v), tReg("e/pwned", 0o644, "x")}, "link", "", ""},
			{"symlink then file over it", []tarEnt{tSym("f", v+"/victim"), tReg("f", 0o644, "evil")}, "", "cat /x/f", "evil"},
			{"dot-dot entry", []tarEnt{tReg(up+v[1:]+"/dotdot", 0o644, "x")}, "", "cat /x" + v + "/dotdot", "x"},
			{"absolute entry", []tarEnt{tReg(v+"/abs", 0o644, "x")}, "", "cat /x" + v + "/abs", "x"},
			{"hard link out", []tarEnt{tHard("hl", v+"/secret")}, "link", "", ""},
			{"hard link climbing out", []tarEnt{tHard("hl", up+v[1:]+"/secret")}, "link", "", ""},
			{"device node", []tarEnt{tChar("mem")}, "device", "", ""},
			{"setuid and setgid files", []tarEnt{tReg("suid", 0o4755, "x"), tReg("sgid", 0o2711, "x")}, "", "stat -c %a /x/suid /x/sgid", "755\n711\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				blob := uploadBlob(t, makeTar(t, tc.ents...))
				id, _, errMsg := buildImage(t, map[string]any{"kind": "from_id", "image_id": base,
					"steps": []map[string]any{{"type": "add_local", "blob": blob, "remote": "/x"}}})
				host.check(t, tc.name)
				if tc.refused != "" {
					if id != "" || !strings.Contains(errMsg, tc.refused) {
						t.Fatalf("want a refusal naming %q, got image %q error %q", tc.refused, id, errMsg)
					}
					return
				}
				if id == "" {
					t.Fatalf("the build failed: %s", errMsg)
				}
				if out := inSandbox(t, id, tc.inside); out != tc.want {
					t.Fatalf("%s: %q, want %q", tc.inside, out, tc.want)
				}
				host.check(t, tc.name+" in a sandbox")
			})
		}
	})

	t.Run("oci_archive", func(t *testing.T) {
		plain := func(ents ...tarEnt) gzLayer { return gzipLayer(t, bytes.NewReader(makeTar(t, ents...))) }
		for _, tc := range []struct {
			name    string
			layers  []gzLayer
			diffIDs []string
			refused string
		}{
			{"symlink then directory 0777", []gzLayer{plain(tSym("d", v), tDir("d", 0o777))}, nil, ""},
			{"dot-dot and absolute entries", []gzLayer{plain(tReg(up+v[1:]+"/dotdot", 0o644, "x"), tReg(v+"/abs", 0o644, "x"))}, nil, ""},
			{"setuid file", []gzLayer{plain(tReg("suid", 0o4755, "x"))}, nil, ""},
			{"hard link out", []gzLayer{plain(tHard("hl", v+"/secret"))}, nil, "link"},
			{"device node", []gzLayer{plain(tChar("mem"))}, nil, "device"},
			{"gzip expanding to 1 GiB", []gzLayer{gzipLayer(t, bombStream(1<<30))}, nil, "64 MiB"},
			{"diff ID mismatch", []gzLayer{plain(tReg("a", 0o644, "the real content"))},
				[]string{"sha256:" + hex.EncodeToString(sha256.New().Sum(nil))}, "diff"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				blob := uploadBlob(t, ociArchiveOf(t, tc.layers, tc.diffIDs))
				start := time.Now()
				id, _, errMsg := buildImage(t, map[string]any{"kind": "oci_archive", "blob": blob})
				host.check(t, tc.name)
				if tc.refused != "" {
					if id != "" || !strings.Contains(errMsg, tc.refused) {
						t.Fatalf("want a refusal naming %q, got image %q error %q", tc.refused, id, errMsg)
					}
					t.Logf("refused in %v: %s", time.Since(start).Round(time.Millisecond), errMsg)
					return
				}
				if id == "" {
					t.Fatalf("the image failed: %s", errMsg)
				}
			})
		}
	})

	t.Run("function_code", func(t *testing.T) {
		mod := "def add(a, b):\n    return a + b\n"
		for _, tc := range []struct {
			name  string
			ents  []tarEnt
			works bool // the call still returns 3 (neutralised), else it fails
		}{
			{"__pycache__ and a directory through symlinks", []tarEnt{tSym("__pycache__", v), tSym("d", v), tDir("d", 0o777), tReg("fnmod.py", 0o644, mod)}, true},
			{"dot-dot and absolute entries", []tarEnt{tReg(up+v[1:]+"/dotdot", 0o644, "x"), tReg(v+"/abs", 0o644, "x"), tReg("fnmod.py", 0o644, mod)}, true},
			{"hard link out", []tarEnt{tHard("fnmod.py", v+"/secret")}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				blob := uploadBlob(t, makeTar(t, tc.ents...))
				var fa fnApp
				if err := api("POST", "/v1/apps/publish", map[string]any{"name": "archives-code", "mode": "ephemeral",
					"code":      map[string]string{"blob": blob, "module": "fnmod"},
					"functions": []map[string]any{{"name": "add", "image_id": base, "timeout": 30}}}, &fa); err != nil {
					t.Fatal(err)
				}
				defer api("POST", "/v1/apps/"+fa.AppID+"/stop", nil, nil)
				var head struct {
					CallID string `json:"call_id"`
				}
				if err := api("POST", "/v1/functions/"+fa.Functions["add"]+"/calls", map[string]any{"kind": "spawn",
					"inputs": []map[string]any{{"args": jsonArgs(1, 2), "format": "json"}}}, &head); err != nil {
					t.Fatal(err)
				}
				r := streamOf(t, head.CallID, 60)
				host.check(t, tc.name)
				if tc.works {
					if len(r.Outputs) != 1 || r.value(t, 0) != 3.0 {
						t.Fatalf("add(1, 2) from the neutralised code: %+v", r)
					}
					return
				}
				if len(r.Outputs) == 1 && r.Outputs[0]["status"] == "success" {
					t.Fatalf("code with a hard link out ran: %+v", r)
				}
				t.Logf("the call's outcome: %+v", r)
			})
		}
	})
}

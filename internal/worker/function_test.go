package worker

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/gust-run/gust/internal/workerproto"
)

// treeLayers is a layer store whose ExtractLayer lays out a code tree the test describes, the
// way the real one unpacks a user's code tar (symlinks included).
type treeLayers struct {
	fakeLayers
	build func(t *testing.T, dir string)
	t     *testing.T
}

func (l treeLayers) ExtractLayer(sum, remote, hash string) (string, int64, error) {
	dir := l.LayerPath(hash)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, err
	}
	l.build(l.t, dir)
	return dir, 0, nil
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestCompileCodeStaysInTree unpacks function code through the worker's real precompile step
// (the machine's python3 -m compileall, run as whoever runs the tests: root in CI). A tree
// whose links lead out of it must not get anything written through them; a plain tree still
// gets its bytecode.
func TestCompileCodeStaysInTree(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 on the host")
	}
	tests := []struct {
		name  string
		build func(t *testing.T, dir, outside string)
		// compiled is where bytecode is expected (relative to the code dir); "" for none.
		compiled string
	}{
		{"plain tree", func(t *testing.T, dir, outside string) {
			writeFile(t, filepath.Join(dir, "app.py"), "x = 1\n")
		}, "__pycache__"},
		{"__pycache__ links out", func(t *testing.T, dir, outside string) {
			writeFile(t, filepath.Join(dir, "app.py"), "x = 1\n")
			symlink(t, outside, filepath.Join(dir, "__pycache__"))
		}, ""},
		{"package links out", func(t *testing.T, dir, outside string) {
			writeFile(t, filepath.Join(dir, "app.py"), "x = 1\n")
			writeFile(t, filepath.Join(outside, "mod.py"), "y = 2\n")
			symlink(t, outside, filepath.Join(dir, "pkg"))
		}, ""},
		{"nested __pycache__ links out", func(t *testing.T, dir, outside string) {
			writeFile(t, filepath.Join(dir, "pkg", "__init__.py"), "")
			symlink(t, outside, filepath.Join(dir, "pkg", "__pycache__"))
		}, ""},
		{"module links to a host file", func(t *testing.T, dir, outside string) {
			// Compiled on the host, the host file's contents would land in the tree.
			writeFile(t, filepath.Join(outside, "secret.py"), "SECRET = 's3'\n")
			symlink(t, filepath.Join(outside, "secret.py"), filepath.Join(dir, "app.py"))
		}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outside := t.TempDir()
			var before []string
			w, _ := newTestWorker(t, newFakeRuntime(), Config{})
			w.compile = w.compilePython
			w.layers = treeLayers{fakeLayers: fakeLayers{dir: t.TempDir()}, t: t, build: func(t *testing.T, dir string) {
				tt.build(t, dir, outside)
				before = dirEntries(t, outside)
			}}
			fn := &workerproto.FunctionRun{CodeBlob: "blob" + string(rune('a'+i))}
			mounts, err := w.functionMounts(fn)
			if err != nil {
				t.Fatal(err)
			}
			if after := dirEntries(t, outside); len(after) != len(before) {
				t.Errorf("precompiling wrote outside the code tree: before %v, after %v", before, after)
			}
			code := mounts[1].Source
			pyc, err := filepath.Glob(filepath.Join(code, "*", "*.pyc"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.compiled != "" && len(pyc) == 0 {
				t.Errorf("a plain tree got no bytecode in %s: %v", tt.compiled, dirEntries(t, code))
			}
			if tt.compiled == "" && len(pyc) != 0 {
				t.Errorf("a tree with links out was compiled on the host: %v", pyc)
			}
		})
	}
}

// TestPlainTree checks what the worker accepts for host-side compiling: plain files and
// directories only.
func TestPlainTree(t *testing.T) {
	tests := []struct {
		name   string
		build  func(t *testing.T, dir string)
		wantOK bool
	}{
		{"files and directories", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "a", "b", "c.py"), "")
		}, true},
		{"symlink to a file inside", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "c.py"), "")
			symlink(t, "c.py", filepath.Join(dir, "d.py"))
		}, false},
		{"dangling symlink", func(t *testing.T, dir string) {
			symlink(t, "/nonexistent", filepath.Join(dir, "x.py"))
		}, false},
		{"fifo", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "x.py"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.build(t, dir)
			if err := plainTree(dir); (err == nil) != tt.wantOK {
				t.Errorf("plainTree = %v, want ok %v", err, tt.wantOK)
			}
		})
	}
}

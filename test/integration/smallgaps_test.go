package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPythonSmallGaps runs Modal programs that use the smaller features of issue 13 through
// `gust run` against this gust (sdk/python/tests/test_smallgaps.py): Image.uv_pip_install,
// run_function and build, refused Image constructors, Function/Cls.with_options,
// @modal.batched, python_version="3.13" (a Debian trixie base, built once per machine) and
// `import modal` under --modal-compat.
func TestPythonSmallGaps(t *testing.T) {
	needGust(t)
	dir := filepath.Join(repoRoot(), "sdk", "python")
	cmd := exec.Command("python3", "-m", "unittest", "-v", "tests.test_smallgaps")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+dir+string(os.PathListSeparator)+filepath.Join(dir, "tests"), "GUST_BIN="+gust.bin)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python small-gaps tests failed: %v", err)
	}
}

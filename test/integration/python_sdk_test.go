package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPythonSDK runs the Python SDK's integration tests against this gust.
func TestPythonSDK(t *testing.T) {
	needGust(t)
	dir := filepath.Join(repoRoot(), "sdk", "python")
	cmd := exec.Command("python3", "-m", "unittest", "discover", "-v", "-s", "tests", "-p", "test_sandbox*.py")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python SDK tests failed: %v", err)
	}
}

// TestPythonFunctions runs Modal programs through the Python SDK, python3, `gust run` and
// `gust deploy` against this gust (sdk/python/tests/test_functions.py).
func TestPythonFunctions(t *testing.T) {
	needGust(t)
	dir := filepath.Join(repoRoot(), "sdk", "python")
	cmd := exec.Command("python3", "-m", "unittest", "discover", "-v", "-s", "tests", "-p", "test_functions*.py")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+dir, "GUST_BIN="+gust.bin)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python function tests failed: %v", err)
	}
}

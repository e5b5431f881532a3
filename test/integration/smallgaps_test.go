package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	sdk "github.com/gust-run/gust/sdk/go"
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

// TestGoSDKWithOptions deploys a Python app and calls a variant of its function through the Go
// SDK's WithOptions: the variant runs in a container of its own with the options it asked for,
// and the deployed function itself is unchanged.
func TestGoSDKWithOptions(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(repoRoot(), "sdk", "python", "tests", "programs")
	deploy := exec.Command(gust.bin, "deploy", "smallgaps_options.py", "--name", "smallgaps-go")
	deploy.Dir = dir
	deploy.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
	if out, err := deploy.CombinedOutput(); err != nil {
		t.Fatalf("gust deploy: %v\n%s", err, out)
	}
	c, err := sdk.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	fn, err := c.FunctionFromName(ctx, "smallgaps-go", "resources")
	if err != nil {
		t.Fatal(err)
	}
	defer c.StopApp(context.Background(), fn.AppID)
	mem := 320
	v, err := fn.WithOptions(ctx, sdk.FunctionOptions{MemoryMiB: &mem, Env: map[string]string{"MODE": "go"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.ID == fn.ID || v.VariantOf != fn.ID {
		t.Fatalf("variant %s of %s (variant_of %q)", v.ID, fn.ID, v.VariantOf)
	}
	got, err := v.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base, err := fn.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, b := got.([]any), base.([]any)
	if len(g) != 3 || g[0] != "go" || g[1] != float64(320) || b[0] != "base" || b[1] != float64(256) || g[2] == b[2] {
		t.Fatalf("variant answered %v, the function %v", got, base)
	}
	// The variant is never what a lookup finds.
	again, err := c.FunctionFromName(ctx, "smallgaps-go", "resources")
	if err != nil || again.ID != fn.ID {
		t.Fatalf("lookup after with_options: %v, %v", again, err)
	}
}

package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/gust-run/gust/sdk/go"
)

// TestGoSDK drives sandboxes through the Go SDK against the real server.
func TestGoSDK(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := sdk.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	app, err := c.LookupApp(ctx, "go-sdk", true)
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.DebianSlim(ctx, sdk.ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, iso := range isolations {
		t.Run(iso, func(t *testing.T) {
			sb, err := c.CreateSandbox(ctx, sdk.SandboxOptions{App: app.ID, Image: img.ID, Isolation: iso, Tags: map[string]string{"sdk": "go"}})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Terminate(context.Background())

			stdout, stderr, code, err := sb.Run(ctx, sdk.ExecOptions{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 4"}})
			if err != nil || string(stdout) != "out\n" || string(stderr) != "err\n" || code != 4 {
				t.Fatalf("Run: %q %q %d %v", stdout, stderr, code, err)
			}
			var out bytes.Buffer
			p, err := sb.Exec(ctx, sdk.ExecOptions{Command: []string{"cat"}, Stdin: strings.NewReader("piped\n"), Stdout: &out})
			if err != nil {
				t.Fatal(err)
			}
			if code, err := p.Wait(ctx); err != nil || code != 0 || out.String() != "piped\n" {
				t.Fatalf("stdin round trip: %q %d %v", out.String(), code, err)
			}
			// A PTY: the process sees a terminal of the asked size.
			var tty bytes.Buffer
			p, err = sb.Exec(ctx, sdk.ExecOptions{Command: []string{"sh", "-c", "tty; stty size"}, PTY: true, Rows: 33, Cols: 101, Stdout: &tty})
			if err != nil {
				t.Fatal(err)
			}
			if code, err := p.Wait(ctx); err != nil || code != 0 || !strings.Contains(tty.String(), "/dev/pts/") || !strings.Contains(tty.String(), "33 101") {
				t.Fatalf("pty: %q %d %v", tty.String(), code, err)
			}
			if err := sb.WriteFile(ctx, "/tmp/go.txt", []byte("from go"), 0o600); err != nil {
				t.Fatal(err)
			}
			if b, err := sb.ReadFile(ctx, "/tmp/go.txt"); err != nil || string(b) != "from go" {
				t.Fatalf("ReadFile: %q %v", b, err)
			}
			if _, err := sb.ReadFile(ctx, "/nope"); !errors.Is(err, sdk.ErrNotFound) {
				t.Fatalf("missing file: want ErrNotFound, got %v", err)
			}
			list, err := c.ListSandboxes(ctx, sdk.ListOptions{AppID: app.ID, Tags: map[string]string{"sdk": "go"}})
			if err != nil || len(list) == 0 {
				t.Fatalf("ListSandboxes: %v %v", list, err)
			}
			if err := sb.Terminate(ctx); err != nil {
				t.Fatal(err)
			}
			if code, err := sb.Poll(ctx); err != nil || code == nil || *code != sdk.ExitTerminated {
				t.Fatalf("Poll after terminate: %v %v", code, err)
			}
			if _, _, _, err := sb.Run(ctx, sdk.ExecOptions{Command: []string{"true"}}); !errors.Is(err, sdk.ErrConflict) {
				t.Fatalf("exec after terminate: want ErrConflict, got %v", err)
			}
		})
	}
}

// TestCLI runs the gust binary's sandbox commands.
func TestCLI(t *testing.T) {
	needGust(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(gust.bin, args...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("sandbox", "create", "--app", "cli", "--tag", "via=cli")
	if err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	id := strings.TrimSpace(out)
	if !strings.HasPrefix(id, "sb-") {
		t.Fatalf("create printed %q, want a sandbox id", out)
	}
	defer run("sandbox", "rm", id)
	out, err = run("sandbox", "exec", id, "--", "sh", "-c", "echo via-cli; exit 3")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out, "via-cli") {
		t.Fatalf("exec: %v %q (want exit 3 and the output)", err, out)
	}
	out, err = run("sandbox", "ls")
	if err != nil || !strings.Contains(out, id) {
		t.Fatalf("ls: %v %s", err, out)
	}
	if out, err = run("sandbox", "rm", id); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	out, _ = run("sandbox", "exec", id, "--", "true")
	if !strings.Contains(out, "terminated") {
		t.Fatalf("exec in a removed sandbox should say it was terminated: %s", out)
	}
}

// TestGoSDKFunctions deploys a Python app with `gust deploy` and calls it from Go: the Go
// SDK's Function.from_name and Remote.
func TestGoSDKFunctions(t *testing.T) {
	needGust(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	prog := `import gust as modal
app = modal.App("go-sdk-fns")

@app.function()
def add(a, b=1):
    print("adding in python")
    return {"sum": a + b}

@app.function()
def fail():
    raise KeyError("nope")

@app.function()
def count(n):
    for i in range(n):
        yield i
`
	if err := os.WriteFile(filepath.Join(dir, "fns.py"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gust.bin, "deploy", "fns.py")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gust deploy: %v\n%s", err, out)
	}
	c, err := sdk.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if f, err := c.FunctionFromName(context.Background(), "go-sdk-fns", "add"); err == nil {
			c.StopApp(context.Background(), f.AppID)
		}
	}()
	add, err := c.FunctionFromName(ctx, "go-sdk-fns", "add")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	add.Stdout = &logs
	var out struct {
		Sum int `json:"sum"`
	}
	if err := add.RemoteWith(ctx, []any{40}, map[string]any{"b": 2}, &out); err != nil || out.Sum != 42 {
		t.Fatalf("add(40, b=2) from Go: %+v %v", out, err)
	}
	if !strings.Contains(logs.String(), "adding in python") {
		t.Fatalf("remote print not relayed to Go: %q", logs.String())
	}
	fail, err := c.FunctionFromName(ctx, "go-sdk-fns", "fail")
	if err != nil {
		t.Fatal(err)
	}
	_, err = fail.Remote(ctx)
	var re *sdk.RemoteError
	if !errors.As(err, &re) || re.Type != "KeyError" || !strings.Contains(re.Traceback, `raise KeyError("nope")`) {
		t.Fatalf("fail() from Go: %#v", err)
	}
	count, err := c.FunctionFromName(ctx, "go-sdk-fns", "count")
	if err != nil {
		t.Fatal(err)
	}
	var items []string
	for item, err := range count.RemoteGen(ctx, []any{3}, nil) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, string(item))
	}
	if strings.Join(items, ",") != "0,1,2" {
		t.Fatalf("count(3) items from Go: %v", items)
	}
	if _, err := c.FunctionFromName(ctx, "go-sdk-fns", "nope"); err == nil {
		t.Fatal("an unknown function was found")
	}
}

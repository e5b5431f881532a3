package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPythonCommand(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	tests := []struct {
		name    string
		environ []string
		want    string // PYTHONPATH
	}{
		{"no PYTHONPATH", []string{"HOME=/root", "GUST_TOKEN=t"}, "/sdk"},
		{"empty PYTHONPATH", []string{"PYTHONPATH=", "GUST_TOKEN=t"}, "/sdk"},
		{"PYTHONPATH", []string{"PYTHONPATH=/a:/b", "GUST_TOKEN=t"}, "/sdk:/a:/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, argv, env, err := pythonCommand("/sdk", []string{"run", "app.py::f", "--x", "1"}, tt.environ)
			if err != nil || !filepath.IsAbs(path) {
				t.Fatalf("pythonCommand: %q, %v", path, err)
			}
			if want := []string{"python3", "-c", pythonMain, "run", "app.py::f", "--x", "1"}; !reflect.DeepEqual(argv, want) {
				t.Errorf("argv = %q", argv)
			}
			var pp []string
			for _, kv := range env {
				if v, ok := strings.CutPrefix(kv, "PYTHONPATH="); ok {
					pp = append(pp, v)
				}
			}
			if !reflect.DeepEqual(pp, []string{tt.want}) || !contains(env, "GUST_TOKEN=t") {
				t.Errorf("env = %q, want PYTHONPATH=%s", env, tt.want)
			}
		})
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestPythonCommandWithoutPython(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, _, _, err := pythonCommand("/sdk", []string{"run", "app.py"}, nil)
	if err == nil || !strings.Contains(err.Error(), "python3 was not found") {
		t.Errorf("err = %v", err)
	}
}

// The program given to python3 runs gust._cli.main with the arguments and exits with its
// status; stdout and the environment pass through.
func TestPythonMain(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	sdk := t.TempDir()
	os.Mkdir(filepath.Join(sdk, "gust"), 0o755)
	os.WriteFile(filepath.Join(sdk, "gust", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(sdk, "gust", "_cli.py"), []byte(
		"import os\ndef main(argv):\n    print(repr(argv), os.environ.get('GUST_SERVER_URL'))\n    return 3\n"), 0o644)
	path, argv, env, err := pythonCommand(sdk, []string{"deploy", "app.py", "--name", "n"}, withEnv(os.Environ(), "GUST_SERVER_URL=http://x:1"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Env = env
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != "['deploy', 'app.py', '--name', 'n'] http://x:1" {
		t.Errorf("output %q", got)
	}
}

func TestPythonSDKDir(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	dir, err := pythonSDKDir()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dir, filepath.Join(cache, "gust", "python")+"/") {
		t.Errorf("dir = %s", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "gust", "__init__.py")); err != nil {
		t.Error(err)
	}
	// An unusable cache directory: the SDK goes under the temporary directory instead.
	file := filepath.Join(cache, "file")
	os.WriteFile(file, nil, 0o644)
	t.Setenv("XDG_CACHE_HOME", file)
	t.Setenv("TMPDIR", t.TempDir())
	dir, err = pythonSDKDir()
	if err != nil || !strings.HasPrefix(dir, os.TempDir()) {
		t.Errorf("fallback = %s, %v", dir, err)
	}
}

func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	ok := filepath.Join(base, "ok")
	if err := privateDir(ok); err != nil {
		t.Error(err)
	}
	if err := privateDir(ok); err != nil {
		t.Errorf("again: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if err := privateDir(open); err == nil {
		t.Error("a directory others may write to was accepted")
	}
	link := filepath.Join(base, "link")
	os.Symlink(ok, link)
	if err := privateDir(link); err == nil {
		t.Error("a symlink was accepted")
	}
}

func TestRunUsage(t *testing.T) {
	if err := runRun(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "needs a Python file") {
		t.Errorf("no args: %v", err)
	}
	if err := runRun(t.Context(), []string{"-h"}); err != exitCode(0) {
		t.Errorf("-h: %v", err)
	}
}

func TestDeployArgs(t *testing.T) {
	tests := []struct {
		args    []string
		want    []string
		wantErr string
	}{
		{args: []string{"app.py"}, want: []string{"deploy", "app.py"}},
		{args: []string{"app.py", "--name", "prod"}, want: []string{"deploy", "app.py", "--name", "prod"}},
		{args: []string{"--name=prod", "app.py"}, want: []string{"deploy", "app.py", "--name", "prod"}},
		{args: []string{"--modal-compat", "app.py"}, want: []string{"deploy", "--modal-compat", "app.py"}},
		{args: nil, wantErr: "needs one Python file"},
		{args: []string{"a.py", "b.py"}, wantErr: "needs one Python file"},
		{args: []string{"a.py", "--bogus"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := deployArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("deployArgs = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	pythonsdk "github.com/gust-run/gust/sdk/python"
)

func init() {
	register(&command{name: "run", summary: "run a Python app's local entrypoint or function (ephemeral app)", run: runRun})
}

const runUsage = `usage: gust run [--detach] [--modal-compat] FILE[::NAME] [ARGS...]

Runs a Python app as an ephemeral app: publishes FILE's functions, runs its local entrypoint
(or the function or entrypoint NAME) with ARGS, streams the functions' output, and stops the
app when it ends. It runs python3 with the gust Python SDK built into this binary, so nothing
needs installing; GUST_SERVER_URL and GUST_TOKEN (or the config file of ` + "`gust up`" + `) say
which server to use. --modal-compat makes ` + "`import modal`" + ` (and modal.exception, modal.queue
...) resolve to gust, here and in the app's containers ("modal_compat": true in the client config
does the same).`

func runRun(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(os.Stderr, runUsage)
		if len(args) == 0 {
			return errors.New("gust run needs a Python file, e.g. `gust run app.py` or `gust run app.py::main`")
		}
		return exitCode(0)
	}
	// Everything after FILE belongs to the entrypoint: pass it on untouched.
	return execPython(append([]string{"run"}, args...))
}

// pythonMain is the program python3 runs: the SDK's command line, given the arguments after -c.
const pythonMain = "import sys, gust._cli as c; sys.exit(c.main(sys.argv[1:]))"

// execPython replaces this process with python3 running the SDK's command line with args, so
// that stdin, stdout, stderr, signals (Ctrl-C reaches Python, which stops the app) and the exit
// code are Python's own.
func execPython(args []string) error {
	sdk, err := pythonSDKDir()
	if err != nil {
		return err
	}
	path, argv, env, err := pythonCommand(sdk, args, os.Environ())
	if err != nil {
		return err
	}
	if err := syscall.Exec(path, argv, env); err != nil {
		return fmt.Errorf("starting %s: %w", path, err)
	}
	return nil // not reached
}

// pythonCommand returns the program, argv and environment that run the SDK's command line with
// args, with the SDK in sdkDir first on PYTHONPATH.
func pythonCommand(sdkDir string, args, environ []string) (path string, argv, env []string, err error) {
	path, err = exec.LookPath("python3")
	if err != nil {
		return "", nil, nil, fmt.Errorf("python3 was not found on PATH: gust run and gust deploy run your app with it (install it, e.g. `apt-get install python3`; the gust SDK needs nothing else)")
	}
	argv = append([]string{"python3", "-c", pythonMain}, args...)
	env = make([]string, 0, len(environ)+1)
	pythonPath := sdkDir
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "PYTHONPATH="); ok {
			if v != "" {
				pythonPath += string(os.PathListSeparator) + v
			}
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PYTHONPATH="+pythonPath)
	return path, argv, env, nil
}

// pythonSDKDir writes the Python SDK built into this binary under the user's cache directory
// (once per SDK version) and returns the directory to put on PYTHONPATH. Without a usable cache
// directory it uses one of its own under the system's temporary directory.
func pythonSDKDir() (string, error) {
	var errs []error
	if cache, err := os.UserCacheDir(); err == nil {
		dir, err := pythonsdk.Extract(filepath.Join(cache, "gust", "python"))
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
	} else {
		errs = append(errs, err)
	}
	tmp := filepath.Join(os.TempDir(), fmt.Sprintf("gust-python-%d", os.Getuid()))
	if err := privateDir(tmp); err != nil {
		return "", fmt.Errorf("no directory to put the Python SDK in: %w", errors.Join(append(errs, err)...))
	}
	dir, err := pythonsdk.Extract(tmp)
	if err != nil {
		return "", fmt.Errorf("no directory to put the Python SDK in: %w", errors.Join(append(errs, err)...))
	}
	return dir, nil
}

// privateDir makes dir (in a shared place such as /tmp) if missing and checks that it is this
// user's and that nobody else may write to it: code is run from it.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a directory of this user's that only it may write to: remove it, or set XDG_CACHE_HOME", dir)
	}
	return nil
}

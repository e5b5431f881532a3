package worker

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/reaper"
	"github.com/gust-run/gust/internal/workerproto"
)

// A function container is a container whose main process is the runner (gust._runner, from
// the Python SDK embedded in this binary): the worker writes inputs to its stdin and reads
// logs, generator items and outputs from its stdout, one JSON line each (docs/functions.md,
// "Runner"). This file prepares what the runner needs; runner.go is the conversation, and
// events.go the batched events it produces for the server.

// Where the runner's pieces appear inside a function container.
const (
	sdkMount  = "/.gust/python"
	codeMount = "/.gust/app"
)

// runnerBoot puts the SDK and the user's code first on sys.path and runs the runner.
const runnerBoot = "import sys; sys.path[:0] = ['" + sdkMount + "', '" + codeMount + "']; import gust._runner as r; sys.exit(r.main())"

// functionMounts returns the read-only mounts of a function container: the SDK, the code, and
// the directory of the worker's API socket (which gVisor lets the container connect to: the
// runtime runs runsc with --host-uds=open).
func (w *Worker) functionMounts(fn *workerproto.FunctionRun) ([]container.Mount, error) {
	sdkDir, err := w.sdk()
	if err != nil {
		return nil, fmt.Errorf("unpacking the Python SDK for the runner: %w", err)
	}
	_, statErr := os.Stat(w.layers.LayerPath("code-" + fn.CodeBlob))
	code, _, err := w.layers.ExtractLayer(fn.CodeBlob, "/", "code-"+fn.CodeBlob)
	if err != nil {
		return nil, fmt.Errorf("unpacking the function's code: %w", err)
	}
	if statErr != nil {
		// Unpacked just now: compile it once for every container that will mount it.
		w.compile(code)
	}
	mounts := []container.Mount{{Source: sdkDir, Destination: sdkMount}, {Source: code, Destination: codeMount}}
	if w.apiDir != "" {
		mounts = append(mounts, container.Mount{Source: w.apiDir, Destination: apiSocketMount})
	}
	return mounts, nil
}

// compileTimeout bounds the host's compileall: a tree that takes longer is left for the
// containers to compile.
const compileTimeout = 2 * time.Minute

// compilePython writes bytecode next to Python sources that containers will see read-only,
// with this machine's python3 when it has one. A container whose Python has the same version
// (the usual case: both Debian's) then loads the SDK without compiling it at every cold start,
// which otherwise costs about 100 ms; other versions ignore the files.
//
// dir may be a user's uploaded code, and compileall runs as root: through a symlink
// (__pycache__ -> /etc, or app.py -> /root/secret.py) it would write bytecode anywhere on the
// host, or copy a host file's contents into the tree. So only a tree of plain files and
// directories is compiled; any other tree is left to the container, which compiles it
// inside its own root (slower, but nothing leaves the tree). Running compileall as an
// unprivileged user instead would mean making the cached code layer writable by that user,
// which every container of the function later trusts; with links refused, root writes only
// beneath dir, creating __pycache__ directories and renaming .pyc files into them.
func (w *Worker) compilePython(dir string) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return
	}
	if err := plainTree(dir); err != nil {
		w.log.Printf("not precompiling %s (containers will compile it instead): %v", dir, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	// -I: ignore PYTHON* variables and the working directory; -e: a second guard that skips a
	// source whose link leads out of dir.
	cmd := exec.CommandContext(ctx, py, "-I", "-m", "compileall", "-q", "-j", "0", "-e", dir, dir)
	if out, err := reaper.CombinedOutput(cmd); err != nil {
		w.log.Printf("precompiling %s (containers will compile it instead): %v: %s", dir, err, lastLines(string(out), 3))
	}
}

// plainTree checks that dir holds only regular files and directories: no symlink that a
// program walking it as root could follow out, no fifo or device that would block or flood
// a reader.
func plainTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking %s: %w", path, err)
		}
		if t := d.Type(); t != 0 && !t.IsDir() {
			return fmt.Errorf("%s is a %s, not a plain file or directory", path, kindOf(t))
		}
		return nil
	})
}

func kindOf(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "symlink"
	case t&fs.ModeNamedPipe != 0:
		return "fifo"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeDevice != 0:
		return "device"
	}
	return "special file (" + t.String() + ")"
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package worker

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

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
// (under runc) the directory of the worker's API socket.
func (w *Worker) functionMounts(fn *workerproto.FunctionRun, isolation string) ([]container.Mount, error) {
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
	if w.apiDir != "" && isolation == container.IsolationRunc {
		// gVisor would need --host-uds=open to connect to it.
		mounts = append(mounts, container.Mount{Source: w.apiDir, Destination: apiSocketMount})
	}
	return mounts, nil
}

// compilePython writes bytecode next to Python sources that containers will see read-only,
// with this machine's python3 when it has one. A container whose Python has the same version
// (the usual case: both Debian's) then loads the SDK without compiling it at every cold start,
// which otherwise costs about 100 ms; other versions ignore the files.
func (w *Worker) compilePython(dir string) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return
	}
	if out, err := reaper.CombinedOutput(exec.Command(py, "-m", "compileall", "-q", "-j", "0", dir)); err != nil {
		w.log.Printf("precompiling %s (containers will compile it instead): %v: %s", dir, err, lastLines(string(out), 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

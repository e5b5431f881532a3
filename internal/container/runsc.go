package container

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	_ "embed" // the pinned gVisor module
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/reaper"
)

// Which runsc gust runs, and how it gets one.
//
// Debian's runsc (2022) cannot join the network namespaces gust gives it, answers bookworm
// coreutils' statx with EINVAL (so ls and stat fail), and has no systrap platform. A current
// one is built from the Go module proxy at the version pinned in runsc.mod, its checksums in
// runsc.sum (the go.mod and go.sum of a throwaway module; `make runsc-pin` moves the pin),
// static: built with cgo it fails at boot, re-executing itself in an empty root that has no
// dynamic loader. `gust install` (and so `make up`, `make test` and `gust up`) installs it at
// RunscInstallPath; Debian's is the fallback where it cannot be built.

// RunscInstallPath is where gust installs the runsc it builds, and where it looks first.
const RunscInstallPath = "/usr/local/lib/gust/runsc"

// RunscEnv names a runsc binary to use instead (`--runsc` of up and worker sets it).
const RunscEnv = "GUST_RUNSC"

// gvisorModule is the module that holds runsc.
const gvisorModule = "gvisor.dev/gvisor"

//go:embed runsc.mod
var runscMod []byte

//go:embed runsc.sum
var runscSum []byte

// RunscPin returns the pinned gVisor version and the checksum of its module (runsc.sum's h1:).
func RunscPin() (version, sum string) {
	sc := bufio.NewScanner(bytes.NewReader(runscMod))
	for sc.Scan() {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(f) >= 2 && f[0] == gvisorModule {
			version = f[1]
			break
		}
	}
	sc = bufio.NewScanner(bytes.NewReader(runscSum))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == gvisorModule && f[1] == version {
			sum = f[2]
		}
	}
	return version, sum
}

// FindRunsc returns the runsc gust uses, and where the choice came from: $GUST_RUNSC if set,
// else the build at RunscInstallPath, else runsc on the PATH (Debian's). Every part of gust
// that runs runsc (up, worker, bench, the tests through them) chooses through it. path is ""
// when there is none.
func FindRunsc() (path, from string) {
	if p := os.Getenv(RunscEnv); p != "" {
		return p, "$" + RunscEnv
	}
	if fi, err := os.Stat(RunscInstallPath); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return RunscInstallPath, "gust install"
	}
	if p, err := exec.LookPath("runsc"); err == nil {
		return p, "PATH"
	}
	return "", ""
}

// CheckPinnedRunsc says why the binary at path is not the pinned static runsc, or nil if it is.
func CheckPinnedRunsc(path string) error {
	version, sum := RunscPin()
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: not a Go build gust can identify: %w", path, err)
	}
	if bi.Main.Path != gvisorModule || bi.Main.Version != version || bi.Main.Sum != sum {
		return fmt.Errorf("%s is %s %s (%s), not the pinned %s %s (%s)", path, bi.Main.Path, bi.Main.Version, bi.Main.Sum, gvisorModule, version, sum)
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" && s.Value != "0" {
			return fmt.Errorf("%s was built with cgo: it fails at boot (rebuild with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// DescribeRunsc says in words which runsc path is: its version, and whether it is the pinned
// build.
func DescribeRunsc(path string) string {
	if path == "" {
		return "none (gVisor is unavailable: run `gust install`)"
	}
	if CheckPinnedRunsc(path) == nil {
		v, _ := RunscPin()
		return fmt.Sprintf("%s (gVisor %s, the pinned static build)", path, v)
	}
	if bi, err := buildinfo.ReadFile(path); err == nil && bi.Main.Path == gvisorModule {
		return fmt.Sprintf("%s (gVisor %s, not the pinned version)", path, bi.Main.Version)
	}
	out, err := reaper.CombinedOutput(exec.Command(path, "--version"))
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil || first == "" {
		return fmt.Sprintf("%s (version unknown: %v)", path, err)
	}
	return fmt.Sprintf("%s (%s)", path, first)
}

// InstallRunsc builds the pinned runsc into dest (RunscInstallPath when ""), with go from the
// PATH and the Go module proxy, unless dest already holds it. It returns whether it built.
// A failed build leaves dest as it was.
func InstallRunsc(ctx context.Context, dest string, logf func(string, ...any)) (built bool, retErr error) {
	if dest == "" {
		dest = RunscInstallPath
	}
	if CheckPinnedRunsc(dest) == nil {
		return false, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return false, errors.New("no Go toolchain on the PATH to build runsc with (install Go 1.26 or later)")
	}
	version, _ := RunscPin()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return false, err
	}
	work, err := os.MkdirTemp(filepath.Dir(dest), ".runsc-build-")
	if err != nil {
		return false, err
	}
	defer func() { retErr = errors.Join(retErr, os.RemoveAll(work)) }()
	if err := os.WriteFile(filepath.Join(work, "go.mod"), runscMod, 0o644); err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(work, "go.sum"), runscSum, 0o644); err != nil {
		return false, err
	}
	logf("building runsc (gVisor %s) from the Go module proxy, static; this takes a minute or more", version)
	start := time.Now()
	out := filepath.Join(work, "runsc")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath",
		"-ldflags", "-X gvisor.dev/gvisor/runsc/version.version="+version, "-o", out, gvisorModule+"/runsc")
	cmd.Dir = work
	// CGO off: a dynamic runsc fails at boot. -mod=readonly: go.mod and go.sum are the pin, and
	// a download that does not match go.sum fails the build. GOTOOLCHAIN=local: no toolchain
	// download behind the operator's back.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly -buildvcs=false", "GOTOOLCHAIN=local", "GOWORK=off")
	if b, err := reaper.CombinedOutput(cmd); err != nil {
		return false, fmt.Errorf("go build %s/runsc@%s: %v: %s", gvisorModule, version, err, lastLines(string(b), 10))
	}
	if err := CheckPinnedRunsc(out); err != nil {
		return false, fmt.Errorf("the runsc just built: %w", err)
	}
	if err := os.Chmod(out, 0o755); err != nil {
		return false, err
	}
	if err := os.Rename(out, dest); err != nil {
		return false, err
	}
	logf("installed %s in %s", DescribeRunsc(dest), time.Since(start).Round(time.Second))
	return true, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runscCurrent says whether the runsc at path is a current one (it has the systrap platform,
// which came with the namespace handling, statx and host-uds fixes gust needs) rather than
// Debian's 2022 build, which gust still runs, with what it cannot do turned off.
func runscCurrent(path string) bool {
	if path == "" {
		return false
	}
	if CheckPinnedRunsc(path) == nil {
		return true
	}
	out, _ := reaper.CombinedOutput(exec.Command(path, "flags"))
	return bytes.Contains(out, []byte("systrap"))
}

// nullNetNS is the nsfs bind mount a current runsc makes under its root at the first gVisor
// start: an empty network namespace that later gofers share, to start faster.
const nullNetNS = "null-netns"

// unmountNullNetNS removes the shared gofer namespace runsc pinned under root. Concurrent
// starts may stack binds on it, so it unmounts until nothing is left.
func unmountNullNetNS(root string) error {
	p := filepath.Join(root, nullNetNS)
	for i := 0; i < 100; i++ {
		err := unix.Unmount(p, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

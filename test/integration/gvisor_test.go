package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGVisorRunsc: the gust under test runs gVisor under the pinned static runsc that `gust
// install` built (the harness installs it as `make test` does), and says so.
func TestGVisorRunsc(t *testing.T) {
	needGust(t)
	if log := gustLog(); !strings.Contains(log, "gVisor runs under runsc") || !strings.Contains(log, "the pinned static build") {
		t.Fatalf("gust up does not say it runs the pinned runsc:\n%s", firstLines(log, 20))
	}
}

// TestGVisorCoreutils: ls and stat work in a gVisor sandbox (Debian's 2022 runsc answered
// bookworm coreutils' statx with EINVAL); with block_network it has only its loopback, and
// otherwise the worker's veth too (runsc runs its netstack in the container's namespace).
func TestGVisorCoreutils(t *testing.T) {
	needGust(t)
	id := createRaw(t, map[string]any{"isolation": "gvisor", "block_network": true})
	out, errOut, code := execRaw(t, id, "sh", "-c", "ls -la /etc/ && stat -c '%n %s %U' /etc/passwd && ls -l /proc/self/fd")
	if code != 0 || !strings.Contains(out, "passwd") || !strings.Contains(out, "/etc/passwd ") || !strings.Contains(out, " root\n") {
		t.Fatalf("ls/stat under gVisor: exit %d: %q %q", code, out, errOut)
	}
	// block_network: no namespace was given, loopback only.
	out, errOut, code = execRaw(t, id, "sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
	if code != 0 || strings.TrimSpace(out) != "lo" {
		t.Fatalf("interfaces of a gVisor sandbox without a network: exit %d: %q %q", code, out, errOut)
	}
	networked := createRaw(t, map[string]any{"isolation": "gvisor"})
	out, errOut, code = execRaw(t, networked, "sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort")
	if code != 0 || strings.Fields(out)[0] != "eth0" || !strings.Contains(out, "lo") {
		t.Fatalf("interfaces of a gVisor sandbox on the worker's network: exit %d: %q %q", code, out, errOut)
	}
}

// gvisorCallsModule: a function under gVisor calls another one, and maps over it, through
// the worker's API socket (runsc --host-uds=open), as Modal programs do.
const gvisorCallsModule = `
import gust

app = gust.App("gv-calls")

@app.function()
def square(x):
    return x * x

@app.function(isolation="gvisor")
def fan_out(n):
    return square.remote(n) + sum(square.map(range(n)))
`

func TestGVisorFunctionCallsFunction(t *testing.T) {
	needGust(t)
	blob := uploadCode(t, map[string]string{"gvcalls.py": gvisorCallsModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "gv-calls", "mode": "ephemeral",
		"code": map[string]string{"blob": blob, "module": "gvcalls"}, "functions": []map[string]any{
			{"name": "square", "image_id": gust.imageID},
			{"name": "fan_out", "image_id": gust.imageID, "isolation": "gvisor"},
		}}, &app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil) })
	r := callRemote(t, app.Functions["fan_out"], nil, 4)
	if v := r.value(t, 0); v != 16.0+0+1+4+9 {
		t.Fatalf("fan_out(4) under gVisor = %v; logs %q\n%s", v, r.Logs, gustLog())
	}
}

// TestGVisorNothingLeftBehind: once a gVisor sandbox ends, none of its runsc processes
// remain, and its bundle (with its mounts) is gone.
func TestGVisorNothingLeftBehind(t *testing.T) {
	needGust(t)
	id := createRaw(t, map[string]any{"isolation": "gvisor"})
	if out, _, code := execRaw(t, id, "echo", "hi"); code != 0 || out != "hi\n" {
		t.Fatalf("exec: %q %d", out, code)
	}
	if b, _ := exec.Command("pgrep", "-f", id).Output(); len(b) == 0 {
		t.Fatalf("no runsc process names %s while it runs: the check below would prove nothing", id)
	}
	if err := api("POST", "/v1/sandboxes/"+id+"/terminate", nil, nil); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(gust.dataDir, "data", "containers", "bundles", id)
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs, _ := exec.Command("pgrep", "-af", id).Output()
		mounts, _ := exec.Command("grep", "-c", bundle, "/proc/self/mountinfo").Output()
		if len(procs) == 0 && strings.TrimSpace(string(mounts)) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after terminate: processes %q, %s mounts under %s", procs, strings.TrimSpace(string(mounts)), bundle)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

package integration

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostAddr is an address of this machine other than loopback: where the server's port would
// be reached from a container that shared the machine's network.
func hostAddr(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return "192.0.2.2"
}

// TestEscapeImageBuildNetwork: an image build's commands run on the containers' bridge under
// the default policy, as a sandbox's do (test/network's TestBuildNetwork checks the policy
// against a fake internet). They cannot reach gust's port on the machine (its address or the
// gateway's), the worker's, or the cloud metadata address; the package mirror is reached
// directly, with no proxy (apt_install, in TestImageAptInstall, depends on that too).
func TestEscapeImageBuildNetwork(t *testing.T) {
	needGust(t)
	u, _ := url.Parse(gust.url)
	port := u.Port()
	// The worker's own API (gust up's worker listens on a port of its own).
	_, workerAddr, ok := strings.Cut(gustLog(), ", serving on http://")
	workerAddr, _, _ = strings.Cut(workerAddr, "\n")
	_, workerPort, err := net.SplitHostPort(strings.TrimSpace(workerAddr))
	if !ok || err != nil {
		t.Fatalf("no worker address in gust's log (%q, %v)", workerAddr, err)
	}
	script := fmt.Sprintf(`
# %d
import os, socket, urllib.request
gw = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
def probe(name, host, port):
    try:
        socket.create_connection((host, port), timeout=3)
        print("RESULT", name, "CONNECTED")
    except OSError as e:
        print("RESULT", name, "blocked", type(e).__name__, e.errno)
probe("loopback", "127.0.0.1", %[2]s)
probe("host", %[3]q, %[2]s)
probe("gateway", gw, %[2]s)
probe("metadata", "169.254.169.254", 80)
probe("worker", "127.0.0.1", %[4]s)
probe("worker-gateway", gw, %[4]s)
print("RESULT ifaces", sorted(os.listdir("/sys/class/net")))
print("RESULT proxy", os.environ.get("http_proxy", "none"))
try:
    r = urllib.request.urlopen("http://deb.debian.org/debian/dists/bookworm/Release", timeout=30)
    print("RESULT get-mirror", r.status)
except OSError as e:
    print("RESULT get-mirror error", e)
`, time.Now().UnixNano(), port, hostAddr(t), workerPort)
	_, logs, errMsg := buildImage(t, map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{"python3 -c " + shellQuote(script)}},
	}})
	all := strings.Join(logs, "\n")
	if errMsg != "" {
		t.Fatalf("build: %s\n%s", errMsg, all)
	}
	results := map[string]string{}
	for _, l := range strings.Split(all, "\n") {
		if f := strings.SplitN(strings.TrimSpace(l), " ", 3); len(f) == 3 && f[0] == "RESULT" {
			results[f[1]] = f[2]
		}
	}
	t.Logf("results: %q", results)
	for name, want := range map[string]string{
		"loopback":       "blocked ConnectionRefusedError 111", // the build's own loopback: nothing listens there
		"host":           "blocked",                            // dropped by the worker's rules
		"gateway":        "blocked",
		"metadata":       "blocked",
		"worker":         "blocked ConnectionRefusedError 111", // the worker's port, on the build's own loopback
		"worker-gateway": "blocked",
		"ifaces":         "['eth0', 'lo']",
		"proxy":          "none",
		"get-mirror":     "200",
	} {
		if got := results[name]; !strings.HasPrefix(got, want) {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	// The build container is gone, and its namespace with it: gust holds no descriptor of a
	// namespace with only loopback any more (the namespaces it keeps ready for sandboxes have
	// a veth, eth0).
	deadline := time.Now().Add(10 * time.Second)
	for {
		held := netnsFDs(gust.cmd.Process.Pid)
		if len(held) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gust still holds network namespaces after the build: %v", held)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// netnsFDs lists the network namespaces with only loopback (an image build's) that a process
// holds open.
func netnsFDs(pid int) []string {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	var out []string
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "net:[") && loopbackOnly(fd) {
			out = append(out, fd+" → "+l)
		}
	}
	return out
}

// loopbackOnly says whether the network namespace at path has no interface but lo.
func loopbackOnly(path string) bool {
	ch := make(chan bool, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- true
			return
		}
		defer orig.Close()
		ns, err := os.Open(path)
		if err != nil {
			ch <- false // gone meanwhile
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- true
			return
		}
		ifs, _ := net.Interfaces()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		for _, i := range ifs {
			if i.Name != "lo" {
				ch <- false
				return
			}
		}
		ch <- true
	}()
	return <-ch
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

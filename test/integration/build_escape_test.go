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

// TestEscapeImageBuildNetwork: an image build's commands run in a network namespace of their
// own. They cannot reach gust's port on the machine, the machine's other addresses or the
// cloud metadata address (there is no route: the attempt fails inside, nothing is sent), and
// the build's egress proxy refuses every host that is not a listed package mirror with a 403
// naming the host and the flag, while a mirror is reachable through it (apt_install, in
// TestImageAptInstall, depends on that too).
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
import http.client, os, socket
def probe(name, host, port):
    try:
        socket.create_connection((host, port), timeout=3)
        print("RESULT", name, "CONNECTED")
    except OSError as e:
        print("RESULT", name, "blocked", type(e).__name__, e.errno)
probe("loopback", "127.0.0.1", %[2]s)
probe("host", %[3]q, %[2]s)
probe("metadata", "169.254.169.254", 80)
probe("worker", "127.0.0.1", %[4]s)
print("RESULT ifaces", sorted(os.listdir("/sys/class/net")))
proxy = os.environ["http_proxy"]
print("RESULT proxy", proxy)
ph, pp = proxy[len("http://"):].split(":")
def get(name, u):
    # Straight to the proxy: urllib would skip it for 127.0.0.1 (no_proxy).
    c = http.client.HTTPConnection(ph, int(pp), timeout=30)
    try:
        c.request("GET", u)
        r = c.getresponse()
        print("RESULT", name, r.status, r.read().decode().strip() if r.status != 200 else "")
    except OSError as e:
        print("RESULT", name, "error", e)
get("get-other", "http://example.com/")
get("get-gust", "http://127.0.0.1:%[2]s/v1/health")
get("get-metadata", "http://169.254.169.254/latest/meta-data/")
get("get-worker", "http://127.0.0.1:%[4]s/v1/health")
get("get-mirror", "http://deb.debian.org/debian/dists/bookworm/Release")
def tunnel(name, host, port):
    c = http.client.HTTPConnection(ph, int(pp), timeout=30)
    c.set_tunnel(host, port)
    try:
        c.connect()
        print("RESULT", name, "OPEN")
    except OSError as e:
        print("RESULT", name, "refused", e)
tunnel("connect-other", "example.com", 443)
tunnel("connect-port", "deb.debian.org", 22)
tunnel("connect-mirror", "deb.debian.org", 443)
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
		"loopback": "blocked ConnectionRefusedError 111", // the build's own loopback: nothing listens there
		"host":     "blocked OSError 101",                // ENETUNREACH: no route out of the namespace
		"metadata": "blocked OSError 101",
		"worker":   "blocked ConnectionRefusedError 111", // the worker's port, on the build's own loopback
		"ifaces":   "['lo']",
		"get-other": "403 gust build egress refused example.com:80: example.com is not a package mirror this worker lets image builds reach; " +
			"an operator can add it to the worker's --build-egress list",
		"get-gust":       "403 gust build egress refused 127.0.0.1:" + port + ": 127.0.0.1 is not a package mirror",
		"get-metadata":   "403 gust build egress refused 169.254.169.254:80",
		"get-worker":     "403 gust build egress refused 127.0.0.1:" + workerPort + ": 127.0.0.1 is not a package mirror",
		"get-mirror":     "200",
		"connect-other":  "refused Tunnel connection failed: 403",
		"connect-port":   "refused Tunnel connection failed: 403",
		"connect-mirror": "OPEN",
	} {
		if got := results[name]; !strings.HasPrefix(got, want) {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if !strings.HasPrefix(results["proxy"], "http://127.0.0.1:") {
		t.Errorf("the build's http_proxy: %q", results["proxy"])
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

package container

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/initproto"
)

// The pin parses: a version and its go.sum checksum.
func TestRunscPin(t *testing.T) {
	v, sum := RunscPin()
	if !strings.HasPrefix(v, "v0.0.0-") || !strings.HasPrefix(sum, "h1:") {
		t.Fatalf("RunscPin() = %q, %q", v, sum)
	}
}

// The choice of runsc: $GUST_RUNSC first, whatever is installed.
func TestFindRunscOverride(t *testing.T) {
	t.Setenv(RunscEnv, "/opt/elsewhere/runsc")
	if p, from := FindRunsc(); p != "/opt/elsewhere/runsc" || from != "$"+RunscEnv {
		t.Fatalf("FindRunsc() = %q, %q", p, from)
	}
}

// The runtime flags for each runsc and network.
func TestRunscArgs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		current bool
		netns   string
		want    string
	}{
		{"current, no namespace: loopback only", true, "", "--oci-seccomp --host-uds=open --platform=systrap --overlay2=none --network=none"},
		{"current, a namespace: the netstack takes it over", true, "/run/netns/x", "--oci-seccomp --host-uds=open --platform=systrap --overlay2=none --network=sandbox"},
		{"Debian's: never the namespace", false, "/run/netns/x", "--oci-seccomp --host-uds=open --platform=ptrace --network=none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runtime{cfg: Config{StateDir: "/s"}, runscCurrent: tt.current}
			got := strings.Join(r.runtimeArgs(CreateOptions{Isolation: IsolationGVisor, NetNSPath: tt.netns}), " ")
			if want := "--root /s/state/gvisor " + tt.want; got != want {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// TestGVisorNetworkNamespace runs real gVisor containers under the runsc gust chooses: one
// given a network namespace with a veth reaches a server on the veth's host end through
// runsc's netstack; one given none has only its loopback. Afterwards nothing is mounted under
// the state directory (runsc's pinned null namespace included).
func TestGVisorNetworkNamespace(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and no -short: it runs real gVisor containers")
	}
	runsc, _ := FindRunsc()
	if !runscCurrent(runsc) {
		t.Skipf("needs a current runsc (run `gust install`); have %s", DescribeRunsc(runsc))
	}
	ctx := context.Background()
	init := filepath.Join(t.TempDir(), "gust")
	build := exec.Command("go", "build", "-o", init, "../../cmd/gust")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	builder, err := image.NewBuilder("/var/cache/gust-test/layers") // the integration tests' cache
	if err != nil {
		t.Fatal(err)
	}
	layer, err := builder.EnsureDebianSlim(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	rt, err := New(Config{StateDir: state, InitBinary: init, RunscPath: runsc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })

	// A namespace whose veth leads to the host, and a server on the host end.
	n := os.Getpid() % 10000
	ns, host, peer := fmt.Sprintf("gvz-test-%d", n), fmt.Sprintf("gvzh%d", n), fmt.Sprintf("gvzc%d", n)
	hostIP, peerIP := fmt.Sprintf("10.213.%d.1", n%250), fmt.Sprintf("10.213.%d.2", n%250)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", host).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	ip("netns", "add", ns)
	ip("link", "add", host, "type", "veth", "peer", "name", peer)
	ip("link", "set", peer, "netns", ns)
	ip("addr", "add", hostIP+"/30", "dev", host)
	ip("link", "set", host, "up")
	ip("-n", ns, "addr", "add", peerIP+"/30", "dev", peer)
	ip("-n", ns, "link", "set", peer, "up")
	ip("-n", ns, "link", "set", "lo", "up")
	ln, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s to %s", ln.Addr(), r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	fetch := "import urllib.request as u\ntry:\n print(u.urlopen('http://" + ln.Addr().String() + "/', timeout=5).read().decode())\nexcept Exception as e:\n print('error', e)\n"
	for _, tt := range []struct {
		name, netns, want string
	}{
		{"with a namespace", "/var/run/netns/" + ns, "hello from " + ln.Addr().String() + " to " + peerIP + ":"},
		{"without one", "", "error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := rt.Create(ctx, CreateOptions{ID: fmt.Sprintf("gvz-net-%d-%d", n, len(tt.netns)), Isolation: IsolationGVisor,
				Layers: []string{layer}, CPU: 1, MemoryMiB: 256, DiskMiB: 64, NetNSPath: tt.netns, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := rt.Remove(c); err != nil {
					t.Error(err)
				}
			}()
			out := run(t, c, "python3", "-c", fetch)
			if !strings.HasPrefix(out, tt.want) {
				t.Fatalf("fetch from the sandbox: %q, want it to start with %q", out, tt.want)
			}
		})
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mounts, []byte(state)) {
		t.Fatalf("mounts remain under %s after the containers were removed:\n%s", state, grepLines(string(mounts), state))
	}
}

// run runs argv in c and returns its output.
func run(t *testing.T, c *Container, argv ...string) string {
	t.Helper()
	p, err := c.Exec(initproto.ExecRequest{Argv: argv, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	for {
		chunks, exit, err := p.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chunks {
			out.Write(ch.Data)
		}
		if exit != nil {
			return out.String()
		}
	}
}

func grepLines(s, sub string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

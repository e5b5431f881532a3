package egress

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNamespace runs f on a thread inside the namespace at path, and brings the thread back.
func inNamespace(t *testing.T, path string, f func()) {
	t.Helper()
	target, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	in(t, target, func() error { f(); return nil })
}

// inNS runs f on a thread inside ns, so that the sockets f makes live there, and brings the
// thread back.
func inNS(ns *os.File, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		err = f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // else the thread ends with this goroutine
		}
		done <- err
	}()
	return <-done
}

func TestNamespace(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root to make network namespaces")
	}
	goroutines := runtime.NumGoroutine()
	pol, _ := ParsePolicy([]string{"mirror.test"})
	n, err := Start(pol, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	hostNS, _ := os.Readlink("/proc/self/ns/net")
	nsLink, err := os.Readlink(n.NetNSPath())
	if err != nil || !strings.HasPrefix(nsLink, "net:[") || nsLink == hostNS {
		t.Fatalf("NetNSPath %s → %q (%v); the machine's is %q", n.NetNSPath(), nsLink, err, hostNS)
	}
	if env := n.Env(); env["http_proxy"] != "http://"+n.Addr() || env["HTTPS_PROXY"] != "http://"+n.Addr() {
		t.Fatalf("Env: %v", env)
	}
	// Inside: only lo, up, and the proxy answers there.
	inNamespace(t, n.NetNSPath(), func() {
		ifs, err := net.Interfaces()
		if err != nil || len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
			t.Errorf("interfaces in the namespace: %v %v", ifs, err)
		}
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Errorf("the proxy inside: %v", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 403 {
			t.Errorf("a refused host through the proxy: %v %v", resp, err)
		}
		if _, err := net.DialTimeout("tcp", "192.0.2.1:80", time.Second); err == nil {
			t.Errorf("the namespace reaches outside")
		}
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if _, err := os.Readlink(n.NetNSPath()); err == nil {
		t.Fatalf("the namespace's descriptor is still open after Close")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Fatalf("%d goroutines after Close, %d before", g, goroutines)
	}
}

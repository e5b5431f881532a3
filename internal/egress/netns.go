package egress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Namespace is a new network namespace with only loopback, up, and a Proxy listening on its
// 127.0.0.1. A socket stays in the namespace it was made in, so the worker serves the
// listener from its own goroutines while dialling mirrors from the machine's namespace. The
// namespace has no name and no mount: it lives while the worker holds it (Close) or a
// container's processes are in it, and is gone with both.
type Namespace struct {
	ns     *os.File // keeps the namespace alive; containers join it by NetNSPath
	addr   string   // the proxy's 127.0.0.1:port inside
	proxy  *Proxy
	srv    *http.Server
	served chan struct{}
	once   sync.Once
}

// Start makes a namespace and serves policy's proxy in it.
func Start(policy Policy, logf func(format string, args ...any)) (*Namespace, error) {
	type made struct {
		ns  *os.File
		ln  net.Listener
		err error
	}
	ch := make(chan made, 1)
	go func() {
		// The thread visits the new namespace and comes back; if it cannot come back it
		// stays locked, so that it ends with this goroutine instead of running others there.
		runtime.LockOSThread()
		ns, ln, back, err := enterNew()
		if back {
			runtime.UnlockOSThread()
		}
		ch <- made{ns, ln, err}
	}()
	m := <-ch
	if m.err != nil {
		if m.ln != nil {
			_ = m.ln.Close() // unused
			_ = m.ns.Close()
		}
		return nil, m.err
	}
	n := &Namespace{ns: m.ns, addr: m.ln.Addr().String(), proxy: NewProxy(policy, logf), served: make(chan struct{})}
	n.srv = &http.Server{Handler: n.proxy, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(n.served)
		if err := n.srv.Serve(m.ln); !errors.Is(err, http.ErrServerClosed) {
			logf("egress: the proxy on %s stopped: %v", n.addr, err)
		}
	}()
	return n, nil
}

// enterNew moves the calling (locked) thread into a new network namespace, brings its
// loopback up, listens there, and moves the thread back. back says whether it is back in the
// namespace it started in.
func enterNew() (_ *os.File, _ net.Listener, back bool, retErr error) {
	// The thread may be the main one, whose namespace /proc/PID/ns/net shows: it must return
	// (and cannot simply exit).
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, nil, true, fmt.Errorf("egress: opening this thread's network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, nil, true, fmt.Errorf("egress: new network namespace: %w", err)
	}
	defer func() {
		back = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
		if !back && retErr == nil {
			retErr = errors.New("egress: could not return to the machine's network namespace")
		}
	}()
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, nil, false, fmt.Errorf("egress: opening the new network namespace: %w", err)
	}
	if err := loopbackUp(); err != nil {
		_ = ns.Close() // the namespace goes with it: nothing else holds it
		return nil, nil, false, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		_ = ns.Close() // as above
		return nil, nil, false, fmt.Errorf("egress: listening in the new network namespace: %w", err)
	}
	return ns, ln, false, nil
}

// loopbackUp sets lo up in the current thread's namespace (a new one has it down; runc
// brings it up only in namespaces it makes itself).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("egress: loopback up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("egress: loopback up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("egress: loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("egress: loopback up: %w", err)
	}
	return nil
}

// NetNSPath is the path a runtime opens to join the namespace: the worker's own descriptor
// of it, valid while the Namespace is open.
func (n *Namespace) NetNSPath() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.ns.Fd())
}

// Addr is the proxy's address inside the namespace.
func (n *Namespace) Addr() string { return n.addr }

// Env points HTTP clients inside the namespace (apt, pip, curl, git, Python's urllib) at the
// proxy. Loopback stays direct: it is the container's own.
func (n *Namespace) Env() map[string]string {
	u := "http://" + n.addr
	return map[string]string{
		"http_proxy": u, "https_proxy": u, "HTTP_PROXY": u, "HTTPS_PROXY": u,
		"no_proxy": "localhost,127.0.0.1,::1", "NO_PROXY": "localhost,127.0.0.1,::1",
	}
}

// Close stops the proxy, ends its connections and lets the namespace go once no process is
// left in it. Calling it again does nothing.
func (n *Namespace) Close() error {
	var err error
	n.once.Do(func() {
		err = n.srv.Close() // the listener and the proxied requests' connections
		<-n.served
		n.proxy.Close()
		err = errors.Join(err, n.ns.Close())
		if err != nil {
			err = fmt.Errorf("egress: closing the namespace of %s: %w", n.addr, err)
		}
	})
	return err
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/initproto"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// Tunnels and readiness: the server's ingress reaches a container's port through the
// connect endpoint (an HTTP upgrade that becomes a raw TCP stream), and clients wait for a
// container's readiness probe through the ready endpoint.

// dialTimeout bounds a connection to a container's port.
const dialTimeout = 5 * time.Second

// dialContainer connects to port inside the container c of box b.
func (w *Worker) dialContainer(ctx context.Context, b *box, c Container, port int) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if b.spec.Isolation == sandbox.IsolationGVisor {
		// gVisor's loopback lives in its own network stack, which no host socket can enter:
		// its ports are reached at its address on the worker's bridge (runsc runs its
		// netstack in the container's namespace), so the server must listen beyond loopback.
		a, ok := w.ContainerAddr(b.spec.ID)
		if !ok {
			return nil, errdefs.Invalid("sandbox %s runs under gVisor without a network address (block_network, or a worker without --network), so the worker cannot reach its ports; use isolation=runc", b.spec.ID)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
	}
	// runc: dial 127.0.0.1 inside the container's namespace, which reaches a server bound to
	// loopback as well as one bound to every address.
	ns, err := c.NetNS()
	if err != nil {
		return nil, errdefs.Conflict("sandbox %s is not running: %v", b.spec.ID, err)
	}
	return DialIn(ctx, ns, "127.0.0.1:"+strconv.Itoa(port))
}

// DialIn connects to addr from inside the network namespace at nsPath: the last hop of a
// tunnel (and `gust bench tunnel`'s direct baseline). A socket stays in the namespace it was
// made in, so only the dial itself runs there, on a locked thread that comes back to the
// worker's namespace after (or, if it cannot, ends with its goroutine).
func DialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, back, err := dialInLocked(ctx, nsPath, addr)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func dialInLocked(ctx context.Context, nsPath, addr string) (_ net.Conn, back bool, retErr error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("opening the worker's network namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, errdefs.Conflict("the container's network namespace is gone: %v", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("entering the container's network namespace: %w", err)
	}
	defer func() {
		back = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
		if !back && retErr == nil {
			retErr = errors.New("could not return to the worker's network namespace")
		}
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, false, errdefs.Unavailable("nothing listens on %s in the sandbox (yet): start a server on that port, listening on 0.0.0.0 or 127.0.0.1", addr)
		}
		return nil, false, errdefs.Unavailable("connecting to %s in the sandbox: %v", addr, err)
	}
	return c, false, nil
}

// exposes reports whether the server may connect to port of this container: a sandbox's
// declared ports; any port of a function container, whose tunnels (modal.forward) the server
// opens at run time.
func (b *box) exposes(port int) bool {
	return b.spec.Function != nil || slices.Contains(b.spec.Ports, port)
}

// WorkerID is the ID the server gave this worker ("" before it registered).
func (w *Worker) WorkerID() string { return w.server.WorkerID() }

// DialPort connects to port inside a running container of this worker, with the same checks
// as the connect endpoint (only a sandbox's declared ports). `gust up` runs the server's
// ingress in the worker's process, and its tunnels come here directly: one relay and two
// TCP connections fewer per byte than through the worker's API.
func (w *Worker) DialPort(ctx context.Context, containerID string, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, errdefs.Invalid("port %d is not a TCP port (1-65535)", port)
	}
	b, c, err := w.running(containerID)
	if err != nil {
		return nil, err
	}
	if !b.exposes(port) {
		return nil, errdefs.NotFound("sandbox %s does not expose port %d (ports: %v)", b.spec.ID, port, b.spec.Ports)
	}
	conn, err := w.dialContainer(ctx, b, c, port)
	if err != nil {
		return nil, err
	}
	if !b.track(conn) {
		conn.Close()
		return nil, errdefs.Conflict("sandbox %s ended", containerID)
	}
	b.touch()
	return &trackedConn{Conn: conn, b: b}, nil
}

// trackedConn is a container connection handed out by DialPort: the container's end closes
// it, and closing it forgets it.
type trackedConn struct {
	net.Conn
	b *box
}

// NetConn is the container connection itself (workerproto.Splice copies through it, so that
// the kernel's splice(2) still applies).
func (t *trackedConn) NetConn() net.Conn { return t.Conn }

func (t *trackedConn) Close() error {
	t.b.untrack(t.Conn)
	return t.Conn.Close()
}

// handleConnect turns the request's connection into a raw stream to a port of the container:
// 101 Switching Protocols once the container's port has answered, then bytes both ways until
// either side closes or the container ends.
func (w *Worker) handleConnect(rw http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), workerproto.ConnectUpgrade) {
		httpapi.WriteError(rw, errdefs.Invalid("connect needs the headers Connection: Upgrade and Upgrade: %s", workerproto.ConnectUpgrade))
		return
	}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		httpapi.WriteError(rw, errdefs.Invalid("port %q is not a TCP port (1-65535)", r.PathValue("port")))
		return
	}
	b, c, err := w.running(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	if !b.exposes(port) {
		httpapi.WriteError(rw, errdefs.NotFound("sandbox %s does not expose port %d (ports: %v)", b.spec.ID, port, b.spec.Ports))
		return
	}
	conn, err := w.dialContainer(r.Context(), b, c, port)
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	hj, ok := rw.(http.Hijacker)
	if !ok {
		conn.Close()
		httpapi.WriteError(rw, errors.New("the worker's HTTP server cannot hand over connections"))
		return
	}
	client, brw, err := hj.Hijack()
	if err != nil {
		conn.Close()
		w.log.Printf("sandbox %s: taking over a connect request: %v", b.spec.ID, err)
		return
	}
	_ = client.SetDeadline(time.Time{}) // the server's header timeout no longer applies
	if _, err := client.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + workerproto.ConnectUpgrade + "\r\n\r\n")); err != nil {
		client.Close()
		conn.Close()
		return
	}
	if n := brw.Reader.Buffered(); n > 0 {
		ahead, _ := brw.Reader.Peek(n)
		if _, err := conn.Write(ahead); err != nil {
			client.Close()
			conn.Close()
			return
		}
	}
	if !b.track(client, conn) {
		client.Close() // the container ended meanwhile
		conn.Close()
		return
	}
	b.touch()
	go func() {
		workerproto.Splice(client, conn)
		b.untrack(client, conn)
	}()
}

// track records a tunnel's two connections so that the container's end closes them; false
// when the container has ended already.
func (b *box) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == boxExited {
		return false
	}
	if b.conns == nil {
		b.conns = map[net.Conn]struct{}{}
	}
	for _, c := range cs {
		b.conns[c] = struct{}{}
	}
	return true
}

func (b *box) untrack(cs ...net.Conn) {
	b.mu.Lock()
	for _, c := range cs {
		delete(b.conns, c)
	}
	b.mu.Unlock()
}

// closeConns ends the container's tunnels (it has ended).
func (b *box) closeConns() {
	b.mu.Lock()
	conns := b.conns
	b.conns = nil
	b.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// startProbe marks a running container ready: at once without a readiness probe, else once
// its probe passes (tried every interval until the container ends).
func (w *Worker) startProbe(b *box, c Container) {
	p := b.spec.ReadinessProbe
	if p == nil {
		close(b.ready)
		return
	}
	go func() {
		interval := time.Duration(max(p.IntervalMS, sandbox.MinProbeIntervalMS)) * time.Millisecond
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if w.probeOnce(b, c, p) {
				close(b.ready)
				return
			}
			select {
			case <-b.done:
				return
			case <-t.C:
			}
		}
	}()
}

// probeTimeout bounds one try of an exec probe.
const probeTimeout = 10 * time.Second

func (w *Worker) probeOnce(b *box, c Container, p *sandbox.Probe) bool {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if p.TCPPort != 0 {
		conn, err := w.dialContainer(ctx, b, c, p.TCPPort)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	proc, err := c.Exec(initproto.ExecRequest{Argv: p.ExecArgv, Env: b.env(nil), Cwd: b.cwd(""), User: b.spec.User}, probeTimeout)
	if err != nil {
		return false
	}
	exit, err := proc.Wait(ctx)
	return err == nil && exit != nil && exit.ExitCode == 0 && exit.Error == ""
}

// handleReady answers whether the container's readiness probe passes within ?timeout=S
// seconds (at most workerproto.MaxReadyWait).
func (w *Worker) handleReady(rw http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b := w.box(id)
	if b == nil {
		httpapi.WriteError(rw, errdefs.NotFound("sandbox %s is not running on this worker", id))
		return
	}
	secs, err := strconv.ParseFloat(r.URL.Query().Get("timeout"), 64)
	if err != nil || !(secs >= 0 && secs <= workerproto.MaxReadyWait) {
		httpapi.WriteError(rw, errdefs.Invalid("timeout must be a number of seconds from 0 to %d, got %q", workerproto.MaxReadyWait, r.URL.Query().Get("timeout")))
		return
	}
	select {
	case <-b.ready:
		httpapi.WriteJSON(rw, http.StatusOK, workerproto.ReadyResponse{Ready: true})
		return
	default:
	}
	t := time.NewTimer(time.Duration(secs * float64(time.Second)))
	defer t.Stop()
	select {
	case <-b.ready:
		httpapi.WriteJSON(rw, http.StatusOK, workerproto.ReadyResponse{Ready: true})
	case <-b.done:
		httpapi.WriteError(rw, errdefs.Conflict("sandbox %s ended before its readiness probe passed", id))
	case <-t.C:
		httpapi.WriteJSON(rw, http.StatusOK, workerproto.ReadyResponse{Ready: false})
	case <-r.Context().Done():
	}
}

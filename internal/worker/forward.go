package worker

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/sandbox"
)

// forwardProbeTimeout bounds ForwardPort's check that the container's server answers on its
// address.
const forwardProbeTimeout = 500 * time.Millisecond

// ForwardPort hands a raw TCP tunnel's port to the kernel (network.Lease.Forward): new
// connections to listen (the ingress's own listener, in this process under `gust up`) from
// clients in allow go straight to port of the container's address, with no relay. It is for
// runc containers on the worker's bridge whose server answers on the container's address (a
// server listening on 0.0.0.0; one on 127.0.0.1 only is reached through DialPort's relay, so
// it fails with errdefs.Unavailable until the server answers there). stop ends the forward;
// the container's end ends it too.
func (w *Worker) ForwardPort(ctx context.Context, containerID string, port int, listen netip.AddrPort, allow []netip.Prefix) (stop func() error, err error) {
	if port < 1 || port > 65535 {
		return nil, errdefs.Invalid("port %d is not a TCP port (1-65535)", port)
	}
	b, _, err := w.running(containerID)
	if err != nil {
		return nil, err
	}
	if !b.exposes(port) {
		return nil, errdefs.NotFound("sandbox %s does not expose port %d (ports: %v)", b.spec.ID, port, b.spec.Ports)
	}
	if b.spec.Isolation == sandbox.IsolationGVisor {
		// runsc's netstack sends no FIN when the sandbox is killed: the relay, which closes
		// the tunnel's connections at its end, stays.
		return nil, errdefs.Unavailable("gVisor sandboxes' tunnels are relayed")
	}
	b.mu.Lock()
	l := b.lease
	b.mu.Unlock()
	if l == nil {
		return nil, errdefs.Unavailable("sandbox %s has no address on the worker's bridge", containerID)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardProbeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", netip.AddrPortFrom(l.Addr(), uint16(port)).String())
	if err != nil {
		return nil, errdefs.Unavailable("nothing answers on %s:%d in sandbox %s (yet)", l.Addr(), port, containerID)
	}
	c.Close()
	return l.Forward(listen, uint16(port), allow)
}

// forwardedFlows reports whether connections through the container's kernel-forwarded
// tunnels are open: activity, as relayed ones are (an error counts as activity, so that a
// failed look does not end a sandbox in use).
func (w *Worker) forwardedFlows(b *box) bool {
	b.mu.Lock()
	l := b.lease
	b.mu.Unlock()
	if l == nil {
		return false
	}
	n, err := l.ForwardedFlows()
	if err != nil {
		w.log.Printf("container %s: %v", b.spec.ID, err)
		return true
	}
	return n > 0
}

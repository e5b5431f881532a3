package ingress

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// Kernel forwarding of raw TCP tunnels. Under `gust up` the worker runs in the ingress's
// process, and a raw port's connections need no relay: the worker's nftables send them from
// the tunnel's listener straight to the container (network.Lease.Forward), once the
// container's server answers on its address. Until then, and for containers on other
// workers, the listener's connections are relayed as before; each relayed connection also
// asks for the forward again. The listener stays open either way: it holds the port, and
// takes the clients the rule leaves out (outside the inbound_cidr_allowlist), which it
// refuses.

// forwardRetries are the delays between tries after a route opens (the container's server
// is starting); after them, only a relayed connection makes forwardLoop try again.
var forwardRetries = []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
	400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond}

// startForward starts forwardLoop for a new raw route, when the dialer can forward and the
// route listens on IPv4.
func (i *Ingress) startForward(r *route) {
	fw, ok := i.dial.(Forwarder)
	if !ok || i.cfg.Relay {
		return
	}
	a, ok := r.tcp.Addr().(*net.TCPAddr)
	if !ok {
		return
	}
	var listen netip.AddrPort
	switch {
	case a.IP.IsUnspecified(): // 0.0.0.0, which Go listens on as [::] with IPv4 mapped in
		listen = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(a.Port))
	case a.IP.To4() != nil:
		listen = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a.IP.To4())), uint16(a.Port))
	default:
		return // IPv6 only: relayed
	}
	i.wg.Add(1)
	go i.forwardLoop(r, fw, listen)
}

// forwardLoop tries to have the kernel carry r's connections until it does or r is dropped.
func (i *Ingress) forwardLoop(r *route, fw Forwarder, listen netip.AddrPort) {
	defer i.wg.Done()
	t := time.NewTimer(forwardRetries[0])
	defer t.Stop()
	for try := 1; ; try++ {
		select {
		case <-r.done:
			return
		case <-r.kick:
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		stop, err := fw.ForwardPort(ctx, r.t.WorkerID, r.t.SandboxID, r.port.Port, listen, r.t.Allow)
		cancel()
		if err == nil {
			i.mu.Lock()
			live := r.t.routes[r.port.Port] == r
			if live {
				r.fwdStop = stop
			}
			i.mu.Unlock()
			if live {
				i.log.Printf("ingress: port %d of %s is forwarded in the kernel from %s", r.port.Port, r.t.SandboxID, listen)
			}
			if !live {
				if err := stop(); err != nil {
					i.log.Printf("ingress: %v", err)
				}
			}
			return
		}
		if try < len(forwardRetries) {
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			t.Reset(forwardRetries[try])
		}
	}
}

// Forwarded reports whether the kernel carries a sandbox's raw port's new connections.
func (i *Ingress) Forwarded(sandboxID string, port int) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	tg := i.bySandbox[sandboxID]
	if tg == nil || tg.routes[port] == nil {
		return false
	}
	return tg.routes[port].fwdStop != nil
}

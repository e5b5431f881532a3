package worker

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/egress"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/network"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// Network gives sandbox and function containers their network (internal/network): a
// namespace with a veth to the worker's bridge, whose outbound policy can be replaced.
type Network interface {
	Take(id string, p network.Policy) (NetLease, error)
	// ResolvConf is the file containers see as /etc/resolv.conf.
	ResolvConf() string
}

// NetLease is one container's namespace and address.
type NetLease interface {
	NetNSPath() string
	// Addr is the container's address: the worker dials its ports there (tunnels).
	Addr() netip.Addr
	SetPolicy(p network.Policy) error
	// Forward hands a tunnel's port to the kernel (Worker.ForwardPort); ForwardedFlows counts
	// the open connections it carries.
	Forward(listen netip.AddrPort, port uint16, allow []netip.Prefix) (stop func() error, err error)
	ForwardedFlows() (int, error)
	// SetMTU sets the interface's MTU before the container starts (gVisor's is smaller).
	SetMTU(mtu int) error
	Release() error
}

// netManager is *network.Manager behind Network.
type netManager struct{ *network.Manager }

func (m netManager) Take(id string, p network.Policy) (NetLease, error) {
	l, err := m.Manager.Take(id, p)
	if err != nil {
		return nil, err
	}
	return l, nil
}

var (
	_ Network  = netManager{}
	_ NetLease = (*network.Lease)(nil)
)

// policyOf turns a container's policy as the server sent it into the network's. The server
// checked it (sandbox.NetworkRequest.Policy); an entry that does not parse here is dropped,
// which only narrows what the container reaches.
func policyOf(p sandbox.NetworkPolicy) network.Policy {
	out := network.Policy{Block: p.BlockNetwork, Allowlisted: p.Allowlisted, Domains: p.OutboundDomainAllowlist}
	if p.BlockNetwork {
		return network.Policy{Block: true}
	}
	for _, s := range p.OutboundCIDRAllowlist {
		if c, err := sandbox.ParseCIDR(s); err == nil {
			out.CIDRs = append(out.CIDRs, c)
		}
	}
	return out
}

// openNet gives a sandbox or function container its network namespace, with its policy set,
// and the options that make the runtime join it. A container with block_network gets none: the
// runtime makes it a namespace with only loopback, which costs nothing and leaves it no
// interface at all (its policy can then not be opened later; a networked one can be blocked).
func (w *Worker) openNet(b *box, opts *container.CreateOptions) error {
	if w.net == nil || b.spec.Network.BlockNetwork {
		return nil // the runtime makes a namespace with loopback only
	}
	return w.openNetWith(b, opts, policyOf(b.spec.Network))
}

// openNetWith takes a namespace on the bridge under policy p for the container.
func (w *Worker) openNetWith(b *box, opts *container.CreateOptions, p network.Policy) error {
	l, err := w.net.Take(b.spec.ID, p)
	if err != nil {
		return fmt.Errorf("the container's network: %w", err)
	}
	b.mu.Lock()
	b.lease = l
	b.mu.Unlock()
	if b.spec.Isolation == sandbox.IsolationGVisor {
		if err := l.SetMTU(network.GVisorMTU); err != nil {
			return fmt.Errorf("the container's network: %w", err)
		}
	}
	opts.NetNSPath = l.NetNSPath()
	opts.Mounts = append(opts.Mounts, container.Mount{Source: w.net.ResolvConf(), Destination: "/etc/resolv.conf"})
	return nil
}

// ContainerAddr is a running container's address on the worker's bridge, for dialling its
// ports from the worker (tunnels; the only way into a gVisor sandbox, whose loopback lives in
// its own netstack); false when it has none (no worker network, or block_network).
func (w *Worker) ContainerAddr(id string) (netip.Addr, bool) {
	b := w.box(id)
	if b == nil {
		return netip.Addr{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lease == nil {
		return netip.Addr{}, false
	}
	return b.lease.Addr(), true
}

// handleNetwork replaces a running container's network policy, atomically.
func (w *Worker) handleNetwork(rw http.ResponseWriter, r *http.Request) {
	b, _, err := w.running(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	var req workerproto.NetworkUpdate
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	b.mu.Lock()
	l := b.lease
	b.mu.Unlock()
	if l == nil {
		if req.Network.BlockNetwork {
			httpapi.WriteJSON(rw, http.StatusOK, req) // loopback only already
			return
		}
		httpapi.WriteError(rw, errdefs.Conflict("sandbox %s has no network interface to open: it was created with block_network=True (or its worker runs with --network=false); create it without block_network and block it later with a policy replacement instead", b.spec.ID))
		return
	}
	if err := l.SetPolicy(policyOf(req.Network)); err != nil {
		httpapi.WriteError(rw, err)
		return
	}
	if g := w.gateway.Load(); g != nil {
		g.Proxy.Revalidate() // proxied connections follow the new policy too
	}
	b.mu.Lock()
	b.spec.Network = req.Network
	b.mu.Unlock()
	w.log.Printf("container %s: network policy replaced: %s", b.spec.ID, policyOf(req.Network))
	httpapi.WriteJSON(rw, http.StatusOK, req)
}

// newNetwork makes the worker's network: its range, the operator's exceptions, and the server's
// addresses among the denied ones.
func newNetwork(cfg Config, logf func(string, ...any)) (*network.Manager, error) {
	nc := network.Config{Tag: network.Tag(cfg.StateDir), MTU: cfg.NetworkMTU, Logf: logf}
	if cfg.NetworkCIDR != "" {
		p, err := netip.ParsePrefix(cfg.NetworkCIDR)
		if err != nil {
			return nil, fmt.Errorf("--network-cidr %q is not a CIDR such as 10.88.0.0/16", cfg.NetworkCIDR)
		}
		nc.CIDR = p
	}
	for _, s := range cfg.NetworkAllow {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := sandbox.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("--network-allow: %w", err)
		}
		nc.Allow = append(nc.Allow, p)
	}
	if u, err := url.Parse(cfg.ServerURL); err == nil && u.Hostname() != "" {
		addrs, _ := net.LookupHost(u.Hostname()) // unresolvable: nothing to add
		for _, a := range addrs {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Unmap().Is4() {
				nc.Deny = append(nc.Deny, netip.PrefixFrom(ip.Unmap(), 32))
			}
		}
	}
	return network.New(nc)
}

// startNetServices starts what serves containers on the gateway address: the DNS resolver
// (UDP and TCP 53) and the domain proxy (netMgr.ProxyPort), which asks netMgr.PolicyFor whose
// connection it has (internal/egress). It returns their stop, or nil without a worker network.
func (w *Worker) startNetServices() (stop func(), err error) {
	if w.netMgr == nil {
		return nil, nil
	}
	var allow []netip.Prefix
	for _, a := range w.cfg.NetworkAllow {
		if p, err := sandbox.ParseCIDR(strings.TrimSpace(a)); err == nil { // newNetwork refused bad ones
			allow = append(allow, p)
		}
	}
	g, err := startGateway(w.netMgr, w.cfg.DNSUpstream, allow, w.log.Printf)
	if errors.Is(err, egress.ErrNoUpstream) {
		// Fail closed rather than not at all: containers get no DNS, and those with a domain
		// allowlist reach nothing (their web traffic is redirected to a port no one serves).
		w.log.Printf("containers get no DNS and no domain proxy: %v", err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	w.gateway.Store(g)
	return func() {
		if err := g.Close(); err != nil {
			w.log.Printf("the containers' resolver and domain proxy: %v", err)
		}
		allowed, refused := g.Proxy.Stats()
		w.log.Printf("domain proxy: %d connections let through, %d refused", allowed, refused)
	}, nil
}

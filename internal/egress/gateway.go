package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// GatewayConfig says where the containers' resolver and domain proxy serve.
type GatewayConfig struct {
	// Addr is the bridge's gateway address, the one containers' resolv.conf names.
	Addr netip.Addr
	// DNSPort is the resolver's port; 0 means 53.
	DNSPort uint16
	// ProxyPort is the port the nat rules redirect domain-allowlisted web traffic to.
	ProxyPort uint16
	Upstream  *Upstream
	Lookup    Lookup
	Logf      func(format string, args ...any)
	// Allow are the operator's exceptions to the private ranges (the worker's --network-allow):
	// a name that resolves into one may be answered and reached.
	Allow []netip.Prefix
	// Dial, when set, replaces the proxy's dial (tests dial from a namespace of their own).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Gateway is the resolver and the domain proxy serving one bridge's gateway address. Its
// sockets are made in the network namespace of the goroutine that starts it (the worker's).
type Gateway struct {
	Resolver *Resolver
	Proxy    *DomainProxy
	proxyLn  net.Listener
	served   chan error
	stop     chan struct{} // ends the sweep
	swept    chan struct{}
}

// sweepEvery is how often the gateway ends proxied connections that their container's policy
// no longer allows (a replaced policy, a container gone); the worker also asks at once after
// replacing a policy.
const sweepEvery = 5 * time.Second

// StartGateway listens on the gateway's DNS port (UDP and TCP) and its proxy port, and serves.
func StartGateway(cfg GatewayConfig) (_ *Gateway, retErr error) {
	if cfg.DNSPort == 0 {
		cfg.DNSPort = 53
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	dnsAddr := net.JoinHostPort(cfg.Addr.String(), strconv.Itoa(int(cfg.DNSPort)))
	proxyAddr := net.JoinHostPort(cfg.Addr.String(), strconv.Itoa(int(cfg.ProxyPort)))
	var closers []func() error
	defer func() {
		if retErr != nil {
			for _, c := range closers {
				_ = c() // unwinding a failed start
			}
		}
	}()
	pc, err := net.ListenPacket("udp", dnsAddr)
	if err != nil {
		return nil, fmt.Errorf("egress: the containers' resolver on %s/udp: %w", dnsAddr, err)
	}
	closers = append(closers, pc.Close)
	dnsLn, err := net.Listen("tcp", dnsAddr)
	if err != nil {
		return nil, fmt.Errorf("egress: the containers' resolver on %s/tcp: %w", dnsAddr, err)
	}
	closers = append(closers, dnsLn.Close)
	proxyLn, err := net.Listen("tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("egress: the domain proxy on %s: %w", proxyAddr, err)
	}
	g := &Gateway{
		Resolver: NewResolver(cfg.Upstream, cfg.Lookup, cfg.Logf),
		Proxy:    NewDomainProxy(cfg.Upstream, cfg.Lookup, cfg.Logf),
		proxyLn:  proxyLn,
		served:   make(chan error, 1),
		stop:     make(chan struct{}),
		swept:    make(chan struct{}),
	}
	g.Resolver.allow, g.Proxy.allow = cfg.Allow, cfg.Allow
	g.Proxy.Dial = publicDialer(cfg.Allow)
	if cfg.Dial != nil {
		g.Proxy.Dial = cfg.Dial
	}
	g.Resolver.Serve(pc, dnsLn)
	go func() { g.served <- g.Proxy.Serve(proxyLn) }()
	go func() {
		defer close(g.swept)
		t := time.NewTicker(sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				g.Proxy.Revalidate()
			}
		}
	}()
	return g, nil
}

// ProxyAddr is where the proxy listens.
func (g *Gateway) ProxyAddr() string { return g.proxyLn.Addr().String() }

// Close stops both and ends the proxy's connections.
func (g *Gateway) Close() error {
	close(g.stop)
	<-g.swept
	err := errors.Join(g.Resolver.Close(), g.Proxy.Close())
	if serr := <-g.served; !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr) // closed before Serve began is no error
	}
	return err
}

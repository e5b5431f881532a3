package worker

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/gust-run/gust/internal/egress"
	"github.com/gust-run/gust/internal/network"
)

// netPolicies is what the containers' resolver and domain proxy need of the network manager
// (network.Manager): where the gateway is, which port the nat rules send proxied web traffic
// to, and the policy of the container behind a source address.
type netPolicies interface {
	Gateway() netip.Addr
	ProxyPort() uint16
	PolicyFor(src netip.Addr) (network.Policy, bool)
}

// startGateway serves the containers' resolver (port 53) and the domain proxy on the bridge's
// gateway, resolving through upstreams (the --dns-upstream flag; none: this machine's
// /etc/resolv.conf). allow are the operator's exceptions to the private ranges
// (--network-allow), which names may then lead to.
func startGateway(n netPolicies, upstreams []string, allow []netip.Prefix, logf func(format string, args ...any)) (*egress.Gateway, error) {
	if len(upstreams) == 0 {
		var err error
		if upstreams, err = egress.ResolvConfServers("/etc/resolv.conf"); err != nil {
			logf("%v", err) // no upstream, said below
		}
	}
	up, err := egress.NewUpstream(upstreams)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	g, err := egress.StartGateway(egress.GatewayConfig{Addr: n.Gateway(), ProxyPort: n.ProxyPort(), Upstream: up,
		Lookup: egressLookup(n.PolicyFor, logf), Allow: allow, Logf: logf})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	logf("containers resolve names through %s:53 (upstream %s); a domain allowlist is enforced by the proxy on %s",
		n.Gateway(), strings.Join(up.Servers(), ","), g.ProxyAddr())
	return g, nil
}

// egressLookup turns the network manager's policy of a container into what the resolver and
// the domain proxy check. A blocked container, or an address no container has, gets nothing.
func egressLookup(policyFor func(netip.Addr) (network.Policy, bool), logf func(format string, args ...any)) egress.Lookup {
	var logged sync.Map // entries already said to be left out
	return func(src netip.Addr) (egress.Client, bool) {
		p, ok := policyFor(src)
		if !ok || p.Block {
			return egress.Client{}, false
		}
		c := egress.Client{ID: src.String()}
		if p.Allowlisted && len(p.Domains) > 0 {
			c.Restricted = true
			// The API validated the list; an entry the proxy cannot use (an address) is left
			// out, which only narrows what the container reaches.
			var good []string
			for _, d := range p.Domains {
				if _, err := egress.ParseDomainAllowlist([]string{d}); err != nil {
					if _, seen := logged.LoadOrStore(d, true); !seen {
						logf("container at %s: %v: left out", src, err)
					}
					continue
				}
				good = append(good, d)
			}
			c.Domains, _ = egress.ParseDomainAllowlist(good) // each entry parsed above
		}
		return c, true
	}
}

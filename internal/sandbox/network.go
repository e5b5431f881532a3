package sandbox

import (
	"net/netip"
	"regexp"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
)

// NetworkPolicy is a container's outbound network, as the client set it (Sandbox.create,
// @app.function, or a later replacement) and as the worker applies it:
//
//   - BlockNetwork: loopback only.
//   - neither list: every destination except what the worker always denies (its own and the
//     server's addresses, other containers, cloud metadata, private ranges, loopback).
//   - OutboundCIDRAllowlist and/or OutboundDomainAllowlist: only those; a domain list sends
//     TCP 80 and 443 through the worker's domain proxy, which allows them by name.
//
// Allowlisted tells an empty allowlist (nothing reachable but DNS) from none.
type NetworkPolicy struct {
	BlockNetwork            bool     `json:"block_network"`
	OutboundCIDRAllowlist   []string `json:"outbound_cidr_allowlist,omitempty"`
	OutboundDomainAllowlist []string `json:"outbound_domain_allowlist,omitempty"`
	Allowlisted             bool     `json:"allowlisted,omitempty"`
}

// NetworkRequest is the network part of a create or of a policy replacement. cidr_allowlist
// is Modal's older name of outbound_cidr_allowlist.
type NetworkRequest struct {
	BlockNetwork            bool      `json:"block_network"`
	OutboundCIDRAllowlist   *[]string `json:"outbound_cidr_allowlist"`
	CIDRAllowlist           *[]string `json:"cidr_allowlist"`
	OutboundDomainAllowlist *[]string `json:"outbound_domain_allowlist"`
}

// Limits of an allowlist.
const MaxAllowlist = 256

var domainRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Policy checks a request and returns the policy. ports says whether the request also opens
// ports into the sandbox, which a blocked network cannot have.
func (r NetworkRequest) Policy(ports bool) (NetworkPolicy, error) {
	p := NetworkPolicy{BlockNetwork: r.BlockNetwork}
	if r.OutboundCIDRAllowlist != nil && r.CIDRAllowlist != nil {
		return p, errdefs.Invalid("outbound_cidr_allowlist and cidr_allowlist are the same option (cidr_allowlist is its older name): give one")
	}
	cidrs := r.OutboundCIDRAllowlist
	if cidrs == nil {
		cidrs = r.CIDRAllowlist
	}
	if r.BlockNetwork {
		switch {
		case cidrs != nil:
			return p, errdefs.Invalid("`outbound_cidr_allowlist` cannot be used when `block_network` is enabled")
		case r.OutboundDomainAllowlist != nil:
			return p, errdefs.Invalid("`outbound_domain_allowlist` cannot be used when `block_network` is enabled")
		case ports:
			return p, errdefs.Invalid("cannot open ports (encrypted_ports, unencrypted_ports, h2_ports) when `block_network` is enabled")
		}
		return p, nil
	}
	if cidrs != nil {
		p.Allowlisted = true
		if len(*cidrs) > MaxAllowlist {
			return p, errdefs.Invalid("outbound_cidr_allowlist has %d entries; the limit is %d", len(*cidrs), MaxAllowlist)
		}
		seen := map[string]bool{}
		for i, s := range *cidrs {
			c, err := ParseCIDR(s)
			if err != nil {
				return p, errdefs.Invalid("outbound_cidr_allowlist[%d]: %v", i, err)
			}
			if !seen[c.String()] {
				seen[c.String()] = true
				p.OutboundCIDRAllowlist = append(p.OutboundCIDRAllowlist, c.String())
			}
		}
	}
	if r.OutboundDomainAllowlist != nil {
		p.Allowlisted = true
		if len(*r.OutboundDomainAllowlist) > MaxAllowlist {
			return p, errdefs.Invalid("outbound_domain_allowlist has %d entries; the limit is %d", len(*r.OutboundDomainAllowlist), MaxAllowlist)
		}
		seen := map[string]bool{}
		for i, d := range *r.OutboundDomainAllowlist {
			n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
			if len(n) > 253 || !domainRE.MatchString(n) {
				return p, errdefs.Invalid("outbound_domain_allowlist[%d]: %q is not a domain name such as pypi.org or *.github.com (internationalised names in punycode)", i, d)
			}
			if !seen[n] {
				seen[n] = true
				p.OutboundDomainAllowlist = append(p.OutboundDomainAllowlist, n)
			}
		}
	}
	return p, nil
}

// ParseCIDR reads an allowlist entry: an IPv4 CIDR or a single IPv4 address.
func ParseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, errdefs.Invalid("%q is not an IPv4 address or CIDR such as 203.0.113.0/24", s)
		}
		if !a.Is4() {
			return netip.Prefix{}, errdefs.Invalid("%q is IPv6: containers have IPv4 only", s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errdefs.Invalid("%q is not a CIDR such as 203.0.113.0/24", s)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, errdefs.Invalid("%q is IPv6: containers have IPv4 only", s)
	}
	return p.Masked(), nil
}

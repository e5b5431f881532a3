package network

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"strings"
)

// Policy is one container's outbound network policy.
//
//   - Block: nothing leaves the container, DNS included; it keeps its loopback.
//   - Allowlisted false (and not Block): every destination outside the always-denied ranges.
//   - Allowlisted: only CIDRs, and, when Domains is not empty, TCP 80 and 443 through the
//     worker's domain proxy, which allows Domains by name. DNS to the gateway stays open.
//
// The always-denied ranges (Config.Deny, less Config.Allow) win over every policy.
//
// Except are exceptions to the always-denied ranges for this container alone, reached
// whatever the rest of the policy says: an image build's package mirrors on private addresses
// (the worker's --build-mirrors). Sandboxes and functions never get any.
type Policy struct {
	Block       bool
	Allowlisted bool
	CIDRs       []netip.Prefix
	Domains     []string
	Except      []netip.Prefix
}

// String describes a policy for logs.
func (p Policy) String() string {
	var plus string
	if len(p.Except) > 0 && !p.Block {
		var ex []string
		for _, c := range p.Except {
			ex = append(ex, c.String())
		}
		plus = " (and " + strings.Join(ex, ",") + ")"
	}
	switch {
	case p.Block:
		return "blocked"
	case !p.Allowlisted:
		return "open" + plus
	}
	var parts []string
	for _, c := range p.CIDRs {
		parts = append(parts, c.String())
	}
	parts = append(parts, p.Domains...)
	return "only " + strings.Join(parts, ",") + plus
}

// proxied says whether the container's web traffic goes to the domain proxy.
func (p Policy) proxied() bool { return !p.Block && p.Allowlisted && len(p.Domains) > 0 }

// DefaultDeny is what no container reaches whatever its policy, unless the operator allows
// part of it (Config.Allow): this network (0/8), RFC 1918, shared address space (RFC 6598),
// loopback, link-local (cloud metadata among it), multicast and the reserved range. The
// worker adds its own addresses and the server's.
func DefaultDeny() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// span is an inclusive range of IPv4 addresses as numbers.
type span struct{ lo, hi uint32 }

func prefixSpan(p netip.Prefix) span {
	p = p.Masked()
	a := p.Addr().As4()
	lo := binary.BigEndian.Uint32(a[:])
	size := uint32(0)
	if bits := 32 - p.Bits(); bits < 32 {
		size = 1<<bits - 1
	} else {
		size = ^uint32(0)
	}
	return span{lo, lo + size}
}

// mergeSpans sorts and joins overlapping or touching ranges: an nftables interval set refuses
// overlapping elements.
func mergeSpans(in []span) []span {
	if len(in) == 0 {
		return nil
	}
	s := append([]span(nil), in...)
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	out := []span{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if x.lo <= last.hi || (last.hi != ^uint32(0) && x.lo == last.hi+1) {
			if x.hi > last.hi {
				last.hi = x.hi
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// spansOf turns IPv4 prefixes into merged ranges; IPv6 prefixes are left out (containers
// have no IPv6: the bridge drops it).
func spansOf(ps []netip.Prefix) []span {
	var s []span
	for _, p := range ps {
		if p.Addr().Is4() || p.Addr().Is4In6() {
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			s = append(s, prefixSpan(p))
		}
	}
	return mergeSpans(s)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

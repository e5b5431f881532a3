package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The worker's nftables, one inet table and one bridge table, both named after the instance
// (Manager.names). The inet table:
//
//	set deny, allow          interval sets: the always-denied ranges, the operator's exceptions
//	set blocked, proxied     container addresses whose policy blocks all, or sends web to the proxy
//	map filt, nat            container address → jump to its own chains f<hex>, n<hex>
//	chain forward            from the bridge: ip saddr vmap @filt, else drop (IPv6 too);
//	                         to the bridge: replies only
//	chain input              from the bridge: replies, then DNS and the proxy on the gateway, else drop
//	chain prerouting (nat)   from the bridge: ip saddr vmap @nat
//	chain postrouting (nat)  from the containers' range out of another interface: masquerade
//
// A container's f chain drops the denied ranges (less the exceptions) and then applies its
// policy; its n chain redirects TCP 80 and 443 to the proxy when it has a domain allowlist.
// Replacing a policy flushes and refills both chains and moves the address in or out of
// blocked and proxied, in one netlink batch, which the kernel applies atomically. Every packet
// of a flow goes through the f chain, not only its first: a narrower policy also cuts flows
// already open.
//
// The bridge table drops every frame the bridge would forward from one container's port to
// another (containers never talk to each other, ARP included), every IPv4 frame whose
// source address is not its port's (set ports: iifname . ip saddr), so a container cannot
// borrow another's policy, every frame whose source MAC is not its port's (set macs: iifname
// . ether saddr; a container's MAC is fixed by its address, MACOf), and every ARP packet but
// "my address is at my MAC", so a container cannot take another's traffic from the worker by
// ARP or by teaching the bridge its MAC.

const (
	setDeny    = "deny"
	setAllow   = "allow"
	setBlocked = "blocked"
	setProxied = "proxied"
	mapFilt    = "filt"
	mapNat     = "nat"
	setPorts   = "ports"
	setMACs    = "macs"
)

// nft holds the table objects for building batches.
type nft struct {
	inet, br           *nftables.Table
	deny, allow        *nftables.Set
	blocked, proxied   *nftables.Set
	filt, nat          *nftables.Set
	ports, macs        *nftables.Set
	tunnels            *nftables.Set
	bridge, vethPrefix string
	gateway            netip.Addr
	proxyPort          uint16
	cidr               netip.Prefix
}

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// ifnamePrefix compares only the prefix, as nft does for "name*".
func ifnamePrefix(s string) []byte { return []byte(s) }

func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }

func ip4(a netip.Addr) []byte { b := a.As4(); return b[:] }

func metaIn(reg uint32) expr.Any  { return &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg} }
func metaOut(reg uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg} }
func cmpEq(data []byte) expr.Any  { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
func cmpNeq(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: data} }

func saddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}
func daddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

// isIPv4 matches IPv4 packets in an inet chain.
func isIPv4() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpEq([]byte{unix.NFPROTO_IPV4})}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{p})}
}

func dport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		cmpEq(be16(port)),
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// intervalElems are an interval set's elements for merged ranges.
func intervalElems(ss []span) []nftables.SetElement {
	var out []nftables.SetElement
	for _, s := range ss {
		out = append(out, nftables.SetElement{Key: ip4(addrOf(s.lo))})
		if s.hi != ^uint32(0) {
			out = append(out, nftables.SetElement{Key: ip4(addrOf(s.hi + 1)), IntervalEnd: true})
		}
	}
	return out
}

// install replaces the instance's tables (a predecessor's included) with fresh ones, in one
// batch.
func (n *nft) install(c *nftables.Conn, deny, allow []netip.Prefix) error {
	// A predecessor's tables go first: add-then-delete makes the delete safe when none exists.
	c.AddTable(&nftables.Table{Name: n.inet.Name, Family: nftables.TableFamilyINet})
	c.DelTable(&nftables.Table{Name: n.inet.Name, Family: nftables.TableFamilyINet})
	c.AddTable(&nftables.Table{Name: n.br.Name, Family: nftables.TableFamilyBridge})
	c.DelTable(&nftables.Table{Name: n.br.Name, Family: nftables.TableFamilyBridge})
	c.AddTable(n.inet)
	c.AddTable(n.br)

	n.deny = &nftables.Set{Table: n.inet, Name: setDeny, KeyType: nftables.TypeIPAddr, Interval: true}
	n.allow = &nftables.Set{Table: n.inet, Name: setAllow, KeyType: nftables.TypeIPAddr, Interval: true}
	n.blocked = &nftables.Set{Table: n.inet, Name: setBlocked, KeyType: nftables.TypeIPAddr}
	n.proxied = &nftables.Set{Table: n.inet, Name: setProxied, KeyType: nftables.TypeIPAddr}
	n.filt = &nftables.Set{Table: n.inet, Name: mapFilt, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true}
	n.nat = &nftables.Set{Table: n.inet, Name: mapNat, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true}
	n.ports = &nftables.Set{Table: n.br, Name: setPorts, KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), Concatenation: true}
	n.macs = &nftables.Set{Table: n.br, Name: setMACs, KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr), Concatenation: true}
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{n.deny, intervalElems(spansOf(deny))}, {n.allow, intervalElems(spansOf(allow))},
		{n.blocked, nil}, {n.proxied, nil}, {n.filt, nil}, {n.nat, nil}, {n.ports, nil}, {n.macs, nil},
	} {
		if err := c.AddSet(s.set, s.elems); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.set.Name, err)
		}
	}

	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: n.inet, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: n.inet, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: n.inet, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: n.inet, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	fromBr := []expr.Any{metaIn(1), cmpEq(ifname(n.bridge))}
	toBr := []expr.Any{metaOut(1), cmpEq(ifname(n.bridge))}
	vmap := func(m *nftables.Set) []expr.Any {
		return []expr.Any{saddr(1), &expr.Lookup{SourceRegister: 1, SetName: m.Name, SetID: m.ID, DestRegister: 0, IsDestRegSet: true}}
	}
	lookup := func(s *nftables.Set, load expr.Any, invert bool) []expr.Any {
		return []expr.Any{load, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}}
	}
	rules := []struct {
		ch *nftables.Chain
		e  []expr.Any
	}{
		// forward: a container's packets go to its own chain; anything else from the bridge
		// (IPv6, an address no container has) is dropped.
		{fwd, join(fromBr, isIPv4(), vmap(n.filt))},
		{fwd, join(fromBr, []expr.Any{verdict(expr.VerdictDrop)})},
		// Into the bridge from elsewhere: only replies to what containers opened.
		{fwd, join(toBr, ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)})},
		{fwd, join(toBr, []expr.Any{verdict(expr.VerdictDrop)})},
		// input: containers reach this machine only for replies (the worker dialled them),
		// DNS on the gateway, and the domain proxy (which redirected packets arrive at).
		{in, join(fromBr, ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)})},
		{in, join(fromBr, isIPv4(), lookup(n.blocked, saddr(1), false), []expr.Any{verdict(expr.VerdictDrop)})},
		{in, join(fromBr, isIPv4(), []expr.Any{daddr(1), cmpEq(ip4(n.gateway))}, l4proto(unix.IPPROTO_UDP), dport(53), []expr.Any{verdict(expr.VerdictAccept)})},
		{in, join(fromBr, isIPv4(), []expr.Any{daddr(1), cmpEq(ip4(n.gateway))}, l4proto(unix.IPPROTO_TCP), dport(53), []expr.Any{verdict(expr.VerdictAccept)})},
		{in, join(fromBr, isIPv4(), lookup(n.proxied, saddr(1), false), []expr.Any{daddr(1), cmpEq(ip4(n.gateway))}, l4proto(unix.IPPROTO_TCP), dport(n.proxyPort), []expr.Any{verdict(expr.VerdictAccept)})},
		{in, join(fromBr, []expr.Any{verdict(expr.VerdictDrop)})},
		{pre, join(fromBr, isIPv4(), vmap(n.nat))},
		// NAT out of any other interface; the bridge itself keeps the containers' addresses.
		{post, join(isIPv4(), []expr.Any{saddr(1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: maskOf(n.cidr), Xor: []byte{0, 0, 0, 0}},
			cmpEq(ip4(n.cidr.Masked().Addr())), metaOut(1), cmpNeq(ifname(n.bridge)), &expr.Masq{}})},
	}
	tun, err := n.tunnelRules(c, pre, post, fwd, in)
	if err != nil {
		return err
	}
	n.mssClamp(c)
	for _, r := range tun {
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: r.Chain, Exprs: r.Exprs})
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: r.ch, Exprs: r.e})
	}

	// The bridge table.
	brFwd := c.AddChain(&nftables.Chain{Name: "forward", Table: n.br, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	brPre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: n.br, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: n.br, Chain: brFwd, Exprs: []expr.Any{
		metaIn(1), cmpEq(ifnamePrefix(n.vethPrefix)), verdict(expr.VerdictDrop)}})
	c.AddRule(&nftables.Rule{Table: n.br, Chain: brPre, Exprs: []expr.Any{
		metaIn(1), cmpEq(ifnamePrefix(n.vethPrefix)),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}, cmpEq(be16(unix.ETH_P_IP)),
		// iifname . ip saddr in 32-bit registers 8..11 and 12, as nft loads a concatenation.
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 8},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 8, SetName: n.ports.Name, SetID: n.ports.ID, Invert: true},
		verdict(expr.VerdictDrop)}})
	// No frame from a port but with its container's own MAC (else the bridge would learn
	// another container's MAC on this port and send it that container's traffic), and no ARP
	// but "my address is at my MAC" (else the worker's neighbour table would).
	fromVeth := []expr.Any{metaIn(1), cmpEq(ifnamePrefix(n.vethPrefix))}
	isARP := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}, cmpEq(be16(unix.ETH_P_ARP))}
	notIn := func(set *nftables.Set, load expr.Any) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 8}, load,
			&expr.Lookup{SourceRegister: 8, SetName: set.Name, SetID: set.ID, Invert: true}, verdict(expr.VerdictDrop)}
	}
	for _, e := range [][]expr.Any{
		join(fromVeth, notIn(n.macs, &expr.Payload{DestRegister: 12, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6})),
		// Ethernet and IPv4 ARP only (htype 1, ptype 0x0800, hlen 6, plen 4): the offsets below.
		join(fromVeth, isARP, []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6},
			cmpNeq([]byte{0, 1, 8, 0, 6, 4}), verdict(expr.VerdictDrop)}),
		join(fromVeth, isARP, notIn(n.ports, &expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4})),
		join(fromVeth, isARP, notIn(n.macs, &expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6})),
	} {
		c.AddRule(&nftables.Rule{Table: n.br, Chain: brPre, Exprs: e})
	}
	return nil
}

// macKey is a macs element: a port and its container's MAC (padded to 32-bit registers).
func macKey(veth string, mac net.HardwareAddr) []byte {
	return append(append(ifname(veth), mac...), make([]byte, 8-len(mac))...)
}

// MACOf is the MAC address a container's eth0 gets: fixed by its address, locally
// administered (02:67:...), so that the bridge table can tell it from another's.
func MACOf(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x67, b[0], b[1], b[2], b[3]}
}

func maskOf(p netip.Prefix) []byte {
	m := ^uint32(0) << (32 - p.Bits())
	if p.Bits() == 0 {
		m = 0
	}
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, m)
	return b
}

func chainNames(a netip.Addr) (filt, nat string) {
	h := fmt.Sprintf("%08x", u32(a))
	return "f" + h, "n" + h
}

// addContainer adds a new container's chains, its map entries and its port, with everything
// dropped until a policy is set.
func (n *nft) addContainer(c *nftables.Conn, a netip.Addr, veth string) error {
	fn, nn := chainNames(a)
	f := c.AddChain(&nftables.Chain{Name: fn, Table: n.inet})
	c.AddChain(&nftables.Chain{Name: nn, Table: n.inet})
	c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: []expr.Any{verdict(expr.VerdictDrop)}})
	if err := c.SetAddElements(n.filt, []nftables.SetElement{{Key: ip4(a), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: fn}}}); err != nil {
		return err
	}
	if err := c.SetAddElements(n.nat, []nftables.SetElement{{Key: ip4(a), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: nn}}}); err != nil {
		return err
	}
	if err := c.SetAddElements(n.blocked, []nftables.SetElement{{Key: ip4(a)}}); err != nil {
		return err
	}
	if err := c.SetAddElements(n.macs, []nftables.SetElement{{Key: macKey(veth, MACOf(a))}}); err != nil {
		return err
	}
	return c.SetAddElements(n.ports, []nftables.SetElement{{Key: append(ifname(veth), ip4(a)...)}})
}

// removeContainer undoes addContainer. was is the policy last set, which says which sets hold
// the address.
func (n *nft) removeContainer(c *nftables.Conn, a netip.Addr, veth string, was Policy) error {
	fn, nn := chainNames(a)
	errs := []error{
		c.SetDeleteElements(n.filt, []nftables.SetElement{{Key: ip4(a)}}),
		c.SetDeleteElements(n.nat, []nftables.SetElement{{Key: ip4(a)}}),
		c.SetDeleteElements(n.ports, []nftables.SetElement{{Key: append(ifname(veth), ip4(a)...)}}),
		c.SetDeleteElements(n.macs, []nftables.SetElement{{Key: macKey(veth, MACOf(a))}}),
	}
	if was.Block {
		errs = append(errs, c.SetDeleteElements(n.blocked, []nftables.SetElement{{Key: ip4(a)}}))
	}
	if was.proxied() {
		errs = append(errs, c.SetDeleteElements(n.proxied, []nftables.SetElement{{Key: ip4(a)}}))
	}
	f := &nftables.Chain{Name: fn, Table: n.inet}
	nc := &nftables.Chain{Name: nn, Table: n.inet}
	c.FlushChain(f)
	c.FlushChain(nc)
	c.DelChain(f)
	c.DelChain(nc)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// setPolicy rewrites a container's chains and set memberships from was to p (in the caller's
// batch).
func (n *nft) setPolicy(c *nftables.Conn, a netip.Addr, was, p Policy) error {
	fn, nn := chainNames(a)
	f := &nftables.Chain{Name: fn, Table: n.inet}
	nc := &nftables.Chain{Name: nn, Table: n.inet}
	c.FlushChain(f)
	c.FlushChain(nc)
	el := []nftables.SetElement{{Key: ip4(a)}}
	var err error
	if was.Block != p.Block {
		if p.Block {
			err = c.SetAddElements(n.blocked, el)
		} else {
			err = c.SetDeleteElements(n.blocked, el)
		}
	}
	if err == nil && was.proxied() != p.proxied() {
		if p.proxied() {
			err = c.SetAddElements(n.proxied, el)
		} else {
			err = c.SetDeleteElements(n.proxied, el)
		}
	}
	if err != nil {
		return err
	}
	drop := []expr.Any{verdict(expr.VerdictDrop)}
	if p.Block {
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: drop})
		return nil
	}
	// This container's own exceptions (a build's mirrors) come before the denied ranges.
	for _, cidr := range p.Except {
		if !cidr.Addr().Is4() {
			continue
		}
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: []expr.Any{daddr(1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: maskOf(cidr), Xor: []byte{0, 0, 0, 0}},
			cmpEq(ip4(cidr.Masked().Addr())), verdict(expr.VerdictAccept)}})
	}
	// Denied ranges, less the operator's exceptions, first: no policy reaches them.
	c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: []expr.Any{
		daddr(1), &expr.Lookup{SourceRegister: 1, SetName: n.deny.Name, SetID: n.deny.ID},
		&expr.Lookup{SourceRegister: 1, SetName: n.allow.Name, SetID: n.allow.ID, Invert: true},
		verdict(expr.VerdictDrop)}})
	if !p.Allowlisted {
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: []expr.Any{verdict(expr.VerdictAccept)}})
		return nil
	}
	for _, cidr := range p.CIDRs {
		match := []expr.Any{daddr(1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: maskOf(cidr), Xor: []byte{0, 0, 0, 0}},
			cmpEq(ip4(cidr.Masked().Addr()))}
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: append(match, verdict(expr.VerdictAccept))})
		if p.proxied() {
			// An allowed range goes direct, not through the proxy.
			c.AddRule(&nftables.Rule{Table: n.inet, Chain: nc, Exprs: append(match, verdict(expr.VerdictReturn))})
		}
	}
	c.AddRule(&nftables.Rule{Table: n.inet, Chain: f, Exprs: drop})
	if p.proxied() {
		for _, port := range []uint16{80, 443} {
			c.AddRule(&nftables.Rule{Table: n.inet, Chain: nc, Exprs: join(l4proto(unix.IPPROTO_TCP), dport(port), []expr.Any{
				&expr.Immediate{Register: 1, Data: be16(n.proxyPort)},
				&expr.Redir{RegisterProtoMin: 1}})})
		}
	}
	return nil
}

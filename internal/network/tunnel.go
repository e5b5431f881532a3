package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel-forwarded tunnel ports. When the ingress runs in the worker's process (gust up), a
// raw TCP tunnel's port need not pass through a userspace relay: a DNAT rule in the worker's
// inet table sends new connections to the ingress's port straight to the container's address
// and port, and the kernel carries the bytes (one TCP connection instead of two, no copies).
// The ingress keeps its own listener on the port: it holds the port, and any connection the
// rule does not take (a client outside the inbound_cidr_allowlist) still arrives there and is
// refused as before.
//
//	map tunnels              tcp dport → jump t<port>, the forward's chain
//	chain output (nat)       this machine's own clients: tcp dport vmap @tunnels
//	chain prerouting (nat)   clients from elsewhere (never from the bridge): the same
//	chain t<port>            ip daddr (the listen address, or any local one), ip saddr in the
//	                         allowlist → dnat to the container's address:port
//	chain postrouting (nat)  a forwarded connection from loopback is masqueraded to the
//	                         gateway (the container cannot answer 127.0.0.1)
//	chain forward            into the bridge: the forwarded connection's first packets; from the
//	                         bridge: its replies (before the container's policy, which is
//	                         for what it opens)
//	chain input              from the bridge to 127.0.0.0/8: never a new connection
//
// The bridge gets route_localnet, without which the kernel refuses to route a packet from
// 127.0.0.1 out of it even once it is bound for the container; the input chain is why that
// lets no container reach the machine's loopback. Containers never match the tunnels map
// (prerouting skips the bridge), so a sandbox cannot use a tunnel to reach another one or a
// port of this machine.

const mapTunnels = "tunnels"

// ipsDstNAT is conntrack's IPS_DST_NAT status bit; ctOriginal and ctReply its directions.
const (
	ipsDstNAT  = 1 << 5
	ctOriginal = 0
	ctReply    = 1
)

// forward is one kernel-forwarded tunnel port.
type forward struct {
	listen netip.AddrPort
	port   uint16
	allow  []netip.Prefix
}

func forwardChain(listenPort uint16) string { return "t" + strconv.Itoa(int(listenPort)) }

// ctDNAT matches connections whose destination was rewritten (by a tunnel's rule), in one
// direction: ctOriginal or IP_CT_DIR_REPLY.
func ctDNAT(dir byte) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
		cmpEq([]byte{dir}),
	}
}

func inPrefix(load expr.Any, p netip.Prefix) []expr.Any {
	return []expr.Any{load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: maskOf(p), Xor: []byte{0, 0, 0, 0}},
		cmpEq(ip4(p.Masked().Addr()))}
}

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// tunnelRules adds the tunnels' map and output chain, and returns their rules in install's
// chains, which go before the chains' own rules.
func (n *nft) tunnelRules(c *nftables.Conn, pre, post, fwd, in *nftables.Chain) ([]nftables.Rule, error) {
	n.tunnels = &nftables.Set{Table: n.inet, Name: mapTunnels, KeyType: nftables.TypeInetService, DataType: nftables.TypeVerdict, IsMap: true}
	if err := c.AddSet(n.tunnels, nil); err != nil {
		return nil, fmt.Errorf("nftables set %s: %w", mapTunnels, err)
	}
	accept := nftables.ChainPolicyAccept
	out := c.AddChain(&nftables.Chain{Name: "output", Table: n.inet, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
	tcpVmap := join(isIPv4(), l4proto(unix.IPPROTO_TCP), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: n.tunnels.Name, SetID: n.tunnels.ID, DestRegister: 0, IsDestRegSet: true}})
	fromBr := []expr.Any{metaIn(1), cmpEq(ifname(n.bridge))}
	toBr := []expr.Any{metaOut(1), cmpEq(ifname(n.bridge))}
	return []nftables.Rule{
		{Chain: in, Exprs: join(fromBr, isIPv4(), inPrefix(daddr(1), loopback), []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION}, cmpNeq([]byte{ctReply}), verdict(expr.VerdictDrop)})},
		{Chain: fwd, Exprs: join(fromBr, ctDNAT(ctReply), []expr.Any{verdict(expr.VerdictAccept)})},
		{Chain: fwd, Exprs: join(toBr, ctDNAT(ctOriginal), []expr.Any{verdict(expr.VerdictAccept)})},
		{Chain: out, Exprs: tcpVmap},
		{Chain: pre, Exprs: join([]expr.Any{metaIn(1), cmpNeq(ifname(n.bridge))}, tcpVmap)},
		{Chain: post, Exprs: join(toBr, isIPv4(), inPrefix(saddr(1), loopback), ctDNAT(ctOriginal), []expr.Any{&expr.Masq{}})},
	}, nil
}

// addForward adds a forward's chain and its map entry.
func (n *nft) addForward(c *nftables.Conn, to netip.Addr, f forward) error {
	ch := c.AddChain(&nftables.Chain{Name: forwardChain(f.listen.Port()), Table: n.inet})
	var dst []expr.Any
	if a := f.listen.Addr(); a.IsUnspecified() {
		dst = []expr.Any{&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true}, cmpEq(binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL))}
	} else {
		dst = []expr.Any{daddr(1), cmpEq(ip4(a))}
	}
	dnat := []expr.Any{
		&expr.Immediate{Register: 1, Data: ip4(to)},
		&expr.Immediate{Register: 2, Data: be16(f.port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
	if len(f.allow) == 0 {
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: ch, Exprs: join(dst, dnat)})
	}
	for _, p := range f.allow {
		c.AddRule(&nftables.Rule{Table: n.inet, Chain: ch, Exprs: join(dst, inPrefix(saddr(1), p), dnat)})
	}
	return c.SetAddElements(n.tunnels, []nftables.SetElement{{Key: be16(f.listen.Port()),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}}})
}

// removeForward undoes addForward.
func (n *nft) removeForward(c *nftables.Conn, f forward) error {
	err := c.SetDeleteElements(n.tunnels, []nftables.SetElement{{Key: be16(f.listen.Port())}})
	ch := &nftables.Chain{Name: forwardChain(f.listen.Port()), Table: n.inet}
	c.FlushChain(ch)
	c.DelChain(ch)
	return err
}

// ErrNoForward says a tunnel port cannot be forwarded in the kernel (the caller relays it).
var ErrNoForward = errors.New("network: the port cannot be forwarded in the kernel")

// Forward sends new TCP connections to listen (an IPv4 address of this machine, or 0.0.0.0
// for any of them, and the ingress's port) from clients in allow (empty: any) to port of the
// container, in the kernel, until stop is called or the lease is released. Connections open
// when stop is called run on; those open when the lease is released are cut.
func (l *Lease) Forward(listen netip.AddrPort, port uint16, allow []netip.Prefix) (stop func() error, err error) {
	if !listen.Addr().Is4() || listen.Port() == 0 || port == 0 {
		return nil, fmt.Errorf("%w: %s is not an IPv4 address and port", ErrNoForward, listen)
	}
	f := forward{listen: listen, port: port}
	for _, p := range allow {
		if p = p.Masked(); p.Addr().Is4() {
			f.allow = append(f.allow, p)
		} else if p.Addr().Is4In6() {
			f.allow = append(f.allow, netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0)).Masked())
		}
	}
	if len(allow) > 0 && len(f.allow) == 0 {
		return nil, fmt.Errorf("%w: the allowlist has no IPv4 range", ErrNoForward)
	}
	m := l.m
	m.mu.Lock()
	if l.released || l.forwards[listen.Port()] != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: the container is gone, or port %d is forwarded already", ErrNoForward, listen.Port())
	}
	if l.forwards == nil {
		l.forwards = map[uint16]*forward{}
	}
	l.forwards[listen.Port()] = &f
	l.forwarded = true
	m.mu.Unlock()
	if err := m.batch(func(c *nftables.Conn) error { return m.nft.addForward(c, l.addr, f) }); err != nil {
		m.mu.Lock()
		delete(l.forwards, listen.Port())
		m.mu.Unlock()
		return nil, fmt.Errorf("network: forwarding port %d to %s:%d: %w", listen.Port(), l.addr, port, err)
	}
	return func() error { return l.unforward(&f) }, nil
}

// unforward removes a forward's rules, unless the lease's release did.
func (l *Lease) unforward(f *forward) error {
	m := l.m
	m.mu.Lock()
	if l.forwards[f.listen.Port()] != f {
		m.mu.Unlock()
		return nil
	}
	delete(l.forwards, f.listen.Port())
	m.mu.Unlock()
	if err := m.batch(func(c *nftables.Conn) error { return m.nft.removeForward(c, *f) }); err != nil {
		return fmt.Errorf("network: ending the forward of port %d: %w", f.listen.Port(), err)
	}
	return nil
}

// takeForwards empties the lease's forwards (it is being released) and returns them, and
// whether it ever had one.
func (l *Lease) takeForwards() (fwds []forward, ever bool) {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	l.released = true
	for _, f := range l.forwards {
		fwds = append(fwds, *f)
	}
	l.forwards = nil
	return fwds, l.forwarded
}

// forgetFlows deletes the connection tracking entries of a released container's address: a
// forwarded connection still open would otherwise keep sending to the address, which the next
// container to get it would receive.
func forgetFlows(a netip.Addr) error {
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackReplySrcIP, net.IP(ip4(a))); err != nil {
		return err
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	return err
}

// routeLocalnet lets the kernel route packets from 127.0.0.1 out of the bridge (loopback
// clients of forwarded tunnels); the bridge goes with the manager.
func routeLocalnet(bridge string) error {
	return os.WriteFile("/proc/sys/net/ipv4/conf/"+bridge+"/route_localnet", []byte("1"), 0o644)
}

// tcpEstablished is conntrack's TCP_CONNTRACK_ESTABLISHED.
const tcpEstablished = 3

// ForwardedFlows counts the established connections that forwards brought to the container
// (the worker, which sees no relay for them, counts them as activity against idle_timeout).
// A container that never had a forward has none.
func (l *Lease) ForwardedFlows() (int, error) {
	l.m.mu.Lock()
	ever := l.forwarded
	l.m.mu.Unlock()
	if !ever {
		return 0, nil
	}
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		return 0, fmt.Errorf("network: listing connections: %w", err)
	}
	a := net.IP(ip4(l.addr))
	n := 0
	for _, f := range flows {
		tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP)
		if ok && tcp.State == tcpEstablished && f.Reverse.SrcIP.Equal(a) && !f.Forward.DstIP.Equal(a) {
			n++
		}
	}
	return n, nil
}

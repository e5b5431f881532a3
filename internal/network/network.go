// Package network is the worker's container network: a bridge per worker, and for every
// sandbox and function container a network namespace with a veth pair to the bridge, an
// address from a private range, a default route via the bridge's gateway address, NAT for
// egress, and nftables rules that hold the container's outbound policy (Policy). Namespaces are
// made ahead of demand and kept in a pool, so that a create only sets a policy (one nftables
// batch) and hands the runtime a path to join.
//
// Everything it makes is named after the instance (Config.Tag, from the worker's state
// directory): bridge gb<tag>, veths gv<tag><n>, nftables tables gust-<tag> (inet and bridge).
// A worker that starts removes what a predecessor with the same tag left; the namespaces
// themselves have no name or mount and go with their last process and descriptor.
//
// The domain proxy and DNS resolver (internal/egress) listen on the gateway address; the
// rules send a domain-allowlisted container's TCP 80 and 443 there, and PolicyFor tells them
// whose connection it is. Under gust up, a raw TCP tunnel's port is forwarded to its
// container by a DNAT rule (Lease.Forward, tunnel.go). Veths have a large MTU (DefaultMTU),
// and forwarded SYNs get the outgoing route's MSS (mss.go).
//
// Imported by the worker; imports nothing of gust's.
package network

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Config configures a Manager.
type Config struct {
	// CIDR is the containers' range; the gateway is its first address. Unset, it is
	// DefaultCIDR, or the next /16 up that no interface of the machine uses.
	CIDR netip.Prefix
	// Tag names the bridge, the veths and the tables: two workers on one machine need
	// different tags (Tag derives one from the state directory).
	Tag string
	// Deny is added to DefaultDeny: the worker's own addresses, the server's.
	Deny []netip.Prefix
	// Allow are exceptions the operator makes to the denied ranges (a package mirror on a
	// private address): containers whose policy allows them reach them.
	Allow []netip.Prefix
	// ProxyPort is the domain proxy's port on the gateway (internal/egress).
	ProxyPort uint16
	// MTU is the bridge's and the containers' veths' (default DefaultMTU).
	MTU int
	// PoolSize is how many namespaces are kept ready. Default 4.
	PoolSize int
	// ResolvDir is where resolv.conf for containers is written; it must be searchable by a
	// container's unprivileged root (RunDir/net-<tag> by default; removed by Close, and by a
	// later New when its worker was killed: rundir.go).
	ResolvDir string
	// RunDir is where the workers of a network namespace agree on IPv4 forwarding
	// (forward.go); default /run/gust.
	RunDir string
	Logf   func(format string, args ...any)
}

// DefaultCIDR is the containers' default range.
var DefaultCIDR = netip.MustParsePrefix("10.88.0.0/16")

// DefaultMTU is the containers' default MTU: as large as loopback's, so that the TCP
// connections between containers and this machine (tunnels, the direct baseline, the domain
// proxy) move 64 KiB per packet. Connections beyond the machine get the segment size (MSS) of
// the route they leave by (the SYNs the worker forwards are clamped, mss.go); a datagram too
// large for the uplink is answered with ICMP "fragmentation needed", which the container heeds
// (path MTU discovery: the first such datagram to a destination is lost). Measured with
// `gust bench tunnel`: about 1.4× the throughput of 1500 to a sandbox's address and through a
// raw tunnel.
const DefaultMTU = 65520

// DefaultProxyPort is the default domain proxy port on the gateway.
const DefaultProxyPort = 3129

// Tag derives an instance tag from a worker's state directory.
func Tag(stateDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	return fmt.Sprintf("%x", sum[:3])
}

// Manager owns the bridge, the rules and the namespaces.
type Manager struct {
	cfg Config
	// forwarding: setup turned IPv4 forwarding on (or found it on) for this worker, and
	// Close must say so (restoreForward).
	forwarding bool
	bridge     string
	veth       string // veth name prefix
	gateway    netip.Addr
	resolv     string
	owner      *os.File // holds the resolv.conf directory's owner lock (rundir.go)
	nft        *nft

	mu      sync.Mutex
	free    []uint32 // free host numbers within the range, lowest last
	next    uint32   // host numbers below next were handed out at least once
	byAddr  map[netip.Addr]*Lease
	ready   []*Lease
	filling bool
	closed  bool
	// nftMu orders batches (a netlink socket per batch; the kernel applies each atomically).
	nftMu sync.Mutex
}

// New sets up the bridge and the tables, after removing what a predecessor with the same tag
// left, and starts filling the pool.
func New(cfg Config) (*Manager, error) {
	auto := !cfg.CIDR.IsValid()
	if auto {
		cfg.CIDR = DefaultCIDR
	}
	if !cfg.CIDR.Addr().Is4() || cfg.CIDR.Bits() > 28 {
		return nil, fmt.Errorf("network: the containers' range %s must be IPv4 and hold at least 16 addresses (/28)", cfg.CIDR)
	}
	cfg.CIDR = cfg.CIDR.Masked()
	if cfg.Tag == "" || len(cfg.Tag) > 8 {
		return nil, fmt.Errorf("network: the tag %q must be 1-8 characters", cfg.Tag)
	}
	if cfg.ProxyPort == 0 {
		cfg.ProxyPort = DefaultProxyPort
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 4
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 1280 || cfg.MTU > DefaultMTU {
		return nil, fmt.Errorf("network: the containers' MTU %d must be from 1280 to %d", cfg.MTU, DefaultMTU)
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.RunDir == "" {
		cfg.RunDir = "/run/gust"
	}
	if cfg.ResolvDir == "" {
		cfg.ResolvDir = filepath.Join(cfg.RunDir, "net-"+cfg.Tag)
	}
	m := &Manager{
		cfg: cfg, bridge: "gb" + cfg.Tag, veth: "gv" + cfg.Tag,
		gateway: cfg.CIDR.Addr().Next(), byAddr: map[netip.Addr]*Lease{}, next: 2,
	}
	m.cleanup()
	m.sweepResolvDirs()
	if auto {
		// Another gust (or anything else) on this machine may hold the default range: take the
		// first of 10.88-10.127.0.0/16 that no interface uses. Two gusts starting at once would
		// both see the same range free, so the choice and the claim (the bridge's address, which
		// setup adds) happen under one machine-wide lock.
		unlock, err := lockRangeChoice(cfg.RunDir)
		if err != nil {
			return nil, fmt.Errorf("network: choosing the containers' range: %w", err)
		}
		defer unlock()
		for i := 0; i < 40 && inUse(cfg.CIDR); i++ {
			cfg.CIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(89 + i), 0, 0}), 16)
		}
		m.cfg.CIDR, m.gateway = cfg.CIDR, cfg.CIDR.Addr().Next()
	}
	if err := m.setup(); err != nil {
		m.cleanup()
		m.removeResolvDir()
		m.restoreForward()
		return nil, err
	}
	m.fill()
	return m, nil
}

// Gateway is the bridge's address: the containers' default route, DNS server and proxy host.
func (m *Manager) Gateway() netip.Addr { return m.gateway }

// ProxyPort is the port on the gateway that domain-allowlisted web traffic is redirected to.
func (m *Manager) ProxyPort() uint16 { return m.cfg.ProxyPort }

// Bridge is the bridge's name.
func (m *Manager) Bridge() string { return m.bridge }

// ResolvConf is the file containers see as /etc/resolv.conf.
func (m *Manager) ResolvConf() string { return m.resolv }

// PolicyFor returns the policy of the container that has address src, for the domain proxy
// and the resolver.
func (m *Manager) PolicyFor(src netip.Addr) (Policy, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.byAddr[src.Unmap()]
	if !ok || l.id == "" {
		return Policy{}, false
	}
	return l.policy, true
}

func (m *Manager) setup() error {
	if err := enableForward(m.cfg.RunDir, m.cfg.Tag); err != nil {
		return fmt.Errorf("network: enabling IPv4 forwarding: %w", err)
	}
	m.forwarding = true
	// A fixed MAC: without one the bridge takes the lowest of its ports', which changes as
	// containers come and go, and containers' cached gateway entry goes stale meanwhile.
	sum := sha256.Sum256([]byte("gust-bridge-" + m.cfg.Tag))
	mac := net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.bridge, HardwareAddr: mac, MTU: m.cfg.MTU}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("network: making bridge %s: %w", m.bridge, err)
	}
	// The host side has no IPv6 here: containers get none, and link-local would be a way in.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+m.bridge+"/disable_ipv6", []byte("1"), 0o644) // absent without IPv6: fine
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: m.gateway.AsSlice(), Mask: net.CIDRMask(m.cfg.CIDR.Bits(), 32)}}
	if err := netlink.AddrAdd(br, gw); err != nil {
		return fmt.Errorf("network: address %s on %s: %w (is the range used by another interface? choose another with --network-cidr)", m.gateway, m.bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("network: bridge %s up: %w", m.bridge, err)
	}
	if err := routeLocalnet(m.bridge); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	deny := append(DefaultDeny(), m.cfg.Deny...)
	deny = append(deny, hostAddrs()...)
	m.nft = &nft{
		inet:   &nftables.Table{Name: "gust-" + m.cfg.Tag, Family: nftables.TableFamilyINet},
		br:     &nftables.Table{Name: "gust-" + m.cfg.Tag, Family: nftables.TableFamilyBridge},
		bridge: m.bridge, vethPrefix: m.veth, gateway: m.gateway, proxyPort: m.cfg.ProxyPort, cidr: m.cfg.CIDR,
	}
	if err := m.batch(func(c *nftables.Conn) error { return m.nft.install(c, deny, m.cfg.Allow) }); err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	if err := m.claimResolvDir(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	m.resolv = filepath.Join(m.cfg.ResolvDir, "resolv.conf")
	if err := os.WriteFile(m.resolv, []byte("nameserver "+m.gateway.String()+"\noptions ndots:0\n"), 0o644); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// CIDR is the containers' range.
func (m *Manager) CIDR() netip.Prefix { return m.cfg.CIDR }

// inUse says whether an interface of this namespace has an address in p.
// lockRangeChoice takes the machine-wide lock that orders gusts choosing a range; the returned
// func releases it.
func lockRangeChoice(runDir string) (func(), error) {
	if err := os.MkdirAll(runDir, 0o711); err != nil {
		return nil, err
	}
	f, err := lockFile(filepath.Join(runDir, "network-range.lock"))
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

func inUse(p netip.Prefix) bool {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && netip.PrefixFrom(ip, ones).Masked().Overlaps(p) {
			return true
		}
	}
	return false
}

// hostAddrs are this machine's own IPv4 addresses (as /32s), which containers never reach
// through NAT either.
func hostAddrs() []netip.Prefix {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, netip.PrefixFrom(ip, 32))
		}
	}
	return out
}

// batch runs one nftables transaction.
func (m *Manager) batch(f func(c *nftables.Conn) error) error {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if err := f(c); err != nil {
		return err
	}
	return c.Flush()
}

// cleanup removes the instance's bridge, veths and tables, whoever made them.
func (m *Manager) cleanup() {
	links, err := netlink.LinkList()
	if err == nil {
		for _, l := range links {
			name := l.Attrs().Name
			if strings.HasPrefix(name, m.veth) || name == m.bridge {
				if err := netlink.LinkDel(l); err != nil {
					m.cfg.Logf("network: removing %s: %v", name, err)
				}
			}
		}
	}
	c, err := nftables.New()
	if err == nil {
		for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
			t := &nftables.Table{Name: "gust-" + m.cfg.Tag, Family: fam}
			c.AddTable(t)
			c.DelTable(t)
		}
		if err := c.Flush(); err != nil {
			m.cfg.Logf("network: removing the nftables tables: %v", err)
		}
	}
}

// Close removes everything: pooled namespaces, the tables, the bridge. Leases still held are
// cut off with the bridge.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ready := m.ready
	m.ready = nil
	m.mu.Unlock()
	for _, l := range ready {
		l.close()
	}
	m.cleanup()
	m.removeResolvDir()
	m.restoreForward()
	return nil
}

// restoreForward undoes setup's enableForward (see forward.go).
func (m *Manager) restoreForward() {
	if !m.forwarding {
		return
	}
	m.forwarding = false
	restored, err := releaseForward(m.cfg.RunDir, m.cfg.Tag)
	switch {
	case err != nil:
		m.cfg.Logf("network: IPv4 forwarding: %v", err)
	case restored:
		m.cfg.Logf("network: IPv4 forwarding restored to its value before gust")
	}
}

// Lease is one container's namespace and address.
type Lease struct {
	m    *Manager
	ns   netns.NsHandle
	addr netip.Addr
	veth string
	host uint32

	// Under m.mu.
	id        string
	policy    Policy
	forwards  map[uint16]*forward // by the ingress's port (tunnel.go)
	forwarded bool                // forwards ever had one
	released  bool
	once      sync.Once
}

// NetNSPath is the path a runtime opens to join the namespace.
func (l *Lease) NetNSPath() string {
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(l.ns))
}

// Addr is the container's address, which the worker dials from the host to reach its ports.
func (l *Lease) Addr() netip.Addr { return l.addr }

// Take hands a ready namespace to container id with policy p: from the pool, or made now when
// the pool is empty.
func (m *Manager) Take(id string, p Policy) (*Lease, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("network: the worker's network is closed")
	}
	var l *Lease
	if n := len(m.ready); n > 0 {
		l, m.ready = m.ready[n-1], m.ready[:n-1]
	}
	m.mu.Unlock()
	m.fill()
	if l == nil {
		var err error
		if l, err = m.make(); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	l.id = id
	m.mu.Unlock()
	if err := l.SetPolicy(p); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// SetPolicy replaces the container's policy in one atomic nftables transaction.
func (l *Lease) SetPolicy(p Policy) error {
	l.m.mu.Lock()
	was := l.policy
	l.m.mu.Unlock()
	err := l.m.batch(func(c *nftables.Conn) error { return l.m.nft.setPolicy(c, l.addr, was, p) })
	if err != nil {
		return fmt.Errorf("network: setting the policy of %s (%s): %w", l.id, l.addr, err)
	}
	l.m.mu.Lock()
	l.policy = p
	l.m.mu.Unlock()
	return nil
}

// GVisorMTU is the MTU a gVisor sandbox's interface gets: runsc's netstack sizes its buffers
// by it, and at the loopback-sized DefaultMTU a sandbox under a fork bomb outgrew its memory
// limit and was killed (TestEscapeForkBomb).
const GVisorMTU = 1500

// SetMTU sets the MTU of both ends of the container's veth, before its runtime starts. TCP
// between ends of different MTUs through the bridge is fine: each side's SYN says its MSS.
func (l *Lease) SetMTU(mtu int) error {
	if mtu < 1280 || mtu > DefaultMTU {
		return fmt.Errorf("network: MTU %d must be from 1280 to %d", mtu, DefaultMTU)
	}
	host, err := netlink.LinkByName(l.veth)
	if err != nil {
		return fmt.Errorf("network: veth %s: %w", l.veth, err)
	}
	if err := netlink.LinkSetMTU(host, mtu); err != nil {
		return fmt.Errorf("network: MTU of %s: %w", l.veth, err)
	}
	h, err := netlink.NewHandleAt(l.ns)
	if err != nil {
		return fmt.Errorf("network: netlink in the namespace: %w", err)
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("network: eth0: %w", err)
	}
	if err := h.LinkSetMTU(eth, mtu); err != nil {
		return fmt.Errorf("network: MTU of eth0: %w", err)
	}
	return nil
}

// Release removes the container's rules, veth and namespace descriptor, and frees its address.
// Calling it again does nothing.
func (l *Lease) Release() error {
	var err error
	l.once.Do(func() { err = l.close() })
	return err
}

func (l *Lease) close() error {
	m := l.m
	m.mu.Lock()
	was := l.policy
	m.mu.Unlock()
	fwds, forwarded := l.takeForwards()
	var errs []error
	errs = append(errs, m.batch(func(c *nftables.Conn) error {
		for _, f := range fwds {
			if err := m.nft.removeForward(c, f); err != nil {
				return err
			}
		}
		return m.nft.removeContainer(c, l.addr, l.veth, was)
	}))
	if link, err := netlink.LinkByName(l.veth); err == nil {
		errs = append(errs, netlink.LinkDel(link))
	}
	if forwarded {
		errs = append(errs, forgetFlows(l.addr))
	}
	errs = append(errs, l.ns.Close())
	m.mu.Lock()
	delete(m.byAddr, l.addr)
	m.free = append(m.free, l.host)
	m.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: releasing %s: %w", l.addr, err)
	}
	return nil
}

// alloc takes a free host number.
func (m *Manager) alloc() (uint32, netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	base := u32(m.cfg.CIDR.Addr())
	size := uint32(1) << (32 - m.cfg.CIDR.Bits())
	var h uint32
	if n := len(m.free); n > 0 {
		h, m.free = m.free[n-1], m.free[:n-1]
	} else if m.next < size-1 {
		h = m.next
		m.next++
	} else {
		return 0, netip.Addr{}, fmt.Errorf("network: all %d addresses of %s are in use", size-3, m.cfg.CIDR)
	}
	return h, addrOf(base + h), nil
}

// make builds a namespace: a veth pair whose inside end is eth0 with the next address and a
// default route via the gateway, loopback up, and rules that drop everything until a policy is
// set.
func (m *Manager) make() (_ *Lease, retErr error) {
	h, addr, err := m.alloc()
	if err != nil {
		return nil, err
	}
	l := &Lease{m: m, addr: addr, host: h, veth: m.veth + strconv.FormatUint(uint64(h), 36), policy: Policy{Block: true}}
	ns, err := newNS()
	if err != nil {
		m.mu.Lock()
		m.free = append(m.free, h)
		m.mu.Unlock()
		return nil, err
	}
	l.ns = ns
	defer func() {
		if retErr != nil {
			_ = l.Release() // best effort: the error that matters is retErr
		}
	}()
	m.mu.Lock()
	m.byAddr[addr] = l
	m.mu.Unlock()
	if err := m.batch(func(c *nftables.Conn) error { return m.nft.addContainer(c, addr, l.veth) }); err != nil {
		return nil, fmt.Errorf("network: nftables for %s: %w", addr, err)
	}
	br, err := netlink.LinkByName(m.bridge)
	if err != nil {
		return nil, fmt.Errorf("network: bridge %s: %w", m.bridge, err)
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: l.veth, MasterIndex: br.Attrs().Index, MTU: br.Attrs().MTU},
		PeerName:  "eth0", PeerNamespace: netlink.NsFd(int(ns)), PeerHardwareAddr: MACOf(addr),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("network: veth %s: %w", l.veth, err)
	}
	host, err := netlink.LinkByName(l.veth)
	if err != nil {
		return nil, fmt.Errorf("network: veth %s: %w", l.veth, err)
	}
	// Port isolation: the bridge forwards nothing between two isolated ports (the bridge
	// table's forward rule is the other half of that).
	if err := netlink.LinkSetIsolated(host, true); err != nil {
		return nil, fmt.Errorf("network: isolating %s: %w", l.veth, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("network: %s up: %w", l.veth, err)
	}
	h2, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("network: netlink in the namespace: %w", err)
	}
	defer h2.Close()
	eth, err := h2.LinkByName("eth0")
	if err != nil {
		return nil, fmt.Errorf("network: eth0: %w", err)
	}
	if err := h2.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(m.cfg.CIDR.Bits(), 32)}}); err != nil {
		return nil, fmt.Errorf("network: address %s: %w", addr, err)
	}
	if err := h2.LinkSetUp(eth); err != nil {
		return nil, fmt.Errorf("network: eth0 up: %w", err)
	}
	lo, err := h2.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("network: lo: %w", err)
	}
	if err := h2.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("network: lo up: %w", err)
	}
	if err := h2.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: m.gateway.AsSlice()}); err != nil {
		return nil, fmt.Errorf("network: default route: %w", err)
	}
	return l, nil
}

// newNS makes a network namespace and returns a descriptor of it; the calling goroutine's
// thread visits it and comes back (or, if it cannot, stays locked and ends with the goroutine).
func newNS() (netns.NsHandle, error) {
	type res struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{-1, fmt.Errorf("network: this thread's namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{-1, fmt.Errorf("network: new namespace: %w", err)}
			return
		}
		if err := netns.Set(orig); err != nil {
			_ = ns.Close()
			ch <- res{-1, fmt.Errorf("network: back to the machine's namespace: %w", err)}
			return // the thread stays locked and ends with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- res{ns, nil}
	}()
	r := <-ch
	return r.ns, r.err
}

// fill makes namespaces until the pool is full; one filler runs at a time.
func (m *Manager) fill() {
	m.mu.Lock()
	if m.filling || m.closed || len(m.ready) >= m.cfg.PoolSize {
		m.mu.Unlock()
		return
	}
	m.filling = true
	m.mu.Unlock()
	go func() {
		for {
			m.mu.Lock()
			if m.closed || len(m.ready) >= m.cfg.PoolSize {
				m.filling = false
				m.mu.Unlock()
				return
			}
			m.mu.Unlock()
			l, err := m.make()
			if err != nil {
				m.cfg.Logf("network: the namespace pool stays short: %v", err)
				m.mu.Lock()
				m.filling = false
				m.mu.Unlock()
				return
			}
			m.mu.Lock()
			if m.closed {
				m.mu.Unlock()
				_ = l.Release()
				continue
			}
			m.ready = append(m.ready, l)
			m.mu.Unlock()
		}
	}()
}

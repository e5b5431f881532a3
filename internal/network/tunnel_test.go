package network

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// serveGreeting answers every connection on ln with its name and then echoes what it reads.
func serveGreeting(ln net.Listener, name string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
}

// whoAnswers dials addr and returns the greeting of the server that answered ("" when none),
// after checking that an echo comes back through the connection.
func whoAnswers(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	name, err := br.ReadString('\n')
	if err != nil {
		return ""
	}
	msg := strings.Repeat("y", 300_000) // more than a window's worth, both ways
	go io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
		t.Errorf("the echo through %s (%s) came back wrong: %v", addr, strings.TrimSpace(name), err)
	}
	return strings.TrimSpace(name)
}

// tunnelChains are the forward chains (t<port>) in the instance's inet table.
func tunnelChains(t *testing.T, tag string) []string {
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name == "gust-"+tag && strings.HasPrefix(ch.Name, "t") {
			out = append(out, ch.Name)
		}
	}
	return out
}

// TestForward: a forwarded port reaches the container in the kernel, from loopback and from
// an address of the machine, both ways; clients outside the allowlist, and connections after
// stop, reach the ingress's own listener instead; containers cannot use a forward (to reach
// another container or a port of the machine); releasing the lease removes its rules.
func TestForward(t *testing.T) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		t.Skip("needs root, and runs in a namespace of its own")
	}
	if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}); err != nil {
		t.Fatal(err)
	}
	// A second address of "this machine", as a client from elsewhere would reach it.
	dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gtdummy"}, PeerName: "gtdummy1"}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(dummy)
	hostAddr := netip.MustParseAddr("192.0.2.1")
	if err := netlink.AddrAdd(dummy, &netlink.Addr{IPNet: &net.IPNet{IP: hostAddr.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(dummy); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Tag: "t2", CIDR: netip.MustParsePrefix("10.233.0.0/24"), PoolSize: 1, ResolvDir: t.TempDir(), RunDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := m.Take("sb-a", Policy{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Take("sb-b", Policy{})
	if err != nil {
		t.Fatal(err)
	}
	var lnA net.Listener
	inNS(t, a.NetNSPath(), func() { lnA, err = net.Listen("tcp4", "0.0.0.0:9000") })
	if err != nil {
		t.Fatal(err)
	}
	defer lnA.Close()
	serveGreeting(lnA, "sandbox")
	// The ingress's own listeners: on loopback, and on every address.
	lo, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	serveGreeting(lo, "ingress")
	any, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer any.Close()
	serveGreeting(any, "ingress")
	loAddr := netip.MustParseAddrPort(lo.Addr().String())
	anyPort := uint16(any.Addr().(*net.TCPAddr).Port)

	if got := whoAnswers(t, loAddr.String()); got != "ingress" {
		t.Fatalf("before a forward, %s answered %q", loAddr, got)
	}
	stop, err := a.Forward(loAddr, 9000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := whoAnswers(t, loAddr.String()); got != "sandbox" {
		t.Errorf("through the forward of %s, %q answered, not the sandbox", loAddr, got)
	}
	if _, err := a.Forward(loAddr, 9000, nil); err == nil {
		t.Error("a port was forwarded twice")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := whoAnswers(t, loAddr.String()); got != "ingress" {
		t.Errorf("after stop, %s answered %q", loAddr, got)
	}

	// On every address, for an allowlist: 192.0.2.0/24 in, loopback out.
	anyAddr := netip.AddrPortFrom(netip.IPv4Unspecified(), anyPort)
	if _, err := a.Forward(anyAddr, 9000, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	viaHost := netip.AddrPortFrom(hostAddr, anyPort).String()
	if got := whoAnswers(t, viaHost); got != "sandbox" {
		t.Errorf("a client in the allowlist reached %q through %s, not the sandbox", got, viaHost)
	}
	if got := whoAnswers(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), anyPort).String()); got != "ingress" {
		t.Errorf("a client outside the allowlist reached %q, not the ingress (which refuses it)", got)
	}
	// Another container reaches neither the forward nor the machine's port behind it: not on
	// the gateway, not on the machine's address, not on loopback.
	inNS(t, b.NetNSPath(), func() {
		for _, to := range []netip.Addr{m.Gateway(), hostAddr, netip.MustParseAddr("127.0.0.1")} {
			if got := whoAnswers(t, netip.AddrPortFrom(to, anyPort).String()); got != "" {
				t.Errorf("another container reached %q through %s:%d", got, to, anyPort)
			}
		}
	})
	// Nor does the container itself (a way to the machine's ports).
	inNS(t, a.NetNSPath(), func() {
		if got := whoAnswers(t, netip.AddrPortFrom(m.Gateway(), anyPort).String()); got != "" {
			t.Errorf("the container reached %q through the gateway's port %d", got, anyPort)
		}
	})
	if n := len(tunnelChains(t, "t2")); n != 1 {
		t.Errorf("%d forward chains, want 1", n)
	}
	// An open connection through the forward is cut when the lease goes.
	open, err := net.Dial("tcp4", viaHost)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	open.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := bufio.NewReader(open).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if n, err := a.ForwardedFlows(); err != nil || n != 1 {
		t.Errorf("ForwardedFlows with one connection open: %d, %v", n, err)
	}
	if n, err := b.ForwardedFlows(); err != nil || n != 0 {
		t.Errorf("ForwardedFlows of a container without forwards: %d, %v", n, err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if got := tunnelChains(t, "t2"); len(got) != 0 {
		t.Errorf("left behind after the lease's release: chains %v", got)
	}
	if got := whoAnswers(t, viaHost); got != "ingress" {
		t.Errorf("after the release, %s answered %q", viaHost, got)
	}
	if _, err := a.Forward(loAddr, 9000, nil); err == nil {
		t.Error("a released lease forwarded a port")
	}
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.Reverse.SrcIP.Equal(a.Addr().AsSlice()) {
			t.Errorf("a flow to the released container is still tracked: %v", f)
		}
	}
}

// TestResolvDirs: a manager removes its resolv.conf directory when it closes, and at start
// those of workers that were killed (their owner lock is free), not those of running workers
// (wherever their network namespace) nor those without an owner file (older gusts').
func TestResolvDirs(t *testing.T) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		t.Skip("needs root, and runs in a namespace of its own")
	}
	run := t.TempDir()
	old := time.Now().Add(-2 * sweepAge)
	mkdir := func(name string, owner bool) string {
		d := filepath.Join(run, name)
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "resolv.conf"), []byte("nameserver 10.1.0.1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if owner {
			if err := os.WriteFile(filepath.Join(d, ownerFile), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
		return d
	}
	killed, legacy, running := mkdir("net-dead01", true), mkdir("net-old001", false), mkdir("net-live01", true)
	// The running one's worker (in another namespace, say) holds its lock.
	lock, err := os.Open(filepath.Join(running, ownerFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	first, err := New(Config{Tag: "t4", CIDR: netip.MustParsePrefix("10.234.0.0/24"), PoolSize: 1, RunDir: run, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(killed); !os.IsNotExist(err) {
		t.Errorf("a killed worker's %s is still there (%v)", killed, err)
	}
	for _, d := range []string{legacy, running} {
		if _, err := os.Stat(filepath.Join(d, "resolv.conf")); err != nil {
			t.Errorf("%s went: %v", d, err)
		}
	}
	if first.ResolvConf() != filepath.Join(run, "net-t4", "resolv.conf") {
		t.Errorf("resolv.conf at %s, want it under RunDir", first.ResolvConf())
	}
	// A second worker, once the first's directory is old: the first still runs.
	if err := os.Chtimes(filepath.Join(run, "net-t4"), old, old); err != nil {
		t.Fatal(err)
	}
	second, err := New(Config{Tag: "t5", CIDR: netip.MustParsePrefix("10.235.0.0/24"), PoolSize: 1, RunDir: run, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first.ResolvConf()); err != nil {
		t.Errorf("a running worker's resolv.conf went when another started: %v", err)
	}
	for _, m := range []*Manager{first, second} {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"net-t4", "net-t5"} {
		if _, err := os.Stat(filepath.Join(run, d)); !os.IsNotExist(err) {
			t.Errorf("%s is still there after its worker stopped (%v)", d, err)
		}
	}
}

// TestLoopbackClosed: the bridge routes packets from 127.0.0.1 (route_localnet, for tunnels'
// loopback clients), which must not open this machine's loopback to containers: a UDP
// datagram that a container addresses to 127.0.0.1 through the gateway never arrives.
func TestLoopbackClosed(t *testing.T) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		t.Skip("needs root, and runs in a namespace of its own")
	}
	if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Tag: "t6", CIDR: netip.MustParsePrefix("10.236.0.0/24"), PoolSize: 1, ResolvDir: t.TempDir(), RunDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := m.Take("sb-a", Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + m.Bridge() + "/route_localnet"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("route_localnet on the bridge: %q, %v", b, err)
	}
	host, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	got := make(chan string, 4)
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := host.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- fmt.Sprintf("%q from %s", buf[:n], from)
		}
	}()
	br, err := netlink.LinkByName(m.Bridge())
	if err != nil {
		t.Fatal(err)
	}
	gwMAC, ownMAC := br.Attrs().HardwareAddr, macIn(t, a.NetNSPath())
	port := uint16(host.LocalAddr().(*net.UDPAddr).Port)
	inNS(t, a.NetNSPath(), func() {
		// To 127.0.0.1 and, as a check that such frames arrive at all, to the gateway.
		sendUDP(t, ownMAC, gwMAC, a.Addr(), netip.MustParseAddr("127.0.0.1"), port, "to loopback")
	})
	select {
	case msg := <-got:
		t.Errorf("a container reached this machine's loopback: %s", msg)
	case <-time.After(time.Second):
	}
	// The same frame to a listener on the gateway, which the container's policy does not
	// allow either, but which shows that crafted frames arrive: DNS on the gateway does.
	dns, err := net.ListenPacket("udp4", m.Gateway().String()+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	inNS(t, a.NetNSPath(), func() {
		sendUDP(t, ownMAC, gwMAC, a.Addr(), m.Gateway(), 53, "to dns")
	})
	dns.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := dns.ReadFrom(make([]byte, 64)); err != nil || n != len("to dns") {
		t.Errorf("a crafted frame to DNS on the gateway did not arrive (%d bytes, %v): the test proves nothing", n, err)
	}
}

// sendUDP sends, from eth0 of the calling thread's namespace, an Ethernet frame with an IPv4
// UDP datagram: what a container with CAP_NET_RAW can send to any address through any MAC.
func sendUDP(t *testing.T, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload string) {
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Error(err)
		return
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_IP)))
	if err != nil {
		t.Error(err)
		return
	}
	defer unix.Close(fd)
	udpLen := 8 + len(payload)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen)) // checksum 0: none, as IPv4 allows
	f := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	f = append(append(append(f, ip...), udp...), payload...)
	var addr [8]byte
	copy(addr[:], dstMAC)
	if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: eth.Attrs().Index, Halen: 6, Addr: addr}); err != nil {
		t.Error(err)
	}
}

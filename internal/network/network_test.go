package network

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestMain runs the root tests in a network namespace of their own, so that they touch
// nothing of the machine's network.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv("GUST_NETWORK_TEST_CHILD") == "" && !isShort() {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), "GUST_NETWORK_TEST_CHILD=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		if err != nil {
			panic(err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func isShort() bool {
	for _, a := range os.Args {
		if strings.HasPrefix(a, "-test.short") {
			return true
		}
	}
	return false
}

func TestMergeSpans(t *testing.T) {
	got := spansOf([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32"),
		netip.MustParsePrefix("11.0.0.0/8"), netip.MustParsePrefix("240.0.0.0/4"),
	})
	want := []span{{u32(netip.MustParseAddr("10.0.0.0")), u32(netip.MustParseAddr("11.255.255.255"))},
		{u32(netip.MustParseAddr("240.0.0.0")), ^uint32(0)}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("spans %v, want %v", got, want)
	}
}

// inNS runs f on a thread in the namespace at path.
func inNS(t *testing.T, path string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, _ := netns.Get()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			t.Error(err)
			return
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// listenIn listens on addr inside a namespace.
func listenIn(t *testing.T, path, addr string) net.Listener {
	var ln net.Listener
	inNS(t, path, func() {
		var err error
		if ln, err = net.Listen("tcp4", addr); err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func TestManager(t *testing.T) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		t.Skip("needs root, and runs in a namespace of its own")
	}
	if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Tag: "t1", CIDR: netip.MustParsePrefix("10.231.0.0/24"), PoolSize: 2, ResolvDir: t.TempDir(), RunDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Take("sb-a", Policy{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Take("sb-b", Policy{Block: true})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.PolicyFor(b.Addr()); !ok || !p.Block {
		t.Errorf("PolicyFor(%s) = %v, %v; want blocked", b.Addr(), p, ok)
	}
	// A host listener on the gateway: no container reaches it. The worker reaches a
	// container's listener.
	hostLn, err := net.Listen("tcp4", m.Gateway().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	go func() {
		for {
			c, err := hostLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	lnB := listenIn(t, b.NetNSPath(), b.Addr().String()+":8080")
	defer lnB.Close()
	lnA := listenIn(t, a.NetNSPath(), a.Addr().String()+":8080")
	defer lnA.Close()
	if !dialOK(a.Addr().String() + ":8080") {
		t.Error("the worker cannot reach a container's port")
	}
	// DNS on the gateway is open to every policy but block.
	dnsLn, err := net.Listen("tcp4", m.Gateway().String()+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer dnsLn.Close()
	go func() {
		for {
			c, err := dnsLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	inNS(t, b.NetNSPath(), func() {
		if dialOK(dnsLn.Addr().String()) {
			t.Error("a blocked container reached DNS on the gateway")
		}
	})
	inNS(t, a.NetNSPath(), func() {
		if !dialOK(dnsLn.Addr().String()) {
			t.Error("a container cannot reach DNS on the gateway")
		}
		if dialOK(hostLn.Addr().String()) {
			t.Error("a container reached a host port on the gateway")
		}
		if dialOK(b.Addr().String() + ":8080") {
			t.Error("a container reached another container")
		}
	})
	// A container may not borrow another's address to get its policy: the bridge drops packets
	// whose source is not their port's. b (blocked) sends UDP with a's address to DNS on the
	// gateway, which a may reach (a reply would go to a, so only a one-way packet shows it).
	udp, err := net.ListenPacket("udp4", m.Gateway().String()+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	got := make(chan string, 8)
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	send := func(path string, from netip.Addr, msg string) {
		inNS(t, path, func() {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: from.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(m.Gateway(), 53)))
			if err != nil {
				t.Error(err)
				return
			}
			c.Write([]byte(msg))
			c.Close()
		})
	}
	inNS(t, b.NetNSPath(), func() {
		eth, err := netlink.LinkByName("eth0")
		if err == nil {
			err = netlink.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}})
		}
		if err != nil {
			t.Error(err)
		}
	})
	send(b.NetNSPath(), a.Addr(), "spoofed")
	send(a.NetNSPath(), a.Addr(), "genuine")
	for i := 0; i < 2; i++ {
		select {
		case msg := <-got:
			if msg == "spoofed" {
				t.Error("a container's packet with another container's address got through")
			}
		case <-time.After(2 * time.Second):
			if i == 0 {
				t.Error("a container's own DNS packet did not arrive")
			}
		}
	}
	// ARP and MAC spoofing towards the worker: b tells the gateway that a's address is at b's
	// MAC, then impersonates a outright (a's MAC as the frame's source and the ARP sender). The
	// worker's neighbour entry for a, and the bridge's forwarding entry for a's MAC, stay a's.
	aMAC, bMAC := macIn(t, a.NetNSPath()), macIn(t, b.NetNSPath())
	if !dialOK(a.Addr().String() + ":8080") { // the worker learns a's MAC
		t.Error("the worker cannot reach a container's port")
	}
	time.Sleep(1200 * time.Millisecond) // past the entry's locktime, so that a reply could change it
	inNS(t, b.NetNSPath(), func() {
		sendARPReply(t, bMAC, bMAC, a.Addr(), m.Gateway())
		sendARPReply(t, aMAC, aMAC, a.Addr(), m.Gateway())
	})
	time.Sleep(300 * time.Millisecond)
	br, err := netlink.LinkByName(m.Bridge())
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := netlink.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(a.Addr().AsSlice()) && n.HardwareAddr.String() != aMAC.String() {
			t.Errorf("ARP spoofing: the worker now sends %s's packets to %s (a's MAC is %s)", a.Addr(), n.HardwareAddr, aMAC)
		}
	}
	vethA, err := netlink.LinkByName(a.veth)
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fdb {
		if n.HardwareAddr.String() == aMAC.String() && n.LinkIndex != vethA.Attrs().Index {
			t.Errorf("MAC spoofing: the bridge forwards %s (a's MAC) to link %d, not a's port %s", aMAC, n.LinkIndex, a.veth)
		}
	}
	if !dialOK(a.Addr().String() + ":8080") {
		t.Error("after b's spoofing, the worker cannot reach a")
	}
	// Replacing b's policy opens it to a; the bridge still keeps them apart.
	if err := b.SetPolicy(Policy{}); err != nil {
		t.Fatal(err)
	}
	inNS(t, b.NetNSPath(), func() {
		if !dialOK(dnsLn.Addr().String()) {
			t.Error("after its policy was replaced, a container cannot reach DNS on the gateway")
		}
		if dialOK(a.Addr().String() + ":8080") {
			t.Error("a container reached another container")
		}
	})
	for _, l := range []*Lease{a, b} {
		if err := l.Release(); err != nil {
			t.Error(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "gvt1") || l.Attrs().Name == "gbt1" {
			t.Errorf("left behind: link %s", l.Attrs().Name)
		}
	}
	c, _ := nftables.New()
	tables, _ := c.ListTables()
	for _, tb := range tables {
		if tb.Name == "gust-t1" {
			t.Errorf("left behind: nftables table %s", tb.Name)
		}
	}
}

// BenchmarkTake measures what a create waits for: a namespace from a full pool with its
// policy set (one nftables batch), against making one on the spot (an empty pool).
func BenchmarkTake(b *testing.B) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		b.Skip("needs root, and runs in a namespace of its own")
	}
	m, err := New(Config{Tag: "tb", CIDR: netip.MustParsePrefix("10.232.0.0/16"), PoolSize: 4, ResolvDir: b.TempDir(), RunDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.Run("from the pool", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				m.mu.Lock()
				n := len(m.ready)
				m.mu.Unlock()
				if n > 0 {
					break
				}
			}
			b.StartTimer()
			l, err := m.Take("sb-x", Policy{})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			l.Release()
			b.StartTimer()
		}
	})
	b.Run("made on the spot", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			l, err := m.make()
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			l.Release()
			b.StartTimer()
		}
	})
}

// macIn is eth0's MAC address in a namespace.
func macIn(t *testing.T, path string) net.HardwareAddr {
	var mac net.HardwareAddr
	inNS(t, path, func() {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Error(err)
			return
		}
		mac = eth.Attrs().HardwareAddr
	})
	if mac == nil {
		t.FailNow()
	}
	return mac
}

// sendARPReply broadcasts, from eth0 of the calling thread's namespace, an ARP reply "spa is
// at sha" to tpa in a frame whose source MAC is src.
func sendARPReply(t *testing.T, src, sha net.HardwareAddr, spa, tpa netip.Addr) {
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Error(err)
		return
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		t.Error(err)
		return
	}
	defer unix.Close(fd)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := append(append(append([]byte{}, bcast...), src...), 0x08, 0x06)
	f = append(f, 0, 1, 0x08, 0, 6, 4, 0, 2)
	f = append(append(f, sha...), spa.AsSlice()...)
	f = append(append(f, bcast...), tpa.AsSlice()...)
	var addr [8]byte
	copy(addr[:], bcast)
	for range 3 {
		if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: eth.Attrs().Index, Halen: 6, Addr: addr}); err != nil {
			t.Error(err)
			return
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestForwardingRestored: IPv4 forwarding off before two workers start is on while either
// runs and off again once both stopped; one that was on already stays on.
func TestForwardingRestored(t *testing.T) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		t.Skip("needs root, and runs in a namespace of its own")
	}
	read := func() string {
		b, err := os.ReadFile(ipForward)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	run := t.TempDir()
	for _, start := range []string{"0", "1"} {
		if err := os.WriteFile(ipForward, []byte(start), 0o644); err != nil {
			t.Fatal(err)
		}
		m1, err := New(Config{Tag: "tf1", CIDR: netip.MustParsePrefix("10.232.0.0/24"), PoolSize: 1, RunDir: run, ResolvDir: t.TempDir(), Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		m2, err := New(Config{Tag: "tf2", CIDR: netip.MustParsePrefix("10.233.0.0/24"), PoolSize: 1, RunDir: run, ResolvDir: t.TempDir(), Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		if got := read(); got != "1" {
			t.Errorf("from %s: forwarding %s while workers run", start, got)
		}
		m1.Close()
		if got := read(); got != "1" {
			t.Errorf("from %s: forwarding %s after one of two workers stopped", start, got)
		}
		m2.Close()
		if got := read(); got != start {
			t.Errorf("forwarding %s after the last worker stopped, was %s before", got, start)
		}
	}
}

// TestAutoRangesDistinct: managers that start at the same moment without a range each get a
// range of their own (they raced for 10.89.0.0/16 once, and the second resolver could not
// bind the gateway's port 53).
func TestAutoRangesDistinct(t *testing.T) {
	if os.Getenv("GUST_NETWORK_TEST_CHILD") == "" {
		t.Skip("needs root, and runs in a namespace of its own")
	}
	run := t.TempDir()
	const n = 4
	ms := make([]*Manager, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i], errs[i] = New(Config{Tag: fmt.Sprintf("ta%d", i), PoolSize: 1, RunDir: run, ResolvDir: t.TempDir(), Logf: t.Logf})
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, m := range ms {
		if errs[i] != nil {
			t.Errorf("manager %d: %v", i, errs[i])
			continue
		}
		defer m.Close()
		if j, dup := seen[m.CIDR()]; dup {
			t.Errorf("managers %d and %d both took %s", j, i, m.CIDR())
		}
		seen[m.CIDR()] = i
	}
}

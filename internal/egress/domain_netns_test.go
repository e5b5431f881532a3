package egress

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// testNet is three network namespaces made for one test, named dpxt<pid><role>:
//
//	C (a container, 10.213.0.2) ── veth ── W (the worker, gateway 10.213.0.1) ── veth ── I (the "internet", 198.18.0.2)
//
// W does not forward: C reaches I only through what listens in W. I also holds 10.214.0.5, a
// "private" address behind W, where listeners count any connection that leaks there.
type testNet struct {
	c, w, i string   // namespace names
	wns     *os.File // W, to make sockets in
	ins     *os.File // I
}

const (
	tnGateway  = "10.213.0.1"
	tnClient   = "10.213.0.2"
	tnInternet = "198.18.0.2"
	tnPrivate  = "10.214.0.5"
)

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// sweepTestNets removes namespaces that an earlier, interrupted run of these tests left.
func sweepTestNets() {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "dpxt")
		if !ok || len(rest) < 2 {
			continue
		}
		pid, err := strconv.Atoi(rest[:len(rest)-1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = exec.Command("ip", "netns", "del", e.Name()).Run() // best effort: a leftover
			_ = os.RemoveAll("/etc/netns/" + e.Name())
		}
	}
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	sweepTestNets()
	p := strconv.Itoa(os.Getpid())
	n := &testNet{c: "dpxt" + p + "c", w: "dpxt" + p + "w", i: "dpxt" + p + "i"}
	for _, ns := range []string{n.c, n.w, n.i} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() }) // the veths go with it
	}
	v := "dpx" + p[max(0, len(p)-6):]
	ipCmd(t, "link", "add", v+"c", "netns", n.c, "type", "veth", "peer", "name", v+"w", "netns", n.w)
	ipCmd(t, "link", "add", v+"i", "netns", n.i, "type", "veth", "peer", "name", v+"x", "netns", n.w)
	for _, c := range [][]string{
		{n.c, "addr", "add", tnClient + "/24", "dev", v + "c"}, {n.c, "link", "set", "lo", "up"}, {n.c, "link", "set", v + "c", "up"},
		{n.c, "route", "add", "default", "via", tnGateway},
		{n.w, "addr", "add", tnGateway + "/24", "dev", v + "w"}, {n.w, "link", "set", "lo", "up"}, {n.w, "link", "set", v + "w", "up"},
		{n.w, "addr", "add", "198.18.0.1/24", "dev", v + "x"}, {n.w, "link", "set", v + "x", "up"},
		{n.w, "route", "add", "10.214.0.0/24", "via", tnInternet},
		{n.i, "addr", "add", tnInternet + "/24", "dev", v + "i"}, {n.i, "addr", "add", tnPrivate + "/32", "dev", v + "i"},
		{n.i, "link", "set", "lo", "up"}, {n.i, "link", "set", v + "i", "up"}, {n.i, "route", "add", "default", "via", "198.18.0.1"},
	} {
		ipCmd(t, append([]string{"-n", c[0]}, c[1:]...)...)
	}
	var err error
	if n.wns, err = os.Open("/run/netns/" + n.w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.wns.Close() })
	if n.ins, err = os.Open("/run/netns/" + n.i); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.ins.Close() })
	// C's resolver is W's gateway, as a container's resolv.conf says.
	dir := "/etc/netns/" + n.c
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+tnGateway+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// in runs f on a thread inside ns, so that the sockets f makes live there.
func in(t testing.TB, ns *os.File, f func() error) {
	t.Helper()
	if err := inNS(ns, f); err != nil {
		t.Fatal(err)
	}
}

// dialFrom dials with dial on a thread in ns, so that the connection lives there.
func dialFrom(ns *os.File, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() (err error) {
			c, err = dial(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// dialIn is the proxy's own dial, from ns.
func dialIn(ns *os.File) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialFrom(ns, publicDialer(nil))
}

// upstream serves the internet's resolver in I with records, and returns an Upstream that
// asks it from W, as the worker asks its upstream resolvers.
func (n *testNet) upstream(t testing.TB, records map[string][]string) (*Upstream, *fakeDNS) {
	t.Helper()
	f := &fakeDNS{records: records}
	var pc net.PacketConn
	in(t, n.ins, func() (err error) {
		pc, err = net.ListenPacket("udp4", tnInternet+":53")
		return err
	})
	serveFakeDNS(t, f, pc)
	up, err := NewUpstream([]string{tnInternet})
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	up.Dial = dialFrom(n.wns, d.DialContext)
	return up, f
}

// redirect adds, in W, the rule the network manager adds for a domain-allowlisted container:
// its TCP 80 and 443 go to the proxy's port on the gateway.
func (n *testNet) redirect(t testing.TB, port uint16) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.wns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "dpxtest"})
	ch := c.AddChain(&nftables.Chain{Name: "pre", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	src := netip.MustParseAddr(tnClient).As4()
	for _, dport := range []uint16{80, 443} {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src[:]},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(dport)},
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Redir{RegisterProtoMin: 1},
		}})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("nftables redirect in %s: %v", n.w, err)
	}
}

// testCert makes a CA and a certificate for names, and writes the CA to dir/ca.pem.
func testCert(t *testing.T, dir string, names ...string) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dpx test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// internetServers serves, in I, HTTP on :80 and HTTPS on :443 of the public address (saying
// which name and port was asked), and the same on the private address, counting connections
// there: none may arrive.
func (n *testNet) internetServers(t *testing.T, cert tls.Certificate) (leaks *atomic.Int32) {
	t.Helper()
	leaks = new(atomic.Int32)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		fmt.Fprintf(w, "%s %s %s", scheme, r.Host, r.URL.Path)
	})
	for _, addr := range []string{tnInternet, tnPrivate} {
		for _, port := range []string{"80", "443"} {
			var ln net.Listener
			in(t, n.ins, func() (err error) {
				ln, err = net.Listen("tcp4", net.JoinHostPort(addr, port))
				return err
			})
			if addr == tnPrivate {
				ln = &countingListener{Listener: ln, n: leaks}
			}
			if port == "443" {
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
			}
			srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
		}
	}
	return leaks
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// curl runs curl in C and returns its exit code and output.
func (n *testNet) curl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.c, "curl", "-sS", "--max-time", "10", "--noproxy", "*"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// TestDomainProxyNetns runs the resolver and the proxy on a gateway, as the worker does, with
// a real nat redirect and real clients (curl, resolving through /etc/resolv.conf), and an
// "internet" of namespaces with its own DNS server: the SNI and Host paths, SO_ORIGINAL_DST,
// refusals by name and for bare addresses, and DNS rebinding, for real.
func TestDomainProxyNetns(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root to make network namespaces")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	n := newTestNet(t)
	dir := t.TempDir()
	cert := testCert(t, dir, "allowed.test", "other.test", "rebind.test")
	leaks := n.internetServers(t, cert)

	// The internet's resolver, in I, which the worker's side asks from W.
	up, f := n.upstream(t, map[string][]string{
		"allowed.test": {tnInternet}, "other.test": {tnInternet}, "rebind.test": {tnPrivate},
	})
	pol, err := ParseDomainAllowlist([]string{"allowed.test", "rebind.test"})
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(src netip.Addr) (Client, bool) {
		if src != netip.MustParseAddr(tnClient) {
			return Client{}, false
		}
		return Client{ID: "sb-netns", Domains: pol, Restricted: true}, true
	}
	// Started on a thread in W, as the worker starts it in its own namespace.
	var gw *Gateway
	in(t, n.wns, func() (err error) {
		gw, err = StartGateway(GatewayConfig{Addr: netip.MustParseAddr(tnGateway), Upstream: up, Lookup: lookup, Logf: t.Logf, Dial: dialIn(n.wns)})
		return err
	})
	t.Cleanup(func() {
		if err := gw.Close(); err != nil {
			t.Errorf("Gateway.Close: %v", err)
		}
	})
	proxy := gw.Proxy
	proxyLn := gw.proxyLn
	n.redirect(t, uint16(proxyLn.Addr().(*net.TCPAddr).Port))

	ca := filepath.Join(dir, "ca.pem")
	for _, tc := range []struct {
		name string
		args []string
		code int    // curl's exit code
		out  string // a piece of its output
	}{
		// Through the resolver and the proxy; SO_ORIGINAL_DST gives the port (80 or 443).
		{"https allowed", []string{"--cacert", ca, "https://allowed.test/x"}, 0, "https allowed.test /x"},
		{"http allowed", []string{"http://allowed.test/y"}, 0, "http allowed.test /y"},
		// The resolver refuses names not allowed, so curl cannot resolve them...
		{"dns other", []string{"http://other.test/"}, 6, "other.test"},
		// ...and the proxy refuses them when the client knows the address some other way.
		{"http other", []string{"--resolve", "other.test:80:" + tnInternet, "http://other.test/"}, 0, "other.test is not in this container's outbound_domain_allowlist"},
		{"https other", []string{"--cacert", ca, "--resolve", "other.test:443:" + tnInternet, "https://other.test/"}, 35, "alert access denied"},
		// Bare addresses name no allowed host.
		{"http raw IP", []string{"http://" + tnInternet + "/"}, 0, tnInternet + " is not in this container's outbound_domain_allowlist"},
		{"https raw IP", []string{"-k", "https://" + tnInternet + "/"}, 35, "alert access denied"},
		// A name that resolves to a private address: the resolver leaves it out...
		{"dns rebind", []string{"http://rebind.test/"}, 6, "rebind.test"},
		// ...and the proxy, resolving it itself, refuses to go there.
		{"http rebind", []string{"--resolve", "rebind.test:80:" + tnInternet, "http://rebind.test/"}, 0, "DNS rebinding"},
		{"https rebind", []string{"--cacert", ca, "--resolve", "rebind.test:443:" + tnInternet, "https://rebind.test/"}, 35, "alert access denied"},
		// An allowed name sent to an address of the client's choosing still goes to the name's.
		{"http allowed elsewhere", []string{"--resolve", "allowed.test:80:" + tnPrivate, "http://allowed.test/z"}, 0, "http allowed.test /z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := n.curl(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) {
				t.Fatalf("curl %s: exit %d, %q; want exit %d with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.out)
			}
		})
	}
	if l := leaks.Load(); l != 0 {
		t.Fatalf("%d connections reached the private address", l)
	}
	allowed, refused := proxy.Stats()
	if allowed != 3 || refused != 6 {
		t.Fatalf("proxy Stats = %d allowed, %d refused; want 3, 6", allowed, refused)
	}
	if q := f.queries.Load(); q == 0 {
		t.Fatalf("the internet's resolver was never asked")
	}
}

package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestParseDomainAllowlist(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string // String(), or a piece of the error
		bad  bool
	}{
		{[]string{"PyPI.org", "*.github.com", "files.pythonhosted.org."}, "pypi.org,*.github.com,files.pythonhosted.org", false},
		{nil, "", false},
		{[]string{""}, "empty", true},
		{[]string{"https://pypi.org"}, "without a scheme", true},
		{[]string{"pypi.org:443"}, "port", true},
		{[]string{"10.0.0.1"}, "outbound_cidr_allowlist", true},
		{[]string{"*.com"}, "*.com", false}, // as the API allows: the user's choice
		{[]string{"*"}, "not a host name", true},
		{[]string{"a..b"}, "not a host name", true},
		{[]string{"*.*.github.com"}, "not a host name", true},
	} {
		p, err := ParseDomainAllowlist(tc.in)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), DomainField) {
				t.Errorf("ParseDomainAllowlist(%q) = %v, want an error naming %s and saying %q", tc.in, err, DomainField, tc.want)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParseDomainAllowlist(%q) = %q, %v; want %q", tc.in, p.String(), err, tc.want)
		}
	}
}

func TestDomainCheck(t *testing.T) {
	p, err := ParseDomainAllowlist([]string{"pypi.org", "*.github.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		port int
		ok   bool
		why  string
	}{
		{"pypi.org", 443, true, ""},
		{"PYPI.org.", 80, true, ""},
		{"api.github.com", 443, true, ""},
		{"a.b.github.com", 443, true, ""},
		{"github.com", 443, false, "github.com is not in this container's outbound_domain_allowlist (allowed: pypi.org,*.github.com)"},
		{"evilgithub.com", 443, false, "not in this container's"},
		{"pypi.org.evil.com", 443, false, "not in this container's"},
		{"pypi.org", 22, false, "ports 80 and 443 only"},
		{"", 443, false, "names no host"},
		{"140.82.112.3", 443, false, "not in this container's"},
	} {
		err := p.Check(tc.host, tc.port)
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Check(%q, %d) = %v, want allowed %v saying %q", tc.host, tc.port, err, tc.ok, tc.why)
		}
		if err != nil && strings.Contains(err.Error(), Flag) {
			t.Errorf("a container's refusal names the builds' flag: %v", err)
		}
		if p.AllowsName(tc.host) != (tc.ok || tc.why == "ports 80 and 443 only") {
			t.Errorf("AllowsName(%q) = %v", tc.host, p.AllowsName(tc.host))
		}
	}
}

func TestCheckPublic(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("198.51.100.7")}
	// The operator's exceptions open private ranges, never loopback, link-local or this machine.
	allow := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("198.51.100.7/32")}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.80", true},
		{"198.18.0.2", true},
		{"2001:db8::1", true},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"172.32.0.1", true},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"100.128.0.1", true},
		{"127.0.0.1", false},
		{"169.254.169.254", false},
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::a00:1", false}, // NAT64 of 10.0.0.1
		{"64:ff9b::cb00:7150", true},
		{"fd12::1", false},
		{"fc00::1", false},
		{"fd00:ec2::254", false},
		{"fe80::1", false},
		{"::1", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"192.0.0.8", false},
		{"198.51.100.7", false}, // this machine
		{"10.9.3.4", true},      // an operator's exception
		{"10.10.0.1", false},
	} {
		err := checkPublic(netip.MustParseAddr(tc.addr), own, allow)
		if tc.ok != (err == nil) {
			t.Errorf("checkPublic(%s) = %v, want allowed %v", tc.addr, err, tc.ok)
		}
	}
}

func TestResolvConfServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte("# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\noptions ndots:2\n"), 0o644)
	got, err := ResolvConfServers(path)
	if err != nil || strings.Join(got, " ") != "192.0.2.53 2001:db8::53" {
		t.Fatalf("ResolvConfServers = %q, %v", got, err)
	}
	u, err := NewUpstream(got)
	if err != nil || strings.Join(u.Servers(), " ") != "192.0.2.53:53 [2001:db8::53]:53" {
		t.Fatalf("NewUpstream: %v %v", u, err)
	}
	if _, err := NewUpstream(nil); err == nil || !strings.Contains(err.Error(), "--dns-upstream") {
		t.Fatalf("no upstream: %v", err)
	}
	if _, err := NewUpstream([]string{"dns.example"}); err == nil {
		t.Fatalf("a name as upstream was accepted")
	}
}

// fakeDNS is an upstream resolver on loopback that answers A queries from records (IPv4
// addresses, or IPv6 for AAAA) and NXDOMAIN for unknown names; it counts the queries.
type fakeDNS struct {
	addr    string
	queries atomic.Int32
	mu      sync.Mutex
	records map[string][]string
}

func startFakeDNS(t testing.TB, records map[string][]string) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDNS{addr: pc.LocalAddr().String(), records: records}
	serveFakeDNS(t, f, pc)
	return f
}

func serveFakeDNS(t testing.TB, f *fakeDNS, pc net.PacketConn) {
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		f.queries.Add(1)
		resp := new(dns.Msg)
		resp.SetReply(req)
		q := req.Question[0]
		f.mu.Lock()
		addrs, ok := f.records[strings.TrimSuffix(strings.ToLower(q.Name), ".")]
		f.mu.Unlock()
		if !ok {
			resp.Rcode = dns.RcodeNameError
		}
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
			switch {
			case ip.Is4() && q.Qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
			case ip.Is6() && q.Qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
			}
		}
		if q.Qtype == dns.TypeHTTPS && ok {
			resp.Answer = append(resp.Answer, &dns.HTTPS{SVCB: dns.SVCB{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: 60},
				Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{&dns.SVCBIPv4Hint{Hint: []net.IP{net.ParseIP("10.9.9.9").To4()}}}}})
		}
		w.WriteMsg(resp)
	})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
}

func TestUpstreamCache(t *testing.T) {
	f := startFakeDNS(t, map[string][]string{"a.test": {"203.0.113.1", "2001:db8::1"}})
	u, err := NewUpstream([]string{f.addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		addrs, err := u.LookupAddrs(ctx, "A.test.")
		if err != nil || len(addrs) != 2 || addrs[0].String() != "203.0.113.1" || addrs[1].String() != "2001:db8::1" {
			t.Fatalf("LookupAddrs = %v, %v", addrs, err)
		}
	}
	if n := f.queries.Load(); n != 2 {
		t.Fatalf("%d upstream queries for three lookups, want 2 (A and AAAA, then the cache)", n)
	}
	if _, err := u.LookupAddrs(ctx, "missing.test"); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Fatalf("a missing name: %v", err)
	}
	// A dead upstream is skipped for the next one.
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	u2, _ := NewUpstream([]string{deadAddr, f.addr})
	if addrs, err := u2.LookupAddrs(ctx, "a.test"); err != nil || len(addrs) != 2 {
		t.Fatalf("with a dead first upstream: %v %v", addrs, err)
	}
}

// testResolver serves a Resolver on loopback over upstream records; client is the container
// that 127.0.0.1 is, or none.
func testResolver(t *testing.T, records map[string][]string, client *atomic.Pointer[Client]) (addr string, f *fakeDNS) {
	t.Helper()
	f = startFakeDNS(t, records)
	u, err := NewUpstream([]string{f.addr})
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(u, func(src netip.Addr) (Client, bool) {
		c := client.Load()
		if c == nil || src != netip.MustParseAddr("127.0.0.1") {
			return Client{}, false
		}
		return *c, true
	}, t.Logf)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	r.Serve(pc, ln)
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Resolver.Close: %v", err)
		}
	})
	return pc.LocalAddr().String(), f
}

func query(t *testing.T, network, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp
}

func TestResolver(t *testing.T) {
	pol, _ := ParseDomainAllowlist([]string{"allowed.test", "rebind.test", "mixed.test", "*.wild.test"})
	var client atomic.Pointer[Client]
	addr, _ := testResolver(t, map[string][]string{
		"allowed.test": {"203.0.113.10"}, "evil.test": {"203.0.113.66"}, "rebind.test": {"10.0.0.5", "fd00::5"},
		"mixed.test": {"192.168.0.9", "203.0.113.11"}, "a.wild.test": {"203.0.113.12"},
	}, &client)

	// No container has 127.0.0.1: nothing is answered.
	if r := query(t, "udp", addr, "allowed.test", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Fatalf("an unknown source got %s", dns.RcodeToString[r.Rcode])
	}

	client.Store(&Client{ID: "sb-1", Domains: pol, Restricted: true})
	for _, tc := range []struct {
		name    string
		qtype   uint16
		rcode   int
		answers string // the addresses, space-separated
	}{
		{"allowed.test", dns.TypeA, dns.RcodeSuccess, "203.0.113.10"},
		{"ALLOWED.test", dns.TypeA, dns.RcodeSuccess, "203.0.113.10"},
		{"a.wild.test", dns.TypeA, dns.RcodeSuccess, "203.0.113.12"},
		{"evil.test", dns.TypeA, dns.RcodeRefused, ""},
		{"wild.test", dns.TypeA, dns.RcodeRefused, ""},
		{"rebind.test", dns.TypeA, dns.RcodeSuccess, ""}, // the private answer is left out
		{"rebind.test", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"mixed.test", dns.TypeA, dns.RcodeSuccess, "203.0.113.11"},
		{"allowed.test", dns.TypeHTTPS, dns.RcodeSuccess, ""}, // hints could carry private addresses
		{"nx.wild.test", dns.TypeA, dns.RcodeNameError, ""},
	} {
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, network, addr, tc.name, tc.qtype)
			var got []string
			for _, rr := range r.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = append(got, rr.A.String())
				case *dns.AAAA:
					got = append(got, rr.AAAA.String())
				default:
					got = append(got, dns.TypeToString[rr.Header().Rrtype])
				}
			}
			if r.Rcode != tc.rcode || strings.Join(got, " ") != tc.answers || r.Question[0].Name != dns.Fqdn(tc.name) {
				t.Errorf("%s %s over %s: %s %q (question %s), want %s %q", tc.name, dns.TypeToString[tc.qtype], network,
					dns.RcodeToString[r.Rcode], got, r.Question[0].Name, dns.RcodeToString[tc.rcode], tc.answers)
			}
			if r.Rcode == dns.RcodeRefused {
				var ede string
				if o := r.IsEdns0(); o != nil {
					for _, opt := range o.Option {
						if e, ok := opt.(*dns.EDNS0_EDE); ok {
							ede = e.ExtraText
						}
					}
				}
				if !strings.Contains(ede, DomainField) {
					t.Errorf("%s refused without an extended error naming %s: %q", tc.name, DomainField, ede)
				}
			}
		}
	}

	// A container without a domain allowlist gets every name and every answer.
	client.Store(&Client{ID: "sb-2"})
	if r := query(t, "udp", addr, "rebind.test", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("an unrestricted container: %v", r)
	}
	if r := query(t, "udp", addr, "evil.test", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("an unrestricted container: %v", r)
	}
}

// proxyFixture is a DomainProxy on loopback whose "internet" is a map from public addresses
// to local servers: Dial sends allowed.test's address to them, and counts dials elsewhere.
type proxyFixture struct {
	p       *DomainProxy
	addr    string
	dst     atomic.Value // netip.AddrPort the connection "was going to"
	strays  atomic.Int32 // dials to an address not in the map
	client  atomic.Pointer[Client]
	tlsSrv  *httptest.Server
	httpSrv *httptest.Server
}

func newProxyFixture(t *testing.T, allow []string, records map[string][]string) *proxyFixture {
	t.Helper()
	f := startFakeDNS(t, records)
	u, err := NewUpstream([]string{f.addr})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParseDomainAllowlist(allow)
	if err != nil {
		t.Fatal(err)
	}
	fx := &proxyFixture{}
	handler := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.Host+" "+r.URL.Path)
		})
	}
	fx.tlsSrv = httptest.NewTLSServer(handler("tls"))
	fx.httpSrv = httptest.NewServer(handler("http"))
	t.Cleanup(fx.tlsSrv.Close)
	t.Cleanup(fx.httpSrv.Close)
	routes := map[string]string{
		"203.0.113.10:443": fx.tlsSrv.Listener.Addr().String(),
		"203.0.113.10:80":  fx.httpSrv.Listener.Addr().String(),
	}
	fx.client.Store(&Client{ID: "sb-test", Domains: pol, Restricted: true})
	fx.p = NewDomainProxy(u, func(src netip.Addr) (Client, bool) {
		return *fx.client.Load(), src.IsLoopback()
	}, t.Logf)
	fx.p.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		to, ok := routes[addr]
		if !ok {
			fx.strays.Add(1)
			return nil, errors.New("no route in the test")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}
	fx.p.origDst = func(net.Conn) (netip.AddrPort, error) { return fx.dst.Load().(netip.AddrPort), nil }
	fx.p.peekTimeout = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- fx.p.Serve(ln) }()
	t.Cleanup(func() {
		if err := fx.p.Close(); err != nil {
			t.Errorf("DomainProxy.Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return fx
}

// get sends one HTTP request through the proxy as if to dst, over TLS with serverName unless
// it is "-" (plain HTTP).
func (fx *proxyFixture) get(t *testing.T, dst, serverName, host string) (int, string, error) {
	t.Helper()
	fx.dst.Store(netip.MustParseAddrPort(dst))
	c, err := net.Dial("tcp", fx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if serverName != "-" {
		tc := tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return 0, "", err
		}
		c = tc
	}
	if _, err := io.WriteString(c, "GET /path HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestDomainProxy(t *testing.T) {
	fx := newProxyFixture(t, []string{"allowed.test", "*.wild.test", "rebind.test", "mixed.test"}, map[string][]string{
		"allowed.test": {"203.0.113.10"}, "x.wild.test": {"203.0.113.10"}, "evil.test": {"203.0.113.10"},
		"rebind.test": {"10.0.0.5", "127.0.0.1"}, "mixed.test": {"192.168.1.1", "203.0.113.10"},
	})
	for _, tc := range []struct {
		name             string
		dst, sni, host   string
		code             int
		body             string // a piece of it
		tlsErr, readFail bool
	}{
		{"https", "198.51.100.1:443", "allowed.test", "allowed.test", 200, "tls allowed.test /path", false, false},
		// The address the client dialled does not matter: the name's own is dialled.
		{"https to another address", "192.0.2.99:443", "allowed.test", "allowed.test", 200, "tls allowed.test", false, false},
		{"https wildcard", "198.51.100.1:443", "x.wild.test", "x.wild.test", 200, "tls x.wild.test", false, false},
		{"http", "198.51.100.1:80", "-", "allowed.test", 200, "http allowed.test /path", false, false},
		{"http with port", "198.51.100.1:80", "-", "allowed.test:80", 200, "http allowed.test:80", false, false},
		{"http mixed answers", "198.51.100.1:80", "-", "mixed.test", 200, "http mixed.test", false, false},
		{"https other name", "198.51.100.1:443", "evil.test", "evil.test", 0, "", true, false},
		{"https no SNI", "203.0.113.10:443", "", "203.0.113.10", 0, "", true, false},
		{"http other name", "198.51.100.1:80", "-", "evil.test", 403, "evil.test is not in this container's outbound_domain_allowlist (allowed: allowed.test,*.wild.test,rebind.test,mixed.test)", false, false},
		{"http raw IP", "203.0.113.10:80", "-", "203.0.113.10", 403, "203.0.113.10 is not in this container's outbound_domain_allowlist", false, false},
		{"http rebinding", "203.0.113.10:80", "-", "rebind.test", 403, "DNS rebinding", false, false},
		{"https rebinding", "203.0.113.10:443", "rebind.test", "rebind.test", 0, "", true, false},
		{"http no Host", "203.0.113.10:80", "-", "", 400, "no Host header", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := fx.get(t, tc.dst, tc.sni, tc.host)
			if tc.tlsErr {
				if err == nil || !strings.Contains(err.Error(), "access denied") {
					t.Fatalf("got %d %q %v, want the TLS handshake refused with access_denied", code, body, err)
				}
				return
			}
			if err != nil || code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %q %v, want %d with %q", code, body, err, tc.code, tc.body)
			}
		})
	}
	if n := fx.strays.Load(); n != 0 {
		t.Fatalf("the proxy dialled %d addresses other than allowed.test's", n)
	}
	allowed, refused := fx.p.Stats()
	if allowed != 6 || refused != 7 {
		t.Fatalf("Stats = %d allowed, %d refused; want 6, 7", allowed, refused)
	}
}

func TestDomainProxyLimits(t *testing.T) {
	fx := newProxyFixture(t, []string{"allowed.test"}, map[string][]string{"allowed.test": {"203.0.113.10"}})
	fx.dst.Store(netip.MustParseAddrPort("203.0.113.10:80"))

	// A client that sends nothing is cut at the peek timeout.
	c, err := net.Dial("tcp", fx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("a silent client: %v", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 4*time.Second {
		t.Fatalf("a silent client was cut after %v, want the 1 s peek timeout", d)
	}

	// A request head past the cap is refused, not buffered.
	c2, _ := net.Dial("tcp", fx.addr)
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		io.WriteString(c2, "GET / HTTP/1.1\r\nHost: allowed.test\r\n")
		pad := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		for range 100 {
			if _, err := io.WriteString(c2, pad); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("a huge request head: %v %v", resp, err)
	}

	// One container's connections are capped.
	fx.p.mu.Lock()
	fx.p.maxConns = 2
	fx.p.mu.Unlock()
	var held []net.Conn
	for range 2 {
		h, _ := net.Dial("tcp", fx.addr)
		held = append(held, h)
		defer h.Close()
	}
	time.Sleep(100 * time.Millisecond) // both are accepted and counted
	_, refusedBefore := fx.p.Stats()
	code, body, err := fx.get(t, "203.0.113.10:80", "-", "allowed.test")
	if err == nil {
		t.Fatalf("a third connection got %d %q", code, body)
	}
	if _, refused := fx.p.Stats(); refused != refusedBefore+1 {
		t.Fatalf("the third connection was not counted as refused")
	}
	for _, h := range held {
		h.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, err := fx.get(t, "203.0.113.10:80", "-", "allowed.test")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slots were not given back: %d %v", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A keep-alive HTTP connection carries requests for its host, bodies included, and is cut
// at the first request for another host: that one never reaches the server.
func TestDomainProxyKeepAlive(t *testing.T) {
	fx := newProxyFixture(t, []string{"allowed.test", "evil.test"}, map[string][]string{"allowed.test": {"203.0.113.10"}, "evil.test": {"203.0.113.10"}})
	var seen []string
	var mu sync.Mutex
	fx.httpSrv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Host+" "+r.Method+" "+string(b)+" ua="+r.Header.Get("User-Agent"))
		mu.Unlock()
		io.WriteString(w, "ok "+r.Host)
	})
	fx.dst.Store(netip.MustParseAddrPort("203.0.113.10:80"))
	c, err := net.Dial("tcp", fx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, req := range []string{
		"GET /1 HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
		"POST /2 HTTP/1.1\r\nHost: allowed.test:80\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"PUT /3 HTTP/1.1\r\nHost: ALLOWED.test\r\nContent-Length: 3\r\nUser-Agent: mine\r\n\r\nabc",
		// The absolute form's host is the one checked, and the one the server is told.
		"GET http://allowed.test/4 HTTP/1.1\r\nHost: evil.test\r\n\r\n",
	} {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%q: %s", req, resp.Status)
		}
	}
	io.WriteString(c, "GET /5 HTTP/1.1\r\nHost: evil.test\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Fatalf("a request for another host on the connection got %s", resp.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"allowed.test GET  ua=", "allowed.test:80 POST hello world ua=", "ALLOWED.test PUT abc ua=mine", "allowed.test GET  ua="}
	if strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Fatalf("the server saw %q, want %q", seen, want)
	}
}

// A replaced policy ends the proxied connections it no longer allows, and only those.
func TestDomainProxyRevalidate(t *testing.T) {
	fx := newProxyFixture(t, []string{"allowed.test", "kept.test"}, map[string][]string{"allowed.test": {"203.0.113.10"}, "kept.test": {"203.0.113.10"}})
	fx.dst.Store(netip.MustParseAddrPort("203.0.113.10:80"))
	open := func(host string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", fx.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", host, resp, err)
		}
		io.ReadAll(resp.Body)
		return c, br
	}
	cut, cutR := open("allowed.test")
	kept, keptR := open("kept.test")
	if n := fx.p.Revalidate(); n != 0 {
		t.Fatalf("Revalidate under the same policy ended %d", n)
	}
	pol, _ := ParseDomainAllowlist([]string{"kept.test"})
	fx.client.Store(&Client{ID: "sb-test", Domains: pol, Restricted: true})
	if n := fx.p.Revalidate(); n != 1 {
		t.Fatalf("Revalidate after the policy dropped allowed.test ended %d connections, want 1", n)
	}
	io.WriteString(cut, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	if _, err := http.ReadResponse(cutR, nil); err == nil {
		t.Fatal("the connection to allowed.test still answers")
	}
	io.WriteString(kept, "GET / HTTP/1.1\r\nHost: kept.test\r\n\r\n")
	if resp, err := http.ReadResponse(keptR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the connection to kept.test: %v %v", resp, err)
	}
}

// readConn is a net.Conn that reads from r (and nothing else is called).
type readConn struct {
	net.Conn
	r io.Reader
}

func (c readConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// clientHello is what a Go TLS client sends first for serverName.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

func TestClientHelloName(t *testing.T) {
	hello := clientHello(t, "Pypi.ORG")
	// The same hello split over three records, as a client may send it.
	body := hello[5:]
	var split []byte
	for _, part := range [][]byte{body[:10], body[10:100], body[100:]} {
		split = append(split, 22, hello[1], hello[2], byte(len(part)>>8), byte(len(part)))
		split = append(split, part...)
	}
	noSNI := clientHello(t, "")
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		err  string
	}{
		{"one record", hello, "pypi.org", ""},
		{"split over records", split, "pypi.org", ""},
		{"trailing bytes kept", append(append([]byte{}, hello...), 23, 3, 3, 0, 1, 0), "pypi.org", ""},
		{"no server name", noSNI, "", "names no server"},
		{"truncated", hello[:len(hello)/2], "", "not a valid TLS ClientHello"},
		{"garbage record", []byte{22, 3, 1, 0, 4, 1, 0, 0, 9}, "", "not a valid TLS ClientHello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{Conn: readConn{r: bytes.NewReader(tc.in)}}
			k, name, err := peek(rec)
			if k != kindTLS || name != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("peek = %v %q %v; want %q, error %q", k, name, err, tc.want, tc.err)
			}
			// Everything read is kept for the server, and nothing beyond what was sent.
			if !bytes.HasPrefix(tc.in, rec.buf) {
				t.Fatalf("the recorder kept %d bytes that were not sent", len(rec.buf))
			}
			if err == nil && len(rec.buf) < len(tc.in)-6 {
				t.Fatalf("the recorder kept %d of the hello's %d bytes", len(rec.buf), len(tc.in))
			}
		})
	}
}

package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of the domain proxy.
const (
	// defaultPeekTimeout bounds how long a client may take to send its TLS ClientHello or HTTP
	// request head.
	defaultPeekTimeout = 10 * time.Second
	// maxPeek caps the bytes read before a decision: a ClientHello (a few KiB with
	// post-quantum key shares) or an HTTP request head.
	maxPeek = 64 << 10
	// defaultMaxConns caps one container's open connections through the proxy, so that
	// one container cannot take the worker's descriptors.
	defaultMaxConns = 512
)

// DomainProxy is the transparent proxy behind containers whose policy is a domain allowlist:
// the network's nat rules redirect such a container's TCP 80 and 443 to it. It reads the
// name the client asks for (the TLS ClientHello's server name, without terminating TLS, or
// the HTTP/1.x Host header), checks it against the container's outbound_domain_allowlist,
// resolves it itself through the worker's upstream resolvers, refuses private and reserved
// answers (DNS rebinding), dials the original destination's port at a public address of
// the name, replays what it read and splices the two connections. The address the container
// dialled is never used: a bare IP address or a name that points elsewhere gets the allowed
// name's own servers or nothing.
//
// Refused connections are closed: an HTTP one after a 403 that names the host and the
// policy, a TLS one after an access_denied alert. Each refusal is counted and logged once
// per container, host and reason.
type DomainProxy struct {
	upstream *Upstream
	lookup   Lookup
	logs     *onceLog
	allow    []netip.Prefix // the operator's exceptions to checkPublic

	// Dial connects to a checked address; tests replace it to dial from a namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// origDst gives a redirected connection's original destination; unit tests replace it.
	origDst func(c net.Conn) (netip.AddrPort, error)
	// peekTimeout and maxConns are the limits above; tests lower them.
	peekTimeout time.Duration
	maxConns    int

	allowed, refused atomic.Uint64

	mu        sync.Mutex
	perClient map[netip.Addr]int
	conns     map[net.Conn]struct{} // every accepted and dialled connection still open
	flows     map[*flow]struct{}    // the connections carried, for Revalidate
	lns       []net.Listener
	closed    bool
	wg        sync.WaitGroup
}

// NewDomainProxy returns a proxy that resolves through upstream and finds a connection's
// container with lookup.
func NewDomainProxy(upstream *Upstream, lookup Lookup, logf func(format string, args ...any)) *DomainProxy {
	return &DomainProxy{upstream: upstream, lookup: lookup, logs: newOnceLog(logf),
		Dial: publicDialer(nil), origDst: originalDst, peekTimeout: defaultPeekTimeout, maxConns: defaultMaxConns, perClient: map[netip.Addr]int{}, conns: map[net.Conn]struct{}{}, flows: map[*flow]struct{}{}}
}

// Stats are the connections let through and refused so far.
func (p *DomainProxy) Stats() (allowed, refused uint64) { return p.allowed.Load(), p.refused.Load() }

// Serve accepts redirected connections on ln until Close.
func (p *DomainProxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = ln.Close() // never served
		return net.ErrClosed
	}
	p.lns = append(p.lns, ln)
	p.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and the like: back off rather than spin.
			p.logs.once("accept", "egress: the domain proxy's accept: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !p.track(c) {
			return nil
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

// Close stops accepting, ends every connection and waits for their goroutines.
func (p *DomainProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	var errs []error
	for _, ln := range p.lns {
		errs = append(errs, ln.Close())
	}
	for c := range p.conns {
		_ = c.Close() // ending them is the point
	}
	p.mu.Unlock()
	p.wg.Wait()
	return errors.Join(errs...)
}

func (p *DomainProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close() // shutting down
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DomainProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close() // done with it
}

// acquire takes one of src's connection slots.
func (p *DomainProxy) acquire(src netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.perClient[src] >= p.maxConns {
		return false
	}
	p.perClient[src]++
	return true
}

func (p *DomainProxy) release(src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.perClient[src]--; p.perClient[src] <= 0 {
		delete(p.perClient, src)
	}
}

// kind is what a client spoke first.
type kind int

const (
	kindTLS kind = iota
	kindHTTP
)

// refusal is a connection the proxy will not carry.
type refusal struct {
	key  string // for logging once
	msg  string
	code int // the HTTP status for an HTTP client
}

func (p *DomainProxy) handle(down net.Conn) {
	defer p.untrack(down)
	src := addrOf(down.RemoteAddr())
	client, ok := p.lookup(src)
	if !ok || !client.Restricted {
		// Only containers with a domain allowlist are redirected here; anything else is a
		// stale rule or a policy replaced under a connection.
		p.refuse(down, kindTLS, src.String(), &refusal{key: "nopolicy", msg: fmt.Sprintf("gust egress refused a connection from %s: no container with an %s has that address", src, DomainField)})
		return
	}
	if !p.acquire(src) {
		p.refuse(down, kindTLS, client.ID, &refusal{key: "limit", msg: fmt.Sprintf("gust egress refused a connection: container %s has %d open through the domain proxy, the most it may", client.ID, p.maxConns)})
		return
	}
	defer p.release(src)

	dst, err := p.origDst(down)
	if err != nil {
		p.refuse(down, kindTLS, client.ID, &refusal{key: "origdst", msg: fmt.Sprintf("gust egress: the original destination of a connection from %s: %v", src, err)})
		return
	}
	_ = down.SetReadDeadline(time.Now().Add(p.peekTimeout)) // a TCP conn takes a deadline
	rec := &recorder{Conn: down}
	k, host, err := peek(rec)
	_ = down.SetReadDeadline(time.Time{})
	if err != nil {
		p.refuse(down, k, client.ID, &refusal{key: "peek", code: http.StatusBadRequest,
			msg: fmt.Sprintf("gust egress refused a connection to port %d: %v; containers with an %s reach only named hosts over TLS (with a server name) or HTTP/1.x (with a Host header)", dst.Port(), err, DomainField)})
		return
	}
	if err := client.Domains.Check(host, int(dst.Port())); err != nil {
		p.refuse(down, k, client.ID, &refusal{key: "deny " + host, msg: err.Error(), code: http.StatusForbidden})
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	up, r := p.dialName(ctx, host, dst.Port())
	cancel()
	if r != nil {
		p.refuse(down, k, client.ID, r)
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	f := &flow{src: src, host: host, port: int(dst.Port()), down: down, up: up}
	p.mu.Lock()
	p.flows[f] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.flows, f)
		p.mu.Unlock()
	}()
	p.allowed.Add(1)
	var both sync.WaitGroup
	both.Add(2)
	go func() {
		defer both.Done()
		if k == kindTLS {
			// TLS: the name is fixed for the connection; what follows is opaque.
			pipe(up, io.MultiReader(bytes.NewReader(rec.buf), down))
			return
		}
		p.requests(up, down, rec.buf, host, client.ID)
	}()
	go func() { defer both.Done(); pipe(down, up) }()
	both.Wait()
}

// requests carries an HTTP/1.x connection's requests one by one, checking that each names
// the host the connection was let through for: a keep-alive connection to an allowed name's
// server must not carry a request for another site behind the same address. A request for
// another host ends the connection. After a protocol switch (Upgrade, CONNECT) the rest is
// carried as it comes.
func (p *DomainProxy) requests(up, down net.Conn, first []byte, host, who string) {
	lim := &headLimit{r: io.MultiReader(bytes.NewReader(first), down)}
	br := bufio.NewReaderSize(lim, 4096)
	defer closeWrite(up)
	for {
		lim.left = maxPeek
		req, err := http.ReadRequest(br)
		lim.left = -1
		if err != nil {
			return // EOF, or a malformed request: the connection ends either way
		}
		h := req.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		if normHost(h) != host {
			p.refused.Add(1)
			p.logs.once(who+" switch "+host, "egress: container %s: a request for %q on a connection let through for %s: connection closed", who, h, host)
			_ = down.Close() // the server's answers may be in flight: no 403 can be slotted in
			return
		}
		if req.Header["User-Agent"] == nil {
			req.Header["User-Agent"] = []string{""} // Write would add Go's own
		}
		switching := req.Method == http.MethodConnect || req.Header.Get("Upgrade") != ""
		if err := req.Write(up); err != nil {
			return
		}
		if switching {
			_, _ = io.Copy(up, br) // the connection is the client's and server's now
			return
		}
	}
}

// headLimit fails a read once more than left bytes are read while left is not negative:
// the cap on a request head.
type headLimit struct {
	r    io.Reader
	left int
}

func (l *headLimit) Read(b []byte) (int, error) {
	if l.left < 0 {
		return l.r.Read(b)
	}
	if l.left == 0 {
		return 0, fmt.Errorf("a request head of more than %d bytes", maxPeek)
	}
	if len(b) > l.left {
		b = b[:l.left]
	}
	n, err := l.r.Read(b)
	l.left -= n
	return n, err
}

// closeWrite ends a connection's writing side, or the connection.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // the peer may be gone
		return
	}
	_ = c.Close() // the peer may be gone
}

// flow is a connection the proxy carries.
type flow struct {
	src  netip.Addr
	host string
	port int
	down net.Conn // the container's
	up   net.Conn // to the host
}

// Revalidate checks every connection carried against its container's policy now, and ends
// those the policy no longer allows: a replaced policy holds for open connections too. It
// says how many it ended.
func (p *DomainProxy) Revalidate() int {
	p.mu.Lock()
	flows := make([]*flow, 0, len(p.flows))
	for f := range p.flows {
		flows = append(flows, f)
	}
	p.mu.Unlock()
	cut := 0
	for _, f := range flows {
		c, ok := p.lookup(f.src)
		why := ""
		switch {
		case !ok:
			why = "it no longer has a network with a domain allowlist"
		case !c.Restricted:
			why = "its policy no longer has a domain allowlist"
		default:
			if err := c.Domains.Check(f.host, f.port); err != nil {
				why = err.Error()
			}
		}
		if why == "" {
			continue
		}
		_ = f.down.Close() // ending the connection is the point
		_ = f.up.Close()
		cut++
		p.logs.printf("egress: container at %s: its connection to %s:%d ended: the policy was replaced: %s", f.src, f.host, f.port, why)
	}
	return cut
}

// dialName resolves an allowed host and connects to one of its public addresses.
func (p *DomainProxy) dialName(ctx context.Context, host string, port uint16) (net.Conn, *refusal) {
	addrs, err := p.upstream.LookupAddrs(ctx, host)
	if err != nil {
		return nil, &refusal{key: "resolve " + host, code: http.StatusBadGateway, msg: fmt.Sprintf("gust egress could not resolve %s: %v", host, err)}
	}
	own, err := ownAddrs()
	if err != nil {
		return nil, &refusal{key: "own", code: http.StatusBadGateway, msg: err.Error()}
	}
	var public []netip.Addr
	var private string
	for _, a := range addrs {
		if err := checkPublic(a, own, p.allow); err != nil {
			private = err.(*addrError).what()
			continue
		}
		public = append(public, a)
	}
	if len(public) == 0 {
		return nil, &refusal{key: "rebind " + host, code: http.StatusForbidden,
			msg: fmt.Sprintf("gust egress refused %s: it resolves to %s, and containers with an %s never reach private, reserved or this machine's addresses (DNS rebinding)", host, private, DomainField)}
	}
	var errs []error
	for _, a := range public {
		c, err := p.Dial(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, &refusal{key: "dial " + host, code: http.StatusBadGateway, msg: fmt.Sprintf("gust egress could not reach %s: %v", host, errors.Join(errs...))}
}

// refuse answers and counts a refused connection, and logs it once per container and reason.
func (p *DomainProxy) refuse(c net.Conn, k kind, who string, r *refusal) {
	p.refused.Add(1)
	p.logs.once(who+" "+r.key, "egress: container %s: %s", who, r.msg)
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	switch {
	case k == kindHTTP && r.code != 0:
		body := r.msg + "\n"
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Gust-Egress: refused\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
			r.code, http.StatusText(r.code), len(body), body)
	case k == kindTLS:
		// A fatal access_denied alert (RFC 8446 §6.2), plain as alerts before the server's
		// hello are, so that the client says "access denied" rather than "connection reset".
		_, _ = c.Write([]byte{21, 3, 3, 0, 2, 2, 49})
	}
	// Lingering on unread input would turn the close into a reset that loses the answer.
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, maxPeek))
	}
}

// errNameRead stops crypto/tls once the ClientHello is parsed: the proxy never terminates TLS.
var errNameRead = errors.New("client hello read")

// peek reads what the client sent first, through rec (which keeps it for replay): a TLS
// ClientHello and its server name, or an HTTP/1.x request head and its host.
func peek(rec *recorder) (kind, string, error) {
	var first [1]byte
	if _, err := io.ReadFull(rec, first[:]); err != nil {
		return kindTLS, "", fmt.Errorf("nothing was sent: %w", err)
	}
	rec.rewind()
	if first[0] == 22 { // a TLS handshake record
		name, err := clientHelloName(rec)
		return kindTLS, name, err
	}
	req, err := http.ReadRequest(bufio.NewReaderSize(rec, 4096))
	if err != nil {
		return kindHTTP, "", fmt.Errorf("not a TLS ClientHello or an HTTP/1.x request: %w", err)
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		return kindHTTP, "", errors.New("the HTTP request has no Host header")
	}
	return kindHTTP, normHost(host), nil
}

// clientHelloName parses a ClientHello with crypto/tls and returns its server name; crypto/tls
// reassembles a hello split over records and validates it. Nothing is written to the client.
func clientHelloName(rec *recorder) (string, error) {
	var name string
	var got bool
	srv := tls.Server(readOnly{rec}, &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		name, got = hi.ServerName, true
		return nil, errNameRead
	}})
	err := srv.Handshake()
	if !got {
		return "", fmt.Errorf("not a valid TLS ClientHello: %w", err)
	}
	if name == "" {
		return "", errors.New("the TLS ClientHello names no server (SNI), as a connection to a bare IP address does")
	}
	return normHost(name), nil
}

// recorder keeps every byte read from a connection, so that the bytes read to decide can be
// sent on; rewind makes the bytes kept readable again. It refuses to keep more than maxPeek.
type recorder struct {
	net.Conn
	buf []byte
	pos int
}

func (r *recorder) Read(b []byte) (int, error) {
	if r.pos < len(r.buf) {
		n := copy(b, r.buf[r.pos:])
		r.pos += n
		return n, nil
	}
	if len(r.buf) >= maxPeek {
		return 0, fmt.Errorf("more than %d bytes before the server name or Host header", maxPeek)
	}
	if len(b) > maxPeek-len(r.buf) {
		b = b[:maxPeek-len(r.buf)]
	}
	n, err := r.Conn.Read(b)
	r.buf = append(r.buf, b[:n]...)
	r.pos = len(r.buf)
	return n, err
}

func (r *recorder) rewind() { r.pos = 0 }

// readOnly lets crypto/tls read a connection but not answer on it.
type readOnly struct{ *recorder }

func (readOnly) Write([]byte) (int, error) { return 0, errNameRead }

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h), which
// x/sys/unix does not name.
const ip6tSoOriginalDst = 80

// originalDst is where a connection that nat redirected was going (SO_ORIGINAL_DST from
// conntrack).
func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("not a TCP connection: %T", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v4 := tc.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().Is4()
	var ap netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			// struct sockaddr_in comes back in the 16 bytes of an ipv6_mreq.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				serr = err
				return
			}
			ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), binary.BigEndian.Uint16(m.Multiaddr[2:4]))
			return
		}
		// struct sockaddr_in6 comes back in an ip6_mtuinfo.
		m, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst)
		if err != nil {
			serr = err
			return
		}
		var port [2]byte
		binary.NativeEndian.PutUint16(port[:], m.Addr.Port) // the port's bytes as the kernel wrote them
		ap = netip.AddrPortFrom(netip.AddrFrom16(m.Addr.Addr), binary.BigEndian.Uint16(port[:]))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST (was the connection redirected?): %w", err)
	}
	return ap, nil
}

// publicDialer connects from the worker's namespace, refusing (again, at connect time) every
// address checkPublic refuses but allow.
func publicDialer(allow []netip.Prefix) func(ctx context.Context, network, addr string) (net.Conn, error) {
	check := func(a netip.Addr, own []netip.Addr) error { return checkPublic(a, own, allow) }
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialWith(ctx, network, addr, check)
	}
}

package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// dialTimeout bounds connecting to a mirror.
const dialTimeout = 30 * time.Second

// Proxy is an HTTP forward proxy that lets requests through to the hosts its Policy allows:
// absolute-form requests for http:// URLs (http_proxy) and CONNECT tunnels (https_proxy).
type Proxy struct {
	policy Policy
	logf   func(format string, args ...any)
	// dial connects to an allowed host:port; tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	transport *http.Transport
	forward   *httputil.ReverseProxy

	mu      sync.Mutex
	tunnels map[net.Conn]struct{} // both ends of every open CONNECT tunnel
	closed  bool
	wg      sync.WaitGroup // tunnels' copy goroutines
}

// NewProxy returns a proxy for policy; logf receives its refusals and upstream failures.
func NewProxy(policy Policy, logf func(format string, args ...any)) *Proxy {
	p := &Proxy{policy: policy, logf: logf, dial: dialChecked, tunnels: map[net.Conn]struct{}{}}
	p.transport = &http.Transport{
		// Never a proxy from the worker's environment: the checked dial is the only way out.
		Proxy:                 nil,
		DialContext:           func(ctx context.Context, network, addr string) (net.Conn, error) { return p.dial(ctx, network, addr) },
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
	}
	p.forward = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The Host header is the URL's host, the one the policy checked: a different one
			// could name another site behind the same address.
			pr.Out.Host = ""
		},
		Transport: p.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.fail(w, r.URL.Hostname(), port(r.URL.Port(), 80), err)
		},
	}
	return p
}

// ServeHTTP handles one request of a build container's client.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "gust build egress is an HTTP proxy: send http:// URLs in absolute form (http_proxy) and use CONNECT for https:// (https_proxy)", http.StatusBadRequest)
		return
	}
	host, pt := r.URL.Hostname(), port(r.URL.Port(), 80)
	if err := p.policy.Check(host, pt); err != nil {
		p.fail(w, host, pt, err)
		return
	}
	p.forward.ServeHTTP(w, r)
}

// connect opens a tunnel to an allowed host:port.
func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	host, ps, err := net.SplitHostPort(r.Host)
	if err != nil {
		http.Error(w, fmt.Sprintf("gust build egress: CONNECT needs host:port, not %q", r.Host), http.StatusBadRequest)
		return
	}
	pt := port(ps, 0)
	if err := p.policy.Check(host, pt); err != nil {
		p.fail(w, host, pt, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dialTimeout)
	up, err := p.dial(ctx, "tcp", net.JoinHostPort(host, ps))
	cancel()
	if err != nil {
		p.fail(w, host, pt, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = up.Close() // unused: nothing to lose
		http.Error(w, "gust build egress: this connection cannot tunnel", http.StatusInternalServerError)
		return
	}
	down, brw, err := hj.Hijack()
	if err != nil {
		_ = up.Close() // unused: nothing to lose
		p.logf("egress: CONNECT %s: %v", r.Host, err)
		return
	}
	if !p.track(up, down) {
		return
	}
	// The server's read deadline would cut a long download.
	_ = down.SetDeadline(time.Time{}) // a TCP conn always takes a deadline
	if _, err := down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		p.untrack(up, down)
		return
	}
	// Bytes the client sent after its request (a TLS hello) are in brw's buffer already.
	var first io.Reader = down
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n) // n bytes are buffered: Peek cannot fail
		first = io.MultiReader(bytes.NewReader(bytes.Clone(b)), down)
	}
	p.wg.Add(2)
	var once sync.WaitGroup
	once.Add(2)
	go func() { defer p.wg.Done(); defer once.Done(); pipe(up, first) }()
	go func() { defer p.wg.Done(); defer once.Done(); pipe(down, up) }()
	go func() { once.Wait(); p.untrack(up, down) }()
}

// pipe copies until src ends, then ends dst's writing side, so that each direction of a
// tunnel closes on its own.
func pipe(dst net.Conn, src io.Reader) {
	_, _ = io.Copy(dst, src) // an error ends the tunnel, as EOF does
	if c, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = c.CloseWrite() // the peer may be gone already
	} else {
		_ = dst.Close()
	}
}

// track records a tunnel's connections; after Close it closes them and says no.
func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			_ = c.Close() // shutting down: nothing to keep
		}
		return false
	}
	for _, c := range cs {
		p.tunnels[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.tunnels, c)
		_ = c.Close() // the tunnel is over: both ends go
	}
}

// Close ends every tunnel and upstream connection and waits for the tunnels' goroutines.
// The http.Server that serves the proxy is closed by its owner.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.tunnels {
		_ = c.Close() // ending the tunnel is the point
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.transport.CloseIdleConnections()
}

// fail answers a refused or failed request: 403 for what the policy or the address check
// refuses, 502 for a mirror that could not be reached.
func (p *Proxy) fail(w http.ResponseWriter, host string, pt int, err error) {
	var denied *DeniedError
	var addr *addrError
	code := http.StatusForbidden
	switch {
	case errors.As(err, &denied):
	case errors.As(err, &addr):
		err = &DeniedError{Host: normHost(host), Port: pt, Why: fmt.Sprintf("%s leads to %s, %s, which image builds may never reach", normHost(host), addr.addr, addr.why)}
	default:
		code = http.StatusBadGateway
		err = fmt.Errorf("gust build egress could not reach %s: %w", net.JoinHostPort(host, strconv.Itoa(pt)), err)
	}
	p.logf("egress: %v", err)
	w.Header().Set("X-Gust-Egress", "refused")
	http.Error(w, err.Error(), code)
}

// port parses a URL's port, or gives def for none.
func port(s string, def int) int {
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0 // no entry allows port 0
	}
	return n
}

// dialChecked connects from this (the machine's) namespace, refusing the addresses checkAddr
// refuses. The check runs on the address actually dialled, after resolution, so that a name
// resolving (or rebinding) to this machine or the metadata service cannot get there.
func dialChecked(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialWith(ctx, network, addr, checkAddr)
}

// dialWith connects, refusing at connect time every address that check refuses.
func dialWith(ctx context.Context, network, addr string, check func(netip.Addr, []netip.Addr) error) (net.Conn, error) {
	own, err := ownAddrs()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: dialTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("unexpected address %q: %w", address, err)
		}
		return check(ap.Addr(), own)
	}}
	return d.DialContext(ctx, network, addr)
}

// ownAddrs are this machine's interface addresses.
func ownAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this machine's addresses, which builds may not reach: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

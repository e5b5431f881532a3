package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Client is what the containers' resolver and the domain proxy need to know of the container
// behind a source address.
type Client struct {
	// ID names the container in logs (a sandbox or container id).
	ID string
	// Domains is the container's outbound_domain_allowlist when Restricted.
	Domains Policy
	// Restricted: the container may reach only the names in Domains, through the proxy.
	Restricted bool
}

// Lookup finds the container that has a source address; false for an address that is no
// container with networking (it gets no answers). The worker backs it with the network
// manager's policy table.
type Lookup func(src netip.Addr) (Client, bool)

// Resolver is the DNS server containers find in their /etc/resolv.conf, on their bridge's
// gateway address. It forwards to the worker's upstream resolvers. It answers containers
// with networking only; a container with a domain allowlist gets answers for its allowed names
// only (REFUSED for the rest) and never a private or reserved address (DNS rebinding: a name
// that resolves inside the operator's network). Answers are cached briefly by the Upstream.
type Resolver struct {
	upstream *Upstream
	lookup   Lookup
	logs     *onceLog
	allow    []netip.Prefix // the operator's exceptions to checkPublic

	mu      sync.Mutex
	servers []*dns.Server
}

// NewResolver returns a Resolver over upstream for the containers lookup knows.
func NewResolver(upstream *Upstream, lookup Lookup, logf func(format string, args ...any)) *Resolver {
	return &Resolver{upstream: upstream, lookup: lookup, logs: newOnceLog(logf)}
}

// Serve answers on pc (UDP) and ln (TCP), either of which may be nil, until Close.
func (r *Resolver) Serve(pc net.PacketConn, ln net.Listener) {
	var srvs []*dns.Server
	if pc != nil {
		srvs = append(srvs, &dns.Server{PacketConn: pc, Handler: r})
	}
	if ln != nil {
		srvs = append(srvs, &dns.Server{Listener: ln, Handler: r, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }})
	}
	started := make(chan struct{}, len(srvs))
	r.mu.Lock()
	r.servers = append(r.servers, srvs...)
	r.mu.Unlock()
	for _, s := range srvs {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			if err := s.ActivateAndServe(); err != nil {
				r.logs.printf("egress: the containers' resolver stopped: %v", err)
				started <- struct{}{}
			}
		}()
	}
	for range srvs {
		<-started
	}
}

// ListenAndServe listens on addr (the gateway's address and port 53) over UDP and TCP.
func (r *Resolver) ListenAndServe(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("egress: the containers' resolver on %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = pc.Close() // not served yet
		return fmt.Errorf("egress: the containers' resolver on %s: %w", addr, err)
	}
	r.Serve(pc, ln)
	return nil
}

// Close stops answering and closes the sockets.
func (r *Resolver) Close() error {
	r.mu.Lock()
	srvs := r.servers
	r.servers = nil
	r.mu.Unlock()
	var errs []error
	for _, s := range srvs {
		errs = append(errs, s.Shutdown())
	}
	return errors.Join(errs...)
}

// ServeDNS answers one query.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := r.answer(w.RemoteAddr(), req)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp) // a client gone away is no error of ours
}

func (r *Resolver) answer(from net.Addr, req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp
	}
	src := addrOf(from)
	client, ok := r.lookup(src)
	if !ok {
		r.logs.once("dns "+src.String(), "egress: the containers' resolver refused %s: no container with networking has that address", src)
		return refused(req, "gust: this address is no container with networking")
	}
	q := req.Question[0]
	if client.Restricted && !client.Domains.AllowsName(q.Name) {
		r.logs.once("dns "+client.ID+" "+q.Name, "egress: container %s asked for %s, which is not in its %s (%s): refused", client.ID, q.Name, DomainField, client.Domains)
		return refused(req, fmt.Sprintf("gust: %s is not in this container's %s", q.Name, DomainField))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*upstreamTimeout)
	defer cancel()
	up, err := r.upstream.Exchange(ctx, q)
	if err != nil {
		r.logs.once("dnsfail "+q.Name, "egress: %v", err)
		resp.SetRcode(req, dns.RcodeServerFailure)
		return resp
	}
	// The header and question are the client's (its ID, its spelling of the name).
	up.Id, up.Response, up.Question = req.Id, true, req.Question
	up.RecursionDesired, up.CheckingDisabled = req.RecursionDesired, req.CheckingDisabled
	up.RecursionAvailable, up.Authoritative = true, false
	if client.Restricted {
		if dropped := filterPublic(up, r.allow); dropped != "" {
			r.logs.once("rebind "+client.ID+" "+q.Name, "egress: container %s: %s resolves to %s: left out of the answer (DNS rebinding)", client.ID, q.Name, dropped)
		}
	}
	// The upstream's EDNS0 options are for us; the client's own say what it can take.
	up.Extra = nil
	if o := req.IsEdns0(); o != nil {
		up.SetEdns0(o.UDPSize(), false)
	}
	return up
}

// filterPublic drops every address record that points somewhere a restricted container may
// not go, and the records that carry address hints (SVCB, HTTPS); it says what it dropped.
func filterPublic(m *dns.Msg, allow []netip.Prefix) string {
	own, _ := ownAddrs() // without them the ranges below still hold
	dropped := ""
	keep := m.Answer[:0]
	for _, rr := range m.Answer {
		switch rr.(type) {
		case *dns.SVCB, *dns.HTTPS:
			continue
		}
		if a, ok := rrAddr(rr); ok {
			if err := checkPublic(a, own, allow); err != nil {
				dropped = err.(*addrError).what()
				continue
			}
		}
		keep = append(keep, rr)
	}
	m.Answer = keep
	m.Ns = nil
	return dropped
}

// refused is a REFUSED answer with an extended error (RFC 8914) that says why, for a client
// that speaks EDNS0.
func refused(req *dns.Msg, why string) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetRcode(req, dns.RcodeRefused)
	resp.RecursionAvailable = true
	if o := req.IsEdns0(); o != nil {
		resp.SetEdns0(o.UDPSize(), false)
		opt := resp.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeProhibited, ExtraText: why})
	}
	return resp
}

// addrOf is a connection's remote address.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}

// onceLog logs a refusal once per key: a container retrying a refused name in a loop must not
// flood the worker's log. Keys are forgotten after onceLogWindow, so a refusal an hour later
// is logged again.
type onceLog struct {
	logf func(format string, args ...any)
	mu   sync.Mutex
	seen map[string]time.Time
}

const (
	onceLogWindow = 10 * time.Minute
	onceLogMax    = 10000
)

func newOnceLog(logf func(format string, args ...any)) *onceLog {
	return &onceLog{logf: logf, seen: map[string]time.Time{}}
}

func (l *onceLog) once(key, format string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.seen[key]; ok && now.Sub(t) < onceLogWindow {
		l.mu.Unlock()
		return
	}
	if len(l.seen) >= onceLogMax {
		clear(l.seen)
	}
	l.seen[key] = now
	l.mu.Unlock()
	l.logf(format, args...)
}

func (l *onceLog) printf(format string, args ...any) { l.logf(format, args...) }

package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Upstream asks the worker's own resolvers, and remembers their answers briefly. The
// containers' resolver forwards to it, and the domain proxy resolves the names it lets through
// with it, so that both see the same answers and a name is resolved once for both.
type Upstream struct {
	servers []string // host:port, tried in order
	timeout time.Duration
	// Dial opens a connection to a server ("udp" or "tcp"); tests replace it to dial from a
	// network namespace of their own.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu    sync.Mutex
	cache map[cacheKey]cached
}

type cacheKey struct {
	name         string // lower case, fully qualified
	qtype, class uint16
}

type cached struct {
	msg     *dns.Msg
	expires time.Time
}

const (
	// cacheMax bounds how long an answer is reused: short, so that a changed record (and a
	// rebinding attempt) is seen soon, long enough to spare the upstream a burst of lookups.
	cacheMax = 30 * time.Second
	// cacheNegative is how long a failure (NXDOMAIN, SERVFAIL) is reused.
	cacheNegative = 5 * time.Second
	// cacheEntries bounds the cache; past it the cache is emptied.
	cacheEntries = 4096
	// upstreamTimeout bounds one exchange with one server.
	upstreamTimeout = 3 * time.Second
)

// ErrNoUpstream is NewUpstream's error when it is given no resolver.
var ErrNoUpstream = errors.New("egress: no upstream resolver: the worker's /etc/resolv.conf names none; give one with --dns-upstream")

// NewUpstream returns an Upstream over servers (addresses, with or without a port: 53).
func NewUpstream(servers []string) (*Upstream, error) {
	u := &Upstream{timeout: upstreamTimeout, cache: map[cacheKey]cached{}}
	for _, s := range servers {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
			s = netip.AddrPortFrom(a, 53).String()
		} else if _, err := netip.ParseAddrPort(s); err != nil {
			return nil, fmt.Errorf("egress: upstream resolver %q is not an IP address or address:port", s)
		}
		u.servers = append(u.servers, s)
	}
	if len(u.servers) == 0 {
		return nil, ErrNoUpstream
	}
	var d net.Dialer
	u.Dial = d.DialContext
	return u, nil
}

// ResolvConfServers reads the nameserver lines of a resolv.conf.
func ResolvConfServers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("egress: reading the upstream resolvers: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			// A zone (fe80::1%eth0) is dropped: a link-local resolver is not one we dial.
			if a, err := netip.ParseAddr(fields[1]); err == nil && a.Zone() == "" {
				out = append(out, a.String())
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("egress: reading %s: %w", path, err)
	}
	return out, nil
}

// Servers are the upstream resolvers, for messages.
func (u *Upstream) Servers() []string { return u.servers }

// Exchange answers the question of q (one question), from the cache or the upstream
// resolvers in turn. The answer is the caller's to change.
func (u *Upstream) Exchange(ctx context.Context, q dns.Question) (*dns.Msg, error) {
	key := cacheKey{strings.ToLower(dns.Fqdn(q.Name)), q.Qtype, q.Qclass}
	now := time.Now()
	u.mu.Lock()
	if c, ok := u.cache[key]; ok && now.Before(c.expires) {
		u.mu.Unlock()
		return c.msg.Copy(), nil
	}
	u.mu.Unlock()

	req := new(dns.Msg)
	req.SetQuestion(key.name, q.Qtype)
	req.Question[0].Qclass = q.Qclass
	req.SetEdns0(dns.DefaultMsgSize, false)
	var errs []error
	for _, s := range u.servers {
		resp, err := u.exchange(ctx, req, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		u.store(key, resp, now)
		return resp.Copy(), nil
	}
	return nil, fmt.Errorf("egress: no upstream resolver answered %s: %w", key.name, errors.Join(errs...))
}

// exchange asks one server, over UDP and then over TCP if the answer did not fit.
func (u *Upstream) exchange(ctx context.Context, req *dns.Msg, server string) (*dns.Msg, error) {
	for _, network := range []string{"udp", "tcp"} {
		resp, err := u.exchangeOver(ctx, network, req, server)
		if err != nil {
			return nil, err
		}
		if !resp.Truncated || network == "tcp" {
			return resp, nil
		}
	}
	panic("unreachable")
}

func (u *Upstream) exchangeOver(ctx context.Context, network string, req *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	nc, err := u.Dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline) // every conn we dial takes a deadline
	c := &dns.Client{Net: network, Timeout: u.timeout}
	conn := &dns.Conn{Conn: nc, UDPSize: dns.DefaultMsgSize}
	// A fresh ID each time: ExchangeWithConn matches the answer to it.
	r := req.Copy()
	r.Id = dns.Id()
	resp, _, err := c.ExchangeWithConnContext(ctx, r, conn)
	if err != nil {
		return nil, fmt.Errorf("%s over %s: %w", server, network, err)
	}
	return resp, nil
}

// store remembers an answer for its shortest TTL, at most cacheMax.
func (u *Upstream) store(key cacheKey, resp *dns.Msg, now time.Time) {
	ttl := cacheMax
	if resp.Rcode != dns.RcodeSuccess {
		ttl = cacheNegative
	}
	for _, rr := range resp.Answer {
		if d := time.Duration(rr.Header().Ttl) * time.Second; d < ttl {
			ttl = d
		}
	}
	if ttl <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.cache) >= cacheEntries {
		for k, c := range u.cache {
			if !now.Before(c.expires) {
				delete(u.cache, k)
			}
		}
		if len(u.cache) >= cacheEntries {
			clear(u.cache)
		}
	}
	u.cache[key] = cached{msg: resp.Copy(), expires: now.Add(ttl)}
}

// LookupAddrs resolves name to its IPv4 and IPv6 addresses (following the CNAMEs the upstream
// resolver returns with them).
func (u *Upstream) LookupAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	found := false
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		resp, err := u.Exchange(ctx, dns.Question{Name: dns.Fqdn(name), Qtype: t, Qclass: dns.ClassINET})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if resp.Rcode != dns.RcodeSuccess {
			errs = append(errs, fmt.Errorf("%s: %s", name, dns.RcodeToString[resp.Rcode]))
			continue
		}
		found = true
		out = append(out, answerAddrs(resp)...)
	}
	if len(out) == 0 {
		if !found {
			return nil, fmt.Errorf("resolving %s: %w", name, errors.Join(errs...))
		}
		return nil, fmt.Errorf("%s has no address", name)
	}
	return out, nil
}

// answerAddrs are the A and AAAA records of an answer.
func answerAddrs(m *dns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, rr := range m.Answer {
		if a, ok := rrAddr(rr); ok {
			out = append(out, a)
		}
	}
	return out
}

// rrAddr is the address of an A or AAAA record.
func rrAddr(rr dns.RR) (netip.Addr, bool) {
	var ip net.IP
	switch r := rr.(type) {
	case *dns.A:
		ip = r.A
	case *dns.AAAA:
		ip = r.AAAA
	default:
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

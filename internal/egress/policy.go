// Package egress holds the worker's ways out for containers whose network is limited by name.
//
// Image builds: a build container gets a network namespace of its own with only loopback,
// and an HTTP forward proxy (plain GET and CONNECT) listens on that loopback, served by the
// worker, which dials from the machine's namespace. The proxy lets a build reach the hosts its
// Policy lists (package mirrors, from the worker's --build-egress flag) on ports 80 and 443,
// and refuses everything else with a 403 that names the host and the flag. It never dials
// this machine's own addresses, loopback, link-local or cloud metadata addresses, whatever a
// name resolves to.
//
// Sandboxes and functions: the Resolver is the DNS server on the containers' bridge gateway
// that their /etc/resolv.conf names, and the DomainProxy is the transparent proxy that the
// network's nat rules send a container's TCP 80 and 443 to when its policy is an
// outbound_domain_allowlist. Both match names with the same Policy, and for such containers
// refuse private and reserved addresses (checkPublic), so that DNS rebinding cannot lead
// inside.
//
// Imported by the worker, and by cmd/gust for the flags' defaults.
package egress

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Flag is the flag of `gust up` and `gust worker` that sets the policy; messages name it.
const Flag = "--build-egress"

// DefaultHosts are the package indexes a build reaches unless the operator says otherwise:
// Debian's and Ubuntu's archives (apt_install in debian_slim and in most registry images) and
// PyPI (pip_install). A mirror named by GUST_DEBIAN_MIRROR, which the base image's
// sources.list then points to, is added.
func DefaultHosts() []string {
	hosts := []string{"deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com",
		"pypi.org", "files.pythonhosted.org"}
	if m := os.Getenv("GUST_DEBIAN_MIRROR"); m != "" {
		if u, err := url.Parse(m); err == nil && u.Host != "" {
			hosts = append(hosts, u.Host)
		}
	}
	return hosts
}

// Policy says which hosts and ports a build may reach. The zero Policy allows nothing.
type Policy struct {
	entries []entry
	list    string // the entries as given, for messages
	domains bool   // a container's outbound_domain_allowlist, not the builds' flag: messages say so
}

// entry is one allowed host: a name or address, or every name under a domain ("*.example.com").
type entry struct {
	host     string
	wildcard bool
	port     int // 0: 80 and 443
}

// labelRE is one label of a DNS name.
var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// ParsePolicy reads allowed hosts: "host" (ports 80 and 443), "host:port" (that port only),
// "*.domain" (every name under domain), an IP address ("[v6]:port" with a port). Empty entries
// are skipped, so "" allows nothing.
func ParsePolicy(hosts []string) (Policy, error) {
	var p Policy
	var shown []string
	for _, raw := range hosts {
		s := strings.ToLower(strings.TrimSpace(raw))
		if s == "" {
			continue
		}
		e, err := parseEntry(s)
		if err != nil {
			return Policy{}, fmt.Errorf("%s entry %q: %w", Flag, raw, err)
		}
		p.entries = append(p.entries, e)
		shown = append(shown, s)
	}
	p.list = strings.Join(shown, ",")
	return p, nil
}

func parseEntry(s string) (entry, error) {
	if strings.Contains(s, "/") {
		return entry{}, fmt.Errorf("give a host name (deb.debian.org), not a URL")
	}
	host, port := s, 0
	if h, ps, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return entry{}, fmt.Errorf("port %q is not a number from 1 to 65535", ps)
		}
		host, port = h, n
	}
	e := entry{port: port}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		e.wildcard, host = true, rest
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if e.wildcard {
			return entry{}, fmt.Errorf("a wildcard needs a domain name, not an address")
		}
		e.host = a.Unmap().String()
		return e, nil
	}
	host = strings.TrimSuffix(host, ".")
	if !validName(host) {
		return entry{}, fmt.Errorf("%q is not a host name or IP address (a wildcard is *.domain)", host)
	}
	e.host = host
	return e, nil
}

func validName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if !labelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// String is the policy as a flag value.
func (p Policy) String() string { return p.list }

// DeniedError says why the proxy refused a destination.
type DeniedError struct {
	Host string
	Port int
	Why  string

	domains bool // from a container's domain allowlist, not the builds' proxy
}

func (e *DeniedError) Error() string {
	if e.domains {
		return fmt.Sprintf("gust egress refused %s: %s", net.JoinHostPort(e.Host, strconv.Itoa(e.Port)), e.Why)
	}
	return fmt.Sprintf("gust build egress refused %s: %s", net.JoinHostPort(e.Host, strconv.Itoa(e.Port)), e.Why)
}

// DomainField is the API field that sets a container's domain allowlist; messages name it.
const DomainField = "outbound_domain_allowlist"

// ParseDomainAllowlist reads a sandbox's or function's outbound_domain_allowlist: host names
// ("pypi.org") and every name under a domain ("*.github.com"), each open on ports 80 and 443,
// the ports the transparent proxy sees. Ports and addresses are refused: addresses belong in
// outbound_cidr_allowlist, and a name is what the proxy checks.
func ParseDomainAllowlist(names []string) (Policy, error) {
	p := Policy{domains: true}
	var shown []string
	for _, raw := range names {
		s := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(raw)), ".")
		host, wildcard := strings.CutPrefix(s, "*.")
		switch {
		case s == "":
			return Policy{}, fmt.Errorf("%s: an entry is empty; give a host name (pypi.org) or *.domain", DomainField)
		case strings.ContainsAny(s, "/:[]"):
			return Policy{}, fmt.Errorf("%s entry %q: give a host name (pypi.org) or *.domain, without a scheme, path or port (the proxy opens ports 80 and 443)", DomainField, raw)
		case isAddr(host):
			return Policy{}, fmt.Errorf("%s entry %q: an address is not a domain; put addresses in outbound_cidr_allowlist", DomainField, raw)
		case !validName(host):
			return Policy{}, fmt.Errorf("%s entry %q is not a host name or *.domain", DomainField, raw)
		}
		p.entries = append(p.entries, entry{host: host, wildcard: wildcard})
		shown = append(shown, s)
	}
	p.list = strings.Join(shown, ",")
	return p, nil
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// AllowsName says whether some entry names host, whatever its port: the resolver answers for
// such names only.
func (p Policy) AllowsName(host string) bool {
	h := normHost(host)
	for _, e := range p.entries {
		if e.matches(h) {
			return true
		}
	}
	return false
}

// Check says whether a build may reach host:port, as its proxy's client names them.
func (p Policy) Check(host string, port int) error {
	h := normHost(host)
	if p.domains {
		return p.checkDomain(h, port)
	}
	allowed := "nothing: image builds have no network"
	if p.list != "" {
		allowed = p.list
	}
	known := false
	for _, e := range p.entries {
		if !e.matches(h) {
			continue
		}
		if e.port == 0 && (port == 80 || port == 443) || e.port != 0 && port == e.port {
			return nil
		}
		known = true
	}
	if known {
		return &DeniedError{Host: h, Port: port, Why: fmt.Sprintf("port %d of %s is closed to image builds (an entry without a port opens 80 and 443); an operator can open it with %s:%d in the worker's %s list (allowed now: %s)",
			port, h, h, port, Flag, allowed)}
	}
	return &DeniedError{Host: h, Port: port, Why: fmt.Sprintf("%s is not a package mirror this worker lets image builds reach; an operator can add it to the worker's %s list (allowed now: %s)",
		h, Flag, allowed)}
}

// checkDomain is Check for a container's domain allowlist.
func (p Policy) checkDomain(h string, port int) error {
	allowed := p.list
	if allowed == "" {
		allowed = "no names"
	}
	if !p.AllowsName(h) {
		shown := h
		if shown == "" {
			shown = "a connection that names no host (no TLS server name or HTTP Host, e.g. to a bare IP address)"
		}
		return &DeniedError{Host: h, Port: port, Why: fmt.Sprintf("%s is not in this container's %s (allowed: %s)", shown, DomainField, allowed), domains: true}
	}
	if port != 80 && port != 443 {
		return &DeniedError{Host: h, Port: port, Why: fmt.Sprintf("%s opens ports 80 and 443 only, not %d", DomainField, port), domains: true}
	}
	return nil
}

func (e entry) matches(h string) bool {
	if e.wildcard {
		return strings.HasSuffix(h, "."+e.host)
	}
	return h == e.host
}

// normHost is a host as entries hold it: lower case, no trailing dot, addresses canonical.
func normHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return h
}

// metadataAddrs are cloud metadata services outside the link-local range (AWS's IPv6 one,
// Alibaba's); 169.254.169.254 is link-local and refused with the rest of that range.
var metadataAddrs = []netip.Addr{netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200")}

// checkAddr refuses the addresses a build must never reach, whatever name led there: this
// machine (loopback, its own addresses: the worker's and server's ports), link-local (cloud
// metadata at 169.254.169.254), unspecified and multicast.
func checkAddr(a netip.Addr, own []netip.Addr) error {
	a = a.Unmap()
	why := ""
	switch {
	case a.IsLoopback() || a.IsUnspecified() || a.Is4() && a.As4()[0] == 0:
		why = "a loopback address (this machine)"
	case a.IsLinkLocalUnicast():
		why = "a link-local address (where cloud metadata services live)"
	case a.IsMulticast():
		why = "a multicast address"
	}
	for _, m := range metadataAddrs {
		if why == "" && a == m {
			why = "a cloud metadata address"
		}
	}
	for _, o := range own {
		if why == "" && a == o.Unmap() {
			why = "an address of this machine"
		}
	}
	if why == "" {
		return nil
	}
	return &addrError{addr: a, why: why}
}

// privatePrefixes are the ranges a container with a domain allowlist never reaches through
// the proxy and never gets from its resolver, whatever a name resolves to: a name that
// rebinds to one of them would otherwise lead inside the operator's network. checkAddr's
// ranges (loopback, link-local, this machine) are refused as well.
var privatePrefixes = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared address (RFC 6598, carrier-grade NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "a reserved address (IETF protocol assignments)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address (class E, broadcast)"},
	{netip.MustParsePrefix("fc00::/7"), "a private address (IPv6 unique local)"},
	{netip.MustParsePrefix("fec0::/10"), "a private address (IPv6 site-local)"},
}

// nat64 is the well-known NAT64 prefix: an address in it stands for the IPv4 address in its
// last 32 bits, which is checked instead.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// checkPublic refuses what checkAddr refuses and every private or reserved range: the check
// for containers whose policy is a domain allowlist (DNS rebinding). allow are the operator's
// exceptions (the worker's --network-allow): private or reserved ranges a name may lead to,
// never loopback, link-local or this machine's addresses.
func checkPublic(a netip.Addr, own []netip.Addr, allow []netip.Prefix) error {
	a = a.Unmap()
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	if err := checkAddr(a, own); err != nil {
		return err
	}
	for _, p := range allow {
		if p.Contains(a) {
			return nil
		}
	}
	for _, p := range privatePrefixes {
		if p.p.Contains(a) {
			return &addrError{addr: a, why: p.why}
		}
	}
	return nil
}

// addrError is a refused address; the proxy turns it into a DeniedError naming the host.
type addrError struct {
	addr netip.Addr
	why  string
}

func (e *addrError) Error() string { return fmt.Sprintf("%s is %s", e.addr, e.why) }

// what is the address and what it is, for "x resolves to ...".
func (e *addrError) what() string { return fmt.Sprintf("%s, %s", e.addr, e.why) }

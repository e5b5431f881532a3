package sandbox

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
)

// Limits of what a sandbox may open to the outside.
const (
	// MaxPorts is the most container ports one sandbox may expose through tunnels.
	MaxPorts = 16
	// MaxInboundCIDRs bounds inbound_cidr_allowlist.
	MaxInboundCIDRs = 100
	// DefaultProbeInterval and the bounds of a readiness probe's interval, in milliseconds.
	DefaultProbeIntervalMS = 100
	MinProbeIntervalMS     = 10
	MaxProbeIntervalMS     = 60_000
)

// Port is a container port a sandbox exposes through the ingress: always over TLS by host
// name; Unencrypted also on a raw TCP port of its own; H2 advertises HTTP/2 in TLS's ALPN.
type Port struct {
	Port        int  `json:"port"`
	Unencrypted bool `json:"unencrypted,omitempty"`
	H2          bool `json:"h2,omitempty"`
}

// Probe is a sandbox's readiness probe (Modal's modal.Probe): ready once a TCP connection to
// TCPPort inside the sandbox succeeds, or once ExecArgv exits 0, tried every IntervalMS.
type Probe struct {
	TCPPort    int      `json:"tcp_port,omitempty"`
	ExecArgv   []string `json:"exec_argv,omitempty"`
	IntervalMS int      `json:"interval_ms,omitempty"`
}

// validatePorts checks the requested ports and returns them as one list, in the order given.
func (r CreateRequest) validatePorts() ([]Port, error) {
	var out []Port
	seen := map[int]string{}
	for _, l := range []struct {
		field string
		ports []int
		port  Port
	}{
		{"encrypted_ports", r.EncryptedPorts, Port{}},
		{"unencrypted_ports", r.UnencryptedPorts, Port{Unencrypted: true}},
		{"h2_ports", r.H2Ports, Port{H2: true}},
	} {
		for _, p := range l.ports {
			if p < 1 || p > 65535 {
				return nil, errdefs.Invalid("%s: port %d is not a TCP port (1-65535)", l.field, p)
			}
			if prev, dup := seen[p]; dup {
				return nil, errdefs.Invalid("port %d is listed twice (in %s and %s); list each port once", p, prev, l.field)
			}
			seen[p] = l.field
			pt := l.port
			pt.Port = p
			out = append(out, pt)
		}
	}
	if len(out) > MaxPorts {
		return nil, errdefs.Invalid("a sandbox may expose at most %d ports, got %d", MaxPorts, len(out))
	}
	if len(out) > 0 && r.BlockNetwork {
		return nil, errdefs.Invalid("block_network=True cannot be combined with encrypted_ports, unencrypted_ports or h2_ports: a sandbox without a network cannot be reached; drop one of them")
	}
	return out, nil
}

// validateInbound checks inbound_cidr_allowlist and returns it cleaned (each prefix masked).
func validateInbound(cidrs []string, blockNetwork bool) ([]string, error) {
	if len(cidrs) > MaxInboundCIDRs {
		return nil, errdefs.Invalid("inbound_cidr_allowlist has %d entries; the limit is %d", len(cidrs), MaxInboundCIDRs)
	}
	if len(cidrs) > 0 && blockNetwork {
		return nil, errdefs.Invalid("block_network=True cannot be combined with inbound_cidr_allowlist; drop one of them")
	}
	out := make([]string, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := ParseInboundCIDR(c)
		if err != nil {
			return nil, err
		}
		out = append(out, p.String())
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ParseInboundCIDR reads one inbound_cidr_allowlist entry (IPv4 or IPv6): a CIDR ("10.0.0.0/8") or a single address.
func ParseInboundCIDR(c string) (netip.Prefix, error) {
	c = strings.TrimSpace(c)
	if p, err := netip.ParsePrefix(c); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(c); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	return netip.Prefix{}, errdefs.Invalid("inbound_cidr_allowlist: %q is not a CIDR such as 203.0.113.0/24 or an address", c)
}

// Validate checks a probe and fills its default interval.
func (p *Probe) Validate() error {
	switch {
	case p.TCPPort != 0 && len(p.ExecArgv) > 0:
		return errdefs.Invalid("readiness_probe: give tcp_port or exec_argv, not both (Probe.with_tcp or Probe.with_exec)")
	case p.TCPPort == 0 && len(p.ExecArgv) == 0:
		return errdefs.Invalid("readiness_probe: give tcp_port (Probe.with_tcp(8000)) or exec_argv (Probe.with_exec(\"curl\", \"-f\", \"localhost:8000\"))")
	case p.TCPPort < 0 || p.TCPPort > 65535:
		return errdefs.Invalid("readiness_probe: tcp_port %d is not a TCP port (1-65535)", p.TCPPort)
	}
	if slices.ContainsFunc(p.ExecArgv, func(a string) bool { return strings.IndexByte(a, 0) >= 0 }) {
		return errdefs.Invalid("readiness_probe: an exec_argv argument contains a NUL byte")
	}
	if p.IntervalMS == 0 {
		p.IntervalMS = DefaultProbeIntervalMS
	}
	if p.IntervalMS < MinProbeIntervalMS || p.IntervalMS > MaxProbeIntervalMS {
		return errdefs.Invalid("readiness_probe: interval_ms must be between %d and %d, got %d", MinProbeIntervalMS, MaxProbeIntervalMS, p.IntervalMS)
	}
	return nil
}

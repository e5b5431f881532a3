package gust

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Tunnel is a port of a sandbox exposed through the server's ingress (Modal's Tunnel): over
// TLS at Host:Port, and for unencrypted ports also as raw TCP at UnencryptedHost:UnencryptedPort.
type Tunnel struct {
	Host            string // the public host name, <random>.<the ingress's base domain>
	Port            int    // the public TLS port
	UnencryptedHost string // "" unless the port is one of UnencryptedPorts
	UnencryptedPort int
}

// URL is the tunnel's public HTTPS URL.
func (t *Tunnel) URL() string {
	if t.Port == 443 {
		return "https://" + t.Host
	}
	return "https://" + t.Host + ":" + strconv.Itoa(t.Port)
}

// TLSSocket is the public TLS socket as (host, port).
func (t *Tunnel) TLSSocket() (string, int) { return t.Host, t.Port }

// TCPSocket is the public raw TCP socket as (host, port); an error unless the port was
// exposed unencrypted.
func (t *Tunnel) TCPSocket() (string, int, error) {
	if t.UnencryptedHost == "" {
		return "", 0, errors.New("this tunnel is not configured for unencrypted TCP: list the port in SandboxOptions.UnencryptedPorts")
	}
	return t.UnencryptedHost, t.UnencryptedPort, nil
}

// Probe is a sandbox's readiness probe (SandboxOptions.ReadinessProbe): the sandbox is ready
// once a TCP connection to a port inside it succeeds, or once a command exits 0.
type Probe struct {
	tcpPort  int
	execArgv []string
	interval time.Duration
}

// TCPProbeParams are NewTCPProbe's options.
type TCPProbeParams struct {
	Interval time.Duration // between tries; 0 is 100 ms
}

// ExecProbeParams are NewExecProbe's options.
type ExecProbeParams struct {
	Interval time.Duration // between tries; 0 is 100 ms
}

// NewTCPProbe probes a TCP port inside the sandbox.
func NewTCPProbe(port int, params *TCPProbeParams) (*Probe, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("probe port %d is not a TCP port (1-65535)", port)
	}
	p := &Probe{tcpPort: port}
	if params != nil {
		p.interval = params.Interval
	}
	return p, nil
}

// NewExecProbe runs argv inside the sandbox until it exits 0.
func NewExecProbe(argv []string, params *ExecProbeParams) (*Probe, error) {
	if len(argv) == 0 {
		return nil, errors.New("an exec probe needs a command, e.g. []string{\"curl\", \"-f\", \"localhost:8000\"}")
	}
	p := &Probe{execArgv: append([]string(nil), argv...)}
	if params != nil {
		p.interval = params.Interval
	}
	return p, nil
}

func (p *Probe) wire() map[string]any {
	out := map[string]any{}
	if p.tcpPort != 0 {
		out["tcp_port"] = p.tcpPort
	}
	if len(p.execArgv) > 0 {
		out["exec_argv"] = p.execArgv
	}
	if p.interval > 0 {
		out["interval_ms"] = p.interval.Milliseconds()
	}
	return out
}

// addPorts adds the tunnel and probe options to a create request's body.
func (o SandboxOptions) addPorts(body map[string]any) {
	if len(o.EncryptedPorts) > 0 {
		body["encrypted_ports"] = o.EncryptedPorts
	}
	if len(o.UnencryptedPorts) > 0 {
		body["unencrypted_ports"] = o.UnencryptedPorts
	}
	if len(o.H2Ports) > 0 {
		body["h2_ports"] = o.H2Ports
	}
	if len(o.InboundCIDRAllowlist) > 0 {
		body["inbound_cidr_allowlist"] = o.InboundCIDRAllowlist
	}
	if o.ReadinessProbe != nil {
		body["readiness_probe"] = o.ReadinessProbe.wire()
	}
}

type tunnelWire struct {
	ContainerPort   int    `json:"container_port"`
	Host            string `json:"host"`
	Port            int    `json:"port"`
	UnencryptedHost string `json:"unencrypted_host"`
	UnencryptedPort int    `json:"unencrypted_port"`
}

// Tunnels returns the sandbox's tunnels by container port, waiting up to timeout (0: 50 s, as
// Modal) while it starts.
func (s *Sandbox) Tunnels(ctx context.Context, timeout time.Duration) (map[int]*Tunnel, error) {
	if timeout <= 0 {
		timeout = 50 * time.Second
	}
	var out struct {
		Tunnels []tunnelWire `json:"tunnels"`
	}
	q := url.Values{"timeout": {strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64)}}
	if err := s.c.call(ctx, request{method: http.MethodGet, path: "/v1/sandboxes/" + s.ID + "/tunnels", query: q}, &out); err != nil {
		return nil, fmt.Errorf("tunnels of sandbox %s: %w", s.ID, err)
	}
	m := make(map[int]*Tunnel, len(out.Tunnels))
	for _, t := range out.Tunnels {
		m[t.ContainerPort] = &Tunnel{Host: t.Host, Port: t.Port, UnencryptedHost: t.UnencryptedHost, UnencryptedPort: t.UnencryptedPort}
	}
	return m, nil
}

// ErrNotReady is returned by WaitUntilReady when the readiness probe has not passed in time.
var ErrNotReady = errors.New("the sandbox's readiness probe did not pass in time")

// WaitUntilReady waits until the sandbox's readiness probe passes (without one: until it
// runs), at most timeout (0: 300 s, as Modal). It returns ErrNotReady when the time is up,
// and a conflict error if the sandbox ends first.
func (s *Sandbox) WaitUntilReady(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 300 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		step := math.Max(0, math.Min(time.Until(deadline).Seconds(), 50))
		var out struct {
			Ready bool `json:"ready"`
		}
		q := url.Values{"timeout": {strconv.FormatFloat(step, 'f', 3, 64)}}
		if err := s.c.call(ctx, request{method: http.MethodGet, path: "/v1/sandboxes/" + s.ID + "/ready", query: q}, &out); err != nil {
			return fmt.Errorf("waiting for sandbox %s to be ready: %w", s.ID, err)
		}
		if out.Ready {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("sandbox %s after %v: %w", s.ID, timeout, ErrNotReady)
		}
	}
}

// Package ingress is the way into sandboxes from outside: tunnels to the ports a sandbox
// exposes (encrypted_ports, unencrypted_ports, h2_ports, and modal.forward in function
// containers). It runs on the server machine. An HTTPS listener terminates TLS for every
// host name <random label>.<base domain>, with the operator's wildcard certificate or one
// signed by a CA that gust makes at first start (CAFile), and routes each connection by its
// SNI to its sandbox; an unencrypted port gets a raw TCP listener of its own. Either way the
// plain bytes go, through a Dialer (the fleet: the worker's connect endpoint), to the
// container's port: TLS ends here, everything above it (HTTP/1.1, HTTP/2 on h2 ports,
// websockets, streamed answers) passes through untouched. When the Dialer is also a
// Forwarder (the fleet with the worker in this process), a raw port's connections are
// forwarded by the kernel instead, once the container's server answers (forward.go).
//
// Web endpoints come in on the same HTTPS listener, by host names <workspace>--<label>.<base
// domain>; once TLS ends, their HTTP requests go to the handler SetWeb gave (web.go).
//
// The ingress never reaches anything but a sandbox's declared ports: a route exists only for
// a port that a running sandbox declared, and is gone with the sandbox. Host names are random
// (about 103 bits), so they cannot be enumerated. A sandbox's inbound_cidr_allowlist is
// checked against each client's address before anything is dialled.
//
// Imported by internal/api and internal/server, and by cmd/gust for its flags' configuration.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// Config configures the ingress.
type Config struct {
	// Addr is where the HTTPS listener listens, e.g. 127.0.0.1:0 or 0.0.0.0:443.
	Addr string
	// FallbackAddr, when set, is listened on instead when Addr is taken (gust's default port,
	// with another gust on the machine already on it).
	FallbackAddr string
	// BaseDomain is the domain the tunnels' host names are under: a wildcard DNS record
	// *.BaseDomain should point at this machine. The default, gust.localhost, resolves to
	// loopback in many resolvers (curl's, systemd-resolved's), and anywhere with curl --resolve.
	BaseDomain string
	// PublicPort is the port in tunnel URLs, when a proxy or NAT in front of the ingress
	// listens on another one; 0 is the listener's own.
	PublicPort int
	// TCPHost is the address raw TCP tunnels (unencrypted ports) listen on, each on a port of
	// its own; PublicTCPHost is what clients are told to connect to (default TCPHost, or
	// BaseDomain when TCPHost is unspecified, 0.0.0.0 or ::).
	TCPHost, PublicTCPHost string
	// CertFile and KeyFile are the operator's certificate for *.BaseDomain (PEM). Without
	// them, gust's own CA in CADir signs one.
	CertFile, KeyFile string
	CADir             string
	// Relay keeps raw TCP tunnels in the ingress's relay even when its Dialer could have the
	// kernel forward them (Forwarder).
	Relay  bool
	Logger *log.Logger
}

// DefaultBaseDomain is the base domain when none is given.
const DefaultBaseDomain = "gust.localhost"

// Dialer opens a raw stream to a port inside a container on a worker (fleet.Fleet.DialPort).
type Dialer interface {
	DialPort(ctx context.Context, workerID, containerID string, port int) (net.Conn, error)
}

// Forwarder is a Dialer that can also have the kernel carry a raw TCP tunnel
// (fleet.Fleet.ForwardPort): new connections to listen, the tunnel's own listener, from
// clients in allow go straight to the container's port, until stop. It fails (the tunnel is
// then relayed) for a container on another machine, and until the container's server answers.
type Forwarder interface {
	ForwardPort(ctx context.Context, workerID, containerID string, port int, listen netip.AddrPort, allow []netip.Prefix) (stop func() error, err error)
}

// Tunnel is one exposed port as clients see it (Modal's modal.Tunnel, with the container's
// port beside it).
type Tunnel struct {
	ContainerPort   int    `json:"container_port"`
	Host            string `json:"host"`
	Port            int    `json:"port"`
	UnencryptedHost string `json:"unencrypted_host,omitempty"`
	UnencryptedPort int    `json:"unencrypted_port,omitempty"`
}

// Target is a sandbox the ingress routes to.
type Target struct {
	SandboxID, WorkerID string
	// Allow lists the client addresses that may connect (inbound_cidr_allowlist); empty: any.
	Allow []netip.Prefix
}

// Ingress routes tunnels' connections to sandboxes.
type Ingress struct {
	cfg   Config
	dial  Dialer
	log   *log.Logger
	cert  tls.Certificate
	caPEM []byte // nil with the operator's certificate
	ln    net.Listener
	port  int // in tunnel URLs

	mu        sync.Mutex
	byLabel   map[string]*route
	bySandbox map[string]*target
	closed    bool
	wg        sync.WaitGroup
	web       *webServer // web endpoints (web.go), once SetWeb
}

type target struct {
	Target
	routes map[int]*route
	conns  map[net.Conn]struct{}
}

type route struct {
	t      *target
	port   sandbox.Port
	label  string
	tcp    net.Listener // unencrypted ports only
	tunnel Tunnel
	// A raw port's kernel forward (forward.go): kick asks forwardLoop to try now, done ends
	// it; fwdStop, under Ingress.mu, ends the forward once it is in place.
	kick    chan struct{}
	done    chan struct{}
	fwdStop func() error
}

// New loads (or makes) the ingress's certificate and starts its HTTPS listener.
func New(cfg Config, d Dialer) (*Ingress, error) {
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "ingress: ", log.LstdFlags)
	}
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = DefaultBaseDomain
	}
	cfg.BaseDomain = strings.ToLower(strings.Trim(cfg.BaseDomain, "."))
	if !validDomain(cfg.BaseDomain) {
		return nil, fmt.Errorf("ingress: base domain %q is not a DNS name such as tunnels.example.com", cfg.BaseDomain)
	}
	if cfg.TCPHost == "" {
		cfg.TCPHost = "127.0.0.1"
	}
	if cfg.PublicTCPHost == "" {
		cfg.PublicTCPHost = cfg.TCPHost
		if a, err := netip.ParseAddr(cfg.TCPHost); err == nil && a.IsUnspecified() {
			cfg.PublicTCPHost = cfg.BaseDomain
		}
	}
	i := &Ingress{cfg: cfg, dial: d, log: cfg.Logger, byLabel: map[string]*route{}, bySandbox: map[string]*target{}}
	switch {
	case cfg.CertFile != "" || cfg.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ingress: the certificate in %s and %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		i.cert = cert
	case cfg.CADir != "":
		ca, key, caPEM, err := loadOrMakeCA(cfg.CADir, cfg.BaseDomain)
		if err != nil {
			return nil, err
		}
		if i.cert, err = leafFor(ca, key, cfg.BaseDomain); err != nil {
			return nil, err
		}
		i.caPEM = caPEM
	default:
		return nil, errors.New("ingress: give a certificate for *." + cfg.BaseDomain + " (CertFile, KeyFile) or a directory for gust's own CA (CADir)")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil && cfg.FallbackAddr != "" {
		ln, err = net.Listen("tcp", cfg.FallbackAddr)
	}
	if err != nil {
		return nil, fmt.Errorf("ingress: listen on %s: %w", cfg.Addr, err)
	}
	i.ln = ln
	i.port = cfg.PublicPort
	if i.port == 0 {
		i.port = ln.Addr().(*net.TCPAddr).Port
	}
	i.wg.Add(1)
	go i.serveTLS()
	return i, nil
}

// Addr is the HTTPS listener's address.
func (i *Ingress) Addr() net.Addr { return i.ln.Addr() }

// BaseDomain is the domain tunnels' host names are under.
func (i *Ingress) BaseDomain() string { return i.cfg.BaseDomain }

// CA is gust's CA certificate (PEM) that signed the ingress's certificate, for clients to
// trust; nil when the operator gave the certificate.
func (i *Ingress) CA() []byte { return i.caPEM }

// Open routes a running sandbox's ports (again: ports it routes already keep their tunnels)
// and returns the sandbox's tunnels.
func (i *Ingress) Open(t Target, ports []sandbox.Port) ([]Tunnel, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, errdefs.Unavailable("the ingress has stopped")
	}
	tg := i.bySandbox[t.SandboxID]
	if tg == nil {
		tg = &target{Target: t, routes: map[int]*route{}, conns: map[net.Conn]struct{}{}}
		i.bySandbox[t.SandboxID] = tg
	}
	for _, p := range ports {
		if old := tg.routes[p.Port]; old != nil {
			if old.port != p {
				return nil, errdefs.Conflict("port %d of %s is already forwarded with other options", p.Port, t.SandboxID)
			}
			continue
		}
		if len(tg.routes) >= sandbox.MaxPorts {
			return nil, errdefs.Invalid("a sandbox may expose at most %d ports", sandbox.MaxPorts)
		}
		r := &route{t: tg, port: p, label: i.newLabelLocked()}
		r.tunnel = Tunnel{ContainerPort: p.Port, Host: r.label + "." + i.cfg.BaseDomain, Port: i.port}
		if p.Unencrypted {
			ln, err := net.Listen("tcp", net.JoinHostPort(i.cfg.TCPHost, "0"))
			if err != nil {
				return nil, errdefs.Unavailable("ingress: no TCP port for port %d of %s: %v", p.Port, t.SandboxID, err)
			}
			r.tcp = ln
			r.tunnel.UnencryptedHost = i.cfg.PublicTCPHost
			r.tunnel.UnencryptedPort = ln.Addr().(*net.TCPAddr).Port
			r.kick, r.done = make(chan struct{}, 1), make(chan struct{})
			i.wg.Add(1)
			go i.serveTCP(r)
			i.startForward(r)
		}
		tg.routes[p.Port] = r
		i.byLabel[r.label] = r
	}
	return tg.tunnelsLocked(), nil
}

// newLabelLocked is a fresh random host name label.
func (i *Ingress) newLabelLocked() string {
	for {
		l := ids.Random(20)
		if _, taken := i.byLabel[l]; !taken {
			return l
		}
	}
}

func (t *target) tunnelsLocked() []Tunnel {
	out := make([]Tunnel, 0, len(t.routes))
	for _, r := range t.routes {
		out = append(out, r.tunnel)
	}
	slices.SortFunc(out, func(a, b Tunnel) int { return a.ContainerPort - b.ContainerPort })
	return out
}

// Tunnels are a sandbox's open tunnels, by container port.
func (i *Ingress) Tunnels(sandboxID string) []Tunnel {
	i.mu.Lock()
	defer i.mu.Unlock()
	if tg := i.bySandbox[sandboxID]; tg != nil {
		return tg.tunnelsLocked()
	}
	return nil
}

// ClosePort stops routing one port of a sandbox (the end of a modal.forward); its open
// connections end too.
func (i *Ingress) ClosePort(sandboxID string, port int) {
	i.mu.Lock()
	tg := i.bySandbox[sandboxID]
	if tg == nil || tg.routes[port] == nil {
		i.mu.Unlock()
		return
	}
	r := tg.routes[port]
	i.dropRouteLocked(r)
	var conns []net.Conn
	if len(tg.routes) == 0 {
		delete(i.bySandbox, sandboxID)
		for c := range tg.conns {
			conns = append(conns, c)
		}
		tg.conns = nil
	}
	i.mu.Unlock()
	// Connections are not kept per port: while other ports stay open, this port's live
	// connections run until they end (the route is gone, so no new one starts).
	for _, c := range conns {
		c.Close()
	}
}

func (i *Ingress) dropRouteLocked(r *route) {
	delete(r.t.routes, r.port.Port)
	delete(i.byLabel, r.label)
	if r.tcp != nil {
		close(r.done)
		if r.fwdStop != nil {
			// Before the port is released: no new connection may follow the rule meanwhile.
			if err := r.fwdStop(); err != nil {
				i.log.Printf("ingress: %v", err)
			}
			r.fwdStop = nil
		}
		r.tcp.Close()
	}
}

// Close stops routing a sandbox (it ended): its host names stop answering, its TCP ports are
// released and its open connections end.
func (i *Ingress) Close(sandboxID string) {
	i.mu.Lock()
	tg := i.bySandbox[sandboxID]
	if tg == nil {
		i.mu.Unlock()
		return
	}
	delete(i.bySandbox, sandboxID)
	for _, r := range tg.routes {
		i.dropRouteLocked(r)
	}
	conns := tg.conns
	tg.conns = nil
	i.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Stop closes every listener and connection and waits for the ingress's goroutines.
func (i *Ingress) Stop() {
	i.mu.Lock()
	i.closed = true
	var ids []string
	for id := range i.bySandbox {
		ids = append(ids, id)
	}
	i.mu.Unlock()
	i.ln.Close()
	i.stopWeb()
	for _, id := range ids {
		i.Close(id)
	}
	i.wg.Wait()
}

// Counts returns how many sandboxes are routed and how many TCP ports are held, for tests.
func (i *Ingress) Counts() (sandboxes, tcpPorts int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, tg := range i.bySandbox {
		for _, r := range tg.routes {
			if r.tcp != nil {
				tcpPorts++
			}
		}
	}
	return len(i.bySandbox), tcpPorts
}

// handshakeTimeout bounds a client's TLS handshake.
const handshakeTimeout = 10 * time.Second

func (i *Ingress) serveTLS() {
	defer i.wg.Done()
	base := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{i.cert}}
	h2 := base.Clone()
	h2.NextProtos = []string{"h2", "http/1.1"}
	web := webTLS(base)
	for {
		conn, err := i.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				i.log.Printf("ingress: accepting on %s: %v", i.ln.Addr(), err)
			}
			return
		}
		go i.handleTLS(conn, base, h2, web)
	}
}

// handleTLS routes one HTTPS client by the name it asks for.
func (i *Ingress) handleTLS(conn net.Conn, base, h2, webConf *tls.Config) {
	var r *route
	var web *webServer
	wc := &coalescer{Conn: conn}
	tc := tls.Server(wc, &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if web = i.webFor(hello.ServerName); web != nil {
			return webConf, nil
		}
		r = i.lookup(hello.ServerName)
		if r == nil {
			return nil, fmt.Errorf("no tunnel is named %q", hello.ServerName)
		}
		if !allowed(r.t.Allow, conn.RemoteAddr()) {
			return nil, fmt.Errorf("client %s is not in the inbound_cidr_allowlist of %s", conn.RemoteAddr(), r.t.SandboxID)
		}
		if r.port.H2 {
			return h2, nil
		}
		return base, nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		conn.Close()
		return
	}
	if web != nil {
		web.ln.push(tc)
		return
	}
	i.pipe(r, tc, func(dst, src net.Conn) (int64, error) { return copyToTLS(tc, wc, src) })
}

// copyToTLS copies a container's bytes to its HTTPS client in large writes: tls.Conn writes
// each 16 KiB record with a system call of its own, and the kernel's wake-ups (costly on a
// VM) dominated the tunnel's throughput; here the records of one read go out in one write.
func copyToTLS(tc *tls.Conn, wc *coalescer, src net.Conn) (int64, error) {
	buf := make([]byte, 16<<10) // grows while reads fill it: an idle websocket keeps little
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			wc.hold()
			_, werr := tc.Write(buf[:n])
			if ferr := wc.release(); werr == nil {
				werr = ferr
			}
			if werr != nil {
				return total, werr
			}
			total += int64(n)
			if n == len(buf) && len(buf) < copyBuf {
				buf = make([]byte, 2*len(buf))
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// copyBuf is how much copyToTLS reads from a container at a time.
const copyBuf = 256 << 10

// coalescer is a TLS connection's transport that, between hold and release, gathers what
// tls.Conn writes (one call per record) and sends it in one write. tls.Conn may also write
// from its reading side (an alert) meanwhile: that joins the held bytes, in order.
type coalescer struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  *[]byte // from heldBufs while held
}

// heldBufs are coalescers' buffers, lent only while held.
var heldBufs = sync.Pool{New: func() any { b := make([]byte, 0, copyBuf+copyBuf/16); return &b }}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *coalescer) hold() {
	c.mu.Lock()
	c.held = true
	c.buf = heldBufs.Get().(*[]byte)
	c.mu.Unlock()
}

// release sends what was gathered since hold.
func (c *coalescer) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	b := c.buf
	c.buf = nil
	var err error
	if len(*b) > 0 {
		_, err = c.Conn.Write(*b)
	}
	*b = (*b)[:0]
	heldBufs.Put(b)
	return err
}

// lookup finds the route of a host name under the base domain.
func (i *Ingress) lookup(name string) *route {
	label, ok := strings.CutSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), "."+i.cfg.BaseDomain)
	if !ok || strings.Contains(label, ".") {
		return nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.byLabel[label]
}

// serveTCP accepts the raw TCP clients of an unencrypted port until its route is dropped.
func (i *Ingress) serveTCP(r *route) {
	defer i.wg.Done()
	for {
		conn, err := r.tcp.Accept()
		if err != nil {
			return // closed with its route
		}
		if !allowed(r.t.Allow, conn.RemoteAddr()) {
			conn.Close()
			continue
		}
		select { // relayed: perhaps the kernel can take the port's next connections
		case r.kick <- struct{}{}:
		default:
		}
		go i.pipe(r, conn, nil)
	}
}

// dialTimeout bounds reaching the container's port through its worker.
const dialTimeout = 10 * time.Second

// pipe connects a client to its route's container port and copies bytes both ways.
func (i *Ingress) pipe(r *route, client net.Conn, toClient workerproto.CopyFunc) {
	if tc, ok := client.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	up, err := i.dial.DialPort(ctx, r.t.WorkerID, r.t.SandboxID, r.port.Port)
	cancel()
	if err != nil {
		// A client of a raw port learns only that the connection closed; the reason is logged.
		i.log.Printf("ingress: tunnel to port %d of %s: %v", r.port.Port, r.t.SandboxID, err)
		client.Close()
		return
	}
	if !i.track(r.t, client, up) {
		client.Close()
		up.Close()
		return
	}
	workerproto.SpliceWith(client, up, toClient)
	i.untrack(r.t, client, up)
}

// track records a connection pair under its sandbox; false when the sandbox's routes are gone.
func (i *Ingress) track(t *target, cs ...net.Conn) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if t.conns == nil {
		return false
	}
	for _, c := range cs {
		t.conns[c] = struct{}{}
	}
	return true
}

func (i *Ingress) untrack(t *target, cs ...net.Conn) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, c := range cs {
		delete(t.conns, c)
	}
}

// allowed reports whether a client address is in an allowlist (an empty one allows all).
func allowed(allow []netip.Prefix, addr net.Addr) bool {
	if len(allow) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// validDomain reports whether s is a DNS name of at least one label.
func validDomain(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// URL is a tunnel's HTTPS URL, as modal.Tunnel.url.
func (t Tunnel) URL() string {
	if t.Port == 443 {
		return "https://" + t.Host
	}
	return "https://" + t.Host + ":" + strconv.Itoa(t.Port)
}

package ingress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/sandbox"
)

// echoDialer stands in for the fleet: every port is a local echo server that prefixes
// each line with the port it is.
type echoDialer struct{ ln net.Listener }

func newEchoDialer(t *testing.T) *echoDialer {
	return &echoDialer{ln: serveLocal(t, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			io.WriteString(c, "echo "+sc.Text()+"\n")
		}
	})}
}

// serveLocal serves each connection to a loopback listener with handle (then closes it).
func serveLocal(t *testing.T, handle func(net.Conn)) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln
}

func (d *echoDialer) DialPort(ctx context.Context, workerID, containerID string, port int) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.ln.Addr().String())
}

func newTestIngress(t *testing.T) (*Ingress, *x509.CertPool) {
	t.Helper()
	return newTestIngressWith(t, newEchoDialer(t))
}

// newTestIngressWith starts an ingress over d with gust's own CA, and returns the CA.
func newTestIngressWith(t *testing.T, d Dialer) (*Ingress, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	in, err := New(Config{Addr: "127.0.0.1:0", CADir: dir, Logger: log.New(io.Discard, "", 0)}, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Stop)
	pem, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the CA file holds no certificate")
	}
	return in, pool
}

func roundTrip(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "hi\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	return line
}

func TestTLSBySNI(t *testing.T) {
	in, pool := newTestIngress(t)
	tuns, err := in.Open(Target{SandboxID: "sb-1", WorkerID: "wk-1"}, []sandbox.Port{{Port: 8000}, {Port: 9000, Unencrypted: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(tuns) != 2 || tuns[0].ContainerPort != 8000 || tuns[1].ContainerPort != 9000 {
		t.Fatalf("tunnels = %+v", tuns)
	}
	if tuns[0].UnencryptedPort != 0 || tuns[1].UnencryptedPort == 0 || tuns[1].UnencryptedHost != "127.0.0.1" {
		t.Fatalf("only the unencrypted port gets a raw TCP port: %+v", tuns)
	}
	if !strings.HasSuffix(tuns[0].Host, "."+DefaultBaseDomain) || tuns[0].Host == tuns[1].Host || len(strings.Split(tuns[0].Host, ".")[0]) != 20 {
		t.Fatalf("host names must be distinct random labels under the base domain: %+v", tuns)
	}
	addr := in.Addr().String()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: tuns[0].Host, RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS to %s trusting gust's CA: %v", tuns[0].Host, err)
	}
	if got := roundTrip(t, c); got != "echo hi\n" {
		t.Fatalf("echo through the tunnel = %q", got)
	}
	c.Close()

	// An unknown name, or one outside the base domain, gets no handshake.
	for _, name := range []string{"nosuchlabel0000000000." + DefaultBaseDomain, "example.com", strings.TrimSuffix(tuns[0].Host, DefaultBaseDomain) + "evil.com"} {
		if c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: pool, InsecureSkipVerify: true}); err == nil {
			c.Close()
			t.Errorf("a handshake for %q succeeded", name)
		}
	}

	raw, err := net.Dial("tcp", net.JoinHostPort(tuns[1].UnencryptedHost, itoa(tuns[1].UnencryptedPort)))
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, raw); got != "echo hi\n" {
		t.Fatalf("echo through the raw tunnel = %q", got)
	}

	// The sandbox ends: names stop answering, the TCP port is released, connections end.
	in.Close("sb-1")
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Error("an open raw connection survived its sandbox's end")
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", itoa(tuns[1].UnencryptedPort)), time.Second); err == nil {
		c.Close()
		t.Error("the raw TCP port still accepts after the sandbox ended")
	}
	if c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: tuns[0].Host, RootCAs: pool}); err == nil {
		c.Close()
		t.Error("the host name still answers after the sandbox ended")
	}
	if s, p := in.Counts(); s != 0 || p != 0 {
		t.Errorf("after the end: %d sandboxes and %d TCP ports held", s, p)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestInboundAllowlist(t *testing.T) {
	in, pool := newTestIngress(t)
	deny := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	tuns, err := in.Open(Target{SandboxID: "sb-2", WorkerID: "wk-1", Allow: deny}, []sandbox.Port{{Port: 8000, Unencrypted: true}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tls.Dial("tcp", in.Addr().String(), &tls.Config{ServerName: tuns[0].Host, RootCAs: pool}); err == nil {
		c.Close()
		t.Error("a client outside inbound_cidr_allowlist completed a TLS handshake")
	}
	raw, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(tuns[0].UnencryptedPort)))
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(raw, "hi\n")
	if n, err := raw.Read(make([]byte, 16)); err == nil {
		t.Errorf("a client outside inbound_cidr_allowlist got %d bytes through the raw port", n)
	}
	in.Close("sb-2")

	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tuns, err = in.Open(Target{SandboxID: "sb-3", WorkerID: "wk-1", Allow: allow}, []sandbox.Port{{Port: 8000}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", in.Addr().String(), &tls.Config{ServerName: tuns[0].Host, RootCAs: pool})
	if err != nil {
		t.Fatalf("a client inside the allowlist: %v", err)
	}
	defer c.Close()
	if got := roundTrip(t, c); got != "echo hi\n" {
		t.Fatalf("echo = %q", got)
	}
}

func TestCAKeptAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	quiet := log.New(io.Discard, "", 0)
	a, err := New(Config{Addr: "127.0.0.1:0", CADir: dir, Logger: quiet}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Stop()
	b, err := New(Config{Addr: "127.0.0.1:0", CADir: dir, Logger: quiet}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Stop()
	if string(a.CA()) != string(b.CA()) || len(a.CA()) == 0 {
		t.Error("a second start made a new CA: clients that trust the first would stop trusting the ingress")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", CADir: dir, BaseDomain: "other.example", Logger: quiet}, nil); err == nil {
		t.Error("a CA constrained to gust.localhost was used for another base domain")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", CADir: dir, BaseDomain: "bad_domain!", Logger: quiet}, nil); err == nil {
		t.Error("an invalid base domain was accepted")
	}
}

// copyDialer stands in for the fleet with a container that echoes every byte, and passes
// the client's EOF back as its own.
type copyDialer struct{ ln net.Listener }

func newCopyDialer(t *testing.T) copyDialer {
	return copyDialer{serveLocal(t, func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})}
}

func (d copyDialer) DialPort(ctx context.Context, workerID, containerID string, port int) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.ln.Addr().String())
}

// TestTLSBulkBothWays sends 8 MiB through an HTTPS tunnel and reads it back whole and in
// order (the copy to the client gathers TLS records into large writes), then half-closes.
func TestTLSBulkBothWays(t *testing.T) {
	in, pool := newTestIngressWith(t, newCopyDialer(t))
	tuns, err := in.Open(Target{SandboxID: "sb-1", WorkerID: "wk-1"}, []sandbox.Port{{Port: 8000}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", in.Addr().String(), &tls.Config{ServerName: tuns[0].Host, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i*7 + i>>13)
	}
	go func() {
		c.Write(want)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v after %d bytes", err, len(got))
	}
	if len(got) != len(want) || string(got) != string(want) {
		t.Fatalf("echoed %d bytes of %d, or not the same bytes", len(got), len(want))
	}
}

// TestFallbackAddr: with its address taken, the ingress listens on the fallback when it has
// one (gust's default port held by another gust), and fails with the address's error when not.
func TestFallbackAddr(t *testing.T) {
	quiet := log.New(io.Discard, "", 0)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	if _, err := New(Config{Addr: addr, CADir: t.TempDir(), Logger: quiet}, nil); err == nil {
		t.Fatal("listening on a taken address without a fallback succeeded")
	}
	in, err := New(Config{Addr: addr, FallbackAddr: "127.0.0.1:0", CADir: t.TempDir(), Logger: quiet}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	if in.Addr().String() == addr {
		t.Fatalf("the ingress says it listens on the taken %s", addr)
	}
}

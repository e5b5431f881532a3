package ingress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/sandbox"
)

// forwardDialer is an echoDialer that can forward once ready is set, and records its forwards.
type forwardDialer struct {
	*echoDialer
	mu      sync.Mutex
	ready   bool
	tries   int
	listen  netip.AddrPort
	allow   []netip.Prefix
	stopped int
}

func (d *forwardDialer) ForwardPort(ctx context.Context, workerID, containerID string, port int, listen netip.AddrPort, allow []netip.Prefix) (func() error, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tries++
	if !d.ready {
		return nil, errors.New("nothing answers yet")
	}
	d.listen, d.allow = listen, allow
	return func() error {
		d.mu.Lock()
		d.stopped++
		d.mu.Unlock()
		return nil
	}, nil
}

func (d *forwardDialer) state() (tries, stopped int, listen netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tries, d.stopped, d.listen
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// TestKernelForward: a raw port asks its dialer to forward it, again on a relayed connection
// once the first tries failed, with its own listener's address and the allowlist; the forward
// stops with the route. Encrypted ports are never forwarded.
func TestKernelForward(t *testing.T) {
	was := forwardRetries
	forwardRetries = []time.Duration{0} // one try at open; then only relayed connections
	t.Cleanup(func() { forwardRetries = was })
	d := &forwardDialer{echoDialer: newEchoDialer(t)}
	in, _ := newTestIngressWith(t, d)
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tuns, err := in.Open(Target{SandboxID: "sb-1", WorkerID: "wk-1", Allow: allow}, []sandbox.Port{{Port: 9000, Unencrypted: true}, {Port: 8000}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first try", func() bool { tries, _, _ := d.state(); return tries == 1 })
	if in.Forwarded("sb-1", 9000) {
		t.Fatal("forwarded although the dialer refused")
	}
	d.mu.Lock()
	d.ready = true
	d.mu.Unlock()
	raw := tuns[1]
	if raw.ContainerPort != 9000 {
		raw = tuns[0]
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(raw.UnencryptedPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if got := roundTrip(t, c); got != "echo hi\n" { // relayed meanwhile
		t.Fatalf("echo = %q", got)
	}
	waitFor(t, "the forward", func() bool { return in.Forwarded("sb-1", 9000) })
	if _, _, listen := d.state(); listen != netip.MustParseAddrPort("127.0.0.1:"+itoa(raw.UnencryptedPort)) {
		t.Errorf("forwarded %s, not the raw port's listener", listen)
	}
	if in.Forwarded("sb-1", 8000) {
		t.Error("an encrypted port was forwarded")
	}
	in.Close("sb-1")
	if _, stopped, _ := d.state(); stopped != 1 {
		t.Errorf("the forward was stopped %d times when its sandbox's routes closed, want 1", stopped)
	}
}

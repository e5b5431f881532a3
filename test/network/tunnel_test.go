package network

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

// greetServer listens on 0.0.0.0:9000 in a sandbox, answers each connection with "sandbox
// <the client's address>" and then echoes: a kernel-forwarded tunnel shows the client's own
// address (or the gateway's, for a client on the machine's loopback), a relayed one 127.0.0.1.
const greetServer = `
import socket, threading
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("0.0.0.0", 9000)); ls.listen(64)
def serve(c, peer):
    try:
        c.sendall(("sandbox %s\n" % peer[0]).encode())
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError: pass
    c.close()
while True:
    c, peer = ls.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
`

// tunnelChains are the kernel forwards' chains (t<port>) in gust's tables.
func tunnelChains(t *testing.T) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chains {
		if strings.HasPrefix(ch.Table.Name, "gust-") && len(ch.Name) > 1 && ch.Name[0] == 't' {
			if _, err := strconv.Atoi(ch.Name[1:]); err == nil {
				out = append(out, ch.Name)
			}
		}
	}
	return out
}

// greeting dials addr (from local, when set) and returns the server's first line ("" when the
// connection failed or closed without one), checking that 1 MB echoes back both ways.
func greeting(t *testing.T, local *net.TCPAddr, addr string) (string, error) {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: local}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	msg := strings.Repeat("z", 1<<20)
	go io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
		return "", fmt.Errorf("the echo came back wrong: %v", err)
	}
	return strings.TrimSpace(line), nil
}

// TestKernelTunnel: under gust up, a raw TCP tunnel's port is forwarded by the kernel to the
// sandbox (the sandbox sees its real clients, both directions carry data), for clients in
// inbound_cidr_allowlist only (others are refused, as by the relay); no sandbox can use the
// forward, neither the sandbox itself nor another one; and it is gone with the sandbox: open
// connections end, new ones are refused, its rules are removed.
func TestKernelTunnel(t *testing.T) {
	needGust(t)
	id := newSandbox(t, map[string]any{
		"command":                []string{"python3", "-c", greetServer},
		"unencrypted_ports":      []int{9000},
		"inbound_cidr_allowlist": []string{"198.18.0.0/24"},
		"readiness_probe":        map[string]any{"tcp_port": 9000, "interval_ms": 50},
	})
	var ready struct {
		Ready bool `json:"ready"`
	}
	if err := api("GET", "/v1/sandboxes/"+id+"/ready?timeout=30", nil, &ready); err != nil || !ready.Ready {
		t.Fatalf("the sandbox's server did not come up: %v", err)
	}
	var tuns struct {
		Tunnels []struct {
			ContainerPort   int `json:"container_port"`
			UnencryptedPort int `json:"unencrypted_port"`
		} `json:"tunnels"`
	}
	if err := api("GET", "/v1/sandboxes/"+id+"/tunnels", nil, &tuns); err != nil || len(tuns.Tunnels) != 1 || tuns.Tunnels[0].UnencryptedPort == 0 {
		t.Fatalf("tunnels: %+v, %v", tuns, err)
	}
	port := strconv.Itoa(tuns.Tunnels[0].UnencryptedPort)
	chain := "t" + port
	remote := net.JoinHostPort(hostUplink, port) // the machine's address, from inet
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Contains(tunnelChains(t), chain) {
		if time.Now().After(deadline) {
			t.Fatalf("the tunnel was not forwarded in the kernel within 15 s: chains %v\n%s", tunnelChains(t), gustLog())
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("from elsewhere", func(t *testing.T) {
		var got string
		err := inInet(func() error {
			var err error
			got, err = greeting(t, nil, remote)
			return err
		})
		if err != nil || got != "sandbox "+inetUplink {
			t.Fatalf("a client in the allowlist through %s got %q, %v; want the sandbox, seeing the client's own address %s", remote, got, err, inetUplink)
		}
	})
	t.Run("from this machine", func(t *testing.T) {
		// From the machine's own address in the allowlist, to the tunnel's loopback address.
		got, err := greeting(t, &net.TCPAddr{IP: net.ParseIP(hostUplink)}, net.JoinHostPort("127.0.0.1", port))
		if err != nil || got != "sandbox "+hostUplink {
			t.Fatalf("a client on this machine got %q, %v; want the sandbox, seeing %s", got, err, hostUplink)
		}
	})
	t.Run("outside the allowlist", func(t *testing.T) {
		if got, err := greeting(t, nil, net.JoinHostPort("127.0.0.1", port)); err == nil {
			t.Fatalf("a client outside inbound_cidr_allowlist (127.0.0.1) got %q", got)
		}
	})
	t.Run("not for sandboxes", func(t *testing.T) {
		other := newSandbox(t, nil)
		gw := gateway(t, other)
		addr := sandboxAddr(t, id)
		targets := []string{gw + ":" + port, hostUplink + ":" + port, "127.0.0.1:" + port, addr + ":9000"}
		for target, ok := range probe(t, other, targets...) {
			if ok {
				t.Errorf("another sandbox reached %s", target)
			}
		}
		for target, ok := range probe(t, id, gw+":"+port, hostUplink+":"+port) {
			if ok {
				t.Errorf("the sandbox reached its own tunnel through %s", target)
			}
		}
	})

	t.Run("gone with the sandbox", func(t *testing.T) {
		var open net.Conn
		if err := inInet(func() error {
			var err error
			open, err = net.DialTimeout("tcp4", remote, 3*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer open.Close()
		open.SetDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(open).ReadString('\n'); err != nil || !strings.HasPrefix(line, "sandbox ") {
			t.Fatalf("greeting %q, %v", line, err)
		}
		terminate(id)
		if n, err := open.Read(make([]byte, 16)); err == nil {
			t.Errorf("an open connection through the tunnel survived its sandbox (read %d bytes)", n)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := inInet(func() error {
				c, err := net.DialTimeout("tcp4", remote, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil && strings.Contains(err.Error(), "refused") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10 s after the sandbox ended, a connection to its tunnel gives %v, not refused", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if c := tunnelChains(t); len(c) != 0 {
			t.Errorf("forward chains remain after the sandbox ended: %v", c)
		}
	})
}

// TestKernelTunnelIdle: an open connection through a kernel-forwarded tunnel, quiet or not,
// keeps its sandbox from its idle_timeout (the worker sees no relay: it asks conntrack); once
// it closes, the sandbox ends.
func TestKernelTunnelIdle(t *testing.T) {
	needGust(t)
	id := newSandbox(t, map[string]any{
		"command":           []string{"python3", "-c", greetServer},
		"unencrypted_ports": []int{9000},
		"idle_timeout":      2,
	})
	var tuns struct {
		Tunnels []struct {
			UnencryptedPort int `json:"unencrypted_port"`
		} `json:"tunnels"`
	}
	if err := api("GET", "/v1/sandboxes/"+id+"/tunnels?timeout=30", nil, &tuns); err != nil || len(tuns.Tunnels) != 1 {
		t.Fatalf("tunnels: %+v, %v", tuns, err)
	}
	port := strconv.Itoa(tuns.Tunnels[0].UnencryptedPort)
	for deadline := time.Now().Add(15 * time.Second); !slices.Contains(tunnelChains(t), "t"+port); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the tunnel was not forwarded in the kernel within 15 s")
		}
	}
	gw := gateway(t, id)
	c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", port), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || line != "sandbox "+gw+"\n" {
		t.Fatalf("greeting %q, %v: not the kernel path (a client on loopback appears as the gateway)", line, err)
	}
	time.Sleep(4 * time.Second) // twice the idle_timeout, the connection open and quiet
	if _, err := io.WriteString(c, "still\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "still\n" {
		t.Fatalf("after 4 s with a connection open, the echo gave %q, %v: the sandbox ended while its tunnel was in use", line, err)
	}
	c.Close()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var sb struct {
			Status string `json:"status"`
		}
		if err := api("GET", "/v1/sandboxes/"+id, nil, &sb); err != nil {
			t.Fatal(err)
		}
		if sb.Status == "timeout" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after its last connection closed, the sandbox is %s, not timeout (idle_timeout 2 s)", sb.Status)
		}
	}
}

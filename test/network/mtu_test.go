package network

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// mtuScript downloads webAddr's 64 MiB and uploads 16 MiB to its discard port, through NAT and
// the 1500-byte uplink, and prints its interface's MTU and the byte counts.
const mtuScript = `
import fcntl, socket, struct, sys
web = sys.argv[1]
try:
    q = socket.socket()
    r = fcntl.ioctl(q.fileno(), 0x8921, struct.pack("16si20x", b"eth0", 0))  # SIOCGIFMTU
    print("mtu", struct.unpack("16si20x", r)[1])
except OSError as e:
    print("mtu unknown", e)
s = socket.create_connection((web, 80), timeout=20)
s.sendall(b"GET /bytes HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
n, head = 0, b""
while True:
    d = s.recv(1 << 20)
    if not d: break
    if not head:
        head, _, d = d.partition(b"\r\n\r\n")
    n += len(d)
print("down", n)
u = socket.create_connection((web, 9000), timeout=20)
u.sendall(b"x" * (16 << 20)); u.shutdown(socket.SHUT_WR); u.recv(1); u.close()
print("up", 16 << 20)
`

// TestEgressMTU: containers' interfaces have the worker's large MTU (network.DefaultMTU), and
// connections beyond the machine, whose uplink has 1500, still carry bulk data both ways.
func TestEgressMTU(t *testing.T) { isolations(t, testEgressMTU) }

func testEgressMTU(t *testing.T, iso string) {
	needGust(t)
	id := newSandbox(t, with(nil, iso))
	out, errOut, code := execIn(t, id, "python3", "-c", mtuScript, webAddr)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{"down 67108864", "up 16777216"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in %q", want, out)
		}
	}
	if iso == "runc" && !strings.Contains(out, "mtu 65520") {
		t.Errorf("the container's eth0: %q, want the worker's MTU 65520", out)
	}
	up, err := netlink.LinkByName("gndup0")
	if err != nil || up.Attrs().MTU != 1500 {
		t.Fatalf("the uplink: %v, %v; the test needs 1500", up, err)
	}
}

// TestEgressMSS: a container's SYN leaves the machine advertising the segment size of the
// uplink's MTU (1460), not of the container's own (65480), so that a far server on a
// jumbo-frame network does not send segments the path cannot carry.
func TestEgressMSS(t *testing.T) {
	needGust(t)
	const addr = webAddr + ":9100"
	var ln net.Listener
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SAVE_SYN, 1) })
		return errors.Join(err, serr)
	}}
	if err := inInet(func() (err error) { ln, err = lc.Listen(context.Background(), "tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mss := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			mss <- -1
			return
		}
		defer c.Close()
		raw, _ := c.(*net.TCPConn).SyscallConn()
		syn := make([]byte, 512)
		n := uint32(len(syn))
		raw.Control(func(fd uintptr) {
			_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_SAVED_SYN,
				uintptr(unsafe.Pointer(&syn[0])), uintptr(unsafe.Pointer(&n)), 0)
			if errno != 0 {
				n = 0
			}
		})
		mss <- synMSS(syn[:n])
	}()
	id := newSandbox(t, nil)
	out, errOut, code := execIn(t, id, "python3", "-c", "import socket; socket.create_connection(('"+webAddr+"', 9100), timeout=5).close()")
	if code != 0 {
		t.Fatalf("connect: exit %d: %s %s", code, out, errOut)
	}
	select {
	case got := <-mss:
		if got <= 0 || got > 1460 {
			t.Errorf("the container's SYN arrived advertising MSS %d, want at most 1460 (the uplink's)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection arrived")
	}
}

// synMSS is the MSS option of a saved SYN (IPv4 and TCP headers), 0 without one.
func synMSS(syn []byte) int {
	if len(syn) < 20 {
		return 0
	}
	tcp := syn[int(syn[0]&0x0f)*4:]
	if len(tcp) < 20 {
		return 0
	}
	opts := tcp[20:min(int(tcp[12]>>4)*4, len(tcp))]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return 0
		}
		if opts[i] == 2 && opts[i+1] == 4 && i+4 <= len(opts) {
			return int(opts[i+2])<<8 | int(opts[i+3])
		}
		i += int(opts[i+1])
	}
	return 0
}

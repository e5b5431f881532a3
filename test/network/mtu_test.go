package network

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
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

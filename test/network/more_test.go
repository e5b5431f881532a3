package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// runPython runs a Python program with the SDK against the gust under test.
func runPython(t *testing.T, code string) string {
	t.Helper()
	sdk := filepath.Join(repoRoot(), "sdk", "python")
	dir := t.TempDir()
	f := filepath.Join(dir, "prog.py")
	if err := os.WriteFile(f, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", f)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+sdk)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return string(out)
}

// TestFunctionPolicies runs functions with each policy: they probe from inside their container.
func TestFunctionPolicies(t *testing.T) {
	needGust(t)
	out := runPython(t, fmt.Sprintf(`
import gust as modal, socket
app = modal.App("nettest-fn")
def probe(targets):
    res = {}
    for t in targets:
        h, p = t.rsplit(":", 1)
        try:
            socket.create_connection((h, int(p)), timeout=1.5).close()
            res[t] = True
        except OSError:
            res[t] = False
    return res

@app.function(block_network=True)
def blocked(targets):
    return probe(targets)

@app.function(outbound_cidr_allowlist=["%[1]s/32"])
def allowlisted(targets):
    return probe(targets)

@app.function()
def open_(targets):
    return probe(targets)

if __name__ == "__main__":
    targets = ["%[1]s:80", "%[2]s:80", "%[3]s:80", "%[4]s:80"]
    with app.run():
        for name, f in (("blocked", blocked), ("allowlisted", allowlisted), ("open", open_)):
            r = f.remote(targets)
            print(name, " ".join("%%s=%%s" %% (k, "OK" if v else "NO") for k, v in sorted(r.items())))
`, webAddr, otherAddr, metaAddr, privateAddrs[1]))
	want := map[string]map[string]bool{
		"blocked":     {webAddr: false, otherAddr: false},
		"allowlisted": {webAddr: true, otherAddr: false},
		"open":        {webAddr: true, otherAddr: true},
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		w, ok := want[f[0]]
		if !ok {
			continue
		}
		delete(want, f[0])
		for _, kv := range f[1:] {
			target, res, _ := strings.Cut(kv, "=")
			host := strings.TrimSuffix(target, ":80")
			expect, known := w[host]
			if !known {
				expect = false // metadata and private ranges: never
			}
			if (res == "OK") != expect {
				t.Errorf("function %s: %s reached=%v, want %v", f[0], target, res == "OK", expect)
			}
		}
	}
	if len(want) > 0 {
		t.Fatalf("no result for %v:\n%s", want, out)
	}
}

// TestSDKAndCLIReplacePolicy replaces a running sandbox's policy from the Python SDK and the CLI.
func TestSDKAndCLIReplacePolicy(t *testing.T) {
	needGust(t)
	id := newSandbox(t, nil)
	runPython(t, fmt.Sprintf(`
import gust as modal
sb = modal.Sandbox.from_id(%q)
sb.set_network_access(outbound_cidr_allowlist=["%s"])
try:
    sb.set_network_access(block_network=True, outbound_cidr_allowlist=["1.2.3.4"])
    raise SystemExit("block_network with an allowlist was accepted")
except modal.exception.InvalidError:
    pass
`, id, webAddr))
	got := probe(t, id, webAddr+":80", otherAddr+":80")
	if !got[webAddr+":80"] || got[otherAddr+":80"] {
		t.Fatalf("after set_network_access(outbound_cidr_allowlist=[web]): %v", got)
	}
	cli := exec.Command(gust.bin, "sandbox", "network", "-block-network", id)
	cli.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("gust sandbox network: %v\n%s", err, out)
	}
	got = probe(t, id, webAddr+":80", otherAddr+":80")
	if got[webAddr+":80"] || got[otherAddr+":80"] {
		t.Fatalf("after gust sandbox network -block-network: %v", got)
	}
}

// origDst reads SO_ORIGINAL_DST of a redirected connection.
func origDst(c *net.TCPConn) (string, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var addr syscall.RawSockaddrInet4
	var serr error
	err = raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(addr))
		const soOriginalDst = 80
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_IP, soOriginalDst, uintptr(unsafe.Pointer(&addr)), uintptr(unsafe.Pointer(&size)), 0)
		if e != 0 {
			serr = e
		}
	})
	if err != nil {
		return "", err
	}
	if serr != nil {
		return "", serr
	}
	port := int(addr.Port>>8) | int(addr.Port&0xff)<<8
	return fmt.Sprintf("%d.%d.%d.%d:%d", addr.Addr[0], addr.Addr[1], addr.Addr[2], addr.Addr[3], port), nil
}

// TestDomainAllowlistPlumbing checks the contract with the domain proxy: a domain-allowlisted
// sandbox's TCP 80 and 443 arrive at the gateway's proxy port with their original destination
// readable, DNS goes to the gateway, and other traffic is dropped. The test stands in for the
// proxy when nothing else listens on its port.
func TestDomainAllowlistPlumbing(t *testing.T) {
	needGust(t)
	id := newSandbox(t, map[string]any{"outbound_domain_allowlist": []string{webName}})
	gw := gateway(t, id)
	out, _, _ := execIn(t, id, "cat", "/etc/resolv.conf")
	if !strings.Contains(out, "nameserver "+gw) {
		t.Errorf("resolv.conf does not name the gateway %s:\n%s", gw, out)
	}
	ln, err := net.Listen("tcp4", gw+":3129")
	if err != nil {
		t.Skipf("the proxy port is taken (the domain proxy runs): %v", err)
	}
	defer ln.Close()
	dsts := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := origDst(c.(*net.TCPConn))
			if err != nil {
				d = "error: " + err.Error()
			}
			dsts <- d
			c.Close()
		}
	}()
	got := probe(t, id, webAddr+":443", otherAddr+":80", otherAddr+":9000")
	if !got[webAddr+":443"] || !got[otherAddr+":80"] {
		t.Errorf("web traffic did not reach the proxy port: %v", got)
	}
	if got[otherAddr+":9000"] {
		t.Error("a domain-allowlisted sandbox reached a non-web port directly")
	}
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		select {
		case d := <-dsts:
			seen[d] = true
		case <-time.After(5 * time.Second):
		}
	}
	if !seen[webAddr+":443"] || !seen[otherAddr+":80"] {
		t.Errorf("original destinations at the proxy: %v", seen)
	}
	if n := connsTo(webAddr + ":443"); n > 0 {
		// Not an error by itself (other tests reach it), but none may come from this sandbox.
		t.Logf("web:443 saw %d connections in all", n)
	}
}

// TestKilledAndRestarted kills gust with SIGKILL while sandboxes run, starts it again on the
// same data directory, and checks that the new worker removed its predecessor's network.
func TestKilledAndRestarted(t *testing.T) {
	needGust(t)
	for i := 0; i < 3; i++ {
		id := newSandbox(t, nil)
		_ = id
	}
	// And a raw tunnel forwarded in the kernel, whose rules must not outlive the worker either.
	newSandbox(t, map[string]any{"command": []string{"python3", "-c", greetServer}, "unencrypted_ports": []int{9000}})
	for deadline := time.Now().Add(15 * time.Second); len(tunnelChains(t)) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the tunnel was not forwarded in the kernel within 15 s")
		}
	}
	before := gustVeths()
	if len(before) < 3 {
		t.Fatalf("expected the sandboxes' veths, found %v", before)
	}
	gust.cmd.Process.Signal(syscall.SIGKILL)
	gust.cmd.Wait()
	if err := startGust(); err != nil {
		t.Fatalf("restarting gust: %v\n%s", err, gustLog())
	}
	// The new worker's pool and the one sandbox of startGust's readiness probe may exist; none
	// of the killed worker's.
	deadline := time.Now().Add(10 * time.Second)
	for {
		// veth names are reused with addresses, so a name alone is not proof: count instead.
		left := len(gustVeths())
		if left <= 4+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart %d veths remain (pool of 4 expected): %v; before the kill: %v", left, gustVeths(), before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(nftTables()); n != 2 {
		t.Errorf("nftables tables after restart: %v, want the instance's two", nftTables())
	}
	if c := tunnelChains(t); len(c) != 0 {
		t.Errorf("the killed worker's tunnel forwards remain after restart: %v", c)
	}
	if c := containerChains(); c > len(gustVeths())+1 {
		t.Errorf("%d per-container chains for %d veths after restart", c, len(gustVeths()))
	}
}

// TestGVisorNetwork checks that a gVisor sandbox gets the worker's network: runsc runs its
// netstack in the pooled namespace (--network=sandbox), so the same host-side rules apply: the
// fake internet is reached, metadata and private ranges are not, and a blocked one has nothing.
func TestGVisorNetwork(t *testing.T) {
	needGust(t)
	id := newSandbox(t, map[string]any{"isolation": "gvisor"})
	out, _, code := execIn(t, id, "echo", "hi")
	if code != 0 || strings.TrimSpace(out) != "hi" {
		t.Fatalf("echo in a gVisor sandbox: %q, exit %d", out, code)
	}
	got := probe(t, id, webAddr+":80", metaAddr+":80", privateAddrs[0]+":80")
	if !got[webAddr+":80"] {
		t.Errorf("a gVisor sandbox did not reach %s: %v\n%s", webAddr, got, gustLog())
	}
	if got[metaAddr+":80"] || got[privateAddrs[0]+":80"] {
		t.Fatalf("a gVisor sandbox reached a denied address: %v", got)
	}
	blocked := newSandbox(t, map[string]any{"isolation": "gvisor", "block_network": true})
	if got := probe(t, blocked, webAddr+":80"); got[webAddr+":80"] {
		t.Fatalf("a blocked gVisor sandbox reached %s", webAddr)
	}
}

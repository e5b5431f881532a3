package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/gust-run/gust/internal/reaper"
)

func init() {
	register(&command{name: "bench network", summary: "benchmark containers' networking: start cost against block_network, egress through NAT and the domain proxy against direct", run: runBenchNetwork})
}

// runBenchNetwork starts gust in this process and measures, in one run:
//   - create → first exec output of sandboxes with networking (the default policy) against the
//     same with block_network=True, interleaved sample by sample so that both see the same load;
//   - egress throughput from a sandbox through the bridge and NAT, and from a sandbox with an
//     outbound_domain_allowlist through the domain proxy (by name, resolved by a resolver of
//     the benchmark's own), against the same client run directly on this machine, from a
//     server in a network namespace the benchmark makes (a "remote" at 198.18.99.1, reached
//     through a veth; nothing leaves the machine).
func runBenchNetwork(ctx context.Context, args []string) error {
	fs := newFlags("bench network")
	n := fs.Int("n", 30, "samples per measurement")
	cycles := fs.Int("cycles", 0, "also run this many create/terminate cycles and check that no namespace, veth or rule is left (e.g. 500)")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache (the base image is built there if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The worker resolves through a resolver of the benchmark's own, which knows the remote's
	// name: the domain proxy resolves it there (nothing leaves the machine).
	dnsAddr, stopDNS, err := benchResolver(benchRemoteName, benchRemoteAddr)
	if err != nil {
		return err
	}
	defer stopDNS()
	os.Setenv("GUST_DNS_UPSTREAM", dnsAddr)
	b, stop, err := startSandboxBench(ctx, *imageCache, *n)
	if err != nil {
		return err
	}
	defer stop()

	fmt.Printf("\ngust bench network: %d samples each, 2-core machine, %s\n\n", *n, time.Now().Format(time.RFC3339))
	var on, off []time.Duration
	for i := 0; i < *n; i++ {
		for _, block := range []bool{false, true} {
			start := time.Now()
			id, err := b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "memory": 512, "block_network": block})
			if err != nil {
				return err
			}
			if _, err := b.c.execFirstOutput(id, "echo", "hi"); err != nil {
				return err
			}
			d := time.Since(start)
			if err := b.c.terminate(id); err != nil {
				return err
			}
			if block {
				off = append(off, d)
			} else {
				on = append(on, d)
			}
		}
	}
	fmt.Printf("%-52s %10s %10s\n", "create → first exec output (runc)", "p50", "p90")
	fmt.Printf("%-52s %10s %10s\n", "  networking on (default policy)", ms(pct(on, 50)), ms(pct(on, 90)))
	fmt.Printf("%-52s %10s %10s\n", "  block_network=True (baseline)", ms(pct(off, 50)), ms(pct(off, 90)))
	fmt.Printf("%-52s %10s %10s   (target: within 10 ms at p50; ratio %.2f×)\n", "  difference", ms(pct(on, 50)-pct(off, 50)), ms(pct(on, 90)-pct(off, 90)),
		float64(pct(on, 50))/float64(pct(off, 50)))

	if err := benchEgress(b); err != nil {
		fmt.Printf("\negress: skipped: %v\n", err)
	}
	if *cycles > 0 {
		if err := benchCycles(b, *cycles); err != nil {
			return err
		}
	}
	return nil
}

// The benchmark's remote: a namespace with a veth to this machine's namespace.
const (
	benchRemoteNS   = "gustbn-remote"
	benchRemoteAddr = "198.18.99.1"
	benchLocalAddr  = "198.18.99.2"
	benchEgressMiB  = 256
	// benchRemoteName is the remote's name, which a sandbox with an outbound_domain_allowlist
	// reaches through the domain proxy.
	benchRemoteName = "remote.gustbench.test"
)

// egressScript downloads N MiB from a URL with a plain socket and prints MB/s.
const egressScript = `
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
s.sendall(b"GET /bytes?mib=%d HTTP/1.0\r\nHost: %s\r\n\r\n" % (n, host.encode()))
buf = bytearray(1 << 20)
total, start = 0, time.monotonic()
while True:
    k = s.recv_into(buf)
    if not k:
        break
    total += k
el = time.monotonic() - start
print("%.1f" % (total / el / 1e6))
`

func benchEgress(b *sandboxBench) (retErr error) {
	run := func(args ...string) error {
		// Through the reaper: gust in this process reaps children that are not its own.
		if out, err := reaper.CombinedOutput(exec.Command(args[0], args[1:]...)); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	_ = run("ip", "netns", "del", benchRemoteNS) // an interrupted run's
	for _, s := range [][]string{
		{"ip", "netns", "add", benchRemoteNS},
		{"ip", "link", "add", "gustbn0", "type", "veth", "peer", "name", "gustbn1", "netns", benchRemoteNS},
		{"ip", "addr", "add", benchLocalAddr + "/30", "dev", "gustbn0"},
		{"ip", "link", "set", "gustbn0", "up"},
		{"ip", "-n", benchRemoteNS, "addr", "add", benchRemoteAddr + "/30", "dev", "gustbn1"},
		{"ip", "-n", benchRemoteNS, "link", "set", "gustbn1", "up"},
		{"ip", "-n", benchRemoteNS, "link", "set", "lo", "up"},
	} {
		if err := run(s...); err != nil {
			_ = run("ip", "netns", "del", benchRemoteNS)
			return err
		}
	}
	defer func() {
		if err := run("ip", "netns", "del", benchRemoteNS); err != nil && retErr == nil {
			retErr = err
		}
	}()
	ln, err := listenInNS("/run/netns/"+benchRemoteNS, benchRemoteAddr+":0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mib, _ := strconv.Atoi(r.URL.Query().Get("mib"))
		buf := make([]byte, 1<<20)
		for i := 0; i < mib; i++ {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	// Port 80 too: the domain proxy carries web ports only.
	ln80, err := listenInNS("/run/netns/"+benchRemoteNS, benchRemoteAddr+":80")
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln80) }()

	id, err := b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID})
	if err != nil {
		return err
	}
	defer func() {
		if err := b.c.terminate(id); err != nil && retErr == nil {
			retErr = err
		}
	}()
	proxied, err := b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "outbound_domain_allowlist": []string{benchRemoteName}})
	if err != nil {
		return err
	}
	defer func() {
		if err := b.c.terminate(proxied); err != nil && retErr == nil {
			retErr = err
		}
	}()
	inSandbox := func(id string, args ...string) (float64, error) {
		out, _, code, err := b.c.execOutput(id, append([]string{"python3", "-c", egressScript}, args...)...)
		if err != nil || code != 0 {
			return 0, fmt.Errorf("egress from sandbox %s: exit %d: %v %s", id, code, err, out)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			return 0, fmt.Errorf("egress from sandbox %s: %q", id, out)
		}
		return v, nil
	}
	const rounds = 3
	var viaNAT, viaProxy, direct []float64
	for i := 0; i < rounds; i++ {
		v, err := inSandbox(id, benchRemoteAddr, port, strconv.Itoa(benchEgressMiB))
		if err != nil {
			return err
		}
		viaNAT = append(viaNAT, v)
		if v, err = inSandbox(proxied, benchRemoteName, "80", strconv.Itoa(benchEgressMiB)); err != nil {
			return err
		}
		viaProxy = append(viaProxy, v)
		hostOut, err := reaper.CombinedOutput(exec.Command("python3", "-c", egressScript, benchRemoteAddr, port, strconv.Itoa(benchEgressMiB)))
		if err != nil {
			return fmt.Errorf("egress from this machine: %v: %s", err, hostOut)
		}
		if v, err = strconv.ParseFloat(strings.TrimSpace(string(hostOut)), 64); err != nil {
			return fmt.Errorf("egress from this machine: %q", hostOut)
		}
		direct = append(direct, v)
	}
	med := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j] < s[i] {
					s[i], s[j] = s[j], s[i]
				}
			}
		}
		return s[len(s)/2]
	}
	fmt.Printf("\negress throughput, %d MiB over HTTP, median of %d (same Python client both ways)\n", benchEgressMiB, rounds)
	fmt.Printf("  %-50s %8.0f MB/s\n", "sandbox → bridge → NAT → remote", med(viaNAT))
	fmt.Printf("  %-50s %8.0f MB/s\n", "sandbox → bridge → domain proxy → remote", med(viaProxy))
	fmt.Printf("  %-50s %8.0f MB/s\n", "this machine → remote (direct, baseline)", med(direct))
	fmt.Printf("  %-50s %8.2f×\n", "ratio NAT / direct", med(viaNAT)/med(direct))
	fmt.Printf("  %-50s %8.2f×\n", "ratio domain proxy / direct", med(viaProxy)/med(direct))
	return nil
}

// listenInNS listens on addr inside the network namespace at path (the socket stays there).
func listenInNS(path, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer orig.Close()
		ns, err := os.Open(path)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, err}
			return
		}
		ln, err := net.Listen("tcp4", addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		ch <- res{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// benchCycles creates and terminates k sandboxes one after another, then checks that the veths
// and the per-container rules are back to what the pool holds.
func benchCycles(b *sandboxBench, k int) error {
	before := countLinks("gv")
	start := time.Now()
	for i := 0; i < k; i++ {
		id, err := b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "memory": 512, "outbound_cidr_allowlist": []string{"203.0.113.0/24"}})
		if err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
		if err := b.c.terminate(id); err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the pool refills
	after := countLinks("gv")
	fmt.Printf("\n%d create/terminate cycles in %s: veths %d before, %d after\n", k, time.Since(start).Round(time.Millisecond), before, after)
	if after > before+1 {
		return errors.New("veths were left behind by the cycles")
	}
	return nil
}

// countLinks counts this namespace's links whose name starts with prefix.
func countLinks(prefix string) int {
	ifs, err := net.Interfaces()
	if err != nil {
		return -1
	}
	n := 0
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, prefix) {
			n++
		}
	}
	return n
}

// execOutput runs a command in a sandbox and returns its stdout, stderr and exit code.
func (c *benchClient) execOutput(id string, argv ...string) (stdout, stderr string, code int, err error) {
	resp, err := c.do("POST", "/v1/sandboxes/"+id+"/execs", map[string]any{"command": argv})
	if err != nil {
		return "", "", -1, err
	}
	defer closeBody(resp)
	var out, errOut strings.Builder
	code = -1
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var line struct {
			Stream   string `json:"stream"`
			Data     []byte `json:"data"`
			ExitCode *int   `json:"exit_code"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return "", "", -1, fmt.Errorf("%v: bad line %q: %w", argv, sc.Bytes(), err)
		}
		switch {
		case line.ExitCode != nil:
			code = *line.ExitCode
		case line.Stream == "stdout":
			out.Write(line.Data)
		case line.Stream == "stderr":
			errOut.Write(line.Data)
		}
	}
	return out.String(), errOut.String(), code, sc.Err()
}

// benchResolver answers A queries for name with addr on a loopback UDP port: the worker's
// upstream during the benchmark. It returns the address and its stop.
func benchResolver(name, addr string) (string, func(), error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	ip := net.ParseIP(addr).To4()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		q := req.Question[0]
		switch {
		case !strings.EqualFold(q.Name, dns.Fqdn(name)):
			resp.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			resp.Answer = append(resp.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip})
		}
		_ = w.WriteMsg(resp) // a client gone is no matter
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	return pc.LocalAddr().String(), func() { _ = srv.Shutdown() }, nil
}

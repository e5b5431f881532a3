// Package network tests containers' networks with the real gust binary, real containers and a
// fake internet that never leaves the machine. TestMain re-runs the test binary in a network
// namespace of its own (the "host": gust runs there, and so do the tests' clients) whose only
// uplink is a veth to a second namespace, the "internet" (inet), which the tests fill with
// servers: HTTP and TLS under test names, a DNS resolver answering for them, a fake cloud
// metadata server on 169.254.169.254, and listeners on private-range addresses that every
// policy must deny. Every listener records who connected, so that a leak is a connection the
// test sees, never a packet off the machine. Needs root; skips under -short.
//
// Engineers adding to the network (tunnels, the domain proxy) build on this harness: inet
// addresses and names are in the constants below, listen/dial helpers in this file.
package network

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// The fake internet. Public-looking addresses are from the documentation ranges, so nothing
// real is ever named.
const (
	hostUplink = "198.18.0.2" // the host namespace's address toward inet
	inetUplink = "198.18.0.1" // inet's address toward the host (the host's default route)
	webAddr    = "203.0.113.10"
	otherAddr  = "198.51.100.20" // a second public server, outside test allowlists
	dnsAddr    = "203.0.113.53"
	metaAddr   = "169.254.169.254"
	// webName resolves to webAddr; rebindName resolves to a private address (DNS rebinding).
	webName    = "web.gust.test"
	otherName  = "other.gust.test"
	rebindName = "rebind.gust.test"
)

// mirrorAddr is a package mirror on a private address, which gust is started to let image
// builds reach (--build-mirrors) and which every sandbox is still denied.
const mirrorAddr = "192.168.77.7"

// privateAddrs are inet listeners in ranges every policy denies.
var privateAddrs = []string{"10.200.0.5", "172.16.5.5", "192.168.5.5", "100.64.5.5"}

// inet is the fake internet.
var inet struct {
	name string // the named network namespace (ip netns)
	path string // /run/netns/<name>
	mu   sync.Mutex
	// conns records connections per listener address: the source addresses that reached it.
	conns map[string][]string
	// tlsCert is the TLS server's certificate, for clients that check it.
	tlsCert *x509.Certificate
}

// gust is the instance under test, in the host namespace.
var gust struct {
	bin, url, token, dataDir string
	imageID, appID           string
	cmd                      *exec.Cmd
	log                      *bytes.Buffer
	skip                     string
}

var logMu sync.Mutex

const imageCache = "/var/cache/gust-test/layers"

const childEnv = "GUST_NETTEST_CHILD"

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		gust.skip = "network tests need root and no -short"
		os.Exit(m.Run())
	}
	if os.Getenv(childEnv) == "" {
		os.Exit(runInHostNamespace())
	}
	code := func() int {
		if err := setupInet(); err != nil {
			fmt.Fprintln(os.Stderr, "setting up the fake internet:", err)
			return 1
		}
		defer teardownInet()
		if err := startGust(); err != nil {
			fmt.Fprintln(os.Stderr, "starting gust:", err)
			fmt.Fprintln(os.Stderr, gustLog())
			stopGust()
			return 1
		}
		code := m.Run()
		if err := stopGust(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping gust:", err)
			code = 1
		}
		if err := checkNoNetworkLeftovers(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
		if code != 0 && os.Getenv("GUST_TEST_LOG") != "" {
			fmt.Fprintln(os.Stderr, gustLog())
		}
		return code
	}()
	os.Exit(code)
}

// runInHostNamespace re-runs this test binary in a new network namespace, the host.
func runInHostNamespace() int {
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// setupInet makes the inet namespace, the veth between it and the host, and its servers.
func setupInet() error {
	// Earlier runs killed before their cleanup left namespaces whose process is gone.
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			var pid int
			if _, err := fmt.Sscanf(e.Name(), "gustnd-inet-%d", &pid); err == nil {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
					_ = run("ip", "netns", "del", e.Name())
				}
			}
		}
	}
	inet.name = fmt.Sprintf("gustnd-inet-%d", os.Getpid())
	inet.path = "/run/netns/" + inet.name
	inet.conns = map[string][]string{}
	steps := [][]string{
		{"ip", "netns", "add", inet.name},
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "gndup0", "type", "veth", "peer", "name", "gndup1", "netns", inet.name},
		{"ip", "addr", "add", hostUplink + "/24", "dev", "gndup0"},
		{"ip", "link", "set", "gndup0", "up"},
		{"ip", "route", "add", "default", "via", inetUplink},
		{"ip", "-n", inet.name, "link", "set", "lo", "up"},
		{"ip", "-n", inet.name, "addr", "add", inetUplink + "/24", "dev", "gndup1"},
		{"ip", "-n", inet.name, "link", "set", "gndup1", "up"},
	}
	for _, a := range append([]string{webAddr, otherAddr, dnsAddr, metaAddr, mirrorAddr}, privateAddrs...) {
		steps = append(steps, []string{"ip", "-n", inet.name, "addr", "add", a + "/32", "dev", "lo"})
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	// Servers: HTTP and TLS on the web addresses, plain TCP recorders on the addresses to deny.
	for _, a := range []string{webAddr, otherAddr} {
		if err := serveHTTP(a+":80", false, cert); err != nil {
			return err
		}
		if err := serveHTTP(a+":443", true, cert); err != nil {
			return err
		}
		if err := serveDiscard(a + ":9000"); err != nil {
			return err
		}
	}
	if err := serveHTTP(metaAddr+":80", false, cert); err != nil {
		return err
	}
	for _, a := range append([]string{mirrorAddr}, privateAddrs...) {
		if err := serveHTTP(a+":80", false, cert); err != nil {
			return err
		}
	}
	return serveDNS(dnsAddr + ":53")
}

func teardownInet() {
	_ = run("ip", "netns", "del", inet.name) // its veth end goes with it, and the host's with that
}

// inInet runs f on a thread in the inet namespace: sockets it makes stay there.
func inInet(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		ns, err := os.Open(inet.path)
		if err != nil {
			ch <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- err
			return
		}
		err = f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

// record notes a connection to a listener.
func record(listener, from string) {
	host, _, _ := net.SplitHostPort(from)
	inet.mu.Lock()
	inet.conns[listener] = append(inet.conns[listener], host)
	inet.mu.Unlock()
}

// connsTo returns how many connections reached a listener so far.
func connsTo(listener string) int {
	inet.mu.Lock()
	defer inet.mu.Unlock()
	return len(inet.conns[listener])
}

// recordingListener records every accepted connection.
type recordingListener struct {
	net.Listener
	addr string
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		record(l.addr, c.RemoteAddr().String())
	}
	return c, err
}

// serveHTTP answers every request with "hello from <addr>" (over TLS when tlsOn).
func serveHTTP(addr string, tlsOn bool, cert tls.Certificate) error {
	var ln net.Listener
	if err := inInet(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		return err
	}
	var l net.Listener = recordingListener{ln, addr}
	if tlsOn {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bytes" {
			// Throughput: 64 MiB of zeros.
			w.Header().Set("Content-Length", fmt.Sprint(64<<20))
			buf := make([]byte, 1<<20)
			for i := 0; i < 64; i++ {
				w.Write(buf)
			}
			return
		}
		fmt.Fprintf(w, "hello from %s host=%s", addr, r.Host)
	}), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)} // probes close TLS unread
	go srv.Serve(l)
	return nil
}

// serveDiscard accepts raw TCP and reads until the peer closes.
func serveDiscard(addr string) error {
	var ln net.Listener
	if err := inInet(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			record(addr, c.RemoteAddr().String())
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return nil
}

// dnsAnswers are the resolver's A records.
var dnsAnswers = map[string]string{webName: webAddr, otherName: otherAddr, rebindName: privateAddrs[0]}

// serveDNS answers A queries for dnsAnswers over UDP (NXDOMAIN otherwise).
func serveDNS(addr string) error {
	var pc net.PacketConn
	if err := inInet(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			record(addr, from.String())
			if resp := dnsAnswer(buf[:n]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return nil
}

// dnsAnswer builds the answer to one query (a single question).
func dnsAnswer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	// The question's name.
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qend := i + 5
	qtype := binary.BigEndian.Uint16(q[i+1:])
	name := strings.ToLower(strings.Join(labels, "."))
	resp := append([]byte(nil), q[:qend]...)
	resp[2] = 0x84 | (q[2] & 0x01) // response, authoritative, RD copied
	resp[3] = 0x00
	binary.BigEndian.PutUint16(resp[6:], 0) // answers
	binary.BigEndian.PutUint16(resp[8:], 0)
	binary.BigEndian.PutUint16(resp[10:], 0)
	a, ok := dnsAnswers[name]
	if !ok {
		resp[3] = 0x03 // NXDOMAIN
		return resp
	}
	if qtype != 1 { // not A: no data
		return resp
	}
	binary.BigEndian.PutUint16(resp[6:], 1)
	ip := net.ParseIP(a).To4()
	resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4)
	return append(resp, ip...)
}

// selfSigned makes a certificate for the test names.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: webName},
		DNSNames: []string{webName, otherName, "*.gust.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(webAddr), net.ParseIP(otherAddr)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	inet.tlsCert, _ = x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

func freePort() string {
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startGust builds the binary and runs `gust up` in the host namespace, listening on every
// address (so that the tests can check no container reaches it on any), and builds the base
// image.
func startGust(extra ...string) error {
	if gust.dataDir == "" {
		tmp, err := os.MkdirTemp("", "gustnd-")
		if err != nil {
			return err
		}
		gust.dataDir = tmp
		gust.bin = filepath.Join(tmp, "gust")
		build := exec.Command("go", "build", "-o", gust.bin, "./cmd/gust")
		build.Dir = repoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
		_, port, _ := net.SplitHostPort(freePort())
		gust.url = "http://127.0.0.1:" + port
		gust.token = "test-token-" + fmt.Sprint(time.Now().UnixNano())
		gust.log = &bytes.Buffer{}
	}
	u := strings.TrimPrefix(gust.url, "http://127.0.0.1")
	args := append([]string{"up", "--addr", "0.0.0.0" + u, "--data-dir", filepath.Join(gust.dataDir, "data"),
		"--image-cache", imageCache, "--no-config", "--no-install", "--sandbox-disk", "256",
		// Plain HTTP on 0.0.0.0: the namespace is the test's own (TLS is TestTLSSplit's subject).
		"--tls", "off", "--build-mirrors", mirrorAddr,
		// Raw tunnels on every address, so that inet's clients reach them (TestKernelTunnel).
		"--ingress-tcp-host", "0.0.0.0"}, extra...)
	gust.cmd = exec.Command(gust.bin, args...)
	// If this test process dies, gust stops (and removes its containers) rather than linger.
	gust.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	gust.cmd.Env = append(os.Environ(), "GUST_TOKEN="+gust.token, "GUST_JOIN_TOKEN=join-"+gust.token, "GUST_HEARTBEAT_TIMEOUT=15s")
	// The worker resolves (for the containers' resolver and the domain proxy) through inet's DNS.
	gust.cmd.Env = append(gust.cmd.Env, "GUST_DNS_UPSTREAM="+dnsAddr)
	pr, pw := io.Pipe()
	gust.cmd.Stdout, gust.cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logMu.Lock()
			gust.log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if os.Getenv("GUST_TEST_VERBOSE") != "" {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
	}()
	if err := gust.cmd.Start(); err != nil {
		return err
	}
	os.Setenv("GUST_SERVER_URL", gust.url)
	os.Setenv("GUST_TOKEN", gust.token)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(gust.url + "/v1/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gust did not answer /v1/health within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "network", "create_if_missing": true}, &app); err != nil {
		return err
	}
	gust.appID = app.AppID
	id, err := resolveImage()
	if err != nil {
		return err
	}
	gust.imageID = id
	for i := 0; ; i++ {
		var sb map[string]any
		err := api("POST", "/v1/sandboxes", map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "command": []string{"true"}}, &sb)
		if err == nil {
			break
		}
		if i > 100 {
			return fmt.Errorf("no worker came up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func resolveImage() (string, error) {
	req, _ := http.NewRequest("POST", gust.url+"/v1/images", strings.NewReader(`{"kind":"debian_slim"}`))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Image *struct {
				ID string `json:"image_id"`
			} `json:"image"`
			Error *struct{ Message string } `json:"error"`
		}
		json.Unmarshal(sc.Bytes(), &line)
		if line.Image != nil {
			return line.Image.ID, nil
		}
		if line.Error != nil {
			return "", fmt.Errorf("image build: %s", line.Error.Message)
		}
	}
	return "", fmt.Errorf("image stream ended without an image")
}

// stopGust stops gust with SIGINT and removes its data.
func stopGust() error {
	if gust.cmd == nil || gust.cmd.Process == nil {
		return os.RemoveAll(gust.dataDir)
	}
	gust.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- gust.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			// It stopped (or failed to start) on its own: it unmounted what it mounted.
			os.RemoveAll(gust.dataDir)
			return fmt.Errorf("gust exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		gust.cmd.Process.Kill()
		return fmt.Errorf("gust did not stop within 60 s of SIGINT")
	}
	return os.RemoveAll(gust.dataDir)
}

// gustLinks lists the host namespace's links that gust made (bridge gb*, veths gv*).
func gustLinks() []string {
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		if strings.HasPrefix(name, "gb") || strings.HasPrefix(name, "gv") {
			names = append(names, name)
		}
	}
	return names
}

// gustVeths lists the veths gust made (one per container network namespace).
func gustVeths() []string {
	var v []string
	for _, n := range gustLinks() {
		if strings.HasPrefix(n, "gv") {
			v = append(v, n)
		}
	}
	return v
}

// nftTables lists the nftables tables named gust-*.
func nftTables() []string {
	c, err := nftables.New()
	if err != nil {
		return []string{err.Error()}
	}
	tables, err := c.ListTables()
	if err != nil {
		return []string{err.Error()}
	}
	var t []string
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "gust-") {
			t = append(t, tb.Name)
		}
	}
	return t
}

// containerChains counts the per-container chains (f<address>) in gust's tables.
func containerChains() int {
	c, err := nftables.New()
	if err != nil {
		return -1
	}
	chains, err := c.ListChains()
	if err != nil {
		return -1
	}
	n := 0
	for _, ch := range chains {
		if strings.HasPrefix(ch.Table.Name, "gust-") && strings.HasPrefix(ch.Name, "f") && len(ch.Name) == 9 {
			n++
		}
	}
	return n
}

// checkNoNetworkLeftovers fails if gust left links or tables behind in the host namespace.
func checkNoNetworkLeftovers() error {
	var problems []string
	if l := gustLinks(); len(l) > 0 {
		problems = append(problems, "links remain: "+strings.Join(l, " "))
	}
	if t := nftTables(); len(t) > 0 {
		problems = append(problems, "nftables tables remain: "+strings.Join(t, "; "))
	}
	if len(problems) > 0 {
		return fmt.Errorf("network leftovers after shutdown: %s", strings.Join(problems, "; "))
	}
	return nil
}

func gustLog() string {
	logMu.Lock()
	defer logMu.Unlock()
	if gust.log == nil {
		return ""
	}
	return gust.log.String()
}

// api makes a JSON request to gust.
func api(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, gust.url+path, body)
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return &apiError{resp.StatusCode, string(b)}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

func needGust(t *testing.T) {
	t.Helper()
	if gust.skip != "" {
		t.Skip(gust.skip)
	}
}

// newSandbox creates a sandbox with extra create fields and terminates it at the test's end.
func newSandbox(t *testing.T, extra map[string]any) string {
	t.Helper()
	body := map[string]any{"app_id": gust.appID, "image_id": gust.imageID, "timeout": 300}
	for k, v := range extra {
		body[k] = v
	}
	var sb struct {
		ID string `json:"sandbox_id"`
	}
	if err := api("POST", "/v1/sandboxes", body, &sb); err != nil {
		t.Fatalf("create sandbox %v: %v", extra, err)
	}
	t.Cleanup(func() { terminate(sb.ID) })
	return sb.ID
}

func terminate(id string) {
	_ = api("POST", "/v1/sandboxes/"+id+"/terminate", map[string]any{}, nil)
}

// execIn runs a command in a sandbox and returns stdout, stderr and the exit code.
func execIn(t *testing.T, id string, cmd ...string) (string, string, int) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"command": cmd})
	req, _ := http.NewRequest("POST", gust.url+"/v1/sandboxes/"+id+"/execs", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+gust.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		t.Fatalf("exec: HTTP %d: %s", resp.StatusCode, buf.String())
	}
	var stdout, stderr strings.Builder
	code := -1
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		var line struct {
			Stream   string `json:"stream"`
			Data     string `json:"data"`
			ExitCode *int   `json:"exit_code"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		d, _ := base64.StdEncoding.DecodeString(line.Data)
		switch {
		case line.ExitCode != nil:
			code = *line.ExitCode
		case line.Stream == "stdout":
			stdout.Write(d)
		case line.Stream == "stderr":
			stderr.Write(d)
		}
	}
	return stdout.String(), stderr.String(), code
}

// probeScript tries a TCP connection to each host:port given as arguments and prints
// "OK host:port" or "NO host:port <error>" per target.
const probeScript = `
import socket, sys, threading
out = {}
def try_(t):
    h, p = t.rsplit(":", 1)
    try:
        s = socket.create_connection((h, int(p)), timeout=1.5)
        s.close()
        out[t] = "OK " + t
    except OSError as e:
        out[t] = "NO %s %s" % (t, type(e).__name__)
ts = [threading.Thread(target=try_, args=(t,)) for t in sys.argv[1:]]
for t in ts: t.start()
for t in ts: t.join()
for t in sys.argv[1:]: print(out[t])
`

// probe returns which targets the sandbox could connect to.
func probe(t *testing.T, id string, targets ...string) map[string]bool {
	t.Helper()
	out, errOut, code := execIn(t, id, append([]string{"python3", "-c", probeScript}, targets...)...)
	if code != 0 {
		t.Fatalf("probe exited %d: %s %s", code, out, errOut)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			got[f[1]] = f[0] == "OK"
		}
	}
	return got
}

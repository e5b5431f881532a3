// Package worker runs containers on one machine: sandboxes, and function containers whose
// main process is the Python runner. It registers with the server, pulls assignments (create,
// inputs, terminate) with a long poll, runs each container through a Runtime
// (internal/container), enforces timeouts, feeds function inputs to runners, reports state
// changes and function events, and serves the exec, file, log and snapshot requests that the
// server relays to it. It talks to the server only through workerproto.ServerClient, so the
// same code runs inside `gust up` and on its own with `gust worker`.
//
// A container's life on the worker and a runner's are state machines (states.go); the worker's
// dependencies are small interfaces (seams.go), faked in this package's tests.
//
// Imported by cmd/gust only.
package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/egress"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/network"
	"github.com/gust-run/gust/internal/nvidia"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/tlsconf"
	"github.com/gust-run/gust/internal/workerproto"
	pythonsdk "github.com/gust-run/gust/sdk/python"
)

// Config configures a worker.
type Config struct {
	ServerURL string
	// JoinToken registers the worker with the server; the server then gives it a credential
	// of its own.
	JoinToken  string
	Name       string
	ListenAddr string // for the worker's own API; 127.0.0.1:0 picks a port
	StateDir   string // containers' bundles and runtime state
	LayerDir   string // image layers (snapshots are written here)
	DiskMiB    int    // writable layer size of each sandbox
	WarmPool   int    // containers kept started ahead of demand (0 turns the pool off)
	// BuildEgress lists the hosts image build containers may reach through the worker's
	// egress proxy (egress.ParsePolicy's forms); nil is egress.DefaultHosts, empty nothing.
	BuildEgress []string
	// BuildMirrors are addresses image builds reach although the network denies them to every
	// other container (a package mirror on a private address). With Network, builds run on
	// the bridge under the default policy plus these; without it, through the egress proxy
	// under BuildEgress.
	BuildMirrors []string
	// ServerTLS verifies an https server (tlsconf.ClientConfig: its pinned fingerprint or a
	// CA file); nil means the system's CAs.
	ServerTLS *tls.Config
	// TLS is the certificate the worker's own API serves, whose fingerprint it reports when it
	// registers; nil serves plain HTTP (a worker beside its server on loopback).
	TLS *tlsconf.Identity
	// Network gives every sandbox and function container a namespace on the worker's bridge
	// with NAT and its outbound policy (internal/network); off, containers have loopback only.
	Network bool
	// NetworkCIDR is the containers' range ("" is network.DefaultCIDR); NetworkAllow are the
	// operator's exceptions to the always-denied ranges (a mirror on a private address).
	NetworkCIDR  string
	NetworkAllow []string
	// NetworkMTU is the containers' MTU (0: network.DefaultMTU).
	NetworkMTU int
	// DNSUpstream are the resolvers the containers' resolver forwards to and the domain proxy
	// resolves with (addresses, optionally :port); empty reads this machine's /etc/resolv.conf.
	DNSUpstream []string
	// MeterInterval is how often each container's usage is reported (0: 10 s, or
	// GUST_METER_INTERVAL).
	MeterInterval time.Duration
	// TestGPUs declares GPUs instead of asking nvidia-smi ("H100:2,A100-80GB"), and DeviceRoot
	// is where their /dev/nvidia* nodes and driver files are ("" is /): for tests only
	// (GUST_TEST_GPUS, GUST_TEST_DEVICE_ROOT). Empty finds the machine's GPUs.
	TestGPUs, DeviceRoot string
	Logger               *log.Logger
}

// Worker runs containers.
type Worker struct {
	cfg    Config
	rt     Runtime
	server Server
	layers Layers
	addr   string
	log    *log.Logger
	// apiToken is what the server presents to this worker's API: made here at start and
	// sent when registering, so the worker never holds a credential of the server's.
	apiToken string

	pool   *warmPool
	events *eventQueue // function events for the server
	meter  *usageMeter // the usage ledger's samples (meter.go); nil meters nothing

	// idleTick is how often idle_timeout is checked.
	idleTick time.Duration

	apiDir string // holds the socket through which function containers call the API
	// volCache counts the mounts of materialized volume versions (volumes.go).
	volCache versionCache
	// stopping is set while the worker shuts down: inputs it interrupts are not their fault.
	stopping atomic.Bool
	// sdk unpacks the Python SDK for function containers (once); compile precompiles Python
	// sources that containers see read-only.
	sdk     func() (string, error)
	compile func(dir string)
	// buildNet makes an image build container's network namespace and proxy.
	buildNet func(id string) (BuildNet, error)
	// net gives the other containers their network; nil leaves them loopback only. netMgr is
	// the real one behind it (nil in tests), for the domain proxy and resolver.
	net    Network
	netMgr *network.Manager
	// stopNet stops the resolver and domain proxy on the gateway (once; nil when none run).
	stopNet func()
	// buildMirrors are Config.BuildMirrors, parsed: image builds on the bridge reach them.
	buildMirrors []netip.Prefix
	// gateway serves the containers' resolver and domain proxy (startNetServices).
	gateway atomic.Pointer[egress.Gateway]
	// gpus are the machine's GPUs; nil without.
	gpus *gpuSet

	mu    sync.Mutex
	boxes map[string]*box
	wg    sync.WaitGroup
}

// deps are what a worker runs on. New makes the real ones; tests pass fakes to newWorker.
type deps struct {
	runtime Runtime
	server  Server
	layers  Layers
	// sdk returns the unpacked Python SDK's directory; nil unpacks the embedded one.
	sdk func() (string, error)
	// compile precompiles Python under a directory; nil uses the machine's python3.
	compile func(dir string)
	// buildNet makes an image build container's network (New: an egress.Namespace under
	// cfg.BuildEgress); nil refuses build containers.
	buildNet func(id string) (BuildNet, error)
	// net gives containers their network (New: a network.Manager when cfg.Network); nil
	// leaves them loopback only.
	net    Network
	netMgr *network.Manager
	// buildMirrors are Config.BuildMirrors, parsed: image builds on the bridge reach them.
	buildMirrors []netip.Prefix
	// gpus are the machine's GPUs (New: nvidia.Discover under cfg.GPU); nil is none.
	gpus *gpuSet
}

// New prepares a worker: it removes what an earlier worker on this state directory left behind.
func New(cfg Config) (*Worker, error) {
	hosts := cfg.BuildEgress
	if hosts == nil {
		hosts = egress.DefaultHosts()
	}
	policy, err := egress.ParsePolicy(hosts)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	rt, err := container.New(container.Config{StateDir: cfg.StateDir})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	layers, err := image.NewBuilder(cfg.LayerDir)
	if err != nil {
		return nil, fmt.Errorf("worker: layer store in %s: %w", cfg.LayerDir, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "worker: ", log.LstdFlags)
	}
	logf := cfg.Logger.Printf
	mirrors, err := parseCIDRs("--build-mirrors", cfg.BuildMirrors)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	switch {
	case cfg.Network:
		logf("image builds run on the containers' network with the default policy%s", mirrorsNote(mirrors))
	case policy.String() == "":
		logf("image builds have no network (%s is empty)", egress.Flag)
	default:
		logf("image builds reach only %s, through the egress proxy (%s)", policy, egress.Flag)
	}
	gpus := newGPUSet(nvidia.Config{Root: cfg.DeviceRoot, TestGPUs: cfg.TestGPUs, StateDir: cfg.StateDir}, rt.GVisorGPU(), logf)
	d := deps{}
	if cfg.Network {
		m, err := newNetwork(cfg, logf)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		d.net, d.netMgr = netManager{m}, m
		logf("containers' network: bridge %s, gateway %s, range %s", m.Bridge(), m.Gateway(), m.CIDR())
	}
	return newWorker(cfg, deps{
		net: d.net, netMgr: d.netMgr, gpus: gpus, buildMirrors: mirrors,
		runtime: runtimeAdapter{rt}, layers: layers,
		server: workerproto.NewServerClient(cfg.ServerURL, cfg.JoinToken, cfg.ServerTLS),
		buildNet: func(id string) (BuildNet, error) {
			return egress.Start(policy, func(format string, args ...any) { logf("container %s: "+format, append([]any{id}, args...)...) })
		},
	}), nil
}

// newWorker fills cfg's defaults and cleans up leftovers through d.runtime.
func newWorker(cfg Config, d deps) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "worker: ", log.LstdFlags)
	}
	if cfg.DiskMiB == 0 {
		cfg.DiskMiB = 1024
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			cfg.Logger.Printf("no worker name given and the hostname is unknown (%v): registering without a name", err)
		}
		cfg.Name = host
	}
	d.runtime.CleanupLeftovers(cfg.Logger.Printf)
	w := &Worker{
		cfg: cfg, rt: d.runtime, server: d.server, layers: d.layers, log: cfg.Logger,
		idleTick: 250 * time.Millisecond, sdk: d.sdk, compile: d.compile, buildNet: d.buildNet, gpus: d.gpus,
		net: d.net, netMgr: d.netMgr, buildMirrors: d.buildMirrors,
		boxes: map[string]*box{}, apiToken: ids.Random(40),
	}
	if w.compile == nil {
		w.compile = w.compilePython
	}
	w.cleanupVolumes()
	if w.sdk == nil {
		w.sdk = sync.OnceValues(func() (string, error) {
			dir, err := pythonsdk.Extract(filepath.Join(cfg.StateDir, "python"))
			if err == nil {
				w.compile(dir)
			}
			return dir, err
		})
	}
	w.pool = &warmPool{w: w, size: cfg.WarmPool}
	w.events = newEventQueue(d.server, cfg.Logger)
	if us, ok := d.server.(usageSender); ok {
		w.meter = newUsageMeter(cfg.StateDir, cfg.MeterInterval, us, cfg.Logger.Printf)
	}
	return w
}

// apiHeaderTimeout bounds how long the worker's API waits for a request's headers (and a TLS
// handshake); tests shorten it.
var apiHeaderTimeout = 30 * time.Second

// Run serves until ctx is done, then terminates every container it runs and returns.
func (w *Worker) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", w.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("worker: listen on %s: %w", w.cfg.ListenAddr, err)
	}
	w.addr = "http://" + ln.Addr().String()
	if w.cfg.TLS != nil {
		ln = tls.NewListener(ln, w.cfg.TLS.ServerConfig())
		w.addr = "https://" + ln.Addr().String()
	}
	// A client that never finishes its headers (or its TLS handshake, which the same timeout
	// bounds) must not hold a connection forever; streams (exec output) have no write timeout.
	srv := &http.Server{Handler: httpapi.Auth(w.apiToken, w.routes()), ReadHeaderTimeout: apiHeaderTimeout, IdleTimeout: 2 * time.Minute, ErrorLog: w.log}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			w.log.Printf("the worker's API on %s stopped: %v", w.addr, err)
		}
	}()
	defer func() {
		if err := srv.Close(); err != nil {
			w.log.Printf("closing the worker's API: %v", err)
		}
	}()
	if dir, closeAPI, err := w.serveContainerAPI(); err != nil {
		w.log.Printf("functions will not be able to call other functions: %v", err)
	} else {
		w.apiDir = dir
		defer closeAPI()
	}
	stopNet, err := w.startNetServices()
	if err != nil {
		if cerr := w.netMgr.Close(); cerr != nil { // shutdown, which would close it, does not run
			w.log.Printf("%v", cerr)
		}
		return err
	}
	if stopNet != nil {
		// shutdown stops them before it removes the bridge (see there); this covers the rest.
		w.stopNet = sync.OnceFunc(stopNet)
		defer w.stopNet()
	}
	evCtx, stopEvents := context.WithCancel(context.Background())
	defer stopEvents()
	go w.events.run(evCtx)
	if w.meter != nil {
		go w.meter.run(evCtx)
	}

	for ctx.Err() == nil {
		if err := w.register(ctx); err != nil {
			w.log.Printf("register with %s: %v; retrying", w.cfg.ServerURL, err)
			sleep(ctx, time.Second)
			continue
		}
		w.log.Printf("registered as %s, serving on %s", w.server.WorkerID(), w.addr)
		err := w.pollLoop(ctx)
		if ctx.Err() == nil {
			w.log.Printf("lost the server (%v); registering again", err)
			sleep(ctx, 200*time.Millisecond)
		}
	}
	w.shutdown()
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (w *Worker) register(ctx context.Context) error {
	req := workerproto.RegisterRequest{
		Name: w.cfg.Name, Addr: w.addr, CPU: float64(runtime.NumCPU()), MemoryMiB: hostMemoryMiB(),
		GPUs: w.gpus.devices(), GVisorGPU: w.gpus.gvisorOK(),
		WorkerID: w.server.WorkerID(), APIToken: w.apiToken,
	}
	if w.cfg.TLS != nil {
		req.TLSFingerprint = w.cfg.TLS.Fingerprint
	}
	for _, iso := range []string{container.IsolationRunc, container.IsolationGVisor} {
		if w.rt.Available(iso) == nil {
			req.Isolation = append(req.Isolation, iso)
		}
	}
	return w.server.Register(ctx, req)
}

// pollWait is how long one long poll for assignments waits.
const pollWait = 25 * time.Second

func (w *Worker) pollLoop(ctx context.Context) error {
	for {
		as, err := w.server.Assignments(ctx, pollWait)
		if err != nil {
			return fmt.Errorf("polling for assignments: %w", err)
		}
		for _, a := range as {
			w.assign(a)
		}
	}
}

// assign starts one assignment: creates and terminates run in the background, inputs are
// handed over at once (they only queue).
func (w *Worker) assign(a workerproto.Assignment) {
	switch a.Op {
	case workerproto.OpCreate:
		if a.Container == nil {
			w.log.Printf("a create assignment without a container spec: ignored")
			return
		}
		spec := *a.Container
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.create(spec)
		}()
	case workerproto.OpInputs:
		w.sendInputs(a.ContainerID, a.Inputs)
	case workerproto.OpTerminate:
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.terminate(a.ContainerID, a.EndStatus, a.Reason)
		}()
	default:
		w.log.Printf("an assignment of unknown op %q: ignored (is the server newer than this worker?)", a.Op)
	}
}

// report tells the server a container's new state, retrying briefly: the server must learn of
// every end.
func (w *Worker) report(id string, st workerproto.StateReport) {
	var err error
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = w.server.ReportState(ctx, id, st)
		cancel()
		if err == nil || errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrConflict) {
			// Not found or conflict: the server has forgotten the container, or already knows
			// it ended. Either way there is nothing more to tell it.
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.log.Printf("could not report container %s %s to the server: %v", id, st.Status, err)
}

// shutdown terminates every container, as a server shutdown must leave nothing behind.
func (w *Worker) shutdown() {
	w.stopping.Store(true)
	w.mu.Lock()
	var ids []string
	for id, b := range w.boxes {
		b.mu.Lock()
		if b.state != boxExited {
			ids = append(ids, id)
		}
		b.mu.Unlock()
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.terminate(id, sandbox.Terminated, "the worker shut down")
		}()
	}
	wg.Wait()
	w.wg.Wait()
	w.pool.close()
	if err := w.rt.Close(); err != nil {
		w.log.Printf("%v", err)
	}
	// The resolver and proxy let go of the gateway's address before the bridge that holds it
	// goes: a gust starting meanwhile may take the freed range, and its resolver must be able
	// to bind there (TestVolumeMetering once failed with "address already in use").
	if w.stopNet != nil {
		w.stopNet()
	}
	if w.netMgr != nil {
		if err := w.netMgr.Close(); err != nil {
			w.log.Printf("%v", err)
		}
	}
	w.meter.flushFor(3 * time.Second)
}

// mirrorsNote names the build mirrors for the worker's log.
func mirrorsNote(ms []netip.Prefix) string {
	if len(ms) == 0 {
		return " (no private mirrors: --build-mirrors is empty)"
	}
	var s []string
	for _, m := range ms {
		s = append(s, m.String())
	}
	return ", and the mirrors " + strings.Join(s, ", ")
}

// parseCIDRs reads a flag's comma-separated addresses and CIDRs (blanks skipped).
func parseCIDRs(flag string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := sandbox.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		out = append(out, p)
	}
	return out, nil
}

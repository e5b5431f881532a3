// Package fleet is the control plane's view of its workers and of what runs on them: who the
// workers are and what they offer (cpu, memory, runtimes, GPUs), where each container goes
// (placement), the queue of assignments each worker pulls, and the server side of every
// container's life (a sandbox's or a function's): placed, started, waited for, terminated,
// ended, lost with its worker. It owns that state and its lock; callers use its methods.
//
// Imported by internal/api and internal/server; internal/dispatch and internal/imagebuild use it
// through their own interfaces (Placer, Fleet).
package fleet

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gust-run/gust/internal/auth"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// Store is what the fleet keeps in the database: sandboxes (function containers among them),
// and the apps and images they are made from.
type Store interface {
	GetApp(ctx context.Context, id string) (store.App, error)
	GetImage(ctx context.Context, id string) (image.Image, error)
	InsertSandbox(ctx context.Context, sb sandbox.Sandbox) error
	UpdateSandbox(ctx context.Context, sb sandbox.Sandbox) error
	GetSandbox(ctx context.Context, id string) (sandbox.Sandbox, error)
	ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]sandbox.Sandbox, error)
	// The workspace's quotas and what it holds, and function containers' credentials.
	GetWorkspace(ctx context.Context, id string) (store.Workspace, error)
	WorkspaceUsage(ctx context.Context, ws string) (store.Usage, error)
	PutToken(ctx context.Context, t auth.Token) error
	DeleteContainerTokens(ctx context.Context, containerID string) error
	DeleteStaleContainerTokens(ctx context.Context) error
	// GetVolume checks that a container's volumes are its workspace's.
	GetVolume(ctx context.Context, ws, id string) (store.Volume, error)
}

var _ Store = (*store.Store)(nil)

// Config configures a fleet.
type Config struct {
	Logger *log.Logger
	// WorkerTimeout is how long a worker may go without polling before the fleet gives up on
	// it and on what it ran (0: workerTimeout).
	WorkerTimeout time.Duration
}

// Fleet is the set of connected workers and the containers placed on them.
type Fleet struct {
	store Store
	log   *log.Logger
	// workerTimeout is Config.WorkerTimeout.
	workerTimeout time.Duration
	// onEnd learns of every container that reached a terminal state (the function engine).
	onEnd func(sandbox.Sandbox)
	// onAnyEnd learns of every container that ended, sandboxes too (the ingress).
	onAnyEnd func(sandbox.Sandbox)
	// admit may refuse a new container before it is placed (a spent budget).
	admit func(context.Context, sandbox.Sandbox) error
	// onLost learns of every container that failed with a worker that stopped answering (the
	// usage ledger closes its usage), after its end is stored.
	onLost func(context.Context, sandbox.Sandbox, string)

	// records serialises each read-change-write of a container's record (setState, SetTags),
	// so that two changes at once cannot both pass the lifecycle from the same old state, nor
	// one write back a status that the other has moved on from. Taken before mu, never inside.
	records sync.Mutex
	// quotas serialises the quota check and the record of a new container, so that two
	// creates at once cannot both fit under a workspace's quota. Taken before records and mu.
	quotas sync.Mutex

	// local is the worker in this process (`gust up`), whose ports the ingress dials directly.
	local atomic.Pointer[localWorker]

	mu      sync.Mutex
	workers map[string]*workerConn
	// changed is closed and replaced whenever a container's state changes, waking waiters.
	changed map[string]chan struct{}
	// gpuFreed is closed and replaced when GPUs are given back or a worker registers, waking
	// the containers in waiting, which say why they wait.
	gpuFreed chan struct{}
	waiting  map[string]Waiting
}

// workerConn is a registered worker and its queue of assignments.
type workerConn struct {
	id     string
	reg    workerproto.RegisterRequest
	client *workerproto.WorkerClient
	queue  []workerproto.Assignment
	wake   chan struct{}
	// running counts its containers; reservedMiB is the memory they were given. Function
	// containers must fit in what is left.
	running     int
	reservedMiB int
	// gpuHolder holds the container that holds each of its GPUs (by devKey): a GPU is one
	// container's at a time.
	gpuHolder map[string]string
	// The long poll is the worker's heartbeat: polls in progress, and when one last ended.
	polling  int
	lastPoll time.Time
}

// New returns a fleet with no workers.
func New(st Store, cfg Config) *Fleet {
	if cfg.Logger == nil {
		cfg.Logger = log.Default()
	}
	if cfg.WorkerTimeout <= 0 {
		cfg.WorkerTimeout = workerTimeout
	}
	return &Fleet{store: st, log: cfg.Logger, workerTimeout: cfg.WorkerTimeout, onEnd: func(sandbox.Sandbox) {}, onAnyEnd: func(sandbox.Sandbox) {},
		admit:   func(context.Context, sandbox.Sandbox) error { return nil },
		onLost:  func(context.Context, sandbox.Sandbox, string) {},
		workers: map[string]*workerConn{}, changed: map[string]chan struct{}{},
		gpuFreed: make(chan struct{}), waiting: map[string]Waiting{}}
}

// OnContainerEnd sets who learns of function containers that end. Set it before workers
// connect.
func (f *Fleet) OnContainerEnd(fn func(sandbox.Sandbox)) { f.onEnd = fn }

// OnAnyEnd sets who learns of every container that ends, sandboxes and function containers,
// once its end is stored. Set it before workers connect.
func (f *Fleet) OnAnyEnd(fn func(sandbox.Sandbox)) { f.onAnyEnd = fn }

// OnLost sets who learns of every container that failed because its worker stopped answering
// (not one that restarted), and why: the usage ledger, which will hear no final interval of
// it. Set it before workers connect.
func (f *Fleet) OnLost(fn func(ctx context.Context, sb sandbox.Sandbox, why string)) { f.onLost = fn }

// OnAdmit sets who may refuse a new container before it is placed (budget.Checker.Admit).
// Set it before workers connect.
func (f *Fleet) OnAdmit(fn func(context.Context, sandbox.Sandbox) error) { f.admit = fn }

// FailLeftovers marks failed the containers that a previous run of the server left pending or
// running: they went with that run.
func (f *Fleet) FailLeftovers(ctx context.Context) error {
	live, err := f.store.ListSandboxes(ctx, store.SandboxFilter{Functions: true})
	if err != nil {
		return fmt.Errorf("listing the sandboxes left by the last run: %w", err)
	}
	for _, sb := range live {
		code := sandbox.ExitTerminated
		if err := endRecord(&sb, workerproto.StateReport{Status: sandbox.Failed, ExitCode: &code,
			Error: strPtr("the server restarted while this sandbox ran")}, time.Now().UTC()); err != nil {
			f.log.Printf("sandbox %s: %v", sb.ID, err)
			continue
		}
		if err := f.store.UpdateSandbox(ctx, sb); err != nil {
			return fmt.Errorf("marking sandbox %s failed after a restart: %w", sb.ID, err)
		}
	}
	return f.store.DeleteStaleContainerTokens(ctx)
}

// Run expires workers that stopped polling until ctx ends.
func (f *Fleet) Run(ctx context.Context) {
	t := time.NewTicker(min(10*time.Second, f.workerTimeout/4))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.expireWorkers(time.Now())
		}
	}
}

// Register adds a worker, or takes back one that lost the server for a moment (same ID, same
// containers). A worker that registers again under its name without its ID has restarted:
// what ran on it before is gone.
func (f *Fleet) Register(req workerproto.RegisterRequest) (workerproto.RegisterResponse, error) {
	if err := req.Validate(); err != nil {
		return workerproto.RegisterResponse{}, err
	}
	client, err := workerproto.NewWorkerClient(req.Addr, req.APIToken, req.TLSFingerprint)
	if err != nil {
		return workerproto.RegisterResponse{}, err
	}
	f.mu.Lock()
	if wc := f.workers[req.WorkerID]; wc != nil && req.WorkerID != "" {
		wc.reg, wc.client, wc.lastPoll = req, client, time.Now()
		f.wakeGPUWaitersLocked()
		f.mu.Unlock()
		return workerproto.RegisterResponse{WorkerID: wc.id}, nil
	}
	wc := &workerConn{id: ids.New(ids.Worker), reg: req, client: client, wake: make(chan struct{}), lastPoll: time.Now()}
	var gone []*workerConn
	for id, old := range f.workers {
		if old.reg.Name == req.Name {
			delete(f.workers, id)
			gone = append(gone, old)
		}
	}
	f.workers[wc.id] = wc
	f.wakeGPUWaitersLocked()
	f.mu.Unlock()
	for _, old := range gone {
		// The worker that restarted sends what its old self metered (its spool), a final
		// interval for each container among it: the ledger closes them itself.
		f.workerLost(old, "its worker restarted", false)
	}
	f.log.Printf("worker %s registered (%s at %s, %v cpu, %d MiB, runtimes %v, %d GPUs)", wc.id, req.Name, req.Addr, req.CPU, req.MemoryMiB, req.Isolation, len(req.GPUs))
	return workerproto.RegisterResponse{WorkerID: wc.id}, nil
}

func (f *Fleet) worker(id string) (*workerConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wc := f.workers[id]
	if wc == nil {
		return nil, errdefs.NotFound("worker %s is not registered; register again", id)
	}
	return wc, nil
}

// CheckWorker returns an error unless the worker is registered.
func (f *Fleet) CheckWorker(id string) error {
	_, err := f.worker(id)
	return err
}

// Assignments is a worker's long poll: what is queued for it, waiting up to wait for some.
func (f *Fleet) Assignments(ctx context.Context, workerID string, wait time.Duration) ([]workerproto.Assignment, error) {
	wc, err := f.worker(workerID)
	if err != nil {
		return nil, err
	}
	timeout := time.NewTimer(min(max(wait, 0), time.Minute))
	defer timeout.Stop()
	f.mu.Lock()
	wc.polling++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		wc.polling--
		wc.lastPoll = time.Now()
		f.mu.Unlock()
	}()
	for {
		f.mu.Lock()
		q := wc.queue
		wc.queue = nil
		wake := wc.wake
		f.mu.Unlock()
		if len(q) > 0 {
			return q, nil
		}
		select {
		case <-wake:
		case <-timeout.C:
			return []workerproto.Assignment{}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (f *Fleet) assign(wc *workerConn, a workerproto.Assignment) {
	f.mu.Lock()
	wc.queue = append(wc.queue, a)
	close(wc.wake)
	wc.wake = make(chan struct{})
	f.mu.Unlock()
}

// SendInputs queues function inputs for a container's runner on its worker. Inputs for a
// worker that is gone are dropped here: the worker's loss requeues them.
func (f *Fleet) SendInputs(workerID, containerID string, ins []workerproto.Input) {
	f.mu.Lock()
	wc := f.workers[workerID]
	f.mu.Unlock()
	if wc != nil {
		f.assign(wc, workerproto.Assignment{Op: workerproto.OpInputs, ContainerID: containerID, Inputs: ins})
	}
}

// Client returns the client of the worker that runs a container.
func (f *Fleet) Client(sb sandbox.Sandbox) (*workerproto.WorkerClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wc := f.workers[sb.WorkerID]
	if wc == nil {
		return nil, errdefs.Unavailable("the worker running sandbox %s is not connected", sb.ID)
	}
	return wc.client, nil
}

// LocalWorker is a worker that runs in the server's own process (`gust up`).
type LocalWorker interface {
	// WorkerID is the ID it registered under ("" before).
	WorkerID() string
	// DialPort connects to a declared port of one of its running containers.
	DialPort(ctx context.Context, containerID string, port int) (net.Conn, error)
}

type localWorker struct{ LocalWorker }

// SetLocal names the worker that runs in this process: tunnels to its containers are
// dialled in the process instead of through its API (no TLS, no extra TCP hop and relay).
func (f *Fleet) SetLocal(w LocalWorker) { f.local.Store(&localWorker{w}) }

// DialPort opens a raw TCP stream to port inside a container on worker workerID, for the
// ingress's tunnels.
func (f *Fleet) DialPort(ctx context.Context, workerID, containerID string, port int) (net.Conn, error) {
	if l := f.local.Load(); l != nil && workerID != "" && l.WorkerID() == workerID {
		return l.DialPort(ctx, containerID, port)
	}
	f.mu.Lock()
	wc := f.workers[workerID]
	f.mu.Unlock()
	if wc == nil {
		return nil, errdefs.Unavailable("the worker running sandbox %s is not connected", containerID)
	}
	return wc.client.DialPort(ctx, containerID, port)
}

// localForwarder is a LocalWorker that can also hand a tunnel's port to the kernel
// (worker.Worker.ForwardPort).
type localForwarder interface {
	ForwardPort(ctx context.Context, containerID string, port int, listen netip.AddrPort, allow []netip.Prefix) (stop func() error, err error)
}

// ForwardPort has the worker of this process forward the ingress's listen address to port of
// a container in the kernel (ingress.Forwarder); errdefs.Unavailable for a container on
// another worker, whose tunnels are relayed.
func (f *Fleet) ForwardPort(ctx context.Context, workerID, containerID string, port int, listen netip.AddrPort, allow []netip.Prefix) (func() error, error) {
	if l := f.local.Load(); l != nil && workerID != "" && l.WorkerID() == workerID {
		if fw, ok := l.LocalWorker.(localForwarder); ok {
			return fw.ForwardPort(ctx, containerID, port, listen, allow)
		}
	}
	return nil, errdefs.Unavailable("container %s runs on another worker: its tunnels are relayed", containerID)
}

// workerTimeout is how long a worker may go without polling for assignments before the fleet
// gives up on it and on everything it ran, unless Config.WorkerTimeout says otherwise.
const workerTimeout = 60 * time.Second

// expireWorkers drops workers that stopped polling (killed, or their machine gone).
func (f *Fleet) expireWorkers(now time.Time) {
	var gone []*workerConn
	f.mu.Lock()
	for id, wc := range f.workers {
		if wc.polling == 0 && now.Sub(wc.lastPoll) > f.workerTimeout {
			delete(f.workers, id)
			gone = append(gone, wc)
		}
	}
	f.mu.Unlock()
	for _, wc := range gone {
		f.workerLost(wc, fmt.Sprintf("its worker stopped answering for %v", f.workerTimeout), true)
	}
}

// workerLost ends what a worker ran: its containers fail, and the function engine queues
// their inputs again without counting an attempt (they did not fail; their machine did).
// With closeUsage (a worker gone, not one that restarted and will send what it metered), the
// usage ledger closes their usage too (OnLost).
func (f *Fleet) workerLost(wc *workerConn, why string, closeUsage bool) {
	f.log.Printf("worker %s (%s) is gone: %s", wc.id, wc.reg.Name, why)
	ctx := context.Background()
	sbs, err := f.store.ListSandboxes(ctx, store.SandboxFilter{Functions: true})
	if err != nil {
		f.log.Printf("listing the sandboxes of lost worker %s: %v", wc.id, err)
		return
	}
	code := sandbox.ExitTerminated
	for _, sb := range sbs {
		if sb.WorkerID != wc.id {
			continue
		}
		ended, err := f.setState(ctx, "", sb.ID, workerproto.StateReport{Status: sandbox.Failed, ExitCode: &code, Error: strPtr(why)})
		if err != nil {
			f.log.Printf("sandbox %s of lost worker %s: %v", sb.ID, wc.id, err)
			continue
		}
		if closeUsage {
			f.onLost(ctx, ended, why)
		}
	}
}

// Watch returns a channel closed at the container's next change of state.
func (f *Fleet) Watch(id string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.changed[id]
	if !ok {
		ch = make(chan struct{})
		f.changed[id] = ch
	}
	return ch
}

// notify wakes everyone waiting on a container.
func (f *Fleet) notify(id string) {
	f.mu.Lock()
	if ch, ok := f.changed[id]; ok {
		close(ch)
		delete(f.changed, id)
	}
	f.mu.Unlock()
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

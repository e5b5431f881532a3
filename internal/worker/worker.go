// Package worker runs sandboxes on one machine. It registers with the server, pulls
// assignments (create, terminate) with a long poll, runs each sandbox's container through
// internal/container, enforces timeouts, reports state changes, and serves the exec, file, log and
// snapshot requests that the server forwards to it. It talks to the server only over HTTP, so
// the same code runs inside `gust up` and on its own with `gust worker`.
package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/workerproto"
)

// Config configures a worker.
type Config struct {
	ServerURL  string
	Token      string
	Name       string
	ListenAddr string // for the worker's own API; 127.0.0.1:0 picks a port
	StateDir   string // containers' bundles and runtime state
	LayerDir   string // image layers (snapshots are written here)
	DiskMiB    int    // writable layer size of each sandbox
	WarmPool   int    // containers kept started ahead of demand (0 turns the pool off)
	Logger     *log.Logger
}

// Worker runs sandboxes.
type Worker struct {
	cfg    Config
	rt     *container.Runtime
	layers *image.Builder
	client *http.Client
	id     string
	addr   string
	log    *log.Logger

	pool   *warmPool
	events *eventQueue // function events for the server

	apiDir string // holds the socket through which function containers call the API
	// stopping is set while the worker shuts down: inputs it interrupts are not their fault.
	stopping atomic.Bool
	sdkOnce  sync.Once // the Python SDK, unpacked once for function containers
	sdkDir   string
	sdkErr   error

	mu    sync.Mutex
	boxes map[string]*box
	wg    sync.WaitGroup
}

// New prepares a worker: it removes what an earlier worker on this state directory left behind.
func New(cfg Config) (*Worker, error) {
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "worker: ", log.LstdFlags)
	}
	if cfg.DiskMiB == 0 {
		cfg.DiskMiB = 1024
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	rt, err := container.New(container.Config{StateDir: cfg.StateDir})
	if err != nil {
		return nil, err
	}
	layers, err := image.NewBuilder(cfg.LayerDir)
	if err != nil {
		return nil, err
	}
	rt.CleanupLeftovers(cfg.Logger.Printf)
	w := &Worker{
		cfg: cfg, rt: rt, layers: layers, log: cfg.Logger,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}},
		boxes:  map[string]*box{},
	}
	w.pool = &warmPool{w: w, size: cfg.WarmPool}
	w.events = newEventQueue(w)
	return w, nil
}

// Run serves until ctx is done, then terminates every sandbox it runs and returns.
func (w *Worker) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", w.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("worker: listen on %s: %w", w.cfg.ListenAddr, err)
	}
	w.addr = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: httpapi.Auth(w.cfg.Token, w.routes())}
	go srv.Serve(ln)
	defer srv.Close()
	if dir, closeAPI, err := w.serveContainerAPI(); err != nil {
		w.log.Printf("functions will not be able to call other functions: %v", err)
	} else {
		w.apiDir = dir
		defer closeAPI()
	}
	evCtx, stopEvents := context.WithCancel(context.Background())
	defer stopEvents()
	go w.events.run(evCtx)

	for ctx.Err() == nil {
		if err := w.register(ctx); err != nil {
			w.log.Printf("register with %s: %v; retrying", w.cfg.ServerURL, err)
			sleep(ctx, time.Second)
			continue
		}
		w.log.Printf("registered as %s, serving on %s", w.id, w.addr)
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
		Name: w.cfg.Name, Addr: w.addr, CPU: float64(runtime.NumCPU()), MemoryMiB: hostMemoryMiB(), GPUs: detectGPUs(),
		WorkerID: w.id,
	}
	for _, iso := range []string{container.IsolationRunc, container.IsolationGVisor} {
		if w.rt.Available(iso) == nil {
			req.Isolation = append(req.Isolation, iso)
		}
	}
	var resp workerproto.RegisterResponse
	if err := w.call(ctx, http.MethodPost, "/v1/workers/register", req, &resp); err != nil {
		return err
	}
	w.id = resp.WorkerID
	return nil
}

func (w *Worker) pollLoop(ctx context.Context) error {
	for {
		var as workerproto.Assignments
		if err := w.call(ctx, http.MethodGet, "/v1/workers/"+w.id+"/assignments?wait=25", nil, &as); err != nil {
			return err
		}
		for _, a := range as.Assignments {
			switch a.Op {
			case workerproto.OpCreate:
				w.wg.Add(1)
				go func() {
					defer w.wg.Done()
					w.create(a)
				}()
			case workerproto.OpInputs:
				w.sendInputs(a)
			case workerproto.OpTerminate:
				w.wg.Add(1)
				go func() {
					defer w.wg.Done()
					w.terminate(a.SandboxID, a.Reason, "")
				}()
			}
		}
	}
}

// call makes a JSON request to the server.
func (w *Worker) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.cfg.ServerURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return httpapi.DecodeError(resp)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

// report tells the server a sandbox's new state, retrying briefly: the server must learn of
// every end.
func (w *Worker) report(id string, st workerproto.StateReport) {
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := w.call(ctx, http.MethodPost, "/v1/workers/"+w.id+"/sandboxes/"+id+"/state", st, nil)
		cancel()
		if err == nil || errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrConflict) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shutdown terminates every sandbox, as a server shutdown must leave nothing behind.
func (w *Worker) shutdown() {
	w.stopping.Store(true)
	w.mu.Lock()
	var ids []string
	for id, b := range w.boxes {
		if b.container != nil {
			ids = append(ids, id)
		}
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
}

func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 1024
	}
	var kb int
	fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
	return kb / 1024
}

// Package dispatch is the function engine: it takes published functions and the calls made
// to them, keeps each function's queue of inputs (durable in the store, mirrored here), hands
// inputs to the function's containers, and runs the autoscaling loop that starts and stops
// those containers. It applies what workers report (readiness, logs, generator items,
// outputs), retries failed inputs with backoff, fails those that time out, accounts crashes,
// fires schedules, and streams each call's results to its readers.
//
// Two lifecycles live here, each a state machine (lifecycle.go): an input's on the server,
// and a function container's. The engine owns its state and its lock; the API calls its
// methods. It reaches the rest through small interfaces defined below: a Store for inputs and
// outputs, a Placer (the fleet) for containers, and a Clock. Imported by internal/api and
// internal/server.
package dispatch

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// Store is what the engine keeps in the database: functions, calls, inputs and their
// outputs, app logs, and the secrets a container's environment is made from.
type Store interface {
	ListFunctions(ctx context.Context, appID string, activeOnly bool) ([]function.Function, error)
	GetFunction(ctx context.Context, id string) (function.Function, error)
	SetFunctionState(ctx context.Context, id string, state function.State) error
	UpdateFunction(ctx context.Context, fn function.Function) error
	GetSecret(ctx context.Context, ws, name string) (store.Secret, error)
	GetCall(ctx context.Context, id string) (function.Call, error)
	PutCall(ctx context.Context, c function.Call) error
	AddInputs(ctx context.Context, c function.Call, ins []function.Input) error
	OpenInputs(ctx context.Context) ([]function.Input, error)
	FinishInputs(ctx context.Context, ins []function.Input) error
	CallOutputs(ctx context.Context, callID string, from int) ([]function.Input, error)
	AppendLogs(ctx context.Context, lines []store.LogLine) error
	Prune(ctx context.Context, before time.Time) (int64, error)
}

var _ Store = (*store.Store)(nil)

// Placer starts and stops containers on workers and carries inputs to them: the fleet.
type Placer interface {
	HasWorkers() bool
	FreeMemoryMiB() int
	Create(ctx context.Context, sb sandbox.Sandbox, fn *workerproto.FunctionRun, placed func(workerID string)) (sandbox.Sandbox, error)
	Terminate(ctx context.Context, id string, status sandbox.Status, reason string) (sandbox.Sandbox, error)
	SendInputs(workerID, containerID string, ins []workerproto.Input)
}

// Clock tells the time; tests set it.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Config configures an engine.
type Config struct {
	// DefaultIsolation is the runtime of functions that name none.
	DefaultIsolation string
	// HeartbeatTimeout is how long an ephemeral app (`with app.run()`) outlives its client's
	// last heartbeat; 0 means a minute.
	HeartbeatTimeout time.Duration
	Logger           *log.Logger
	Clock            Clock // nil is the real one
}

// Engine is the function engine.
type Engine struct {
	cfg    Config
	store  Store
	placer Placer
	clock  Clock
	log    *log.Logger

	mu         sync.Mutex
	fns        map[string]*fnState
	calls      map[string]*callState
	inputs     map[string]*queuedInput // open inputs: queued, delayed, held or running
	assignSeq  uint64
	containers map[string]*fnContainer // by container ID
	webIndex   map[string]string       // web endpoints: workspace and label → function ID (web.go)
	kick       chan struct{}
	logsWake   chan struct{} // closed and replaced when app logs are appended

	w writer // outputs and logs on their way to the store
}

// fnState is one function's queue and containers.
type fnState struct {
	fn         function.Function
	queue      []*queuedInput // ready to run, oldest first
	delayed    []*queuedInput // waiting out a retry backoff
	containers map[string]*fnContainer
	reason     string // the autoscaler's last decision, shown by `gust app`
	// Container start failures back off, so that a broken image or module is not restarted in
	// a tight loop (min_containers would otherwise do so).
	startFailures int
	retryStartAt  time.Time
	nextRun       time.Time // of its schedule
	// avgRun is a moving average of how long the runner takes over an input; it sets how many
	// inputs a container may hold ahead, and how many containers quick inputs need.
	avgRun time.Duration
	// lastBeat is the last heartbeat of the client of a `with app.run()` (fn.Heartbeat).
	lastBeat time.Time
	// webQueue are a web endpoint's requests waiting for a container slot (web.go).
	webQueue []*webWaiter
}

// New returns an engine; Load fills it from the store, Run drives it.
func New(st Store, placer Placer, cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = log.Default()
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = time.Minute
	}
	if cfg.DefaultIsolation == "" {
		cfg.DefaultIsolation = sandbox.IsolationRunc
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	e := &Engine{
		cfg: cfg, store: st, placer: placer, clock: cfg.Clock, log: cfg.Logger,
		fns: map[string]*fnState{}, calls: map[string]*callState{}, inputs: map[string]*queuedInput{},
		containers: map[string]*fnContainer{}, kick: make(chan struct{}, 1), logsWake: make(chan struct{}),
	}
	e.w.init(e)
	return e
}

func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Load restores functions and their open inputs after a restart: every input that was not
// done is queued again (at least once: one that was running when the server stopped runs
// again).
func (e *Engine) Load(ctx context.Context) error {
	fns, err := e.store.ListFunctions(ctx, "", true)
	if err != nil {
		return fmt.Errorf("loading functions: %w", err)
	}
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, fn := range fns {
		// After a restart, clients get a full timeout to beat again.
		e.fns[fn.ID] = &fnState{fn: fn, containers: map[string]*fnContainer{}, lastBeat: now}
		e.indexWebLocked(fn)
	}
	open, err := e.store.OpenInputs(ctx)
	if err != nil {
		return fmt.Errorf("loading open inputs: %w", err)
	}
	var dead []function.Input
	for _, in := range open {
		cs, err := e.callStateLocked(ctx, in.CallID)
		if err != nil {
			return fmt.Errorf("loading call %s: %w", in.CallID, err)
		}
		qi := newQueuedInput(in, cs.call)
		qi.attempts = in.Attempts
		e.inputs[in.ID] = qi
		cs.open++
		fs := e.fns[in.FunctionID]
		if fs == nil || cs.call.Cancelled {
			dead = append(dead, e.finishLocked(qi, function.InputTerminated, output{msg: "the function was stopped before this input ran"}))
			continue
		}
		fs.queue = append(fs.queue, qi)
	}
	if len(open) > 0 {
		e.log.Printf("functions: %d input(s) left open by the last run are queued again", len(open)-len(dead))
	}
	if err := e.store.FinishInputs(ctx, dead); err != nil {
		return fmt.Errorf("recording inputs of stopped functions: %w", err)
	}
	return nil
}

// outputRetention is how long outputs and app logs are kept.
const outputRetention = 7 * 24 * time.Hour

// Run is the engine's loop: it runs a step at every kick (new inputs, outputs, containers)
// and at least every 100 ms (retry backoffs, scaledown windows, schedules), until ctx ends.
func (e *Engine) Run(ctx context.Context) {
	go e.w.loop()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	gc := time.NewTicker(10 * time.Second)
	defer gc.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		case <-t.C:
		case <-gc.C:
			e.dropIdleCalls()
			if time.Since(lastPrune) > time.Hour {
				lastPrune = time.Now()
				e.prune(ctx)
			}
		}
		e.Step()
	}
}

func (e *Engine) prune(ctx context.Context) {
	n, err := e.store.Prune(ctx, e.clock.Now().Add(-outputRetention))
	if err != nil {
		e.log.Printf("functions: pruning old outputs: %v", err)
	} else if n > 0 {
		e.log.Printf("functions: forgot %d output(s), log line(s) and call(s) older than %v", n, outputRetention)
	}
}

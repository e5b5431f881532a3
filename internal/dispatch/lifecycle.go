package dispatch

import (
	"context"
	"time"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/lifecycle"
	"github.com/gust-run/gust/internal/workerproto"
)

// inputState is where an open input is. An input's outcome (success, failure, timeout,
// terminated) is function.InputStatus, recorded when it reaches done.
//
//	          ┌──────── requeue: not an attempt ────────┐
//	          ▼                                          │
//	queued ──assign──► running ──────────────────────────┤──► done
//	  │  ▲                ▲                              │
//	  │  │             slot freed                        │
//	  │  │                │                              │
//	  └──┼──prefetch──► held ────────────────────────────┘
//	     │                │ (running or held) fail with retries left
//	     └── backoff ── delayed ◄──┘
//
// An input is an attempt from the moment it is assigned (running or held); requeue gives
// that attempt back: its container ended before it began, or its worker was lost.
type inputState string

const (
	inputQueued  inputState = "queued"
	inputHeld    inputState = "held"    // sent ahead to a container's worker, waiting for a slot there
	inputRunning inputState = "running" // in one of its container's max_inputs slots
	inputDelayed inputState = "delayed" // waiting out a retry's backoff
	inputDone    inputState = "done"
)

var inputMachine = lifecycle.New("input", map[inputState][]inputState{
	inputQueued:  {inputRunning, inputHeld, inputDone},
	inputHeld:    {inputRunning, inputQueued, inputDelayed, inputDone},
	inputRunning: {inputQueued, inputDelayed, inputDone},
	inputDelayed: {inputQueued, inputDone},
})

// queuedInput is an open input as the engine tracks it.
type queuedInput struct {
	in        workerproto.Input
	callID    string
	index     int
	fnID      string
	state     inputState
	attempts  int
	notBefore time.Time    // while delayed
	container *fnContainer // while held or running
	seq       uint64       // order of assignment, so held inputs start in the order sent
	// cancelled: its output, when it comes, is dropped (it was cancelled while assigned).
	cancelled bool
	// queuedAt is when it last joined the queue (its creation, or its retry's release): the
	// operator's metrics show the oldest one's age.
	queuedAt time.Time
}

func newQueuedInput(in function.Input, call function.Call) *queuedInput {
	qi := &queuedInput{in: workerproto.Input{ID: in.ID, CallID: call.ID, Args: in.Args, Format: in.Format, Method: call.Method},
		callID: call.ID, index: in.Index, fnID: in.FunctionID, state: inputQueued, queuedAt: in.CreatedAt}
	if call.Params != nil {
		qi.in.Params = &workerproto.Payload{Data: call.Params.Data, Format: call.Params.Format}
	}
	return qi
}

// move makes a transition the machine allows; a refused one is a bug in the engine, which
// the engine logs and otherwise ignores (the input keeps its state).
func (e *Engine) move(qi *queuedInput, to inputState) bool {
	if err := inputMachine.Move(&qi.state, to); err != nil {
		e.log.Printf("functions: input %s: %v", qi.in.ID, err)
		return false
	}
	return true
}

// assign gives a queued input to a container, into a free slot (running) or ahead (held).
// It is an attempt.
func (e *Engine) assign(qi *queuedInput, c *fnContainer, to inputState) {
	if !e.move(qi, to) {
		return
	}
	e.assignSeq++
	qi.seq = e.assignSeq
	qi.attempts++
	qi.container = c
	c.inflight[qi.in.ID] = qi
}

// unassign takes an input off its container.
func unassign(qi *queuedInput) {
	if qi.container != nil {
		delete(qi.container.inflight, qi.in.ID)
		qi.container = nil
	}
}

// requeue puts an assigned input back at the front of its queue, uncounted: not an attempt.
func (e *Engine) requeue(fs *fnState, qi *queuedInput) {
	if !e.move(qi, inputQueued) {
		return
	}
	unassign(qi)
	qi.attempts--
	fs.queue = append([]*queuedInput{qi}, fs.queue...)
}

// startHeld moves the oldest held input of a container into the slot an output freed, as the
// worker does.
func (e *Engine) startHeld(c *fnContainer) {
	var next *queuedInput
	for _, qi := range c.inflight {
		if qi.state == inputHeld && (next == nil || qi.seq < next.seq) {
			next = qi
		}
	}
	if next != nil {
		e.move(next, inputRunning)
	}
}

// containerState is a function container's life on the server.
//
//	starting ──► ready ──► draining ──► gone
//	    │                     ▲          ▲
//	    └─────────────────────┴──────────┘
//
// starting: placed, its runner not yet importing the code; ready: takes inputs; draining:
// being stopped (scaled down, timed out, its function stopped), takes nothing new; gone: it
// ended, and its inputs were settled.
type containerState string

const (
	containerStarting containerState = "starting"
	containerReady    containerState = "ready"
	containerDraining containerState = "draining"
	containerGone     containerState = "gone"
)

var containerMachine = lifecycle.New("function container", map[containerState][]containerState{
	containerStarting: {containerReady, containerDraining, containerGone},
	containerReady:    {containerDraining, containerGone},
	containerDraining: {containerGone},
})

// fnContainer is one container of a function.
type fnContainer struct {
	id        string
	fnID      string
	workerID  string
	state     containerState
	inflight  map[string]*queuedInput // held and running
	web       int                     // web requests running in it (web.go)
	idleSince time.Time
	// calls: its inputs have called functions. It is held no inputs ahead: one of its
	// inputs blocked on a call would hold, unstarted, the very input it waits for (a function
	// calling itself, a method calling another of its class), and nothing would run it.
	calls bool
	// cancel ends its start (Placer.Create): a container drained while it starts, above all
	// one waiting for GPUs that other containers hold, stops waiting.
	cancel context.CancelFunc
}

// drain stops sending a container inputs; it reports whether it was not draining already.
func (e *Engine) drain(c *fnContainer) bool {
	if !containerMachine.Can(c.state, containerDraining) {
		return false
	}
	if c.state == containerStarting && c.cancel != nil {
		c.cancel()
	}
	c.state = containerDraining
	return true
}

// taking reports whether a container takes inputs.
func (c *fnContainer) taking() bool { return c.state == containerReady }

// live reports whether a container counts toward its function's containers.
func (c *fnContainer) live() bool { return c.state == containerStarting || c.state == containerReady }

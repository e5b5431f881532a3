package dispatch

import (
	"context"
	"sort"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
)

// Web endpoints' requests are inputs too, as far as scaling goes: each holds one of a
// container's max_inputs slots (@concurrent) while it runs, so that the autoscaler counts it
// (running, or waiting for a slot like a queued input) and scales from zero for it, and an
// idle container's scaledown_window starts when its last request ends. Requests do not pass
// through the queue: the ingress proxies them to the container's port itself.

// WebSlot is a slot in a ready container of a web endpoint, held while one request runs.
type WebSlot struct {
	WorkerID, ContainerID string
	e                     *Engine
	c                     *fnContainer
	fnID                  string
}

// webWaiter is a request waiting for a slot.
type webWaiter struct {
	ch chan webGrant // buffered: one grant
}

type webGrant struct {
	slot *WebSlot
	err  error
}

// indexWebLocked makes a newly published web endpoint the one its label finds (the store
// made sure that no other active function holds the label).
func (e *Engine) indexWebLocked(fn function.Function) {
	if fn.Spec.Web == nil || fn.VariantOf != "" {
		return
	}
	if e.webIndex == nil {
		e.webIndex = map[string]string{}
	}
	e.webIndex[fn.WorkspaceID+"\x00"+fn.Spec.Web.Label] = fn.ID
}

// WebFunction finds the active web endpoint with a label in a workspace.
func (e *Engine) WebFunction(workspaceID, label string) (function.Function, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if fs := e.fns[e.webIndex[workspaceID+"\x00"+label]]; fs != nil && fs.fn.State == function.StateActive {
		return fs.fn, true
	}
	return function.Function{}, false
}

// AcquireWeb waits for a free slot in a ready container of a function (starting one when
// none has a slot) until ctx ends. The caller must Release the slot.
func (e *Engine) AcquireWeb(ctx context.Context, fnID string) (*WebSlot, error) {
	e.mu.Lock()
	fs := e.fns[fnID]
	if fs == nil || fs.fn.State == function.StateStopped {
		e.mu.Unlock()
		return nil, errdefs.NotFound("the web endpoint's function %s was stopped", fnID)
	}
	if len(fs.webQueue) == 0 {
		if s := e.webSlotLocked(fs); s != nil {
			e.mu.Unlock()
			return s, nil
		}
	}
	w := &webWaiter{ch: make(chan webGrant, 1)}
	fs.webQueue = append(fs.webQueue, w)
	e.mu.Unlock()
	e.wake()
	select {
	case g := <-w.ch:
		return g.slot, g.err
	case <-ctx.Done():
	}
	e.mu.Lock()
	for i, x := range fs.webQueue {
		if x == w {
			fs.webQueue = append(fs.webQueue[:i], fs.webQueue[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	select {
	case g := <-w.ch: // granted as it gave up
		if g.slot != nil {
			g.slot.Release()
		}
	default:
	}
	return nil, ctx.Err()
}

// webSlotLocked takes a slot in the least loaded ready container with one free, or nil.
func (e *Engine) webSlotLocked(fs *fnState) *WebSlot {
	var best *fnContainer
	for _, c := range fs.containers {
		if c.taking() && c.busy() < fs.fn.Spec.MaxInputs && (best == nil || c.busy() < best.busy()) {
			best = c
		}
	}
	if best == nil {
		return nil
	}
	best.web++
	return &WebSlot{WorkerID: best.workerID, ContainerID: best.id, e: e, c: best, fnID: fs.fn.ID}
}

// fillWeb grants waiting requests the free slots of ready containers, oldest first.
func (e *Engine) fillWeb(fs *fnState) {
	for len(fs.webQueue) > 0 {
		s := e.webSlotLocked(fs)
		if s == nil {
			return
		}
		w := fs.webQueue[0]
		fs.webQueue = fs.webQueue[1:]
		w.ch <- webGrant{slot: s}
	}
}

// failWebLocked answers every waiting request of a function with an error (its containers
// cannot start).
func failWebLocked(fs *fnState, err error) {
	for _, w := range fs.webQueue {
		w.ch <- webGrant{err: err}
	}
	fs.webQueue = nil
}

// Release gives the slot back; its container's scaledown window starts when it is idle.
func (s *WebSlot) Release() {
	e := s.e
	if e == nil { // not the engine's (a test's)
		return
	}
	e.mu.Lock()
	if s.c != nil {
		s.c.web--
		if s.c.busy() == 0 {
			s.c.idleSince = e.clock.Now()
		}
		s.c = nil
		if fs := e.fns[s.fnID]; fs != nil {
			e.fillWeb(fs) // a waiting request takes the slot at once
		}
	}
	e.mu.Unlock()
	// No wake: the loop's next tick sees the idle container soon enough for its scaledown
	// window, and a step per request would cost every function a turn of the loop.
}

// busy is how many inputs and web requests a container holds.
func (c *fnContainer) busy() int { return len(c.inflight) + c.web }

// byBusy sorts containers least loaded first.
func byBusy(cs []*fnContainer) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].busy() < cs[j].busy() })
}

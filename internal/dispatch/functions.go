package dispatch

import (
	"context"
	"fmt"
	"sync"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/wire"
)

// Publish starts running newly published functions; replaced names functions a redeploy took
// the place of (the store has recorded both).
func (e *Engine) Publish(fns []function.Function, replaced []string) {
	now := e.clock.Now()
	e.mu.Lock()
	for _, id := range replaced {
		if fs := e.fns[id]; fs != nil {
			if err := function.StateMachine.Move(&fs.fn.State, function.StateReplaced); err != nil {
				e.log.Printf("functions: %s: %v", id, err)
			}
		}
	}
	for _, fn := range fns {
		e.fns[fn.ID] = &fnState{fn: fn, containers: map[string]*fnContainer{}, lastBeat: now}
		e.indexWebLocked(fn)
	}
	e.mu.Unlock()
	e.wake()
}

// Active returns a function that takes calls: 404 for an unknown one, 409 for one whose app
// was stopped.
func (e *Engine) Active(ctx context.Context, id string) (function.Function, error) {
	e.mu.Lock()
	fs := e.fns[id]
	var fn function.Function
	if fs != nil {
		fn = fs.fn
	}
	e.mu.Unlock()
	if fs != nil {
		return fn, nil
	}
	fn, err := e.store.GetFunction(ctx, id)
	if err != nil {
		return fn, err
	}
	return fn, errdefs.Conflict("function %s (%s) is %s: its app was stopped; run or deploy the app again", fn.Name, fn.ID, fn.State)
}

// AutoscalerPatch changes a running function's scaling bounds (Modal's
// Function.update_autoscaler); nil fields keep their values.
type AutoscalerPatch struct {
	MinContainers    *int
	MaxContainers    *int
	BufferContainers *int
	ScaledownWindow  *float64 // seconds
}

// UpdateAutoscaler applies a patch, validated against the largest worker, and records it.
func (e *Engine) UpdateAutoscaler(ctx context.Context, fnID string, p AutoscalerPatch, hostCPU float64, hostMemMiB int) (function.Function, error) {
	e.mu.Lock()
	fs := e.fns[fnID]
	var sp function.Spec
	if fs != nil {
		sp = fs.fn.Spec
	}
	e.mu.Unlock()
	if fs == nil {
		return function.Function{}, errdefs.Conflict("function %s is stopped: its app was stopped; run or deploy the app again", fnID)
	}
	if p.MinContainers != nil {
		sp.MinContainers = *p.MinContainers
	}
	if p.MaxContainers != nil {
		sp.MaxContainers = p.MaxContainers
	}
	if p.BufferContainers != nil {
		sp.BufferContainers = *p.BufferContainers
	}
	if p.ScaledownWindow != nil {
		sp.ScaledownWindow = wire.Seconds(*p.ScaledownWindow)
	}
	if err := sp.Validate(hostCPU, hostMemMiB); err != nil {
		return function.Function{}, err
	}
	e.mu.Lock()
	fs.fn.Spec = sp
	fn := fs.fn
	e.mu.Unlock()
	if err := e.store.UpdateFunction(ctx, fn); err != nil {
		return fn, fmt.Errorf("recording the autoscaler of %s: %w", fn.Name, err)
	}
	e.wake()
	return fn, nil
}

// Heartbeat keeps a `with app.run()` alive: its client is still there. fnIDs empty means every
// function of the app. It returns how many functions it kept alive.
func (e *Engine) Heartbeat(appID string, fnIDs []string) int {
	want := map[string]bool{}
	for _, id := range fnIDs {
		want[id] = true
	}
	now := e.clock.Now()
	alive := 0
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, fs := range e.fns {
		if fs.fn.AppID == appID && (len(want) == 0 || want[fs.fn.ID] || want[fs.fn.VariantOf]) {
			fs.lastBeat = now
			alive++
		}
	}
	return alive
}

// StopFunctions stops functions for good, in the store first: queued and running inputs end
// terminated, and their containers go.
func (e *Engine) StopFunctions(ids []string, why string) error {
	for _, id := range ids {
		if err := e.store.SetFunctionState(context.Background(), id, function.StateStopped); err != nil {
			return fmt.Errorf("stopping function %s: %w", id, err)
		}
	}
	var done []function.Input
	var stops []string
	e.mu.Lock()
	for _, id := range ids {
		fs := e.fns[id]
		if fs == nil {
			continue
		}
		e.markStopped(fs)
		for _, qi := range append(fs.queue, fs.delayed...) {
			done = append(done, e.finishLocked(qi, function.InputTerminated, output{msg: why}))
		}
		fs.queue, fs.delayed = nil, nil
		failWebLocked(fs, errdefs.NotFound("the web endpoint's app was stopped: %s", why))
		for _, c := range fs.containers {
			for _, qi := range c.inflight {
				if !qi.cancelled {
					done = append(done, e.cancelLocked(qi, why))
				}
			}
			if e.drain(c) {
				stops = append(stops, c.id)
			}
		}
		fs.reason = "stopped: " + why
		delete(e.fns, id)
	}
	e.mu.Unlock()
	e.w.persist(done, nil)
	var wg sync.WaitGroup
	for _, id := range stops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.terminate(id, why)
		}()
	}
	wg.Wait()
	return nil
}

// markStopped moves a function to stopped, unless it is there already.
func (e *Engine) markStopped(fs *fnState) {
	if fs.fn.State == function.StateStopped {
		return
	}
	if err := function.StateMachine.Move(&fs.fn.State, function.StateStopped); err != nil {
		e.log.Printf("functions: %s: %v", fs.fn.ID, err)
	}
}

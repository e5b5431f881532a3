package dispatch

import (
	"context"
	"fmt"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/workerproto"
)

// output is how an input ended.
type output struct {
	data      []byte
	format    string
	msg       string
	traceback string
	exc       []byte
}

// finishLocked ends an input: its output joins the call's stream, and is returned for the
// store. An input cancelled while its container runs it stays in that container's slot until
// its output comes (and is dropped).
func (e *Engine) finishLocked(qi *queuedInput, status function.InputStatus, out output) function.Input {
	e.move(qi, inputDone)
	delete(e.inputs, qi.in.ID)
	now := e.clock.Now().UTC()
	if out.format == "" {
		out.format = qi.in.Format
	}
	in := function.Input{ID: qi.in.ID, CallID: qi.callID, Index: qi.index, Status: status, Attempts: qi.attempts,
		Result: out.data, Format: out.format, Error: out.msg, Traceback: out.traceback, Exc: out.exc, DoneAt: &now, Seq: -1}
	if cs := e.calls[qi.callID]; cs != nil {
		in.Seq = cs.nextSeq
		cs.nextSeq++
		cs.open--
		cs.appendOutput(in)
	}
	return in
}

// failLocked retries a failed input if its retries allow, or finishes it.
func (e *Engine) failLocked(fs *fnState, qi *queuedInput, status function.InputStatus, out output) *function.Input {
	if fs != nil && fs.fn.State != function.StateStopped && qi.attempts <= fs.fn.Spec.Retries.MaxRetries {
		if e.move(qi, inputDelayed) {
			unassign(qi)
			qi.notBefore = e.clock.Now().Add(fs.fn.Spec.Retries.Delay(qi.attempts))
			fs.delayed = append(fs.delayed, qi)
			return nil
		}
	}
	in := e.finishLocked(qi, status, out)
	return &in
}

// cancelLocked ends an input that is open, whatever its state: a running one's output, when it
// comes, is dropped.
func (e *Engine) cancelLocked(qi *queuedInput, why string) function.Input {
	qi.cancelled = true
	return e.finishLocked(qi, function.InputTerminated, output{msg: why})
}

// Enqueue records a call's new inputs and queues them; it returns the index of the first.
func (e *Engine) Enqueue(ctx context.Context, callID string, args []workerproto.Input) (first int, err error) {
	cs, err := e.callState(ctx, callID)
	if err != nil {
		return 0, err
	}
	cs.addMu.Lock()
	defer cs.addMu.Unlock()
	e.mu.Lock()
	call := cs.call
	fs := e.fns[call.FunctionID]
	e.mu.Unlock()
	if call.Kind != CallMap && call.Count > 0 {
		return 0, errdefs.Invalid("inputs can be added only to map calls; %s is a %s call", call.ID, call.Kind)
	}
	if fs == nil {
		return 0, errdefs.Conflict("the function of call %s was stopped", call.ID)
	}
	first = call.Count
	call.Count += len(args)
	now := e.clock.Now().UTC()
	ins := make([]function.Input, len(args))
	for i, a := range args {
		ins[i] = function.Input{ID: ids.New(ids.Input), CallID: call.ID, FunctionID: call.FunctionID, Index: first + i,
			Args: a.Args, Format: a.Format, Status: function.InputPending, Seq: -1, CreatedAt: now}
	}
	if err := e.store.AddInputs(ctx, call, ins); err != nil {
		return 0, fmt.Errorf("recording the inputs of call %s: %w", call.ID, err)
	}
	e.mu.Lock()
	cs.call.Count = call.Count
	cs.open += len(ins)
	for _, in := range ins {
		qi := newQueuedInput(in, cs.call)
		e.inputs[in.ID] = qi
		if cs.call.Cancelled || fs.fn.State == function.StateStopped {
			e.finishLocked(qi, function.InputTerminated, output{msg: "the call was cancelled or its function stopped"})
			continue
		}
		fs.queue = append(fs.queue, qi)
	}
	e.mu.Unlock()
	e.wake()
	return first, nil
}

// Cancel ends a call's inputs that are not done: queued ones at once, running ones too (their
// outputs are dropped), and with terminateContainers the containers running them. It returns
// how many it ended.
func (e *Engine) Cancel(ctx context.Context, callID string, terminateContainers bool) (int, error) {
	cs, err := e.callState(ctx, callID)
	if err != nil {
		return 0, err
	}
	const why = "the call was cancelled"
	var done []function.Input
	var kill []string
	e.mu.Lock()
	cs.call.Cancelled = true
	call := cs.call
	if fs := e.fns[call.FunctionID]; fs != nil {
		keep := func(list []*queuedInput) []*queuedInput {
			out := list[:0]
			for _, qi := range list {
				if qi.callID == call.ID {
					done = append(done, e.cancelLocked(qi, why))
				} else {
					out = append(out, qi)
				}
			}
			return out
		}
		fs.queue, fs.delayed = keep(fs.queue), keep(fs.delayed)
		for _, c := range fs.containers {
			for _, qi := range c.inflight {
				if qi.callID != call.ID {
					continue
				}
				done = append(done, e.cancelLocked(qi, why))
				if terminateContainers && e.drain(c) {
					kill = append(kill, c.id)
				}
			}
		}
	}
	e.mu.Unlock()
	if err := e.store.PutCall(ctx, call); err != nil {
		return 0, fmt.Errorf("recording the cancel of call %s: %w", call.ID, err)
	}
	e.w.persist(done, nil)
	for _, id := range kill {
		go e.terminate(id, why)
	}
	return len(done), nil
}

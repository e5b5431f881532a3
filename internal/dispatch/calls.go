package dispatch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/workerproto"
)

// Call kinds.
const (
	CallRemote   = "remote"
	CallSpawn    = "spawn"
	CallMap      = "map"
	CallSchedule = "schedule"
)

// callState is a call's stream: pre-encoded NDJSON lines (logs, items, outputs) that readers
// follow, and where each output sits among them.
type callState struct {
	call      function.Call
	addMu     sync.Mutex // serialises adding inputs
	lines     [][]byte
	outputPos []int
	nextSeq   int
	open      int // inputs not yet done
	changed   chan struct{}
	lastUsed  time.Time
}

// outputLine is an output as the call stream shows it.
type outputLine struct {
	Index     int                  `json:"index"`
	Seq       int                  `json:"seq"`
	Status    function.InputStatus `json:"status"`
	Data      []byte               `json:"data"`
	Format    string               `json:"format"`
	Error     string               `json:"error,omitempty"`
	Traceback string               `json:"traceback,omitempty"`
	Exc       []byte               `json:"exc"`
}

func (cs *callState) append(line []byte) {
	cs.lines = append(cs.lines, line)
	close(cs.changed)
	cs.changed = make(chan struct{})
}

// appendJSON adds one line; the values are the engine's own and always encode.
func (cs *callState) appendJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("dispatch: encoding a call stream line: " + err.Error())
	}
	cs.append(append(b, '\n'))
}

func (cs *callState) appendOutput(in function.Input) {
	cs.outputPos = append(cs.outputPos, len(cs.lines))
	cs.appendJSON(map[string]outputLine{"output": {Index: in.Index, Seq: in.Seq, Status: in.Status, Data: in.Result,
		Format: in.Format, Error: in.Error, Traceback: in.Traceback, Exc: in.Exc}})
}

// NewCall opens a call of a function; Enqueue gives it inputs.
func (e *Engine) NewCall(fn function.Function, kind, method string, params *function.Payload, createdBy string) function.Call {
	call := function.Call{ID: ids.New(ids.FunctionCall), FunctionID: fn.ID, WorkspaceID: fn.WorkspaceID, CreatedBy: createdBy,
		Kind: kind, Method: method, Params: params, CreatedAt: e.clock.Now().UTC()}
	cs := &callState{call: call, changed: make(chan struct{}), lastUsed: e.clock.Now()}
	e.mu.Lock()
	e.calls[call.ID] = cs
	if c := e.containers[createdBy]; c != nil {
		c.calls = true // before the call's inputs are queued, so none is held ahead on it
	}
	e.mu.Unlock()
	return call
}

// callStateLocked returns a call's stream, loading a call from the store the first time it
// is asked for (after a restart, or once it was dropped from memory).
func (e *Engine) callStateLocked(ctx context.Context, id string) (*callState, error) {
	if cs := e.calls[id]; cs != nil {
		cs.lastUsed = e.clock.Now()
		return cs, nil
	}
	call, err := e.store.GetCall(ctx, id)
	if err != nil {
		return nil, err
	}
	cs := &callState{call: call, changed: make(chan struct{}), lastUsed: e.clock.Now()}
	outs, err := e.store.CallOutputs(ctx, id, 0)
	if err != nil {
		return nil, err
	}
	for _, in := range outs {
		cs.appendOutput(in)
		cs.nextSeq = max(cs.nextSeq, in.Seq+1)
	}
	e.calls[id] = cs
	return cs, nil
}

func (e *Engine) callState(ctx context.Context, id string) (*callState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.callStateLocked(ctx, id)
}

// CallInfo is a call's progress.
type CallInfo struct {
	Call function.Call
	Done int // outputs so far
}

// Status is "pending", "done" or "cancelled".
func (c CallInfo) Status() string {
	switch {
	case c.Call.Cancelled:
		return "cancelled"
	case c.Done >= c.Call.Count:
		return "done"
	}
	return "pending"
}

// Call returns a call and how far it is.
func (e *Engine) Call(ctx context.Context, id string) (CallInfo, error) {
	cs, err := e.callState(ctx, id)
	if err != nil {
		return CallInfo{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return CallInfo{Call: cs.call, Done: len(cs.outputPos)}, nil
}

// Stream writes a call's lines from its from-th output on, until `until` outputs (or every
// input it has; until < 0) have been sent, or timeout passes.
func (e *Engine) Stream(ctx context.Context, w io.Writer, callID string, from, until int, timeout time.Duration) error {
	cs, err := e.callState(ctx, callID)
	if err != nil {
		return err
	}
	flusher, _ := w.(http.Flusher)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	e.mu.Lock()
	pos := 0
	if from > 0 {
		if from <= len(cs.outputPos) {
			pos = cs.outputPos[from-1] + 1
		} else {
			pos = len(cs.lines)
		}
	}
	e.mu.Unlock()
	for {
		e.mu.Lock()
		lines := cs.lines[pos:]
		pos = len(cs.lines)
		sent := sort.SearchInts(cs.outputPos, pos)
		want := cs.call.Count
		if until >= 0 {
			want = until
		}
		changed := cs.changed
		cs.lastUsed = e.clock.Now()
		e.mu.Unlock()
		for _, l := range lines {
			if _, err := w.Write(l); err != nil {
				return nil // the reader went away
			}
		}
		if flusher != nil && len(lines) > 0 {
			flusher.Flush()
		}
		if sent >= want && (want > 0 || until == 0) {
			return nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			_, err := w.Write([]byte("{\"timeout\":true}\n"))
			if err != nil {
				return nil // the reader went away
			}
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// dropIdleCalls forgets the streams of finished calls nobody has read for half a minute, so
// that a busy server does not hold every call's lines; a late reader gets the outputs from the
// store (without the logs, which the app's logs keep).
func (e *Engine) dropIdleCalls() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	for id, cs := range e.calls {
		if cs.open == 0 && now.Sub(cs.lastUsed) > 30*time.Second {
			delete(e.calls, id)
		}
	}
}

// emptyPickledArgs is pickle.dumps(((), {}), protocol=4): a call with no arguments.
var emptyPickledArgs = []byte("\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00)}\x94\x86\x94.")

// fireSchedule makes the input of one scheduled run: no arguments.
func (e *Engine) fireSchedule(fn function.Function) {
	call := e.NewCall(fn, CallSchedule, "", nil, "")
	if _, err := e.Enqueue(context.Background(), call.ID, []workerproto.Input{{Args: emptyPickledArgs, Format: function.FormatPickle}}); err != nil {
		e.log.Printf("schedule of %s: %v", fn.Name, err)
	}
}

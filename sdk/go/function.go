package gust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Errors that a function's output may end in, for errors.Is.
var (
	// ErrFunctionTimeout: the input ran past the function's timeout (after its retries).
	ErrFunctionTimeout = errors.New("gust: the function timed out")
	// ErrInputCancelled: the call was cancelled, or its app stopped, before the input ran to
	// its end.
	ErrInputCancelled = errors.New("gust: the input was cancelled")
	// ErrCallTimeout: FunctionCall.Get's timeout passed before the output was ready. The call
	// goes on; Get may be called again.
	ErrCallTimeout = errors.New("gust: the call's output was not ready within the timeout")
)

// RemoteError is the exception a function raised (or its container crashing), after all of
// its retries.
type RemoteError struct {
	// Type is the exception's class name, e.g. "ValueError"; "" when the server gave none.
	Type string
	// Message is the exception's message.
	Message string
	// Traceback is the remote Python traceback, "" when none was kept.
	Traceback string
}

func (e *RemoteError) Error() string {
	switch {
	case e.Type == "":
		return "remote function failed: " + e.Message
	case e.Message == "":
		return "remote function raised " + e.Type
	}
	return "remote function raised " + e.Type + ": " + e.Message
}

// newRemoteError splits "ValueError: bad" into the exception's type and message.
func newRemoteError(text, traceback string) *RemoteError {
	e := &RemoteError{Message: text, Traceback: traceback}
	typ, msg, ok := strings.Cut(text, ": ")
	if !ok {
		typ, msg = strings.TrimSuffix(text, ":"), ""
	}
	if isExceptionName(typ) {
		e.Type, e.Message = typ, msg
	}
	return e
}

// isExceptionName reports whether s looks like a (dotted) Python class name.
func isExceptionName(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" || (part[0] >= '0' && part[0] <= '9') {
			return false
		}
		for _, r := range part {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// Payload formats.
const (
	FormatJSON   = "json"   // what this SDK sends and reads
	FormatPickle = "pickle" // the Python SDK's
)

// FunctionStats is what the autoscaler knows of a function.
type FunctionStats struct {
	Pending        int    `json:"pending"`    // inputs waiting for a container
	Running        int    `json:"running"`    // inputs running
	Containers     int    `json:"containers"` // running or starting, not stopping
	Starting       int    `json:"starting"`   // of Containers, those not yet ready
	IdleContainers int    `json:"idle_containers"`
	Reason         string `json:"reason"` // why the autoscaler last chose its number of containers
}

// FunctionMethod describes one method of a class.
type FunctionMethod struct {
	IsGenerator bool `json:"is_generator"`
}

// Function is a published function (or class) of an app: a deployed one found with
// FunctionFromName, or one of an app's functions from GetApp. Its exported fields are its
// state as last fetched; Refresh updates them.
//
// Calls use the "json" payload format: arguments must be JSON-serialisable, and the function
// must return a JSON-serialisable value.
type Function struct {
	ID          string                    `json:"function_id"`
	AppID       string                    `json:"app_id"`
	Name        string                    `json:"name"`
	Kind        string                    `json:"kind"`  // "function" or "class"
	Mode        string                    `json:"mode"`  // "deployed" or "ephemeral"
	State       string                    `json:"state"` // "active" or "stopped"
	Methods     map[string]FunctionMethod `json:"methods"`
	IsGenerator bool                      `json:"is_generator"`
	Spec        json.RawMessage           `json:"spec"`                 // the FunctionSpec as published, without secret values
	VariantOf   string                    `json:"variant_of,omitempty"` // WithOptions: the function it was made from
	Stats       FunctionStats             `json:"stats"`
	WebURL      string                    `json:"web_url,omitempty"` // a web endpoint's URL (Modal's get_web_url)
	CreatedAt   time.Time                 `json:"created_at"`

	// Stdout and Stderr receive what the function prints while this SDK waits for its
	// outputs; nil means os.Stdout and os.Stderr. Set io.Discard to drop it.
	Stdout, Stderr io.Writer `json:"-"`

	method string         // a class's method to call, set by Method
	params map[string]any // a class's parameters, set by Method
	c      *Client
}

// FunctionFromName finds a deployed function (or class) of the app called appName. A missing
// one is an error satisfying errors.Is(err, ErrNotFound).
func (c *Client) FunctionFromName(ctx context.Context, appName, name string) (*Function, error) {
	f := &Function{c: c}
	body := map[string]string{"app_name": appName, "name": name}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/functions/lookup", json: body}, f); err != nil {
		return nil, fmt.Errorf("look up function %q of app %q: %w", name, appName, err)
	}
	return f, nil
}

// Function fetches a function by id.
func (c *Client) Function(ctx context.Context, id string) (*Function, error) {
	f := &Function{ID: id, c: c}
	if err := f.Refresh(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Refresh fetches the function's state and stats again.
func (f *Function) Refresh(ctx context.Context) error {
	w := &Function{}
	if err := f.c.call(ctx, request{method: http.MethodGet, path: "/v1/functions/" + pathEscape(f.ID)}, w); err != nil {
		return fmt.Errorf("function %s: %w", f.ID, err)
	}
	w.Stdout, w.Stderr, w.method, w.params, w.c = f.Stdout, f.Stderr, f.method, f.params, f.c
	*f = *w
	return nil
}

// Method returns the class's method called name, bound to the class parameters params (nil
// for none): Model(size=3).predict in Python is f.Method("predict", map[string]any{"size": 3}).
func (f *Function) Method(name string, params map[string]any) *Function {
	m := *f
	m.method, m.params = name, params
	return &m
}

// FunctionOptions are the options WithOptions changes; nil and empty fields keep the
// function's values.
type FunctionOptions struct {
	CPU              *float64          `json:"cpu,omitempty"`
	CPULimit         *float64          `json:"cpu_limit,omitempty"`
	MemoryMiB        *int              `json:"memory,omitempty"`
	GPU              any               `json:"gpu,omitempty"` // "H100", "A100-80GB:2" or a list of such
	TimeoutSeconds   *float64          `json:"timeout,omitempty"`
	Env              map[string]string `json:"env,omitempty"` // merged over the function's
	Secrets          []string          `json:"-"`             // stored secrets' names, added to the function's
	MinContainers    *int              `json:"min_containers,omitempty"`
	MaxContainers    *int              `json:"max_containers,omitempty"`
	BufferContainers *int              `json:"buffer_containers,omitempty"`
	ScaledownWindow  *float64          `json:"scaledown_window,omitempty"` // seconds
	MaxInputs        *int              `json:"max_inputs,omitempty"`
	TargetInputs     *int              `json:"target_inputs,omitempty"`
}

// WithOptions returns the function (or class) with some options changed, as Modal's
// Function.with_options and Cls.with_options: a variant with containers of its own, made on
// the server (the same options give the same variant). Calls through it run with those
// options; f is unchanged. A Method of f keeps its method and parameters.
func (f *Function) WithOptions(ctx context.Context, opts FunctionOptions) (*Function, error) {
	type wireOptions struct {
		FunctionOptions
		Secrets []map[string]string `json:"secrets,omitempty"`
	}
	o := wireOptions{FunctionOptions: opts}
	for _, name := range opts.Secrets {
		o.Secrets = append(o.Secrets, map[string]string{"name": name})
	}
	v := &Function{}
	if err := f.c.call(ctx, request{method: http.MethodPost, path: "/v1/functions/" + pathEscape(f.ID) + "/variants",
		json: map[string]any{"options": o}}, v); err != nil {
		return nil, fmt.Errorf("function %s with options: %w", f.label(), err)
	}
	v.Stdout, v.Stderr, v.method, v.params, v.c = f.Stdout, f.Stderr, f.method, f.params, f.c
	return v, nil
}

func (f *Function) label() string {
	if f.method != "" {
		return f.Name + "." + f.method
	}
	return f.Name
}

// Remote calls the function with positional arguments, waits for its result and returns it
// decoded from JSON as encoding/json decodes into an any (numbers are float64). What the
// function prints goes to f.Stdout and f.Stderr.
//
// The function raising is a *RemoteError; an input past the function's timeout matches
// errors.Is(err, ErrFunctionTimeout); a cancelled call or stopped app, ErrInputCancelled.
func (f *Function) Remote(ctx context.Context, args ...any) (any, error) {
	var out any
	if err := f.RemoteWith(ctx, args, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RemoteWith calls the function with positional and keyword arguments and decodes its result
// into out (a pointer, as for json.Unmarshal; nil drops the result). Errors are as Remote's.
func (f *Function) RemoteWith(ctx context.Context, args []any, kwargs map[string]any, out any) error {
	cs, err := f.start(ctx, "remote", [][]any{args}, kwargs, true)
	if err != nil {
		return err
	}
	o, err := cs.next(ctx)
	if err != nil {
		if ctx.Err() != nil && cs.callID != "" {
			// The caller gave up: so does the input, rather than run for nobody.
			f.cancelAbandoned(cs.callID)
		}
		return err
	}
	return o.decode(out)
}

// cancelAbandoned cancels a call whose caller's context ended, in the background and briefly.
func (f *Function) cancelAbandoned(callID string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fc := &FunctionCall{ID: callID, FunctionID: f.ID, c: f.c}
		fc.Cancel(ctx, false)
	}()
}

// RemoteGen calls a generator function and yields what it yields, each item as raw JSON, then
// ends; an error (as Remote's) ends the sequence as its last element.
func (f *Function) RemoteGen(ctx context.Context, args []any, kwargs map[string]any) iter.Seq2[json.RawMessage, error] {
	return func(yield func(json.RawMessage, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // a consumer that stops early closes the stream
		cs, err := f.start(ctx, "remote", [][]any{args}, kwargs, true)
		if err != nil {
			yield(nil, err)
			return
		}
		stopped := false
		cs.onItem = func(it *itemLine) error {
			if stopped {
				return nil
			}
			if it.Format != FormatJSON {
				return fmt.Errorf("function %s yielded an item in format %q, which the Go SDK cannot read: call it from Python", f.label(), it.Format)
			}
			if !yield(json.RawMessage(it.Data), nil) {
				stopped = true
				return errStopped
			}
			return nil
		}
		o, err := cs.next(ctx)
		if stopped {
			return
		}
		if err == nil {
			err = o.err()
		}
		if err != nil {
			yield(nil, err)
		}
	}
}

// errStopped ends a stream whose consumer has stopped.
var errStopped = errors.New("stopped")

// Spawn starts the function with positional arguments and returns at once; FunctionCall.Get
// waits for the result.
func (f *Function) Spawn(ctx context.Context, args ...any) (*FunctionCall, error) {
	return f.SpawnWith(ctx, args, nil)
}

// SpawnWith is Spawn with keyword arguments.
func (f *Function) SpawnWith(ctx context.Context, args []any, kwargs map[string]any) (*FunctionCall, error) {
	cs, err := f.start(ctx, "spawn", [][]any{args}, kwargs, false)
	if err != nil {
		return nil, err
	}
	return &FunctionCall{ID: cs.callID, FunctionID: f.ID, Count: 1, Stdout: f.Stdout, Stderr: f.Stderr, c: f.c}, nil
}

// jsonArgs is the "json" payload of one input's arguments.
func jsonArgs(args []any, kwargs map[string]any) ([]byte, error) {
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"args": args, "kwargs": kwargs})
	if err != nil {
		return nil, fmt.Errorf("the arguments cannot be sent as JSON: %w", err)
	}
	return b, nil
}

// payload is a serialised value in the API: Data is base64 in JSON.
type payload struct {
	Data   []byte `json:"data,omitempty"`
	Args   []byte `json:"args,omitempty"`
	Format string `json:"format"`
}

// callInfo is the answer that starts a call.
type callInfo struct {
	CallID     string `json:"call_id"`
	FirstIndex int    `json:"first_index"`
	Count      int    `json:"count"`
}

// start makes a call. With stream, the returned callStream reads the call's answer.
func (f *Function) start(ctx context.Context, kind string, argSets [][]any, kwargs map[string]any, stream bool) (*callStream, error) {
	body := map[string]any{"kind": kind, "stream": stream}
	inputs := make([]payload, len(argSets))
	for i, a := range argSets {
		b, err := jsonArgs(a, kwargs)
		if err != nil {
			return nil, fmt.Errorf("call %s: %w", f.label(), err)
		}
		inputs[i] = payload{Args: b, Format: FormatJSON}
	}
	body["inputs"] = inputs
	if f.method != "" {
		body["method"] = f.method
		if f.params != nil {
			b, err := json.Marshal(f.params)
			if err != nil {
				return nil, fmt.Errorf("call %s: the class parameters cannot be sent as JSON: %w", f.label(), err)
			}
			body["params"] = payload{Data: b, Format: FormatJSON}
		}
	}
	r := request{method: http.MethodPost, path: "/v1/functions/" + pathEscape(f.ID) + "/calls", json: body}
	if !stream {
		var ci callInfo
		if err := f.c.call(ctx, r, &ci); err != nil {
			return nil, fmt.Errorf("call %s: %w", f.label(), err)
		}
		return &callStream{c: f.c, callID: ci.CallID, label: f.label()}, nil
	}
	resp, err := f.c.send(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", f.label(), err)
	}
	lr := newLineReader(resp.Body)
	var first callLine
	if err := lr.next(&first); err != nil || first.Call == nil || first.Call.CallID == "" {
		resp.Body.Close()
		if err == nil {
			if e := first.apiError(); e != nil {
				err = e
			} else {
				err = errors.New("the server's call stream did not start with a call line")
			}
		}
		return nil, fmt.Errorf("call %s: %w", f.label(), err)
	}
	return &callStream{c: f.c, callID: first.Call.CallID, label: f.label(), body: resp.Body, lr: lr,
		stdout: f.Stdout, stderr: f.Stderr}, nil
}

// FunctionCall is a call started with Spawn (or found with FunctionCallFromID).
type FunctionCall struct {
	ID         string
	FunctionID string
	Count      int    // inputs
	Done       int    // inputs with an output, as last fetched
	Status     string // "pending", "done" or "cancelled", as last fetched

	// Stdout and Stderr receive what the function prints while Get waits; nil means os.Stdout
	// and os.Stderr.
	Stdout, Stderr io.Writer

	c *Client
}

// FunctionCallFromID finds a call by id, e.g. one spawned by another process.
func (c *Client) FunctionCallFromID(ctx context.Context, id string) (*FunctionCall, error) {
	var w struct {
		ID         string `json:"call_id"`
		FunctionID string `json:"function_id"`
		Count      int    `json:"count"`
		Done       int    `json:"done"`
		Status     string `json:"status"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/calls/" + pathEscape(id)}, &w); err != nil {
		return nil, fmt.Errorf("function call %s: %w", id, err)
	}
	return &FunctionCall{ID: w.ID, FunctionID: w.FunctionID, Count: w.Count, Done: w.Done, Status: w.Status, c: c}, nil
}

// Get waits up to timeout (0: no limit) for the call's result and decodes it into out (a
// pointer; nil drops it). When timeout passes first, the error matches ErrCallTimeout and the
// call goes on. Other errors are as Function.Remote's.
func (fc *FunctionCall) Get(ctx context.Context, timeout time.Duration, out any) error {
	cs := &callStream{c: fc.c, callID: fc.ID, label: "call " + fc.ID, stdout: fc.Stdout, stderr: fc.Stderr}
	if timeout > 0 {
		cs.deadline = time.Now().Add(timeout)
	}
	o, err := cs.next(ctx)
	if err != nil {
		return err
	}
	return o.decode(out)
}

// Cancel cancels the call: its pending inputs end terminated. With terminateContainers, the
// containers running its inputs are stopped too.
func (fc *FunctionCall) Cancel(ctx context.Context, terminateContainers bool) error {
	body := map[string]bool{"terminate_containers": terminateContainers}
	if err := fc.c.call(ctx, request{method: http.MethodPost, path: "/v1/calls/" + pathEscape(fc.ID) + "/cancel", json: body}, nil); err != nil {
		return fmt.Errorf("cancel call %s: %w", fc.ID, err)
	}
	return nil
}

// callLine is one line of a call's stream.
type callLine struct {
	Call    *callInfo       `json:"call"`
	Log     *logLine        `json:"log"`
	Item    *itemLine       `json:"item"`
	Output  *outputLine     `json:"output"`
	Timeout bool            `json:"timeout"`
	Error   json.RawMessage `json:"error"`
}

func (l *callLine) apiError() *APIError {
	return (&streamLine{Error: l.Error}).apiError()
}

type logLine struct {
	Index  int    `json:"index"`
	Stream string `json:"stream"`
	Data   string `json:"data"`
}

type itemLine struct {
	Index  int    `json:"index"`
	Data   []byte `json:"data"`
	Format string `json:"format"`
}

type outputLine struct {
	Index     int    `json:"index"`
	Seq       int    `json:"seq"`
	Status    string `json:"status"`
	Data      []byte `json:"data"`
	Format    string `json:"format"`
	Error     string `json:"error"`
	Traceback string `json:"traceback"`

	label string
}

// err is the error an output stands for; nil for success.
func (o *outputLine) err() error {
	switch o.Status {
	case "success":
		return nil
	case "failure":
		return fmt.Errorf("%s: %w", o.label, newRemoteError(o.Error, o.Traceback))
	case "timeout":
		if o.Error != "" {
			return fmt.Errorf("%s: %w: %s", o.label, ErrFunctionTimeout, o.Error)
		}
		return fmt.Errorf("%s: %w", o.label, ErrFunctionTimeout)
	case "terminated":
		return fmt.Errorf("%s: %w", o.label, ErrInputCancelled)
	}
	return fmt.Errorf("%s: the server sent an output of unknown status %q", o.label, o.Status)
}

// decode decodes a successful output into out, or returns the output's error.
func (o *outputLine) decode(out any) error {
	if err := o.err(); err != nil {
		return err
	}
	if out == nil || o.Data == nil {
		return nil
	}
	if o.Format != FormatJSON {
		return fmt.Errorf("%s: the result is in format %q, which the Go SDK cannot read", o.label, o.Format)
	}
	if err := json.Unmarshal(o.Data, out); err != nil {
		return fmt.Errorf("%s: decoding the result: %w", o.label, err)
	}
	return nil
}

// callStream follows a call's stream: its outputs from the from-th, its logs and items.
type callStream struct {
	c        *Client
	callID   string
	label    string
	from     int       // outputs already read
	deadline time.Time // zero: none
	body     io.ReadCloser
	lr       *lineReader
	// The server sends a reopened stream's log and item lines again from the from-th output
	// on: seen counts those read since the last output, skip those still to pass over.
	seen, skip int

	stdout, stderr io.Writer
	onItem         func(*itemLine) error
}

// pollWait is how long one GET of a call's stream waits for outputs before the server ends it
// with {"timeout": true} and it is opened again.
const pollWait = 50 * time.Second

// next returns the call's next output, reading logs and items before it, and reopening the
// stream when it times out or breaks.
func (s *callStream) next(ctx context.Context) (*outputLine, error) {
	broken := 0
	for {
		if s.body == nil {
			if err := s.open(ctx); err != nil {
				return nil, err
			}
		}
		o, timedOut, err := s.read()
		if o != nil {
			s.from = o.Seq + 1
			o.label = s.label
			s.finish()
			return o, nil
		}
		s.body.Close()
		s.body, s.lr = nil, nil
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", s.label, ctx.Err())
		}
		if _, ok := errorsAsAPI(err); ok || errors.Is(err, errStopped) {
			return nil, fmt.Errorf("%s: %w", s.label, err)
		}
		var we *writeError
		if errors.As(err, &we) {
			return nil, fmt.Errorf("%s: %w", s.label, err)
		}
		if timedOut {
			broken = 0
		} else if broken++; broken > maxResumes {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("%s: the output stream broke %d times: %w", s.label, broken, err)
		}
		if !s.deadline.IsZero() && !time.Now().Before(s.deadline) {
			return nil, fmt.Errorf("%s: %w", s.label, ErrCallTimeout)
		}
		if !timedOut {
			select {
			case <-time.After(time.Duration(broken) * 100 * time.Millisecond):
			case <-ctx.Done():
				return nil, fmt.Errorf("%s: %w", s.label, ctx.Err())
			}
		}
	}
}

// finish reads the rest of the stream (which ends once every input has its output), writing
// any last logs, so that its connection is reused; then closes it. A server that keeps the
// stream open is cut off after a second.
func (s *callStream) finish() {
	body, lr := s.body, s.lr
	s.body, s.lr = nil, nil
	t := time.AfterFunc(time.Second, func() { body.Close() })
	defer t.Stop()
	defer body.Close()
	for {
		var l callLine
		if lr.next(&l) != nil {
			return
		}
		if l.Log != nil && s.writeLog(l.Log) != nil {
			return
		}
	}
}

// open opens GET /v1/calls/{id}/stream from the next output.
func (s *callStream) open(ctx context.Context) error {
	wait := pollWait
	if !s.deadline.IsZero() {
		wait = min(wait, time.Until(s.deadline))
	}
	q := url.Values{"from": {strconv.Itoa(s.from)},
		"timeout": {strconv.FormatFloat(max(wait.Seconds(), 0), 'f', 3, 64)}}
	resp, err := s.c.send(ctx, request{method: http.MethodGet, path: "/v1/calls/" + pathEscape(s.callID) + "/stream", query: q})
	if err != nil {
		return fmt.Errorf("%s: %w", s.label, err)
	}
	s.body, s.lr = resp.Body, newLineReader(resp.Body)
	s.skip = s.seen
	return nil
}

// read reads lines until an output, a timeout line, or the end or failure of the stream.
func (s *callStream) read() (out *outputLine, timedOut bool, err error) {
	for {
		var l callLine
		if err := s.lr.next(&l); err != nil {
			if err == io.EOF {
				return nil, false, nil
			}
			return nil, false, err
		}
		switch {
		case l.Output != nil:
			if l.Output.Seq < s.from {
				continue // sent again after a resume
			}
			s.seen, s.skip = 0, 0
			return l.Output, false, nil
		case l.Log != nil || l.Item != nil:
			if s.skip > 0 {
				s.skip-- // read before the stream was reopened
				continue
			}
			s.seen++
			if l.Log != nil {
				if err := s.writeLog(l.Log); err != nil {
					return nil, false, err
				}
			} else if s.onItem != nil {
				if err := s.onItem(l.Item); err != nil {
					return nil, false, err
				}
			}
		case l.Timeout:
			return nil, true, nil
		case len(l.Error) > 0:
			if e := l.apiError(); e != nil {
				return nil, false, e
			}
		}
	}
}

func (s *callStream) writeLog(l *logLine) error {
	w := s.stdout
	if w == nil {
		w = os.Stdout
	}
	if l.Stream == "stderr" {
		w = s.stderr
		if w == nil {
			w = os.Stderr
		}
	}
	if _, err := io.WriteString(w, l.Data); err != nil {
		return &writeError{stream: l.Stream, err: err}
	}
	return nil
}

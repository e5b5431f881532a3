// Package workerproto is the protocol between the server and its workers, carried over the same
// HTTP API as clients use (paths under /v1/workers). Workers pull assignments with a long poll
// and report sandbox state; the server forwards exec, file and log requests to the worker's own
// HTTP address. Imported by the server and the worker; it imports neither.
package workerproto

import "github.com/gust-run/gust/internal/sandbox"

// RegisterRequest introduces a worker.
type RegisterRequest struct {
	Name      string   `json:"name"`
	Addr      string   `json:"addr"` // base URL of the worker's HTTP API
	CPU       float64  `json:"cpu"`
	MemoryMiB int      `json:"memory"`
	Isolation []string `json:"isolation"` // runtimes installed on the worker
	GPUs      []GPU    `json:"gpus,omitempty"`
	// WorkerID is the ID this worker had, when it registers again after losing the server for
	// a moment: it keeps the ID and its sandboxes. A restarted worker has none.
	WorkerID string `json:"worker_id,omitempty"`
}

// GPU is one GPU a worker has.
type GPU struct {
	Model     string `json:"model"` // as nvidia-smi names it
	MemoryMiB int    `json:"memory"`
}

// RegisterResponse names the worker.
type RegisterResponse struct {
	WorkerID string `json:"worker_id"`
}

// Ops an assignment can carry.
const (
	OpCreate    = "create"
	OpTerminate = "terminate"
	OpInputs    = "inputs" // function inputs for a function container's runner
)

// Assignment is one piece of work for a worker.
type Assignment struct {
	Op          string           `json:"op"`
	Sandbox     *sandbox.Sandbox `json:"sandbox,omitempty"`
	ImageLayers []string         `json:"image_layers,omitempty"`
	SandboxID   string           `json:"sandbox_id,omitempty"`
	// Reason is the status a terminate ends in: terminated or timeout.
	Reason sandbox.Status `json:"reason,omitempty"`
	// Function is set on the create of a function container: what its runner runs.
	Function *FunctionRun `json:"function,omitempty"`
	// Inputs are for op "inputs", to the runner of container SandboxID.
	Inputs []Input `json:"inputs,omitempty"`
}

// FunctionRun is what a function container's runner needs.
type FunctionRun struct {
	FunctionID string  `json:"function_id"`
	Module     string  `json:"module"`
	Name       string  `json:"name"`
	Kind       string  `json:"kind"`
	MaxInputs  int     `json:"max_inputs"`
	CodeBlob   string  `json:"code_blob"` // sha256 of the code tar, in the server's blob store
	Timeout    float64 `json:"timeout"`   // per input, seconds
}

// Input is one function input for a runner (see docs/functions.md, "Runner").
type Input struct {
	ID     string   `json:"id"`
	CallID string   `json:"call_id,omitempty"` // for modal.current_function_call_id()
	Args   []byte   `json:"args"`
	Format string   `json:"format"`
	Method string   `json:"method,omitempty"`
	Params *Payload `json:"params,omitempty"`
}

// Payload is a serialised value.
type Payload struct {
	Data   []byte `json:"data"`
	Format string `json:"format"`
}

// Event is what a worker reports about function containers: readiness, init errors, logs,
// generator items and outputs. The worker posts them in batches to /v1/workers/{wid}/events.
type Event struct {
	SandboxID string `json:"sandbox_id"`
	Type      string `json:"type"` // ready, init_error, log, item, output
	InputID   string `json:"input_id,omitempty"`
	Stream    string `json:"stream,omitempty"`
	Data      []byte `json:"data,omitempty"` // log text, item or result payload
	Format    string `json:"format,omitempty"`
	// Output fields.
	Status    string `json:"status,omitempty"` // success, failure, timeout, crashed
	Error     string `json:"error,omitempty"`
	Traceback string `json:"traceback,omitempty"`
	Exc       []byte `json:"exc,omitempty"`
	// Runtime is how long the runner took over the input, in seconds (outputs only).
	Runtime float64 `json:"runtime,omitempty"`
}

// Event types and output statuses that only workers report.
const (
	EventReady     = "ready"
	EventInitError = "init_error"
	EventLog       = "log"
	EventItem      = "item"
	EventOutput    = "output"
	StatusCrashed  = "crashed"
	// StatusNotStarted returns an input the worker held for a container that ended before the
	// input began; the server queues it again without counting an attempt.
	StatusNotStarted = "not_started"
)

// Events is a batch of events.
type Events struct {
	Events []Event `json:"events"`
}

// Assignments is the long poll's answer.
type Assignments struct {
	Assignments []Assignment `json:"assignments"`
}

// StateReport tells the server a sandbox changed state on the worker.
type StateReport struct {
	Status   sandbox.Status `json:"status"`
	ExitCode *int           `json:"exit_code"`
	Error    *string        `json:"error"`
}

// SnapshotResponse answers the worker's snapshot endpoint: the new layer's directory.
type SnapshotResponse struct {
	Layer     string `json:"layer"`
	SizeBytes int64  `json:"size_bytes"`
}

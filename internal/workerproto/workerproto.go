// Package workerproto is the protocol between the server and its workers: the typed messages
// both sides send, and the one client each side uses to send them (client.go). Workers
// register, pull assignments with a long poll, and report container state and function events
// under /v1/workers on the server; the server calls each worker's own HTTP API for exec and
// snapshots, relays clients' exec, file and log requests to it, and opens raw TCP streams to
// containers' ports for the ingress's tunnels (WorkerClient.DialPort, Splice). Imported by the
// server's packages and by the worker; it imports neither.
package workerproto

import (
	"net/url"
	"regexp"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/tlsconf"
	"github.com/gust-run/gust/internal/wire"
)

// RegisterRequest introduces a worker.
type RegisterRequest struct {
	Name      string       `json:"name"`
	Addr      string       `json:"addr"` // base URL of the worker's HTTP API
	CPU       float64      `json:"cpu"`
	MemoryMiB int          `json:"memory"`
	Isolation []string     `json:"isolation"` // runtimes installed on the worker
	GPUs      []gpu.Device `json:"gpus,omitempty"`
	// GVisorGPU says the worker's runsc has its GPU proxy (nvproxy): GPU containers may run
	// under gVisor there. Without it gpu= is refused with isolation gvisor.
	GVisorGPU bool `json:"gvisor_gpu,omitempty"`
	// WorkerID is the ID this worker had, when it registers again after losing the server for
	// a moment: it keeps the ID and its containers. A restarted worker has none.
	WorkerID string `json:"worker_id,omitempty"`
	// APIToken is what the server must present to the worker's API: the worker makes it at
	// start, so that no credential of the server's ever reaches a worker.
	APIToken string `json:"api_token"`
	// TLSFingerprint is the SHA-256 fingerprint of the certificate the worker's API serves
	// (hex), required when Addr is https: the server pins it.
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
}

// Bounds of what a worker may report about itself.
const (
	MaxWorkerCPU       = 4096
	MaxWorkerMemoryMiB = 64 << 20 // 64 TiB
)

var workerNameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

// Validate checks what a worker says about itself before the server places anything on it.
func (r RegisterRequest) Validate() error {
	if !workerNameRE.MatchString(r.Name) {
		return errdefs.Invalid("worker name %q is not valid: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' (the worker's name is its hostname)", r.Name)
	}
	if !(r.CPU > 0 && r.CPU <= MaxWorkerCPU) {
		return errdefs.Invalid("worker %s: cpu must be more than 0 and at most %d cores, got %v", r.Name, MaxWorkerCPU, r.CPU)
	}
	if r.MemoryMiB <= 0 || r.MemoryMiB > MaxWorkerMemoryMiB {
		return errdefs.Invalid("worker %s: memory must be more than 0 and at most %d MiB (64 TiB), got %d", r.Name, MaxWorkerMemoryMiB, r.MemoryMiB)
	}
	for _, iso := range r.Isolation {
		if iso != sandbox.IsolationRunc && iso != sandbox.IsolationGVisor {
			return errdefs.Invalid("worker %s: isolation lists %q; the runtimes are %q and %q", r.Name, iso, sandbox.IsolationRunc, sandbox.IsolationGVisor)
		}
	}
	if len(r.APIToken) < 32 {
		return errdefs.Invalid("worker %s: api_token must be a random string of at least 32 characters that the worker's API accepts", r.Name)
	}
	u, err := url.Parse(r.Addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errdefs.Invalid("worker %s: addr %q is not an http(s) URL such as http://10.0.0.5:7421", r.Name, r.Addr)
	}
	if u.Scheme == "https" {
		if _, err := tlsconf.ParseFingerprint(r.TLSFingerprint); err != nil {
			return errdefs.Invalid("worker %s: an https addr needs tls_fingerprint, the SHA-256 of the certificate the worker serves: %v", r.Name, err)
		}
	}
	return nil
}

// RegisterResponse names the worker.
type RegisterResponse struct {
	WorkerID string `json:"worker_id"`
	// Credential is the worker's own ("<token_id>:<token_secret>"), for the rest of the
	// protocol: it speaks only for this worker ID.
	Credential string `json:"credential"`
}

// Op is what an assignment asks of a worker.
type Op string

// The ops.
const (
	OpCreate    Op = "create"
	OpTerminate Op = "terminate"
	OpInputs    Op = "inputs" // function inputs for a function container's runner
)

// Assignment is one piece of work for a worker.
type Assignment struct {
	Op Op `json:"op"`
	// Container is what to start (op create).
	Container *ContainerSpec `json:"container,omitempty"`
	// ContainerID names the container of ops terminate and inputs.
	ContainerID string `json:"container_id,omitempty"`
	// EndStatus is the status a terminate ends in: terminated, timeout, or failed (the server
	// gave up waiting for it to start); Reason says why a failed one failed.
	EndStatus sandbox.Status `json:"end_status,omitempty"`
	Reason    string         `json:"reason,omitempty"`
	// Inputs are for op inputs, to the runner of container ContainerID.
	Inputs []Input `json:"inputs,omitempty"`
}

// ContainerSpec is everything a worker needs to start one container: a sandbox's or a
// function's. The server fills every default; the worker applies it as it is.
type ContainerSpec struct {
	ID          string   `json:"id"`
	Isolation   string   `json:"isolation"` // runc or gvisor
	ImageLayers []string `json:"image_layers"`
	// Command is a sandbox's main process; empty keeps the container idle for execs. A
	// function container's main process is its runner instead.
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"` // created if missing; "" is / (or the code, for functions)
	User    string            `json:"user,omitempty"`    // the image's user; "" is root
	// CPU is the container's share of the machine in cores; CPULimit its hard cap (0: none).
	CPU       float64 `json:"cpu"`
	CPULimit  float64 `json:"cpu_limit,omitempty"`
	MemoryMiB int     `json:"memory"`
	// BuildEgress gives an image build container the worker's egress proxy, its only way out.
	BuildEgress bool `json:"build_egress,omitempty"`
	// Network is the container's outbound network policy (not for build containers).
	Network sandbox.NetworkPolicy `json:"network"`
	// Ports are the container ports the server may connect to (WorkerClient.DialPort); a function
	// container's ports are opened at run time (modal.forward), so the worker lets the server
	// connect to any of its ports.
	Ports []int `json:"ports,omitempty"`
	// ReadinessProbe is run by the worker once the container runs (ReadyResponse).
	ReadinessProbe *sandbox.Probe `json:"readiness_probe,omitempty"`
	Timeout        wire.Duration  `json:"timeout"`
	IdleTimeout    wire.Duration  `json:"idle_timeout,omitempty"` // 0: none
	// Function is set on a function container: what its runner runs.
	Function *FunctionRun `json:"function,omitempty"`
	// GPUType and GPUCount are the GPUs the container was given ("H100", 2), for metering;
	// GPUs are the devices themselves, the container's alone while it runs.
	GPUType  string       `json:"gpu_type,omitempty"`
	GPUCount int          `json:"gpu_count,omitempty"`
	GPUs     []gpu.Device `json:"gpus,omitempty"`
	// Volumes are mounted at their paths; the worker resolves each one's version at mount time.
	Volumes []sandbox.VolumeMount `json:"volumes,omitempty"`
}

// FunctionRun is what a function container's runner needs.
type FunctionRun struct {
	FunctionID string        `json:"function_id"`
	Module     string        `json:"module"`
	Name       string        `json:"name"`
	Kind       string        `json:"kind"`
	MaxInputs  int           `json:"max_inputs"`
	CodeBlob   string        `json:"code_blob"` // sha256 of the code tar, in the server's blob store
	Timeout    wire.Duration `json:"timeout"`   // per input
	// ModalCompat: `import modal` in the code resolves to gust (Code.ModalCompat).
	ModalCompat bool `json:"modal_compat,omitempty"`
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

// EventType says what an event reports.
type EventType string

// The event types.
const (
	EventReady     EventType = "ready"
	EventInitError EventType = "init_error"
	EventLog       EventType = "log"
	EventItem      EventType = "item"
	EventOutput    EventType = "output"
)

// OutputStatus is how an input ended on the worker.
type OutputStatus string

// The output statuses. Success, failure and timeout are the runner's (and the input's); crashed
// and not_started only workers report.
const (
	StatusSuccess OutputStatus = "success"
	StatusFailure OutputStatus = "failure"
	StatusTimeout OutputStatus = "timeout"
	// StatusCrashed: the input was running when its container ended; it cost an attempt.
	StatusCrashed OutputStatus = "crashed"
	// StatusNotStarted returns an input the worker held for a container that ended before the
	// input began; the server queues it again without counting an attempt.
	StatusNotStarted OutputStatus = "not_started"
)

// Event is what a worker reports about function containers: readiness, init errors, logs,
// generator items and outputs. The worker posts them in batches to /v1/workers/{wid}/events.
type Event struct {
	ContainerID string    `json:"container_id"`
	Type        EventType `json:"type"`
	InputID     string    `json:"input_id,omitempty"`
	Stream      string    `json:"stream,omitempty"`
	Data        []byte    `json:"data,omitempty"` // log text, item or result payload
	Format      string    `json:"format,omitempty"`
	// Output fields.
	Status    OutputStatus `json:"status,omitempty"`
	Error     string       `json:"error,omitempty"`
	Traceback string       `json:"traceback,omitempty"`
	Exc       []byte       `json:"exc,omitempty"`
	// Runtime is how long the runner took over the input (outputs only).
	Runtime wire.Duration `json:"runtime,omitempty"`
}

// Events is a batch of events.
type Events struct {
	Events []Event `json:"events"`
}

// Assignments is the long poll's answer.
type Assignments struct {
	Assignments []Assignment `json:"assignments"`
}

// StateReport tells the server a container changed state on the worker.
type StateReport struct {
	Status   sandbox.Status `json:"status"`
	ExitCode *int           `json:"exit_code"`
	Error    *string        `json:"error"`
	// GPU is what sampling saw of the container's GPUs, on its end (nil without samples).
	GPU *gpu.Usage `json:"gpu,omitempty"`
}

// ExecRequest starts a process in a running container (POST /v1/sandboxes/{id}/execs on the
// worker, as on the server, which relays it).
type ExecRequest struct {
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	Timeout *float64          `json:"timeout,omitempty"` // seconds
	PTY     bool              `json:"pty,omitempty"`
	Rows    uint16            `json:"rows,omitempty"`
	Cols    uint16            `json:"cols,omitempty"`
	// Stream false answers with the exec's ID alone; otherwise its output follows as NDJSON.
	Stream *bool `json:"stream,omitempty"`
}

// ExecStarted is an exec stream's first line.
type ExecStarted struct {
	ExecID string `json:"exec_id"`
}

// OutputLine is a chunk of a process's output in an exec or log stream.
type OutputLine struct {
	Stream string `json:"stream"` // stdout or stderr
	Data   []byte `json:"data"`   // base64 in JSON
	// Dropped, on a marker line (stderr, whose data says the same in words), counts the bytes
	// of output the worker dropped at this point because nobody read them in time.
	Dropped int64 `json:"dropped,omitempty"`
}

// ExitLine is the last line of an exec stream.
type ExitLine struct {
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// NetworkUpdate replaces a running container's network policy (PUT
// /v1/sandboxes/{id}/network on the worker).
type NetworkUpdate struct {
	Network sandbox.NetworkPolicy `json:"network"`
}

// ReadyResponse answers the worker's GET /v1/sandboxes/{id}/ready?timeout=S: whether the
// readiness probe passed within the timeout.
type ReadyResponse struct {
	Ready bool `json:"ready"`
}

// MaxReadyWait is the longest one ready request waits; clients ask again for longer waits.
const MaxReadyWait = 60

// ConnectUpgrade is the Upgrade token of the worker's connect endpoint
// (GET /v1/sandboxes/{id}/ports/{port}/connect): its 101 answer turns the HTTP connection into
// a raw TCP stream to that port inside the container.
const ConnectUpgrade = "gust-tcp"

// SnapshotResponse answers the worker's snapshot endpoint: the new layer's directory.
type SnapshotResponse struct {
	Layer     string `json:"layer"`
	SizeBytes int64  `json:"size_bytes"`
}

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
}

// RegisterResponse names the worker.
type RegisterResponse struct {
	WorkerID string `json:"worker_id"`
}

// Ops an assignment can carry.
const (
	OpCreate    = "create"
	OpTerminate = "terminate"
)

// Assignment is one piece of work for a worker.
type Assignment struct {
	Op          string           `json:"op"`
	Sandbox     *sandbox.Sandbox `json:"sandbox,omitempty"`
	ImageLayers []string         `json:"image_layers,omitempty"`
	SandboxID   string           `json:"sandbox_id,omitempty"`
	// Reason is the status a terminate ends in: terminated or timeout.
	Reason sandbox.Status `json:"reason,omitempty"`
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

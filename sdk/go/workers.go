package gust

import (
	"context"
	"net/http"
	"time"
)

// Worker is a machine that runs containers, as GET /v1/workers shows it.
type Worker struct {
	ID         string   `json:"worker_id"`
	Name       string   `json:"name"`
	CPU        float64  `json:"cpu"`
	MemoryMiB  int      `json:"memory"`
	Isolation  []string `json:"isolation"`
	GVisorGPU  bool     `json:"gvisor_gpu"` // its runsc has the GPU proxy: GPU containers may use gVisor
	Containers int      `json:"containers"`
	GPUs       []GPU    `json:"gpus"`
}

// GPU is one of a worker's GPUs.
type GPU struct {
	Index     int    `json:"index"`
	UUID      string `json:"uuid"`
	Model     string `json:"model"` // as nvidia-smi names it
	Type      string `json:"type"`  // as gpu= spells it: "H100", "A100-80GB"; "" for a model without a name here
	MemoryMiB int    `json:"memory"`
	Driver    string `json:"driver"`
	CUDA      string `json:"cuda"`
	MIG       string `json:"mig"`
	InUse     bool   `json:"in_use"` // a container holds it; GPUs are whole and exclusive
}

// GPUWait is a container of the caller's workspace that waits for GPUs others hold.
type GPUWait struct {
	ContainerID string    `json:"container_id"`
	FunctionID  string    `json:"function_id"`
	Reason      string    `json:"reason"` // "waiting for 1× H100: 0 of 8 free"
	Since       time.Time `json:"since"`
}

// Workers lists the workers by name, with their GPUs, and the caller's containers waiting
// for GPUs.
func (c *Client) Workers(ctx context.Context) ([]Worker, []GPUWait, error) {
	var out struct {
		Workers []Worker  `json:"workers"`
		Waiting []GPUWait `json:"waiting"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/workers"}, &out); err != nil {
		return nil, nil, err
	}
	return out.Workers, out.Waiting, nil
}

// Package sandbox is the model of a sandbox: its specification, its lifecycle states and the
// transitions allowed between them, and the validation of what a client asks for. The server,
// the store and the worker all share it; it imports nothing of theirs.
//
// Lifecycle:
//
//	pending ──► running ──► finished     (its command exited; exit_code is the command's)
//	   │           ├──────► terminated   (terminate was called, or the server shut down; 137)
//	   │           ├──────► timeout      (timeout or idle_timeout passed; 124)
//	   │           └──────► failed       (the container could not start or was lost)
//	   └──────────────────► any of the four: a sandbox can end before it runs
//
// The last four are terminal: nothing leaves them. Lifecycle below is this diagram as a table.
package sandbox

import (
	"errors"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/lifecycle"
	"github.com/gust-run/gust/internal/wire"
)

// Status is a lifecycle state.
type Status string

// The states.
const (
	Pending    Status = "pending"
	Running    Status = "running"
	Finished   Status = "finished"
	Terminated Status = "terminated"
	Timeout    Status = "timeout"
	Failed     Status = "failed"
)

// ErrWorkerLost marks the failure of a container whose worker went away (restarted, or stopped
// answering): the container's own spec was not at fault, and another worker may run it.
var ErrWorkerLost = errors.New("its worker was lost")

// Exit codes reported for ends that are not the command's own.
const (
	ExitTimeout    = 124
	ExitTerminated = 137
)

// Terminal reports whether s is an end state.
func (s Status) Terminal() bool {
	return s == Finished || s == Terminated || s == Timeout || s == Failed
}

// Lifecycle is the sandbox's state machine (the diagram above). Every change of a sandbox's
// status goes through it.
var Lifecycle = lifecycle.New("sandbox", map[Status][]Status{
	Pending: {Running, Finished, Terminated, Timeout, Failed},
	Running: {Finished, Terminated, Timeout, Failed},
})

// CanTransition reports whether a sandbox may move from s to next.
func (s Status) CanTransition(next Status) bool { return Lifecycle.Can(s, next) }

// Isolation runtimes.
const (
	IsolationRunc   = "runc"
	IsolationGVisor = "gvisor"
)

// Defaults applied when the client names none, and the limits of what it may name.
const (
	DefaultTimeout   = 300 * time.Second
	MinTimeout       = time.Second
	MaxTimeout       = 24 * time.Hour
	DefaultCPU       = 1.0
	DefaultMemoryMiB = 1024
	MinMemoryMiB     = 16
	MaxEnvBytes      = 256 << 10
	// MinCPU is the smallest CPU share a container can be given: its quota is cpu × a
	// 100000 µs period, and the kernel refuses quotas under 1000 µs (cgroup v1 and v2).
	MinCPU = 0.01
)

// Sandbox is a sandbox as stored and as shown to clients.
type Sandbox struct {
	ID    string `json:"sandbox_id"`
	AppID string `json:"app_id"`
	// WorkspaceID is the workspace the sandbox belongs to (its app's).
	WorkspaceID string `json:"workspace_id"`
	// CreatedBy is the function container whose credential created the sandbox, if one did:
	// that container may manage it (and only the sandboxes it made).
	CreatedBy   string            `json:"created_by,omitempty"`
	Name        *string           `json:"name"`
	Tags        map[string]string `json:"tags"`
	ImageID     string            `json:"image_id"`
	Command     []string          `json:"command"`
	Isolation   string            `json:"isolation"`
	Status      Status            `json:"status"`
	ExitCode    *int              `json:"exit_code"`
	Error       *string           `json:"error"`
	Timeout     wire.Duration     `json:"timeout"`
	IdleTimeout *wire.Duration    `json:"idle_timeout"`
	CPU         float64           `json:"cpu"`
	// CPULimit caps a function container's CPU (cpu=(request, limit)); 0 lets it burst. A
	// sandbox's cpu is always also its cap.
	CPULimit  float64 `json:"cpu_limit,omitempty"`
	MemoryMiB int     `json:"memory"`
	Workdir   *string `json:"workdir"`
	// NetworkPolicy is its outbound network: block_network and the allowlists.
	NetworkPolicy
	// Ports are the container ports exposed through the ingress (tunnels); InboundCIDRAllowlist
	// limits who may reach them (empty: anyone who reaches the ingress).
	Ports                []Port   `json:"ports,omitempty"`
	InboundCIDRAllowlist []string `json:"inbound_cidr_allowlist,omitempty"`
	// ReadinessProbe says when the sandbox is ready (wait_until_ready); nil: once it runs.
	ReadinessProbe *Probe `json:"readiness_probe,omitempty"`
	// BuildEgress marks an image build container (the server sets it; clients cannot): its
	// network namespace has only loopback and its worker's egress proxy, which reaches the
	// package mirrors the worker allows (--build-egress), so that apt_install and pip_install
	// work and nothing else is reachable.
	BuildEgress bool `json:"build_egress,omitempty"`
	// User is who the sandbox's processes run as: its image's user; empty is root.
	User string            `json:"user,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
	// SecretEnv is the environment from a function's secrets, under Env: it goes to the
	// worker with the container and is never stored (the store writes records as JSON) nor
	// shown.
	SecretEnv map[string]string `json:"-"`
	WorkerID  string            `json:"worker_id,omitempty"`
	// FunctionID is set on a function's containers, which the autoscaler starts and stops;
	// they are not listed among sandboxes.
	FunctionID string `json:"function_id,omitempty"`
	// GPUs the container needs, as "TYPE:COUNT" choices in order of preference.
	GPU gpu.Request `json:"gpu,omitempty"`
	// GPUWait bounds how long placement waits for GPUs that other containers hold; 0 is the
	// container's Timeout. A function container's is its input timeout. Not stored.
	GPUWait wire.Duration `json:"-"`
	// GPUUsage is what sampling saw of its GPUs, once it ended (nil without samples).
	GPUUsage *gpu.Usage `json:"gpu_usage,omitempty"`
	// Volumes are the volumes mounted in it.
	Volumes    []VolumeMount `json:"volumes,omitempty"`
	CreatedAt  time.Time     `json:"created_at"`
	StartedAt  *time.Time    `json:"started_at"`
	FinishedAt *time.Time    `json:"finished_at"`
}

// Public returns a copy fit for clients: environment values may hold secrets, so they are
// never listed.
func (s Sandbox) Public() Sandbox {
	s.Env, s.SecretEnv = nil, nil
	s.WorkerID = ""
	return s
}

// CreateRequest is what a client asks for.
type CreateRequest struct {
	AppID       string            `json:"app_id"`
	ImageID     string            `json:"image_id"`
	Command     []string          `json:"command"`
	Timeout     *float64          `json:"timeout"`
	IdleTimeout *float64          `json:"idle_timeout"`
	CPU         *float64          `json:"cpu"`
	Memory      *int              `json:"memory"`
	Workdir     *string           `json:"workdir"`
	Env         map[string]string `json:"env"`
	NetworkRequest
	Name      *string           `json:"name"`
	Tags      map[string]string `json:"tags"`
	Isolation string            `json:"isolation"`
	// Tunnels into the sandbox, and who may use them.
	EncryptedPorts       []int    `json:"encrypted_ports"`
	UnencryptedPorts     []int    `json:"unencrypted_ports"`
	H2Ports              []int    `json:"h2_ports"`
	InboundCIDRAllowlist []string `json:"inbound_cidr_allowlist"`
	ReadinessProbe       *Probe   `json:"readiness_probe"`
	// GPU is null, "H100", "A100-80GB:2", "any", or a list in order of preference; unknown
	// types are refused as the request is read.
	GPU gpu.Request `json:"gpu"`
	// Volumes are mounted in the sandbox (volumes.go).
	Volumes []VolumeMount `json:"volumes"`
}

var (
	nameRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate checks a request and fills defaults, returning the sandbox to create. hostCPU and
// hostMemMiB bound what one sandbox may ask for.
func (r CreateRequest) Validate(defaultIsolation string, hostCPU float64, hostMemMiB int) (Sandbox, error) {
	sb := Sandbox{
		AppID: r.AppID, ImageID: r.ImageID, Command: r.Command, Tags: r.Tags, Env: r.Env,
		Status: Pending, Timeout: wire.Duration(DefaultTimeout),
		CPU: DefaultCPU, MemoryMiB: DefaultMemoryMiB, Isolation: defaultIsolation, GPU: r.GPU,
	}
	if r.AppID == "" {
		return sb, errdefs.Invalid("app_id is required: look up or create an app first (App.lookup(name, create_if_missing=True))")
	}
	if r.ImageID == "" {
		return sb, errdefs.Invalid("image_id is required")
	}
	for i, a := range r.Command {
		if strings.IndexByte(a, 0) >= 0 {
			return sb, errdefs.Invalid("command argument %d contains a NUL byte", i)
		}
	}
	if r.Timeout != nil {
		t := *r.Timeout
		if !InTimeoutRange(t) {
			return sb, errdefs.Invalid("timeout must be between 1 and %d seconds, got %v", int(MaxTimeout.Seconds()), t)
		}
		sb.Timeout = wire.Seconds(t)
	}
	if r.IdleTimeout != nil {
		t := *r.IdleTimeout
		if !InTimeoutRange(t) {
			return sb, errdefs.Invalid("idle_timeout must be between 1 and %d seconds, got %v", int(MaxTimeout.Seconds()), t)
		}
		it := wire.Seconds(t)
		sb.IdleTimeout = &it
	}
	if r.CPU != nil {
		c := *r.CPU
		if !(c >= MinCPU && c <= hostCPU) {
			return sb, errdefs.Invalid("cpu must be between %v and %v (this machine's cores), got %v", MinCPU, hostCPU, c)
		}
		sb.CPU = c
	}
	if r.Memory != nil {
		m := *r.Memory
		if m < MinMemoryMiB || m > hostMemMiB {
			return sb, errdefs.Invalid("memory must be between %d and %d MiB, got %d", MinMemoryMiB, hostMemMiB, m)
		}
		sb.MemoryMiB = m
	}
	if r.Workdir != nil {
		w := *r.Workdir
		if !path.IsAbs(w) || strings.IndexByte(w, 0) >= 0 {
			return sb, errdefs.Invalid("workdir must be an absolute path without NUL bytes, got %q", w)
		}
		w = path.Clean(w)
		sb.Workdir = &w
	}
	if err := validateEnv(r.Env); err != nil {
		return sb, err
	}
	if r.Name != nil {
		if !nameRE.MatchString(*r.Name) {
			return sb, errdefs.Invalid("name %q is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", *r.Name)
		}
		n := *r.Name
		sb.Name = &n
	}
	if err := ValidateTags(r.Tags); err != nil {
		return sb, err
	}
	if sb.Tags == nil {
		sb.Tags = map[string]string{}
	}
	pol, err := r.NetworkRequest.Policy(len(r.EncryptedPorts)+len(r.UnencryptedPorts)+len(r.H2Ports) > 0)
	if err != nil {
		return sb, err
	}
	sb.NetworkPolicy = pol
	iso, err := isolation(r.Isolation, defaultIsolation)
	sb.Isolation = iso
	if err != nil {
		return sb, err
	}
	if sb.Ports, err = r.validatePorts(); err != nil {
		return sb, err
	}
	if sb.InboundCIDRAllowlist, err = validateInbound(r.InboundCIDRAllowlist, r.BlockNetwork); err != nil {
		return sb, err
	}
	if err := CheckVolumeMounts(r.Volumes, sb.Isolation); err != nil {
		return sb, err
	}
	sb.Volumes = slices.Clone(r.Volumes)
	if r.ReadinessProbe != nil {
		p := *r.ReadinessProbe
		p.ExecArgv = slices.Clone(p.ExecArgv)
		if err := p.Validate(); err != nil {
			return sb, err
		}
		sb.ReadinessProbe = &p
	}
	return sb, nil
}

// InTimeoutRange reports whether secs is a timeout a container may have: 1 s to MaxTimeout.
func InTimeoutRange(secs float64) bool {
	return secs >= MinTimeout.Seconds() && secs <= MaxTimeout.Seconds()
}

// isolation reads a requested runtime ("runsc" is gVisor's binary, accepted as gvisor).
func isolation(req, def string) (string, error) {
	switch req {
	case "":
		return def, nil
	case IsolationRunc, IsolationGVisor:
		return req, nil
	case "runsc":
		return IsolationGVisor, nil
	}
	return def, errdefs.Invalid("isolation must be %q or %q, got %q", IsolationRunc, IsolationGVisor, req)
}

func validateEnv(env map[string]string) error {
	envBytes := 0
	for k, v := range env {
		if !envKeyRE.MatchString(k) {
			return errdefs.Invalid("env key %q is not a valid variable name", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return errdefs.Invalid("env value of %q contains a NUL byte", k)
		}
		envBytes += len(k) + len(v)
	}
	if envBytes > MaxEnvBytes {
		return errdefs.Invalid("env is %d bytes; the limit is %d", envBytes, MaxEnvBytes)
	}
	return nil
}

// ValidateTags checks a tag set.
func ValidateTags(tags map[string]string) error {
	if len(tags) > 64 {
		return errdefs.Invalid("at most 64 tags, got %d", len(tags))
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || len(v) > 512 {
			return errdefs.Invalid("tag %q: keys must be 1-128 bytes and values at most 512", k)
		}
		if strings.IndexByte(k+v, 0) >= 0 || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return errdefs.Invalid("tag %q: keys and values must be UTF-8 text without NUL bytes", k)
		}
	}
	return nil
}

// CleanPath checks a path a client names inside a sandbox and returns it cleaned.
func CleanPath(p string) (string, error) {
	if p == "" {
		return "", errdefs.Invalid("path is required")
	}
	if !strings.HasPrefix(p, "/") {
		return "", errdefs.Invalid("path %q must be absolute (start with /)", p)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", errdefs.Invalid("path contains a NUL byte")
	}
	depth := 0
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", errdefs.Invalid("path %q climbs above the sandbox root with '..'", p)
			}
		default:
			depth++
		}
	}
	return path.Clean(p), nil
}

// Package function is the model of serverless functions: a function's specification as the SDKs
// publish it, its defaults and its validation (resources, GPU, retries, autoscaler bounds,
// schedules), a function's lifecycle (StateMachine), the calls made to it and their inputs. An
// input's status is pending until it ends in one of:
//
//	success     it returned
//	failure     it raised, or its container crashed, after all retries
//	timeout     it ran past the function's timeout, after all retries
//	terminated  its call was cancelled, or its app stopped
//
// How an open input moves between queued, held, running and delayed is the function engine's
// (internal/dispatch, lifecycle.go). Imported by the control plane's packages and the store;
// it imports only gust's model packages. See docs/functions.md for the wire format.
package function

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/lifecycle"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/wire"
)

// Kinds of function.
const (
	KindFunction = "function"
	KindClass    = "class"
)

// Modes a function is published in.
const (
	ModeEphemeral = "ephemeral" // `with app.run()`, `gust run`: lives until the run stops
	ModeDeployed  = "deployed"  // `app.deploy()`, `gust deploy`: found by Function.from_name
)

// State is where a function is in its life.
type State string

// States of a function.
const (
	StateActive   State = "active"
	StateReplaced State = "replaced" // a later deploy took its name; calls already made still finish
	StateStopped  State = "stopped"
)

// StateMachine is a function's lifecycle:
//
//	active ──► replaced ──► stopped
//	   └──────────────────────┘
var StateMachine = lifecycle.New("function", map[State][]State{
	StateActive:   {StateReplaced, StateStopped},
	StateReplaced: {StateStopped},
})

// Payload formats.
const (
	FormatPickle = "pickle"
	FormatJSON   = "json"
)

// Retries is how failed inputs are tried again.
type Retries struct {
	MaxRetries         int           `json:"max_retries"`
	BackoffCoefficient float64       `json:"backoff_coefficient"`
	InitialDelay       wire.Duration `json:"initial_delay"`
	MaxDelay           wire.Duration `json:"max_delay"`
}

// Delay is the wait before retry number n (1 for the first retry).
func (r Retries) Delay(n int) time.Duration {
	d := float64(r.InitialDelay) * math.Pow(r.BackoffCoefficient, float64(n-1))
	return min(time.Duration(d), r.MaxDelay.D())
}

// Schedule runs a deployed function on time: every Period seconds, or on a cron expression.
type Schedule struct {
	Period   wire.Duration `json:"period,omitempty"`
	Cron     string        `json:"cron,omitempty"`
	Timezone string        `json:"timezone,omitempty"`
}

// Next returns the first run after t.
func (s Schedule) Next(t time.Time) time.Time {
	if s.Period > 0 {
		return t.Add(s.Period.D())
	}
	sched, err := s.parse()
	if err != nil {
		return time.Time{}
	}
	return sched.Next(t)
}

func (s Schedule) parse() (cron.Schedule, error) {
	expr := s.Cron
	if s.Timezone != "" && s.Timezone != "UTC" {
		expr = "CRON_TZ=" + s.Timezone + " " + expr
	}
	return cron.ParseStandard(expr)
}

// SecretRef is one entry of secrets=[...]: a stored secret by name, or inline values
// (Secret.from_dict).
type SecretRef struct {
	Name string            `json:"name,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
}

// Method describes one method of a class.
type Method struct {
	IsGenerator bool `json:"is_generator"`
}

// Spec is a function as the SDK publishes it.
type Spec struct {
	Name             string            `json:"name"`
	Kind             string            `json:"kind"`
	Methods          map[string]Method `json:"methods,omitempty"`
	IsGenerator      bool              `json:"is_generator"`
	ImageID          string            `json:"image_id"`
	CPU              float64           `json:"cpu"`       // a request: the container may burst above it
	CPULimit         float64           `json:"cpu_limit"` // cpu=(request, limit): a hard cap; 0 is none
	MemoryMiB        int               `json:"memory"`
	GPU              gpu.Request       `json:"gpu"`     // null, "H100", "A100-80GB:2" or a list of those
	Timeout          wire.Duration     `json:"timeout"` // per input
	Retries          *Retries          `json:"retries"`
	Env              map[string]string `json:"env,omitempty"`
	Secrets          []SecretRef       `json:"secrets,omitempty"`
	MinContainers    int               `json:"min_containers"`
	MaxContainers    *int              `json:"max_containers"`
	BufferContainers int               `json:"buffer_containers"`
	ScaledownWindow  wire.Duration     `json:"scaledown_window"`
	MaxInputs        int               `json:"max_inputs"`
	TargetInputs     *int              `json:"target_inputs"`
	Schedule         *Schedule         `json:"schedule"`
	// Isolation is the runtime (runc by default; gvisor for untrusted code).
	Isolation string `json:"isolation,omitempty"`
	// NetworkRequest is the containers' outbound network: block_network and the allowlists,
	// as on a sandbox.
	sandbox.NetworkRequest
	// Web makes the function a web endpoint (web.go).
	Web *Web `json:"web,omitempty"`
	// Volumes are mounted in every container of the function.
	Volumes []sandbox.VolumeMount `json:"volumes,omitempty"`
}

// Limits of what a spec may ask for.
const (
	DefaultTimeout         = 300 * time.Second
	MaxContainersLimit     = 1000
	DefaultScaledownWindow = 60 * time.Second
	MaxInputsLimit         = 1000
)

var (
	fnNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,127}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ApplyDefaults fills what the SDK left out: one CPU, 1 GiB, a 300 s timeout, Modal's retry
// backoff, a 60 s scaledown window, one input at a time.
func (s *Spec) ApplyDefaults() {
	if s.Kind == "" {
		s.Kind = KindFunction
	}
	if s.CPU == 0 {
		s.CPU = sandbox.DefaultCPU
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = sandbox.DefaultMemoryMiB
	}
	if s.Timeout == 0 {
		s.Timeout = wire.Duration(DefaultTimeout)
	}
	if s.Retries == nil {
		s.Retries = &Retries{}
	}
	if s.Retries.BackoffCoefficient == 0 {
		s.Retries.BackoffCoefficient = 2
	}
	if s.Retries.MaxDelay == 0 {
		s.Retries.MaxDelay = wire.Duration(60 * time.Second)
	}
	if s.ScaledownWindow == 0 {
		s.ScaledownWindow = wire.Duration(DefaultScaledownWindow)
	}
	if s.MaxInputs == 0 {
		s.MaxInputs = 1
	}
}

// Validate checks a spec whose defaults are filled. hostCPU and hostMemMiB bound the resources
// one container may ask for.
func (s *Spec) Validate(hostCPU float64, hostMemMiB int) error {
	where := fmt.Sprintf("function %q", s.Name)
	if !fnNameRE.MatchString(s.Name) {
		return errdefs.Invalid("function name %q is not a Python identifier", s.Name)
	}
	if err := s.validateKind(where); err != nil {
		return err
	}
	if s.ImageID == "" {
		return errdefs.Invalid("%s: image_id is required (resolve the image first)", where)
	}
	if err := s.validateResources(where, hostCPU, hostMemMiB); err != nil {
		return err
	}
	if !sandbox.InTimeoutRange(s.Timeout.Seconds()) {
		return errdefs.Invalid("%s: timeout must be between 1 and %d seconds, got %v", where, int(sandbox.MaxTimeout.Seconds()), s.Timeout)
	}
	if err := s.validateRetries(where); err != nil {
		return err
	}
	if _, err := s.NetworkRequest.Policy(false); err != nil {
		return errdefs.Invalid("%s: %v", where, err)
	}
	if err := s.ValidateEnv(); err != nil {
		return err
	}
	for i, sec := range s.Secrets {
		if sec.Name == "" && sec.Env == nil {
			return errdefs.Invalid("%s: secret %d names no stored secret and has no values", where, i+1)
		}
		for k, v := range sec.Env {
			if !envKeyRE.MatchString(k) {
				return errdefs.Invalid("%s: secret key %q is not a valid variable name", where, k)
			}
			if strings.IndexByte(v, 0) >= 0 {
				return errdefs.Invalid("%s: the value of secret key %q contains a NUL byte", where, k)
			}
		}
	}
	if err := s.validateScaling(where); err != nil {
		return err
	}
	if err := s.Schedule.validate(where); err != nil {
		return err
	}
	if s.Web != nil {
		if err := s.Web.validate(where, s.Kind); err != nil {
			return err
		}
	}
	switch s.Isolation {
	case "", sandbox.IsolationRunc, sandbox.IsolationGVisor:
	default:
		return errdefs.Invalid("%s: isolation must be %q or %q", where, sandbox.IsolationRunc, sandbox.IsolationGVisor)
	}
	if err := sandbox.CheckVolumeMounts(s.Volumes, s.Isolation); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

func (s *Spec) validateKind(where string) error {
	switch s.Kind {
	case KindFunction:
	case KindClass:
		if len(s.Methods) == 0 && s.Web == nil {
			return errdefs.Invalid("%s: a class needs at least one @method()", where)
		}
		for m := range s.Methods {
			if !fnNameRE.MatchString(m) {
				return errdefs.Invalid("%s: method name %q is not a Python identifier", where, m)
			}
		}
	default:
		return errdefs.Invalid("%s: kind must be %q or %q, got %q", where, KindFunction, KindClass, s.Kind)
	}
	return nil
}

func (s *Spec) validateResources(where string, hostCPU float64, hostMemMiB int) error {
	if !(s.CPU >= sandbox.MinCPU && s.CPU <= hostCPU) {
		return errdefs.Invalid("%s: cpu must be between %v and %v (the largest worker's cores), got %v", where, sandbox.MinCPU, hostCPU, s.CPU)
	}
	// The request is at least MinCPU, and so is a limit at least the request.
	if s.CPULimit != 0 && !(s.CPULimit >= s.CPU && s.CPULimit <= hostCPU) {
		return errdefs.Invalid("%s: the cpu limit must be at least the request (%v) and at most %v cores, got %v", where, s.CPU, hostCPU, s.CPULimit)
	}
	if s.MemoryMiB < sandbox.MinMemoryMiB || s.MemoryMiB > hostMemMiB {
		return errdefs.Invalid("%s: memory must be between %d and %d MiB, got %d", where, sandbox.MinMemoryMiB, hostMemMiB, s.MemoryMiB)
	}
	return nil
}

func (s *Spec) validateRetries(where string) error {
	r := s.Retries
	if r == nil {
		return errdefs.Invalid("%s: retries are missing", where)
	}
	if r.MaxRetries < 0 || r.MaxRetries > 10 {
		return errdefs.Invalid("%s: retries must be between 0 and 10, got %d", where, r.MaxRetries)
	}
	if r.BackoffCoefficient < 1 || r.BackoffCoefficient > 10 || r.InitialDelay < 0 || r.InitialDelay.D() > time.Minute || r.MaxDelay < 0 || r.MaxDelay.D() > time.Minute {
		return errdefs.Invalid("%s: retries need backoff_coefficient in [1, 10], initial_delay in [0, 60] and max_delay in [0, 60] seconds", where)
	}
	return nil
}

func (s *Spec) validateScaling(where string) error {
	if s.MinContainers < 0 || s.BufferContainers < 0 {
		return errdefs.Invalid("%s: min_containers and buffer_containers must not be negative", where)
	}
	if s.MaxContainers != nil {
		m := *s.MaxContainers
		if m < 1 || m > MaxContainersLimit {
			return errdefs.Invalid("%s: max_containers must be between 1 and %d, got %d", where, MaxContainersLimit, m)
		}
		if m < s.MinContainers {
			return errdefs.Invalid("%s: max_containers (%d) is less than min_containers (%d)", where, m, s.MinContainers)
		}
	}
	if s.MinContainers > MaxContainersLimit || s.BufferContainers > MaxContainersLimit {
		return errdefs.Invalid("%s: min_containers and buffer_containers must be at most %d", where, MaxContainersLimit)
	}
	if s.ScaledownWindow.D() < time.Second || s.ScaledownWindow.D() > 24*time.Hour {
		return errdefs.Invalid("%s: scaledown_window must be between 1 and 86400 seconds, got %v", where, s.ScaledownWindow)
	}
	if s.MaxInputs < 1 || s.MaxInputs > MaxInputsLimit {
		return errdefs.Invalid("%s: max_inputs must be between 1 and %d, got %d", where, MaxInputsLimit, s.MaxInputs)
	}
	if t := s.TargetInputs; t != nil && (*t < 1 || *t > s.MaxInputs) {
		return errdefs.Invalid("%s: target_inputs must be between 1 and max_inputs (%d), got %d", where, s.MaxInputs, *t)
	}
	return nil
}

func (sc *Schedule) validate(where string) error {
	if sc == nil {
		return nil
	}
	switch {
	case sc.Period < 0:
		return errdefs.Invalid("%s: schedule period must be positive", where)
	case sc.Period > 0 && sc.Cron != "":
		return errdefs.Invalid("%s: a schedule is a Period or a Cron, not both", where)
	case sc.Period > 0:
		if sc.Period.D() < time.Second {
			return errdefs.Invalid("%s: Period must be at least 1 second", where)
		}
	case sc.Cron != "":
		if _, err := sc.parse(); err != nil {
			return errdefs.Invalid("%s: Cron(%q, timezone=%q) is not valid: %v", where, sc.Cron, sc.Timezone, err)
		}
	default:
		return errdefs.Invalid("%s: schedule needs a period or a cron expression", where)
	}
	return nil
}

// ValidateEnv checks env's variable names and values.
func (s *Spec) ValidateEnv() error {
	for k, v := range s.Env {
		if !envKeyRE.MatchString(k) || strings.IndexByte(v, 0) >= 0 {
			return errdefs.Invalid("env %q is not a valid variable (its name, or a NUL in its value)", k)
		}
	}
	return nil
}

// TargetConcurrency is how many inputs the autoscaler plans per container.
func (s *Spec) TargetConcurrency() int {
	if s.TargetInputs != nil {
		return *s.TargetInputs
	}
	return s.MaxInputs
}

// Public returns a copy fit for clients: inline secret values are replaced by their keys.
func (s Spec) Public() Spec {
	if len(s.Secrets) > 0 {
		secs := make([]SecretRef, len(s.Secrets))
		for i, sec := range s.Secrets {
			secs[i] = SecretRef{Name: sec.Name}
			if sec.Env != nil {
				secs[i].Env = map[string]string{}
				for k := range sec.Env {
					secs[i].Env[k] = "***"
				}
			}
		}
		s.Secrets = secs
	}
	return s
}

// Code is the user's code: a tar blob and the module the runner imports.
type Code struct {
	Blob   string `json:"blob"`
	Module string `json:"module"`
	// ModalCompat makes `import modal` in the code resolve to gust in the container (the
	// client ran with `gust run --modal-compat` or modal_compat in its config).
	ModalCompat bool `json:"modal_compat,omitempty"`
}

// Function is a published function.
type Function struct {
	ID          string `json:"function_id"`
	AppID       string `json:"app_id"`
	WorkspaceID string `json:"workspace_id"` // its app's
	Name        string `json:"name"`
	Mode        string `json:"mode"`
	State       State  `json:"state"`
	Spec        Spec   `json:"spec"`
	Code        Code   `json:"code"`
	// Heartbeat is set on an ephemeral function whose client promised heartbeats
	// (`with app.run()`): without one for a while (a minute by default) it is stopped.
	Heartbeat bool `json:"heartbeat,omitempty"`
	// VariantOf is the function a variant was made from (with_options): it stops with it
	// and its client's heartbeats keep it too. Its Name is the parent's with a suffix, and
	// its Spec.Name the parent's, which the runner looks up in the code.
	VariantOf string    `json:"variant_of,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Payload is a serialised value.
type Payload struct {
	Data   []byte `json:"data"`
	Format string `json:"format"`
}

// CheckFormat validates a payload format.
func CheckFormat(f string) error {
	if f != FormatPickle && f != FormatJSON {
		return errdefs.Invalid("payload format must be %q or %q, got %q", FormatPickle, FormatJSON, f)
	}
	return nil
}

// InputStatus is an input's outcome as stored and shown: pending until it is done.
type InputStatus string

// Input statuses.
const (
	InputPending    InputStatus = "pending"
	InputSuccess    InputStatus = "success"
	InputFailure    InputStatus = "failure"
	InputTimeout    InputStatus = "timeout"
	InputTerminated InputStatus = "terminated"
)

// Call is one .remote(), .spawn() or .map() call.
type Call struct {
	ID          string `json:"call_id"`
	FunctionID  string `json:"function_id"`
	WorkspaceID string `json:"workspace_id"` // its function's
	// CreatedBy is the function container whose credential made the call, if one did: such
	// a credential may follow only the calls it made.
	CreatedBy string    `json:"created_by,omitempty"`
	Kind      string    `json:"kind"`
	Method    string    `json:"method,omitempty"`
	Params    *Payload  `json:"params,omitempty"`
	Count     int       `json:"count"`
	Cancelled bool      `json:"cancelled"`
	CreatedAt time.Time `json:"created_at"`
}

// Input is one set of arguments of a call and, once done, its output.
type Input struct {
	ID         string      `json:"input_id"`
	CallID     string      `json:"call_id"`
	FunctionID string      `json:"function_id"`
	Index      int         `json:"index"`
	Args       []byte      `json:"-"`
	Format     string      `json:"format"`
	Status     InputStatus `json:"status"`
	Attempts   int         `json:"attempts"`
	// Seq is the input's place in its call's completion order, -1 until it is done.
	Seq       int        `json:"seq"`
	Result    []byte     `json:"-"`
	Error     string     `json:"error,omitempty"`
	Traceback string     `json:"traceback,omitempty"`
	Exc       []byte     `json:"-"`
	CreatedAt time.Time  `json:"created_at"`
	DoneAt    *time.Time `json:"done_at,omitempty"`
}

// SortedMethods lists a class's method names, for stable output.
func (s *Spec) SortedMethods() []string {
	out := make([]string, 0, len(s.Methods))
	for m := range s.Methods {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

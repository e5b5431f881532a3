// Package function is the model of serverless functions: a function's specification as the SDKs
// publish it and its validation (resources, GPU strings, retries, autoscaler bounds, schedules),
// the calls made to it and their inputs, and the lifecycle of an input:
//
//	pending ──► running ──► success
//	   ▲           ├──────► failure     (raised, or its container crashed, after all retries)
//	   └─retry─────┤──────► timeout     (ran past the function's timeout, after all retries)
//	               └──────► terminated  (cancelled, or its app stopped)
//
// The server, the store and the worker share it; it imports nothing of theirs. See
// docs/functions.md for the wire format.
package function

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/sandbox"
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

// States of a function.
const (
	StateActive   = "active"
	StateReplaced = "replaced" // a later deploy took its name; calls already made still finish
	StateStopped  = "stopped"
)

// Payload formats.
const (
	FormatPickle = "pickle"
	FormatJSON   = "json"
)

// Retries is how failed inputs are tried again.
type Retries struct {
	MaxRetries         int     `json:"max_retries"`
	BackoffCoefficient float64 `json:"backoff_coefficient"`
	InitialDelay       float64 `json:"initial_delay"`
	MaxDelay           float64 `json:"max_delay"`
}

// Delay is the wait before retry number n (1 for the first retry).
func (r Retries) Delay(n int) time.Duration {
	d := r.InitialDelay * math.Pow(r.BackoffCoefficient, float64(n-1))
	d = min(d, r.MaxDelay)
	return time.Duration(d * float64(time.Second))
}

// Schedule runs a deployed function on time: every Period seconds, or on a cron expression.
type Schedule struct {
	Period   float64 `json:"period,omitempty"`
	Cron     string  `json:"cron,omitempty"`
	Timezone string  `json:"timezone,omitempty"`
}

// Next returns the first run after t.
func (s Schedule) Next(t time.Time) time.Time {
	if s.Period > 0 {
		return t.Add(time.Duration(s.Period * float64(time.Second)))
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
	GPU              any               `json:"gpu"` // null, "H100", "A100-80GB:2" or a list of those
	Timeout          float64           `json:"timeout"`
	Retries          *Retries          `json:"retries"`
	Env              map[string]string `json:"env,omitempty"`
	Secrets          []SecretRef       `json:"secrets,omitempty"`
	MinContainers    int               `json:"min_containers"`
	MaxContainers    *int              `json:"max_containers"`
	BufferContainers int               `json:"buffer_containers"`
	ScaledownWindow  float64           `json:"scaledown_window"`
	MaxInputs        int               `json:"max_inputs"`
	TargetInputs     *int              `json:"target_inputs"`
	Schedule         *Schedule         `json:"schedule"`
	// Isolation is the runtime (runc by default; gvisor for untrusted code).
	Isolation string `json:"isolation,omitempty"`
}

// Limits of what a spec may ask for.
const (
	DefaultTimeout         = 300
	MaxContainersLimit     = 1000
	DefaultScaledownWindow = 60
	MaxInputsLimit         = 1000
)

var (
	fnNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,127}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate checks a spec and fills its defaults. hostCPU and hostMemMiB bound the resources one
// container may ask for.
func (s *Spec) Validate(hostCPU float64, hostMemMiB int) error {
	where := fmt.Sprintf("function %q", s.Name)
	if !fnNameRE.MatchString(s.Name) {
		return errdefs.Invalid("function name %q is not a Python identifier", s.Name)
	}
	switch s.Kind {
	case "":
		s.Kind = KindFunction
	case KindFunction:
	case KindClass:
		if len(s.Methods) == 0 {
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
	if s.ImageID == "" {
		return errdefs.Invalid("%s: image_id is required (resolve the image first)", where)
	}
	if s.CPU == 0 {
		s.CPU = sandbox.DefaultCPU
	}
	if s.CPU < 0 || s.CPU > hostCPU {
		return errdefs.Invalid("%s: cpu must be more than 0 and at most %v (the largest worker's cores), got %v", where, hostCPU, s.CPU)
	}
	if s.CPULimit != 0 && (s.CPULimit < s.CPU || s.CPULimit > hostCPU) {
		return errdefs.Invalid("%s: the cpu limit must be at least the request (%v) and at most %v cores, got %v", where, s.CPU, hostCPU, s.CPULimit)
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = sandbox.DefaultMemoryMiB
	}
	if s.MemoryMiB < sandbox.MinMemoryMiB || s.MemoryMiB > hostMemMiB {
		return errdefs.Invalid("%s: memory must be between %d and %d MiB, got %d", where, sandbox.MinMemoryMiB, hostMemMiB, s.MemoryMiB)
	}
	if _, err := ParseGPU(s.GPU); err != nil {
		return errdefs.Invalid("%s: %v", where, err)
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Timeout < 0 || s.Timeout > sandbox.MaxTimeout.Seconds() {
		return errdefs.Invalid("%s: timeout must be between 1 and %d seconds, got %v", where, int(sandbox.MaxTimeout.Seconds()), s.Timeout)
	}
	if s.Retries == nil {
		s.Retries = &Retries{BackoffCoefficient: 2, InitialDelay: 1, MaxDelay: 60}
	}
	r := s.Retries
	if r.MaxRetries < 0 || r.MaxRetries > 10 {
		return errdefs.Invalid("%s: retries must be between 0 and 10, got %d", where, r.MaxRetries)
	}
	if r.BackoffCoefficient == 0 {
		r.BackoffCoefficient = 2
	}
	if r.MaxDelay == 0 {
		r.MaxDelay = 60
	}
	if r.BackoffCoefficient < 1 || r.BackoffCoefficient > 10 || r.InitialDelay < 0 || r.InitialDelay > 60 || r.MaxDelay < 0 || r.MaxDelay > 60 {
		return errdefs.Invalid("%s: retries need backoff_coefficient in [1, 10], initial_delay in [0, 60] and max_delay in [0, 60] seconds", where)
	}
	if err := s.ValidateEnv(); err != nil {
		return err
	}
	for i, sec := range s.Secrets {
		if sec.Name == "" && sec.Env == nil {
			return errdefs.Invalid("%s: secret %d names no stored secret and has no values", where, i+1)
		}
		for k := range sec.Env {
			if !envKeyRE.MatchString(k) {
				return errdefs.Invalid("%s: secret key %q is not a valid variable name", where, k)
			}
		}
	}
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
	if s.ScaledownWindow == 0 {
		s.ScaledownWindow = DefaultScaledownWindow
	}
	if s.ScaledownWindow < 1 || s.ScaledownWindow > 24*3600 {
		return errdefs.Invalid("%s: scaledown_window must be between 1 and 86400 seconds, got %v", where, s.ScaledownWindow)
	}
	if s.MaxInputs == 0 {
		s.MaxInputs = 1
	}
	if s.MaxInputs < 1 || s.MaxInputs > MaxInputsLimit {
		return errdefs.Invalid("%s: max_inputs must be between 1 and %d, got %d", where, MaxInputsLimit, s.MaxInputs)
	}
	if t := s.TargetInputs; t != nil && (*t < 1 || *t > s.MaxInputs) {
		return errdefs.Invalid("%s: target_inputs must be between 1 and max_inputs (%d), got %d", where, s.MaxInputs, *t)
	}
	if sc := s.Schedule; sc != nil {
		switch {
		case sc.Period < 0:
			return errdefs.Invalid("%s: schedule period must be positive", where)
		case sc.Period > 0 && sc.Cron != "":
			return errdefs.Invalid("%s: a schedule is a Period or a Cron, not both", where)
		case sc.Period > 0:
			if sc.Period < 1 {
				return errdefs.Invalid("%s: Period must be at least 1 second", where)
			}
		case sc.Cron != "":
			if _, err := sc.parse(); err != nil {
				return errdefs.Invalid("%s: Cron(%q, timezone=%q) is not valid: %v", where, sc.Cron, sc.Timezone, err)
			}
		default:
			return errdefs.Invalid("%s: schedule needs a period or a cron expression", where)
		}
	}
	switch s.Isolation {
	case "", sandbox.IsolationRunc, sandbox.IsolationGVisor:
	default:
		return errdefs.Invalid("%s: isolation must be %q or %q", where, sandbox.IsolationRunc, sandbox.IsolationGVisor)
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

// GPU is one accepted GPU choice: a type ("H100", or "any") and a count.
type GPU struct {
	Type  string `json:"type"`
	Count int    `json:"count"`
}

// GPUTypes are the GPU names accepted, as Modal spells them.
var GPUTypes = []string{"T4", "L4", "A10G", "A100", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200", "ANY"}

// ParseGPU reads gpu= (null, a string, or a list of strings in order of preference).
func ParseGPU(v any) ([]GPU, error) {
	var in []string
	switch g := v.(type) {
	case nil:
		return nil, nil
	case string:
		in = []string{g}
	case []any:
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("gpu list entries must be strings such as \"H100\", got %v", e)
			}
			in = append(in, s)
		}
		if len(in) == 0 {
			return nil, fmt.Errorf("gpu list is empty")
		}
	default:
		return nil, fmt.Errorf("gpu must be a string such as \"H100\" or \"A100-80GB:2\", got %v", v)
	}
	out := make([]GPU, 0, len(in))
	for _, s := range in {
		name, count, hasCount := strings.Cut(strings.TrimSpace(s), ":")
		g := GPU{Type: strings.ToUpper(name), Count: 1}
		known := false
		for _, t := range GPUTypes {
			known = known || t == g.Type
		}
		if !known {
			return nil, fmt.Errorf("gpu %q is not a known GPU type; use one of %s, optionally with a count as in \"H100:2\"", s, strings.Join(GPUTypes, ", "))
		}
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 1 || n > 8 {
				return nil, fmt.Errorf("gpu %q: the count after ':' must be 1 to 8", s)
			}
			g.Count = n
		}
		out = append(out, g)
	}
	return out, nil
}

// Matches reports whether a worker's GPU model name (as nvidia-smi prints it, e.g. "NVIDIA
// H100 80GB HBM3") is of this type.
func (g GPU) Matches(model string, memMiB int) bool {
	m := strings.ToUpper(model)
	switch g.Type {
	case "ANY":
		return true
	case "A100-80GB":
		return strings.Contains(m, "A100") && memMiB > 50000
	case "A100-40GB":
		return strings.Contains(m, "A100") && memMiB <= 50000
	case "A100":
		return strings.Contains(m, "A100")
	case "H100":
		return strings.Contains(m, "H100")
	}
	return strings.Contains(m, g.Type)
}

func (g GPU) String() string {
	if g.Count > 1 {
		return fmt.Sprintf("%s:%d", g.Type, g.Count)
	}
	return g.Type
}

// Code is the user's code: a tar blob and the module the runner imports.
type Code struct {
	Blob   string `json:"blob"`
	Module string `json:"module"`
}

// Function is a published function.
type Function struct {
	ID    string `json:"function_id"`
	AppID string `json:"app_id"`
	Name  string `json:"name"`
	Mode  string `json:"mode"`
	State string `json:"state"`
	Spec  Spec   `json:"spec"`
	Code  Code   `json:"code"`
	// Heartbeat is set on an ephemeral function whose client promised heartbeats
	// (`with app.run()`): without one for a while (a minute by default) it is stopped.
	Heartbeat bool      `json:"heartbeat,omitempty"`
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

// Input statuses.
const (
	InputPending    = "pending"
	InputRunning    = "running"
	InputSuccess    = "success"
	InputFailure    = "failure"
	InputTimeout    = "timeout"
	InputTerminated = "terminated"
)

// Call is one .remote(), .spawn() or .map() call.
type Call struct {
	ID         string    `json:"call_id"`
	FunctionID string    `json:"function_id"`
	Kind       string    `json:"kind"`
	Method     string    `json:"method,omitempty"`
	Params     *Payload  `json:"params,omitempty"`
	Count      int       `json:"count"`
	Cancelled  bool      `json:"cancelled"`
	CreatedAt  time.Time `json:"created_at"`
}

// Input is one set of arguments of a call and, once done, its output.
type Input struct {
	ID         string `json:"input_id"`
	CallID     string `json:"call_id"`
	FunctionID string `json:"function_id"`
	Index      int    `json:"index"`
	Args       []byte `json:"-"`
	Format     string `json:"format"`
	Status     string `json:"status"`
	Attempts   int    `json:"attempts"`
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

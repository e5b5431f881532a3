package function

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"

	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/wire"
)

// VariantOptions are what Modal's Function.with_options and Cls.with_options may change. A
// variant is a function of its own (same code, same app, its own containers and autoscaler),
// so that a call with gpu="A100" never lands in a container started without one, and usage is
// metered at the resources the variant's containers really hold. Fields left out keep the
// parent's value; secrets are added to the parent's, env is merged over it.
type VariantOptions struct {
	CPU              *float64          `json:"cpu,omitempty"`
	CPULimit         *float64          `json:"cpu_limit,omitempty"`
	MemoryMiB        *int              `json:"memory,omitempty"`
	GPU              *gpu.Request      `json:"gpu,omitempty"`
	Timeout          *wire.Duration    `json:"timeout,omitempty"`
	Retries          *Retries          `json:"retries,omitempty"`
	Env              map[string]string `json:"env,omitempty"`
	Secrets          []SecretRef       `json:"secrets,omitempty"`
	MinContainers    *int              `json:"min_containers,omitempty"`
	MaxContainers    *int              `json:"max_containers,omitempty"`
	BufferContainers *int              `json:"buffer_containers,omitempty"`
	ScaledownWindow  *wire.Duration    `json:"scaledown_window,omitempty"`
	MaxInputs        *int              `json:"max_inputs,omitempty"`
	TargetInputs     *int              `json:"target_inputs,omitempty"`
}

// Apply returns s with the options set. The result still needs ApplyDefaults and Validate.
func (o VariantOptions) Apply(s Spec) Spec {
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	if o.CPU != nil {
		s.CPU = *o.CPU
	}
	if o.CPULimit != nil {
		s.CPULimit = *o.CPULimit
	}
	set(&s.MemoryMiB, o.MemoryMiB)
	if o.GPU != nil {
		s.GPU = *o.GPU
	}
	if o.Timeout != nil {
		s.Timeout = *o.Timeout
	}
	if o.Retries != nil {
		r := *o.Retries
		s.Retries = &r
	}
	if len(o.Env) > 0 {
		env := maps.Clone(s.Env)
		if env == nil {
			env = map[string]string{}
		}
		maps.Copy(env, o.Env)
		s.Env = env
	}
	if len(o.Secrets) > 0 {
		s.Secrets = append(append([]SecretRef(nil), s.Secrets...), o.Secrets...)
	}
	set(&s.MinContainers, o.MinContainers)
	if o.MaxContainers != nil {
		v := *o.MaxContainers
		s.MaxContainers = &v
	}
	set(&s.BufferContainers, o.BufferContainers)
	if o.ScaledownWindow != nil {
		s.ScaledownWindow = *o.ScaledownWindow
	}
	set(&s.MaxInputs, o.MaxInputs)
	if o.TargetInputs != nil {
		v := *o.TargetInputs
		s.TargetInputs = &v
	}
	// A schedule belongs to the deployed function, not to a handle made for calls.
	s.Schedule = nil
	return s
}

// VariantName names the variant of the function parentID with these options: the same
// options give the same name, so asking twice finds the first variant. It is not a Python
// identifier on purpose: Function.from_name never finds a variant.
func (o VariantOptions) VariantName(parentName, parentID string) string {
	b, _ := json.Marshal(o) // numbers, strings and maps of them: it cannot fail
	sum := sha256.Sum256(append([]byte(parentID+"\n"), b...))
	return parentName + "~" + hex.EncodeToString(sum[:])[:12]
}

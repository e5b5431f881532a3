// Package gpu is what gust knows of GPUs: the request a function or sandbox makes (gpu="H100",
// "A100-80GB:2", "any", or a list in order of preference), parsed once into a typed value, and
// the devices a worker reports. Matching one against the other is placement's question. It
// imports nothing of gust's.
package gpu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Types are the GPU names accepted, as Modal spells them. "A100" is either A100; "ANY" is any
// GPU at all.
var Types = []string{"T4", "L4", "A10", "A10G", "A100", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200", "ANY"}

// Known reports whether t (upper case) is one of Types.
func Known(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Choice is one acceptable GPU configuration: a type ("H100", or "ANY") and how many.
type Choice struct {
	Type  string
	Count int
}

// String is the choice as users write it: "H100", "A100-80GB:2".
func (c Choice) String() string {
	if c.Count > 1 {
		return fmt.Sprintf("%s:%d", c.Type, c.Count)
	}
	return c.Type
}

// Request is what a container asks for: choices in order of preference, any one of which will
// do. The zero Request asks for no GPU. On the wire it is null, a string, or a list of strings.
type Request []Choice

// ParseChoice reads one "TYPE[:COUNT]".
func ParseChoice(s string) (Choice, error) {
	name, count, hasCount := strings.Cut(strings.TrimSpace(s), ":")
	c := Choice{Type: strings.ToUpper(strings.TrimSpace(name)), Count: 1}
	if !Known(c.Type) {
		return c, fmt.Errorf("gpu %q is not a known GPU type; use one of %s, optionally with a count as in \"H100:2\"", s, strings.Join(Types, ", "))
	}
	if hasCount {
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 || n > 8 {
			return c, fmt.Errorf("gpu %q: the count after ':' must be 1 to 8", s)
		}
		c.Count = n
	}
	return c, nil
}

// Parse reads a list of choices; an empty list is no GPU.
func Parse(choices ...string) (Request, error) {
	var r Request
	for _, s := range choices {
		c, err := ParseChoice(s)
		if err != nil {
			return nil, err
		}
		r = append(r, c)
	}
	return r, nil
}

// String lists the choices: "H100 or A100-80GB:2".
func (r Request) String() string {
	parts := make([]string, len(r))
	for i, c := range r {
		parts[i] = c.String()
	}
	return strings.Join(parts, " or ")
}

// UnmarshalJSON accepts null, "H100" or ["H100", "A100-80GB:2"], and refuses unknown types.
func (r *Request) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*r = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		parsed, err := Parse(one)
		if err != nil {
			return err
		}
		*r = parsed
		return nil
	}
	var list []any
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("gpu must be a string such as \"H100\" or \"A100-80GB:2\", or a list of them, got %s", b)
	}
	if len(list) == 0 {
		return fmt.Errorf("gpu list is empty")
	}
	strs := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return fmt.Errorf("gpu list entries must be strings such as \"H100\", got %v", e)
		}
		strs[i] = s
	}
	parsed, err := Parse(strs...)
	if err != nil {
		return err
	}
	*r = parsed
	return nil
}

// MarshalJSON writes null, one string, or a list, as the SDKs send it.
func (r Request) MarshalJSON() ([]byte, error) {
	switch len(r) {
	case 0:
		return []byte("null"), nil
	case 1:
		return json.Marshal(r[0].String())
	}
	strs := make([]string, len(r))
	for i, c := range r {
		strs[i] = c.String()
	}
	return json.Marshal(strs)
}

// Device is one GPU a worker has, as its discovery found it (nvidia-smi or a declared test
// inventory). UUID names it for exclusive placement: two devices of one type are never one.
type Device struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid,omitempty"`
	Model string `json:"model"` // as nvidia-smi names it, e.g. "NVIDIA H100 80GB HBM3"
	// Type is the model as users write it ("H100", "A100-80GB"); "" for a model gust has no
	// name for, which only gpu="any" takes.
	Type      string `json:"type,omitempty"`
	MemoryMiB int    `json:"memory"`
	Driver    string `json:"driver,omitempty"` // driver version, e.g. "570.86.15"
	CUDA      string `json:"cuda,omitempty"`   // the newest CUDA the driver supports, e.g. "12.8"
	MIG       string `json:"mig,omitempty"`    // MIG mode: "Enabled", "Disabled", or "" where not supported
}

// TypeOf is a device's type: the one it reports, else its model's.
func (d Device) TypeOf() string {
	if d.Type != "" {
		return d.Type
	}
	return Normalize(d.Model, d.MemoryMiB)
}

// Normalize turns a model name as the driver reports it ("NVIDIA A100-SXM4-80GB", "Tesla
// T4", "NVIDIA H100 80GB HBM3") into the type users write, or "" when it is none of Types.
// The A100's two sizes differ only by memory, so memMiB decides between them.
func Normalize(model string, memMiB int) string {
	m := strings.ToUpper(model)
	words := strings.FieldsFunc(m, func(r rune) bool { return r == ' ' || r == '-' || r == '_' })
	has := func(w string) bool {
		for _, x := range words {
			if x == w {
				return true
			}
		}
		return false
	}
	switch {
	case strings.Contains(m, "B200"):
		return "B200"
	case strings.Contains(m, "H200"):
		return "H200"
	case strings.Contains(m, "H100"):
		return "H100"
	case strings.Contains(m, "L40S"):
		return "L40S"
	case strings.Contains(m, "A100"):
		if strings.Contains(m, "80GB") || (!strings.Contains(m, "40GB") && memMiB > 50000) {
			return "A100-80GB"
		}
		return "A100-40GB"
	case has("A10G"):
		return "A10G"
	case has("A10"):
		return "A10"
	case has("L4"):
		return "L4"
	case has("T4"):
		return "T4"
	}
	return ""
}

// Matches reports whether a device is of the choice's type.
func (c Choice) Matches(d Device) bool {
	t := d.TypeOf()
	switch c.Type {
	case "ANY":
		return true
	case "A100":
		return strings.HasPrefix(t, "A100")
	}
	return t == c.Type
}

// Take returns the first c.Count devices of the choice's type among devs, in their order, or
// nil when there are too few.
func (c Choice) Take(devs []Device) []Device {
	var out []Device
	for _, d := range devs {
		if len(out) < max(c.Count, 1) && c.Matches(d) {
			out = append(out, d)
		}
	}
	if len(out) < max(c.Count, 1) {
		return nil
	}
	return out
}

// FitsIn reports whether the devices hold the choice: enough of them are of its type.
func (c Choice) FitsIn(devs []Device) bool { return c.Take(devs) != nil }

// CountIn is how many of devs are of the choice's type.
func (c Choice) CountIn(devs []Device) int {
	n := 0
	for _, d := range devs {
		if c.Matches(d) {
			n++
		}
	}
	return n
}

// FitsIn reports whether the devices hold one of the request's choices; a request for no GPU
// fits anywhere.
func (r Request) FitsIn(devs []Device) bool {
	if len(r) == 0 {
		return true
	}
	for _, c := range r {
		if c.FitsIn(devs) {
			return true
		}
	}
	return false
}

// MaxCount is the most GPUs any of r's choices takes: what a quota must allow for.
func (r Request) MaxCount() int {
	n := 0
	for _, c := range r {
		n = max(n, max(c.Count, 1))
	}
	return n
}

// Usage is what sampling saw of a container's GPUs while it ran (nvidia-smi, every few
// seconds): the most memory in use at once, over all its GPUs, and their mean utilisation.
type Usage struct {
	PeakMemoryMiB      int     `json:"peak_memory_mib"`
	MeanUtilizationPct float64 `json:"mean_utilization_pct"`
	Samples            int     `json:"samples"`
}

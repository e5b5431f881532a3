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

// Types are the GPU names accepted, as Modal spells them.
var Types = []string{"T4", "L4", "A10G", "A100", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200", "ANY"}

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
	c := Choice{Type: strings.ToUpper(name), Count: 1}
	known := false
	for _, t := range Types {
		known = known || t == c.Type
	}
	if !known {
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

// Device is one GPU a worker has.
type Device struct {
	Model     string `json:"model"` // as nvidia-smi names it, e.g. "NVIDIA H100 80GB HBM3"
	MemoryMiB int    `json:"memory"`
}

// Matches reports whether a device is of the choice's type.
func (c Choice) Matches(d Device) bool {
	m := strings.ToUpper(d.Model)
	switch c.Type {
	case "ANY":
		return true
	case "A100-80GB":
		return strings.Contains(m, "A100") && d.MemoryMiB > 50000
	case "A100-40GB":
		return strings.Contains(m, "A100") && d.MemoryMiB <= 50000
	}
	return strings.Contains(m, c.Type)
}

// FitsIn reports whether the devices hold the choice: enough of them are of its type.
func (c Choice) FitsIn(devs []Device) bool {
	n := 0
	for _, d := range devs {
		if c.Matches(d) {
			n++
		}
	}
	return n >= c.Count
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

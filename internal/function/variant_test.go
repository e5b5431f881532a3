package function

import (
	"testing"
	"time"

	"github.com/gust-run/gust/internal/wire"
)

func TestVariantOptionsApply(t *testing.T) {
	five := 5
	parent := Spec{Name: "f", CPU: 1, MemoryMiB: 512, Env: map[string]string{"A": "1"},
		Secrets: []SecretRef{{Name: "s1"}}, Schedule: &Schedule{Period: wire.Duration(time.Minute)}}
	cpu, mem, to := 2.0, 1024, wire.Duration(7*time.Second)
	o := VariantOptions{CPU: &cpu, MemoryMiB: &mem, Timeout: &to, MaxContainers: &five,
		Env: map[string]string{"B": "2"}, Secrets: []SecretRef{{Name: "s2"}}}
	got := o.Apply(parent)
	if got.CPU != 2 || got.MemoryMiB != 1024 || got.Timeout != to || *got.MaxContainers != 5 {
		t.Fatalf("options not applied: %+v", got)
	}
	if got.Env["A"] != "1" || got.Env["B"] != "2" || len(got.Secrets) != 2 {
		t.Fatalf("env or secrets not merged: %+v %+v", got.Env, got.Secrets)
	}
	if got.Schedule != nil {
		t.Fatal("a variant must not inherit its parent's schedule")
	}
	if parent.Env["B"] != "" || len(parent.Secrets) != 1 || parent.CPU != 1 {
		t.Fatal("Apply changed the parent's spec")
	}
	if (VariantOptions{}).Apply(parent).MemoryMiB != 512 {
		t.Fatal("options left out must keep the parent's values")
	}
}

func TestVariantName(t *testing.T) {
	cpu, cpu2 := 2.0, 3.0
	a := VariantOptions{CPU: &cpu}.VariantName("f", "fu-1")
	if a != (VariantOptions{CPU: &cpu}).VariantName("f", "fu-1") {
		t.Fatal("the same options must name the same variant")
	}
	if a == (VariantOptions{CPU: &cpu2}).VariantName("f", "fu-1") || a == (VariantOptions{CPU: &cpu}).VariantName("f", "fu-2") {
		t.Fatal("other options, or another parent, must name another variant")
	}
	if fnNameRE.MatchString(a) {
		t.Fatalf("a variant's name %q must not be one Function.from_name can ask for", a)
	}
}

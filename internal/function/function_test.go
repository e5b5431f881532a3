package function

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestValidate(t *testing.T) {
	intp := func(n int) *int { return &n }
	tests := []struct {
		name string
		spec Spec
		want string // "" for valid
	}{
		{"defaults", Spec{Name: "f", ImageID: "im-1"}, ""},
		{"class needs methods", Spec{Name: "C", Kind: KindClass, ImageID: "im-1"}, "at least one @method"},
		{"bad name", Spec{Name: "1f", ImageID: "im-1"}, "not a Python identifier"},
		{"no image", Spec{Name: "f"}, "image_id is required"},
		{"too many cpus", Spec{Name: "f", ImageID: "im-1", CPU: 64}, "cpu must be"},
		{"limit below request", Spec{Name: "f", ImageID: "im-1", CPU: 1, CPULimit: 0.5}, "cpu limit"},
		{"tiny memory", Spec{Name: "f", ImageID: "im-1", MemoryMiB: 4}, "memory must be"},
		{"bad gpu", Spec{Name: "f", ImageID: "im-1", GPU: "H1000"}, "not a known GPU type"},
		{"gpu list", Spec{Name: "f", ImageID: "im-1", GPU: []any{"h100", "A100-80GB:2"}}, ""},
		{"max below min", Spec{Name: "f", ImageID: "im-1", MinContainers: 3, MaxContainers: intp(2)}, "less than min_containers"},
		{"zero max", Spec{Name: "f", ImageID: "im-1", MaxContainers: intp(0)}, "max_containers must be"},
		{"retries", Spec{Name: "f", ImageID: "im-1", Retries: &Retries{MaxRetries: 11}}, "retries must be"},
		{"target above max", Spec{Name: "f", ImageID: "im-1", MaxInputs: 2, TargetInputs: intp(3)}, "target_inputs"},
		{"bad cron", Spec{Name: "f", ImageID: "im-1", Schedule: &Schedule{Cron: "often"}}, "is not valid"},
		{"cron and period", Spec{Name: "f", ImageID: "im-1", Schedule: &Schedule{Cron: "* * * * *", Period: 5}}, "not both"},
		{"cron", Spec{Name: "f", ImageID: "im-1", Schedule: &Schedule{Cron: "0 9 * * 1", Timezone: "Europe/Paris"}}, ""},
		{"bad env", Spec{Name: "f", ImageID: "im-1", Env: map[string]string{"1X": "y"}}, "not a valid variable"},
		{"short scaledown", Spec{Name: "f", ImageID: "im-1", ScaledownWindow: 0.5}, "scaledown_window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate(2, 4096)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tt.spec.Timeout != DefaultTimeout || tt.spec.MaxInputs != 1 || tt.spec.ScaledownWindow != DefaultScaledownWindow || tt.spec.Retries == nil {
					t.Fatalf("defaults not filled: %+v", tt.spec)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("got %v, want an invalid error saying %q", err, tt.want)
			}
		})
	}
}

func TestGPUMatches(t *testing.T) {
	gpus, err := ParseGPU("a100-80gb:2")
	if err != nil || len(gpus) != 1 || gpus[0].Type != "A100-80GB" || gpus[0].Count != 2 {
		t.Fatalf("ParseGPU: %v %v", gpus, err)
	}
	if !gpus[0].Matches("NVIDIA A100-SXM4-80GB", 81920) || gpus[0].Matches("NVIDIA A100-SXM4-40GB", 40960) {
		t.Fatal("A100-80GB matched the wrong card")
	}
	h, _ := ParseGPU("H100")
	if !h[0].Matches("NVIDIA H100 80GB HBM3", 81559) || h[0].Matches("NVIDIA H200", 143771) {
		t.Fatal("H100 matched the wrong card")
	}
}

func TestRetryDelayAndSchedule(t *testing.T) {
	r := Retries{MaxRetries: 3, BackoffCoefficient: 2, InitialDelay: 1, MaxDelay: 3}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 3 * time.Second} {
		if got := r.Delay(n); got != want {
			t.Fatalf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	at := time.Date(2026, 11, 27, 8, 30, 0, 0, time.UTC)
	if got := (Schedule{Period: 90}).Next(at); got != at.Add(90*time.Second) {
		t.Fatalf("Period next = %v", got)
	}
	if got := (Schedule{Cron: "0 9 * * *"}).Next(at); !got.Equal(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("Cron next = %v", got)
	}
}

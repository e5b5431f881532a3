package function

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/wire"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		spec string // JSON as the SDK publishes it, beside name and image_id
		want string // "" for valid
	}{
		{"defaults", `{}`, ""},
		{"class needs methods", `{"kind": "class"}`, "at least one @method"},
		{"bad name", `{"name": "1f"}`, "not a Python identifier"},
		{"no image", `{"image_id": ""}`, "image_id is required"},
		{"too many cpus", `{"cpu": 64}`, "cpu must be"},
		{"limit below request", `{"cpu": 1, "cpu_limit": 0.5}`, "cpu limit"},
		{"tiny memory", `{"memory": 4}`, "memory must be"},
		{"bad gpu", `{"gpu": "H1000"}`, "not a known GPU type"},
		{"gpu list", `{"gpu": ["h100", "A100-80GB:2"]}`, ""},
		{"max below min", `{"min_containers": 3, "max_containers": 2}`, "less than min_containers"},
		{"zero max", `{"max_containers": 0}`, "max_containers must be"},
		{"retries", `{"retries": {"max_retries": 11}}`, "retries must be"},
		{"target above max", `{"max_inputs": 2, "target_inputs": 3}`, "target_inputs"},
		{"bad cron", `{"schedule": {"cron": "often"}}`, "is not valid"},
		{"cron and period", `{"schedule": {"cron": "* * * * *", "period": 5}}`, "not both"},
		{"cron", `{"schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Paris"}}`, ""},
		{"bad env", `{"env": {"1X": "y"}}`, "not a valid variable"},
		{"short scaledown", `{"scaledown_window": 0.5}`, "scaledown_window"},
		{"bad timeout", `{"timeout": "soon"}`, "number of seconds"},
		{"cpu below the cgroup minimum", `{"cpu": 0.005}`, "between 0.01 and 2"},
		{"cpu at the minimum", `{"cpu": 0.01}`, ""},
		{"cpu limit below the cgroup minimum", `{"cpu": 0.01, "cpu_limit": 0.001}`, "cpu limit"},
		{"sub-second timeout", `{"timeout": 0.5}`, "timeout must be between 1 and 86400"},
		{"one-second timeout", `{"timeout": 1}`, ""},
		{"NUL in an inline secret", `{"secrets": [{"env": {"A": "b\u0000"}}]}`, "NUL"},
		{"NUL in an env value", `{"env": {"A": "b\u0000"}}`, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := Spec{Name: "f", ImageID: "im-1"}
			err := json.Unmarshal([]byte(tt.spec), &sp)
			if err == nil {
				sp.ApplyDefaults()
				err = sp.Validate(2, 4096)
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if sp.Timeout == 0 || sp.MaxInputs != 1 || sp.ScaledownWindow.D() != DefaultScaledownWindow || sp.Retries == nil {
					t.Fatalf("defaults not filled: %+v", sp)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// A spec is validated without defaults when a client patches it (update_autoscaler): a zero
// scaledown window asked for is refused, not replaced by the default.
func TestValidateDoesNotFillDefaults(t *testing.T) {
	sp := Spec{Name: "f", ImageID: "im-1"}
	sp.ApplyDefaults()
	sp.ScaledownWindow = 0
	if err := sp.Validate(2, 4096); err == nil || !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a zero scaledown_window was accepted: %v", err)
	}
}

func TestStateMachine(t *testing.T) {
	allowed := map[[2]State]bool{
		{StateActive, StateReplaced}: true, {StateActive, StateStopped}: true, {StateReplaced, StateStopped}: true,
	}
	for _, from := range StateMachine.States() {
		for _, to := range StateMachine.States() {
			if got := StateMachine.Can(from, to); got != allowed[[2]State{from, to}] {
				t.Errorf("%s → %s allowed = %v", from, to, got)
			}
		}
	}
}

func TestRetryDelayAndSchedule(t *testing.T) {
	r := Retries{MaxRetries: 3, BackoffCoefficient: 2, InitialDelay: wire.Seconds(1), MaxDelay: wire.Seconds(3)}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 3 * time.Second} {
		if got := r.Delay(n); got != want {
			t.Fatalf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	at := time.Date(2026, 11, 27, 8, 30, 0, 0, time.UTC)
	if got := (Schedule{Period: wire.Seconds(90)}).Next(at); got != at.Add(90*time.Second) {
		t.Fatalf("Period next = %v", got)
	}
	if got := (Schedule{Cron: "0 9 * * *"}).Next(at); !got.Equal(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("Cron next = %v", got)
	}
}

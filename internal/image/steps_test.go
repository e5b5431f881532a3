package image

import (
	"errors"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestStepValidate(t *testing.T) {
	tests := []struct {
		name string
		step Step
		ok   bool
	}{
		{"run", Step{Type: "run_commands", Commands: []string{"true"}}, true},
		{"run without commands", Step{Type: "run_commands"}, false},
		{"apt", Step{Type: "apt_install", Packages: []string{"curl", "libssl3"}}, true},
		{"apt injection", Step{Type: "apt_install", Packages: []string{"curl; rm -rf /"}}, false},
		{"pip with version", Step{Type: "pip_install", Packages: []string{"numpy==1.26.4", "torch>=2"}}, true},
		{"env", Step{Type: "env", Env: map[string]string{"A": "1"}}, true},
		{"env bad key", Step{Type: "env", Env: map[string]string{"A B": "1"}}, false},
		{"relative workdir", Step{Type: "workdir", Path: "app"}, false},
		{"unknown", Step{Type: "copy"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.step.Validate(1)
			if tt.ok != (err == nil) {
				t.Fatalf("Validate = %v", err)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("want an invalid error, got %v", err)
			}
		})
	}
}

func TestChainHash(t *testing.T) {
	a := Step{Type: "run_commands", Commands: []string{"make"}}
	b := Step{Type: "run_commands", Commands: []string{"make install"}}
	if ChainHash("p", a) != ChainHash("p", a) {
		t.Fatal("hash is not stable")
	}
	if ChainHash("p", a) == ChainHash("p", b) || ChainHash("p", a) == ChainHash("q", a) {
		t.Fatal("hash ignores the step or the parent")
	}
}

func TestShellCommandsQuote(t *testing.T) {
	s := Step{Type: "pip_install", Packages: []string{"numpy<2"}, FindLinks: "/w heels"}
	cmd := s.ShellCommands()[0]
	if !strings.Contains(cmd, "'numpy<2'") || !strings.Contains(cmd, "--find-links '/w heels'") {
		t.Fatalf("not quoted: %s", cmd)
	}
}

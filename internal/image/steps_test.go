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
		{"uv", Step{Type: "uv_pip_install", Packages: []string{"numpy==1.26.4"}}, true},
		{"uv requirements only", Step{Type: "uv_pip_install", Requirements: []string{"/r.txt"}}, true},
		{"uv nothing", Step{Type: "uv_pip_install"}, false},
		{"uv relative requirements", Step{Type: "uv_pip_install", Requirements: []string{"r.txt"}}, false},
		{"uv NUL in options", Step{Type: "uv_pip_install", Packages: []string{"a"}, ExtraOptions: "--x\x00"}, false},
		{"pip requirements only", Step{Type: "pip_install", Requirements: []string{"/r.txt"}}, false},
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

// TestStepHashPerWorkspace: a built step's cache key holds the workspace, so two workspaces
// building the same steps never share a layer (issue 9: a cache hit told B that A built them).
func TestStepHashPerWorkspace(t *testing.T) {
	a := Step{Type: "run_commands", Commands: []string{"make"}}
	if StepHash("ws-a", "p", a) != StepHash("ws-a", "p", a) {
		t.Fatal("hash is not stable")
	}
	for _, tt := range []struct{ name, ws1, p1, ws2, p2 string }{
		{"workspaces", "ws-a", "p", "ws-b", "p"},
		{"parents", "ws-a", "p", "ws-a", "q"},
	} {
		if StepHash(tt.ws1, tt.p1, a) == StepHash(tt.ws2, tt.p2, a) {
			t.Errorf("%s: the same hash for (%q, %q) and (%q, %q)", tt.name, tt.ws1, tt.p1, tt.ws2, tt.p2)
		}
	}
	if StepHash("ws-a", "p", a) == ChainHash("p", a) {
		t.Fatal("the per-workspace hash is the shared one")
	}
}

func TestShellCommandsQuote(t *testing.T) {
	s := Step{Type: "pip_install", Packages: []string{"numpy<2"}, FindLinks: "/w heels"}
	cmd := s.ShellCommands()[0]
	if !strings.Contains(cmd, "'numpy<2'") || !strings.Contains(cmd, "--find-links '/w heels'") {
		t.Fatalf("not quoted: %s", cmd)
	}
}

func TestUVPipInstallFallsBackToPip(t *testing.T) {
	s := Step{Type: "uv_pip_install", Packages: []string{"numpy<2"}, IndexURL: "http://127.0.0.1:1/simple",
		Requirements: []string{"/req.txt"}, ExtraOptions: "--no-deps", Pre: true}
	cmds := s.ShellCommands()
	if len(cmds) != 1 {
		t.Fatalf("want one command, got %q", cmds)
	}
	cmd := cmds[0]
	for _, want := range []string{"command -v uv", "uv pip install --system", "python -m pip install",
		"uv_pip_install installs with pip instead", "--index-url http://127.0.0.1:1/simple", "-r /req.txt", "--no-deps", "'numpy<2'", "--pre"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("command lacks %q: %s", want, cmd)
		}
	}
	pip := Step{Type: "pip_install", Packages: []string{"numpy<2"}}
	uv := Step{Type: "uv_pip_install", Packages: []string{"numpy<2"}}
	if ChainHash("p", pip) == ChainHash("p", uv) {
		t.Fatal("uv_pip_install and pip_install of the same packages share a cache key")
	}
}

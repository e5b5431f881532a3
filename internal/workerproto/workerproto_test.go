package workerproto

import (
	"errors"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestRegisterRequestValidate(t *testing.T) {
	valid := RegisterRequest{Name: "worker-1.example.com", APIToken: "0123456789abcdef0123456789abcdef", Addr: "http://10.0.0.5:7421", CPU: 8, MemoryMiB: 16384,
		Isolation: []string{"runc", "gvisor"}}
	tests := []struct {
		name string
		mod  func(r *RegisterRequest)
		says string // "" for valid
	}{
		{"valid", func(r *RegisterRequest) {}, ""},
		{"https", func(r *RegisterRequest) { r.Addr, r.TLSFingerprint = "https://w.example.com", strings.Repeat("ab", 32) }, ""},
		{"https without a fingerprint", func(r *RegisterRequest) { r.Addr = "https://w.example.com" }, "tls_fingerprint"},
		{"https with a bad fingerprint", func(r *RegisterRequest) { r.Addr, r.TLSFingerprint = "https://w.example.com", "abc" }, "tls_fingerprint"},
		{"no runtimes", func(r *RegisterRequest) { r.Isolation = nil }, ""},
		{"fractional cpu", func(r *RegisterRequest) { r.CPU = 0.5 }, ""},
		{"climbing name", func(r *RegisterRequest) { r.Name = "../../x" }, "name"},
		{"name starting with a dot", func(r *RegisterRequest) { r.Name = ".w" }, "name"},
		{"empty name", func(r *RegisterRequest) { r.Name = "" }, "name"},
		{"NUL in the name", func(r *RegisterRequest) { r.Name = "w\x00" }, "name"},
		{"long name", func(r *RegisterRequest) { r.Name = strings.Repeat("w", 65) }, "name"},
		{"negative cpu", func(r *RegisterRequest) { r.CPU = -1 }, "cpu"},
		{"zero cpu", func(r *RegisterRequest) { r.CPU = 0 }, "cpu"},
		{"absurd cpu", func(r *RegisterRequest) { r.CPU = 4097 }, "cpu"},
		{"zero memory", func(r *RegisterRequest) { r.MemoryMiB = 0 }, "memory"},
		{"absurd memory", func(r *RegisterRequest) { r.MemoryMiB = 64<<20 + 1 }, "memory"},
		{"unknown runtime", func(r *RegisterRequest) { r.Isolation = []string{"runc", "kvm"} }, "isolation"},
		{"not a URL", func(r *RegisterRequest) { r.Addr = "10.0.0.5:7421" }, "addr"},
		{"not http", func(r *RegisterRequest) { r.Addr = "unix:///run/w.sock" }, "addr"},
		{"no host", func(r *RegisterRequest) { r.Addr = "http:///x" }, "addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid
			tt.mod(&r)
			err := r.Validate()
			if tt.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("got %v, want an invalid error naming %q", err, tt.says)
			}
		})
	}
}

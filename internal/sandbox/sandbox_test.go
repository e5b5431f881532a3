package sandbox

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

func f(v float64) *float64 { return &v }
func i(v int) *int         { return &v }
func s(v string) *string   { return &v }

func TestValidate(t *testing.T) {
	base := CreateRequest{AppID: "ap-1", ImageID: "im-1"}
	tests := []struct {
		name    string
		mod     func(r *CreateRequest)
		wantErr bool
		check   func(t *testing.T, sb Sandbox)
	}{
		{"defaults", func(r *CreateRequest) {}, false, func(t *testing.T, sb Sandbox) {
			if sb.Timeout.D() != 300*time.Second || sb.CPU != 1 || sb.MemoryMiB != 1024 || sb.Isolation != "runc" || sb.Status != Pending {
				t.Fatalf("bad defaults: %+v", sb)
			}
		}},
		{"no app", func(r *CreateRequest) { r.AppID = "" }, true, nil},
		{"negative timeout", func(r *CreateRequest) { r.Timeout = f(-1) }, true, nil},
		{"zero idle timeout", func(r *CreateRequest) { r.IdleTimeout = f(0) }, true, nil},
		{"too much cpu", func(r *CreateRequest) { r.CPU = f(64) }, true, nil},
		{"tiny memory", func(r *CreateRequest) { r.Memory = i(1) }, true, nil},
		{"relative workdir", func(r *CreateRequest) { r.Workdir = s("tmp") }, true, nil},
		{"bad env key", func(r *CreateRequest) { r.Env = map[string]string{"A B": "x"} }, true, nil},
		{"bad name", func(r *CreateRequest) { r.Name = s("no spaces allowed") }, true, nil},
		{"unknown isolation", func(r *CreateRequest) { r.Isolation = "docker" }, true, nil},
		{"runsc alias", func(r *CreateRequest) { r.Isolation = "runsc" }, false, func(t *testing.T, sb Sandbox) {
			if sb.Isolation != IsolationGVisor {
				t.Fatalf("isolation %q", sb.Isolation)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.mod(&r)
			sb, err := r.Validate("runc", 2, 4096)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("want an invalid error, got %v", err)
				}
				if err.Error() == "" {
					t.Fatal("error has no message")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, sb)
			}
		})
	}
}

// TestValidateRanges: what runc and the kernel cannot apply is refused with the range that
// works, and the timeouts' checks match what their messages say.
func TestValidateRanges(t *testing.T) {
	base := CreateRequest{AppID: "ap-1", ImageID: "im-1"}
	tests := []struct {
		name string
		mod  func(r *CreateRequest)
		says string // "" for valid
	}{
		{"cpu below the cgroup minimum", func(r *CreateRequest) { r.CPU = f(0.005) }, "between 0.01 and 2"},
		{"cpu just above zero", func(r *CreateRequest) { r.CPU = f(1e-9) }, "between 0.01 and 2"},
		{"cpu at the minimum", func(r *CreateRequest) { r.CPU = f(0.01) }, ""},
		{"cpu at the host's cores", func(r *CreateRequest) { r.CPU = f(2) }, ""},
		{"sub-second timeout", func(r *CreateRequest) { r.Timeout = f(0.5) }, "timeout must be between 1 and 86400"},
		{"one-second timeout", func(r *CreateRequest) { r.Timeout = f(1) }, ""},
		{"timeout of a day", func(r *CreateRequest) { r.Timeout = f(86400) }, ""},
		{"timeout over a day", func(r *CreateRequest) { r.Timeout = f(86400.5) }, "timeout must be between 1 and 86400"},
		{"sub-second idle timeout", func(r *CreateRequest) { r.IdleTimeout = f(0.999) }, "idle_timeout must be between 1 and 86400"},
		{"NUL in a tag key", func(r *CreateRequest) { r.Tags = map[string]string{"a\x00": "b"} }, "NUL"},
		{"NUL in a tag value", func(r *CreateRequest) { r.Tags = map[string]string{"a": "b\x00"} }, "NUL"},
		{"NUL in the workdir", func(r *CreateRequest) { r.Workdir = s("/a\x00b") }, "NUL"},
		{"invalid UTF-8 in a tag", func(r *CreateRequest) { r.Tags = map[string]string{"a\xff": "b"} }, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.mod(&r)
			_, err := r.Validate("runc", 2, 4096)
			if tt.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("got %v, want an invalid error saying %q", err, tt.says)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/a/b", "/a/b", true},
		{"/a/../b", "/b", true},
		{"/a/./b/", "/a/b", true},
		{"a/b", "", false},
		{"", "", false},
		{"/../etc/passwd", "", false},
		{"/a/../../etc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CleanPath(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("CleanPath(%q) = %q, %v", tt.in, got, err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	terminal := []Status{Finished, Terminated, Timeout, Failed}
	allowed := map[[2]Status]bool{{Pending, Running}: true}
	for _, end := range terminal {
		allowed[[2]Status{Pending, end}] = true
		allowed[[2]Status{Running, end}] = true
	}
	for _, from := range Lifecycle.States() {
		for _, to := range Lifecycle.States() {
			if got := from.CanTransition(to); got != allowed[[2]Status{from, to}] {
				t.Errorf("%s → %s allowed = %v", from, to, got)
			}
		}
	}
}

func TestTransitions(t *testing.T) {
	if !Pending.CanTransition(Running) || !Running.CanTransition(Finished) || !Pending.CanTransition(Failed) {
		t.Fatal("allowed transition refused")
	}
	for _, end := range []Status{Finished, Terminated, Timeout, Failed} {
		if end.CanTransition(Running) || end.CanTransition(Terminated) {
			t.Fatalf("%s is terminal but allows a transition", end)
		}
	}
	if Running.CanTransition(Pending) {
		t.Fatal("running went back to pending")
	}
}

func TestNetworkRequestPolicy(t *testing.T) {
	list := func(s ...string) *[]string { return &s }
	for _, tc := range []struct {
		name  string
		req   NetworkRequest
		ports bool
		want  NetworkPolicy
		bad   bool
	}{
		{name: "open", req: NetworkRequest{}, want: NetworkPolicy{}},
		{name: "blocked", req: NetworkRequest{BlockNetwork: true}, want: NetworkPolicy{BlockNetwork: true}},
		{name: "cidrs normalised and deduplicated", req: NetworkRequest{OutboundCIDRAllowlist: list("203.0.113.7/24", "203.0.113.0/24", "198.51.100.1")},
			want: NetworkPolicy{OutboundCIDRAllowlist: []string{"203.0.113.0/24", "198.51.100.1/32"}, Allowlisted: true}},
		{name: "older name", req: NetworkRequest{CIDRAllowlist: list("203.0.113.0/24")},
			want: NetworkPolicy{OutboundCIDRAllowlist: []string{"203.0.113.0/24"}, Allowlisted: true}},
		{name: "empty allowlist allows nothing", req: NetworkRequest{OutboundCIDRAllowlist: list()}, want: NetworkPolicy{Allowlisted: true}},
		{name: "domains", req: NetworkRequest{OutboundDomainAllowlist: list("PyPI.org.", "*.github.com")},
			want: NetworkPolicy{OutboundDomainAllowlist: []string{"pypi.org", "*.github.com"}, Allowlisted: true}},
		{name: "block with cidrs", req: NetworkRequest{BlockNetwork: true, CIDRAllowlist: list("1.2.3.4")}, bad: true},
		{name: "block with domains", req: NetworkRequest{BlockNetwork: true, OutboundDomainAllowlist: list("pypi.org")}, bad: true},
		{name: "block with ports", req: NetworkRequest{BlockNetwork: true}, ports: true, bad: true},
		{name: "both names", req: NetworkRequest{CIDRAllowlist: list("1.2.3.4"), OutboundCIDRAllowlist: list("1.2.3.4")}, bad: true},
		{name: "ipv6", req: NetworkRequest{OutboundCIDRAllowlist: list("2001:db8::/32")}, bad: true},
		{name: "not a cidr", req: NetworkRequest{OutboundCIDRAllowlist: list("1.2.3.0/33")}, bad: true},
		{name: "bad domain", req: NetworkRequest{OutboundDomainAllowlist: list("a b.com")}, bad: true},
		{name: "wildcard inside", req: NetworkRequest{OutboundDomainAllowlist: list("a.*.com")}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.req.Policy(tc.ports)
			if tc.bad {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("got %v, %v; want an invalid error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

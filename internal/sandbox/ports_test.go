package sandbox

import (
	"errors"
	"reflect"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestValidatePortsAndProbe(t *testing.T) {
	base := func() CreateRequest { return CreateRequest{AppID: "ap-1", ImageID: "im-1"} }
	many := make([]int, MaxPorts+1)
	for i := range many {
		many[i] = 8000 + i
	}
	for _, tc := range []struct {
		name string
		edit func(*CreateRequest)
		ok   bool
	}{
		{"no ports", func(r *CreateRequest) {}, true},
		{"one of each", func(r *CreateRequest) {
			r.EncryptedPorts, r.UnencryptedPorts, r.H2Ports = []int{8000}, []int{22}, []int{8443}
		}, true},
		{"port 0", func(r *CreateRequest) { r.EncryptedPorts = []int{0} }, false},
		{"port 65536", func(r *CreateRequest) { r.UnencryptedPorts = []int{65536} }, false},
		{"port 65535", func(r *CreateRequest) { r.H2Ports = []int{65535} }, true},
		{"duplicate", func(r *CreateRequest) { r.EncryptedPorts = []int{8000, 8000} }, false},
		{"duplicate across lists", func(r *CreateRequest) { r.EncryptedPorts, r.H2Ports = []int{8000}, []int{8000} }, false},
		{"too many", func(r *CreateRequest) { r.EncryptedPorts = many }, false},
		{"exactly the most", func(r *CreateRequest) { r.EncryptedPorts = many[:MaxPorts] }, true},
		{"block_network with ports", func(r *CreateRequest) { r.EncryptedPorts, r.BlockNetwork = []int{8000}, true }, false},
		{"block_network with an allowlist", func(r *CreateRequest) { r.InboundCIDRAllowlist, r.BlockNetwork = []string{"10.0.0.0/8"}, true }, false},
		{"gvisor with ports", func(r *CreateRequest) { r.EncryptedPorts, r.Isolation = []int{8000}, IsolationGVisor }, true},
		{"gvisor with a TCP probe", func(r *CreateRequest) { r.ReadinessProbe, r.Isolation = &Probe{TCPPort: 8000}, IsolationGVisor }, true},
		{"gvisor with an exec probe", func(r *CreateRequest) {
			r.ReadinessProbe, r.Isolation = &Probe{ExecArgv: []string{"true"}}, IsolationGVisor
		}, true},
		{"bad cidr", func(r *CreateRequest) { r.InboundCIDRAllowlist = []string{"10.0.0.0/33"} }, false},
		{"cidr and address", func(r *CreateRequest) { r.InboundCIDRAllowlist = []string{"10.1.2.3/8", "2001:db8::1"} }, true},
		{"probe with both", func(r *CreateRequest) { r.ReadinessProbe = &Probe{TCPPort: 1, ExecArgv: []string{"true"}} }, false},
		{"probe with neither", func(r *CreateRequest) { r.ReadinessProbe = &Probe{} }, false},
		{"probe port too big", func(r *CreateRequest) { r.ReadinessProbe = &Probe{TCPPort: 70000} }, false},
		{"probe interval too short", func(r *CreateRequest) { r.ReadinessProbe = &Probe{TCPPort: 1, IntervalMS: 1} }, false},
		{"probe argv with NUL", func(r *CreateRequest) { r.ReadinessProbe = &Probe{ExecArgv: []string{"a\x00b"}} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(&r)
			_, err := r.Validate(IsolationRunc, 2, 4096)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("err = %v, want an invalid-input error", err)
			}
		})
	}
}

func TestValidatePortsResult(t *testing.T) {
	r := CreateRequest{AppID: "ap-1", ImageID: "im-1", EncryptedPorts: []int{8000}, UnencryptedPorts: []int{22}, H2Ports: []int{8443},
		InboundCIDRAllowlist: []string{"10.1.2.3/8", "192.0.2.7"}, ReadinessProbe: &Probe{TCPPort: 8000}}
	sb, err := r.Validate(IsolationRunc, 2, 4096)
	if err != nil {
		t.Fatal(err)
	}
	want := []Port{{Port: 8000}, {Port: 22, Unencrypted: true}, {Port: 8443, H2: true}}
	if !reflect.DeepEqual(sb.Ports, want) {
		t.Errorf("ports = %+v, want %+v", sb.Ports, want)
	}
	if !reflect.DeepEqual(sb.InboundCIDRAllowlist, []string{"10.0.0.0/8", "192.0.2.7/32"}) {
		t.Errorf("allowlist = %v", sb.InboundCIDRAllowlist)
	}
	if sb.ReadinessProbe == nil || sb.ReadinessProbe.IntervalMS != DefaultProbeIntervalMS {
		t.Errorf("probe = %+v, want the default interval filled", sb.ReadinessProbe)
	}
	if r.ReadinessProbe.IntervalMS != 0 {
		t.Error("Validate changed the request's probe")
	}
}

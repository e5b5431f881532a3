package gpu

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRequestJSON(t *testing.T) {
	for _, tc := range []struct {
		in, out, err string
	}{
		{in: `null`, out: `null`},
		{in: `"h100"`, out: `"H100"`},
		{in: `"A100-80GB:2"`, out: `"A100-80GB:2"`},
		{in: `["H100", "a100-80gb"]`, out: `["H100","A100-80GB"]`},
		{in: `"H1000"`, err: "not a known GPU type"},
		{in: `"H100:99"`, err: "count after ':'"},
		{in: `[]`, err: "empty"},
		{in: `[1]`, err: "must be strings"},
		{in: `7`, err: "must be a string"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var r Request
			err := json.Unmarshal([]byte(tc.in), &r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(r)
			if string(b) != tc.out {
				t.Fatalf("round trip %s, want %s", b, tc.out)
			}
		})
	}
}

func TestFitsIn(t *testing.T) {
	h100 := Device{Model: "NVIDIA H100 80GB HBM3", MemoryMiB: 81559}
	a100s := Device{Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960}
	for _, tc := range []struct {
		req  string
		devs []Device
		want bool
	}{
		{"", nil, true},
		{"H100", []Device{h100}, true},
		{"H100:2", []Device{h100}, false},
		{"H100:2", []Device{h100, h100}, true},
		{"A100-80GB", []Device{a100s}, false},
		{"A100-40GB", []Device{a100s}, true},
		{"A100", []Device{a100s}, true},
		{"any", []Device{a100s}, true},
		{"T4", []Device{h100}, false},
	} {
		var r Request
		if tc.req != "" {
			var err error
			if r, err = Parse(tc.req); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.FitsIn(tc.devs); got != tc.want {
			t.Errorf("%q in %v: %v, want %v", tc.req, tc.devs, got, tc.want)
		}
	}
}

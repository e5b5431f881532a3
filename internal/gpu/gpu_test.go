package gpu

import (
	"encoding/json"
	"fmt"
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

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		model string
		mem   int
		want  string
	}{
		{"Tesla T4", 15360, "T4"},
		{"NVIDIA L4", 23034, "L4"},
		{"NVIDIA A10", 23028, "A10"},
		{"NVIDIA A10G", 23028, "A10G"},
		{"NVIDIA L40S", 46068, "L40S"},
		{"NVIDIA L40", 46068, ""},
		{"NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"},
		{"NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"},
		{"NVIDIA A100 PCIe", 81920, "A100-80GB"},
		{"NVIDIA H100 80GB HBM3", 81559, "H100"},
		{"NVIDIA H100 NVL", 95830, "H100"},
		{"NVIDIA H200", 143771, "H200"},
		{"NVIDIA B200", 183359, "B200"},
		{"NVIDIA GeForce RTX 4090", 24564, ""},
	} {
		if got := Normalize(tc.model, tc.mem); got != tc.want {
			t.Errorf("Normalize(%q, %d) = %q, want %q", tc.model, tc.mem, got, tc.want)
		}
	}
}

func TestTake(t *testing.T) {
	devs := []Device{{Index: 0, Type: "A10G"}, {Index: 1, Type: "H100"}, {Index: 2, Type: "H100"}, {Index: 3, Model: "NVIDIA GeForce RTX 4090"}}
	for _, tc := range []struct {
		req  string
		want []int
	}{
		{"H100", []int{1}},
		{"H100:2", []int{1, 2}},
		{"H100:3", nil},
		{"A10", nil}, // an A10G is not an A10
		{"any:4", []int{0, 1, 2, 3}},
	} {
		c, err := ParseChoice(tc.req)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, d := range c.Take(devs) {
			got = append(got, d.Index)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s takes %v, want %v", tc.req, got, tc.want)
		}
	}
}

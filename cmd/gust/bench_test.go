package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestProcField(t *testing.T) {
	file := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(file, []byte("Name:\tgust\nVmRSS:\t   2048 kB\nBad:\tx kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key  string
		want int64
		ok   bool
	}{
		{"VmRSS:", 2048 << 10, true},
		{"Bad:", 0, false},
		{"Missing:", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, err := procField(file, tt.key)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("procField(%q) = %d, %v; want %d (ok %v)", tt.key, got, err, tt.want, tt.ok)
			}
		})
	}
	if rss, err := selfRSS(); err != nil || rss <= 0 {
		t.Errorf("selfRSS() = %d, %v", rss, err)
	}
}

func TestPct(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	tests := []struct {
		p    int
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}}
	for _, tt := range tests {
		if got := pct(ds, tt.p); got != tt.want {
			t.Errorf("pct(%d) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("pct sorted its argument in place")
	}
}

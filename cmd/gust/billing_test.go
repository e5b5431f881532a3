package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func TestPlotAdvice(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a := &gust.Advice{Kind: "function", Name: "work", ResourceClass: "cpu", Recommendation: "split", Floor: 2, WindowSeconds: 100}
	for i, n := range []int{2, 5, 2, 3, 2} {
		a.Timeline = append(a.Timeline, struct {
			At         time.Time `json:"at"`
			Containers int       `json:"containers"`
		}{t0.Add(time.Duration(i*20) * time.Second), n})
	}
	path := filepath.Join(t.TempDir(), "usage.png")
	if err := plotAdvice(path, []*gust.Advice{a}, t0); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	if os.Getenv("GUST_KEEP_PLOT") != "" {
		os.WriteFile(os.Getenv("GUST_KEEP_PLOT"), b, 0o644)
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 3, 18, 15, 30, 0, 0, time.UTC) // a Wednesday
	for in, want := range map[string]time.Time{
		"2026-01-02":           time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC),
		"2026-01-02T03:04:05Z": time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"today":                time.Date(2026, 3, 18, 0, 0, 0, 0, time.UTC),
		"yesterday":            time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC),
		"3 days ago":           time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := parseWhen(in, now); err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if _, err := parseWhen("soon", now); err == nil {
		t.Error("soon accepted")
	}
	s, e, err := forRange("last month", now)
	if err != nil || !s.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("last month: %v %v %v", s, e, err)
	}
	s, e, _ = forRange("this week", now)
	if !s.Equal(time.Date(2026, 3, 16, 0, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("this week: %v %v", s, e)
	}
	if d, err := sinceFlag("7d", now); err != nil || !d.Equal(now.Add(-7*24*time.Hour)) {
		t.Errorf("7d: %v %v", d, err)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
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
		if got, err := parseWhen(in, now, nil); err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if _, err := parseWhen("soon", now, nil); err == nil {
		t.Error("soon accepted")
	}
	s, e, err := forRange("last month", now, nil)
	if err != nil || !s.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("last month: %v %v %v", s, e, err)
	}
	s, e, _ = forRange("this week", now, nil)
	if !s.Equal(time.Date(2026, 3, 16, 0, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("this week: %v %v", s, e)
	}
	if d, err := sinceFlag("7d", now, nil); err != nil || !d.Equal(now.Add(-7*24*time.Hour)) {
		t.Errorf("7d: %v %v", d, err)
	}
}

// TestTZ: --tz makes dates, ranges and "today" the zone's; local becomes a name or offset the
// server can read.
func TestTZ(t *testing.T) {
	now := time.Date(2026, 3, 18, 2, 30, 0, 0, time.UTC) // still the 17th in New York (UTC-4)
	loc, name, err := cliTZ("-4")
	if err != nil || name != "-4" {
		t.Fatalf("-4: %v %q %v", loc, name, err)
	}
	if got, _ := parseWhen("today", now, loc); !got.Equal(time.Date(2026, 3, 17, 4, 0, 0, 0, time.UTC)) {
		t.Errorf("today at -4: %v", got)
	}
	if got, _ := parseWhen("2026-01-02", now, loc); !got.Equal(time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC)) {
		t.Errorf("a date at -4: %v", got)
	}
	if got, _ := parseWhen("2026-01-02T00:00:00Z", now, loc); !got.Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("an RFC 3339 time keeps its zone: %v", got)
	}
	s, e, _ := forRange("yesterday", now, loc)
	if !s.Equal(time.Date(2026, 3, 16, 4, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2026, 3, 17, 4, 0, 0, 0, time.UTC)) {
		t.Errorf("yesterday at -4: %v %v", s, e)
	}
	if _, name, err := cliTZ("local"); err != nil || strings.EqualFold(name, "local") {
		t.Errorf("local: %q %v", name, err)
	}
	if _, name, err := cliTZ(""); err != nil || name != "" {
		t.Errorf("default: %q %v", name, err)
	}
	if _, _, err := cliTZ("Mars/Base"); err == nil {
		t.Error("Mars/Base accepted")
	}
}

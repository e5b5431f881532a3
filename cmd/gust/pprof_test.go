package main

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPprofNeedsToken checks that the profiler answers only requests with the daemon's token.
func TestPprofNeedsToken(t *testing.T) {
	srv := httptest.NewServer(pprofHandler("s3cret"))
	defer srv.Close()
	tests := []struct {
		path, auth string
		want       int
	}{
		{"/debug/pprof/", "", http.StatusUnauthorized},
		{"/debug/pprof/cmdline", "", http.StatusUnauthorized},
		{"/debug/pprof/goroutine?debug=1", "", http.StatusUnauthorized},
		{"/debug/pprof/heap", "Bearer wrong", http.StatusUnauthorized},
		{"/debug/pprof/", "Bearer s3cret", http.StatusOK},
		{"/debug/pprof/goroutine?debug=1", "Bearer s3cret", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.path+" "+tt.auth, func(t *testing.T) {
			if got := get(t, srv.URL+tt.path, tt.auth); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}
}

func get(t *testing.T, url, auth string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// TestStartPprof starts the profiler as the daemons do, from GUST_PPROF: only on loopback,
// and only for the token.
func TestStartPprof(t *testing.T) {
	var logs bytes.Buffer
	logger := log.New(&logs, "", 0)
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "10.1.2.3:0", "example.com:0", "127.0.0.1"} {
		t.Setenv("GUST_PPROF", addr)
		if stop, err := startPprof("tok", logger); err == nil {
			stop()
			t.Errorf("GUST_PPROF=%s: served, want refused (not loopback)", addr)
		}
	}

	t.Setenv("GUST_PPROF", "")
	stop, err := startPprof("tok", logger)
	if err != nil {
		t.Fatalf("unset GUST_PPROF: %v", err)
	}
	stop()

	t.Setenv("GUST_PPROF", "127.0.0.1:0")
	stop, err = startPprof("tok", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	url := pprofURL(t, logs.String())
	if got := get(t, url, ""); got != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", got)
	}
	if got := get(t, url, "Bearer tok"); got != http.StatusOK {
		t.Errorf("with the token: %d, want 200", got)
	}
}

// pprofURL finds the address startPprof logged.
func pprofURL(t *testing.T, logs string) string {
	t.Helper()
	_, rest, ok := strings.Cut(logs, "http://")
	if !ok {
		t.Fatalf("no address in the log: %q", logs)
	}
	if j := strings.IndexAny(rest, " \n"); j >= 0 {
		rest = rest[:j]
	}
	return "http://" + rest
}

func TestLoopbackAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:6060", "127.0.0.1:6060"},
		{"127.0.0.2:6060", "127.0.0.2:6060"},
		{"[::1]:6060", "[::1]:6060"},
		{"localhost:6060", "127.0.0.1:6060"},
		{":6060", ""},
		{"0.0.0.0:6060", ""},
		{"192.168.1.5:6060", ""},
		{"6060", ""},
	}
	for _, tt := range tests {
		got, err := loopbackAddr(tt.in)
		if (err == nil) != (tt.want != "") || got != tt.want {
			t.Errorf("loopbackAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof" // its init also fills http.DefaultServeMux, which gust never serves
	"os"
	"time"

	"github.com/gust-run/gust/internal/httpapi"
)

// startPprof serves Go's profiler on GUST_PPROF (e.g. 127.0.0.1:6060) when it is set: how the
// server and worker's CPU per function input was found and cut. The profiler shows the
// process's command line, memory and goroutines, so it listens only on a loopback address
// and answers only requests with the daemon's bearer token:
//
//	curl -H "Authorization: Bearer $GUST_TOKEN" http://127.0.0.1:6060/debug/pprof/
//
// The returned func stops it; it is a no-op when GUST_PPROF is unset.
func startPprof(token string, logger *log.Logger) (func(), error) {
	addr := os.Getenv("GUST_PPROF")
	if addr == "" {
		return func() {}, nil
	}
	addr, err := loopbackAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("GUST_PPROF: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("GUST_PPROF: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: pprofHandler(token), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Printf("pprof on %s stopped: %v", addr, err)
		}
	}()
	logger.Printf("pprof on http://%s/debug/pprof/ (bearer token required)", ln.Addr())
	return func() {
		if err := srv.Close(); err != nil {
			logger.Printf("closing pprof on %s: %v", addr, err)
		}
	}, nil
}

// pprofHandler serves /debug/pprof/ to requests that carry the token.
func pprofHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return httpapi.Auth(token, mux)
}

// loopbackAddr accepts HOST:PORT whose host is a loopback IP, or "localhost", which it
// turns into 127.0.0.1 rather than trust name resolution with it.
func loopbackAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q: want HOST:PORT on a loopback address, e.g. 127.0.0.1:6060: %w", addr, err)
	}
	if host == "localhost" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return addr, nil
	}
	return "", fmt.Errorf("%q: the profiler is served only on a loopback address (127.0.0.1:PORT or [::1]:PORT)", addr)
}

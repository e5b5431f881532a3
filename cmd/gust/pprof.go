package main

import (
	"log"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// startPprof serves Go's profiler on GUST_PPROF (e.g. 127.0.0.1:6060) when it is set: how the
// server and worker's CPU per function input was found and cut.
func startPprof() {
	addr := os.Getenv("GUST_PPROF")
	if addr == "" {
		return
	}
	go func() { log.Println(http.ListenAndServe(addr, nil)) }()
}

package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

// billingFlags are the server's (up and server) metering flags: its price table and where
// the operator's metrics are served without a token.
type billingFlags struct {
	prices      string
	metricsAddr string
}

func bindBilling(fs *flag.FlagSet) *billingFlags {
	f := &billingFlags{}
	fs.StringVar(&f.prices, "prices", os.Getenv("GUST_PRICES"), "price file (JSON: cpu_per_core_second, memory_per_gib_second, gpu_per_second, storage_per_gib_second, reserved) that prices the usage ledger; default GUST_PRICES, else Modal's list prices (docs/billing.md)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "also serve the operator's Prometheus metrics at /metrics on this address, without a token (GET /v1/metrics on the API needs the operator's token); anyone who reaches it sees workspace IDs and function names")
	return f
}

// serveMetrics serves h at /metrics on addr until ctx ends ("" serves nothing).
func serveMetrics(ctx context.Context, addr string, h http.Handler, logger *log.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Printf("metrics on %s stopped: %v", addr, err)
		}
	}()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	logger.Printf("operator metrics on http://%s/metrics", ln.Addr())
	return nil
}

package main

import (
	"context"
	"log"
	"os"

	"github.com/gust-run/gust/internal/server"
)

func init() {
	register(&command{name: "server", summary: "run the API server alone (workers connect with `gust worker`)", run: runServer})
}

func runServer(ctx context.Context, args []string) error {
	var d daemonFlags
	fs := newFlags("server")
	d.bind(fs)
	ingressF := bindIngress(fs)
	if err := d.parse(fs, args, os.Stderr); err != nil {
		return err
	}
	d.ingress = ingressF.config(d.dataDir)
	logger := log.New(os.Stderr, "gust server: ", log.LstdFlags)
	srv, httpSrv, ln, token, err := startServer(ctx, &d, logger)
	if err != nil {
		return err
	}
	reportIngress(srv, !d.noConfig, logger)
	defer httpSrv.Close()
	stopPprof, err := startPprof(token, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	if !d.noConfig {
		writeClientConfig("http://"+ln.Addr().String(), token)
	}
	logger.Printf("gust %s server listening on http://%s; workers join with: GUST_JOIN_TOKEN=<token in %s/join-token> gust worker --server http://%s (or --token-file FILE)", server.Version, ln.Addr(), d.dataDir, ln.Addr())
	<-ctx.Done()
	return nil
}

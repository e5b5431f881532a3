package main

import (
	"context"
	"log"
	"os"

	"github.com/gust-run/gust/internal/server"
	"github.com/gust-run/gust/internal/tlsconf"
)

func init() {
	register(&command{name: "server", summary: "run the API server alone (workers connect with `gust worker`)", run: runServer})
}

func runServer(ctx context.Context, args []string) error {
	var d daemonFlags
	fs := newFlags("server")
	d.bind(fs)
	ingressF := bindIngress(fs)
	d.billing = bindBilling(fs)
	if err := d.parse(fs, args, os.Stderr); err != nil {
		return err
	}
	d.ingress = ingressF.config(d.dataDir)
	logger := log.New(os.Stderr, "gust server: ", log.LstdFlags)
	srv, httpSrv, _, token, err := startServer(ctx, &d, logger)
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
		if path, err := writeClientConfig(d.url, token, d.tlsID); err != nil {
			logger.Printf("could not write client config: %v", err)
		} else {
			logger.Printf("client config written to %s", path)
		}
	}
	pin := ""
	if d.tlsID != nil {
		logger.Printf("serving TLS; the certificate's SHA-256 fingerprint is %s", d.tlsID.Fingerprint)
		pin = " --server-fingerprint " + d.tlsID.Fingerprint
	} else if !tlsconf.Loopback(d.addr) {
		logger.Printf("warning: serving plain HTTP beyond loopback (--tls=off): tokens cross the network in clear")
	}
	logger.Printf("gust %s server listening on %s; workers join with: GUST_JOIN_TOKEN=<token in %s/join-token> gust worker --server %s%s (or --token-file FILE)", server.Version, d.url, d.dataDir, remoteURL(d.url, d.addr), pin)
	<-ctx.Done()
	return nil
}

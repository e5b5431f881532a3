package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/gust-run/gust/internal/egress"
	"github.com/gust-run/gust/internal/worker"
)

func init() {
	register(&command{name: "worker", summary: "run a worker that joins a server (--server URL, the server's join token in GUST_JOIN_TOKEN or --token-file)", run: runWorker})
}

func runWorker(ctx context.Context, args []string) error {
	var d daemonFlags
	fs := newFlags("worker")
	d.bind(fs)
	serverURL := fs.String("server", os.Getenv("GUST_SERVER_URL"), "server URL")
	listen := fs.String("listen", "127.0.0.1:0", "address of the worker's own API, which the server must reach")
	buildEgress := bindBuildEgress(fs)
	if err := d.parse(fs, args, os.Stderr); err != nil {
		return err
	}
	token := d.token
	if token == "" {
		token = os.Getenv("GUST_JOIN_TOKEN")
	}
	if *serverURL == "" || token == "" {
		return errors.New("gust worker needs --server URL (or GUST_SERVER_URL) and the server's join token (DATA_DIR/join-token on the server) in GUST_JOIN_TOKEN or a file named by --token-file")
	}
	logger := log.New(os.Stderr, "gust worker: ", log.LstdFlags)
	if !d.noInstall {
		if err := ensurePackages(logger); err != nil {
			return err
		}
	}
	stopPprof, err := startPprof(token, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	w, err := worker.New(worker.Config{
		ServerURL: *serverURL, JoinToken: token, ListenAddr: *listen,
		StateDir: filepath.Join(d.dataDir, "containers"), LayerDir: d.layerDir(), DiskMiB: d.diskMiB, WarmPool: d.warmPool,
		BuildEgress: strings.Split(*buildEgress, ","), Logger: logger,
		TestGPUs: os.Getenv("GUST_TEST_GPUS"), DeviceRoot: os.Getenv("GUST_TEST_DEVICE_ROOT"), // tests only
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// bindBuildEgress adds --build-egress to up and worker, which run image builds: the hosts a
// build container may reach through the worker's egress proxy.
func bindBuildEgress(fs *flag.FlagSet) *string {
	return fs.String("build-egress", envOr("GUST_BUILD_EGRESS", strings.Join(egress.DefaultHosts(), ",")),
		"comma-separated hosts image builds may reach (host: ports 80 and 443; host:port; *.domain), through an HTTP proxy "+
			"that refuses everything else; \"\" gives builds no network (env GUST_BUILD_EGRESS)")
}

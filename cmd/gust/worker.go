package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gust-run/gust/internal/egress"
	"github.com/gust-run/gust/internal/image"
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
	var serverTLS serverTLSFlags
	serverTLS.bind(fs)
	netFlags := bindNetwork(fs)
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
	image.SetArchiveLimit(int64(d.archiveLimitMiB) << 20)
	if !d.noInstall {
		if err := ensurePackages(ctx, logger); err != nil {
			return err
		}
	}
	d.useRunsc(logger)
	stopPprof, err := startPprof(token, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	https := strings.HasPrefix(*serverURL, "https://")
	if !https && (serverTLS.fingerprint != "" || serverTLS.caFile != "") {
		return errors.New("--server-fingerprint and --server-ca verify an https server: give --server https://...")
	}
	stc, err := serverTLS.config()
	if err != nil {
		return err
	}
	id, err := d.tls.identity(d.dataDir, "worker", *listen, https)
	if err != nil {
		return err
	}
	if id != nil {
		logger.Printf("the worker's API serves TLS; its certificate's SHA-256 fingerprint is %s (sent to the server when registering)", id.Fingerprint)
	}
	w, err := worker.New(worker.Config{
		ServerURL: *serverURL, JoinToken: token, ListenAddr: *listen,
		StateDir: filepath.Join(d.dataDir, "containers"), LayerDir: d.layerDir(), DiskMiB: d.diskMiB, WarmPool: d.warmPool,
		BuildEgress: buildEgress.hosts(), BuildMirrors: buildEgress.mirrorList(), Logger: logger, ServerTLS: stc, TLS: id,
		Network: *netFlags.on, NetworkCIDR: *netFlags.cidr, NetworkAllow: strings.Split(*netFlags.allow, ","), NetworkMTU: *netFlags.mtu,
		DNSUpstream: netFlags.upstreams(),
		TestGPUs:    os.Getenv("GUST_TEST_GPUS"), DeviceRoot: os.Getenv("GUST_TEST_DEVICE_ROOT"), // tests only
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// buildNetFlags are up's and worker's settings for image builds' network.
type buildNetFlags struct{ egress, mirrors *string }

// bindBuildEgress adds --build-mirrors and --build-egress to up and worker, which run image
// builds: with --network (the default) builds run on the bridge under the default policy and
// reach the mirrors too; without it, only the --build-egress hosts through an HTTP proxy.
func bindBuildEgress(fs *flag.FlagSet) buildNetFlags {
	return buildNetFlags{
		egress: fs.String("build-egress", envOr("GUST_BUILD_EGRESS", strings.Join(egress.DefaultHosts(), ",")),
			"with --network=false: comma-separated hosts image builds may reach (host: ports 80 and 443; host:port; *.domain), through an HTTP proxy "+
				"that refuses everything else; \"\" gives builds no network (env GUST_BUILD_EGRESS)"),
		mirrors: fs.String("build-mirrors", envOr("GUST_BUILD_MIRRORS", ""),
			"comma-separated addresses or CIDRs of package mirrors that image builds reach although every container is denied them "+
				"(private ranges); builds otherwise get sandboxes' default policy (env GUST_BUILD_MIRRORS)"),
	}
}

func (f buildNetFlags) hosts() []string      { return strings.Split(*f.egress, ",") }
func (f buildNetFlags) mirrorList() []string { return strings.Split(*f.mirrors, ",") }

// networkFlags are the containers' network settings of up and worker.
type networkFlags struct {
	on          *bool
	cidr, allow *string
	dns         *string
	mtu         *int
}

// bindNetwork adds --network, --network-cidr and --network-allow to up and worker.
func bindNetwork(fs *flag.FlagSet) networkFlags {
	return networkFlags{
		on: fs.Bool("network", envOr("GUST_NETWORK", "true") == "true",
			"give every sandbox and function container its own network namespace on a bridge, with NAT and its outbound policy; false leaves them loopback only (env GUST_NETWORK)"),
		cidr: fs.String("network-cidr", envOr("GUST_NETWORK_CIDR", ""),
			"the containers' private range (default 10.88.0.0/16); two workers on one machine need different ranges (env GUST_NETWORK_CIDR)"),
		allow: fs.String("network-allow", envOr("GUST_NETWORK_ALLOW", ""),
			"comma-separated CIDRs containers may reach although they are in the always-denied ranges (a package mirror on a private address) (env GUST_NETWORK_ALLOW)"),
		mtu: fs.Int("network-mtu", envInt("GUST_NETWORK_MTU", 0),
			"the containers' MTU, 1280-65520 (default 0: 65520, as large as loopback's, which makes tunnels and other connections on this machine faster, while connections beyond it negotiate their own) (env GUST_NETWORK_MTU)"),
		dns: fs.String("dns-upstream", envOr("GUST_DNS_UPSTREAM", ""),
			"comma-separated resolvers (address or address:port) that the containers' resolver forwards to and the domain proxy resolves with; default: this machine's /etc/resolv.conf (env GUST_DNS_UPSTREAM)"),
	}
}

// envInt is the integer in environment variable k, def when unset, and -1 (which the flag's
// user refuses) when it is not an integer.
func envInt(k string, def int) int {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// upstreams are --dns-upstream's resolvers; none: the worker reads /etc/resolv.conf.
func (f networkFlags) upstreams() []string { return splitUpstreams(*f.dns) }

// splitUpstreams reads a comma-separated list of resolvers.
func splitUpstreams(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

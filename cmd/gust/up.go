package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/server"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/tlsconf"
	"github.com/gust-run/gust/internal/worker"
	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "up", summary: "run the server and a local worker (the default way to run gust)", run: runUp})
}

// daemonFlags are shared by up, server and worker.
type daemonFlags struct {
	addr, dataDir, imageCache, isolation string
	// token is the API token: from --token-file, or --token (visible in ps: warned about).
	token, tokenFile    string
	diskMiB, warmPool   int
	noInstall, noConfig bool
	// joinToken is what workers register with (loadJoinToken); set when the server starts.
	joinToken      string
	auditRetention time.Duration
	tls            tlsFlags
	// archiveLimitMiB bounds what one archive may expand to (image.SetArchiveLimit).
	archiveLimitMiB int
	// tlsID is the certificate the server serves (nil: plain HTTP), and url its base URL;
	// both set when the server starts.
	tlsID *tlsconf.Identity
	url   string
	// runsc is --runsc: the runsc binary to run gVisor containers with (see useRunsc).
	runsc string
	// ingress configures tunnels (up and server: bindIngress); nil is off.
	ingress *ingress.Config
	// billing is the server's price file and metrics address (up and server: bindBilling).
	billing *billingFlags
}

func (d *daemonFlags) bind(fs interface {
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
	BoolVar(*bool, string, bool, string)
	DurationVar(*time.Duration, string, time.Duration, string)
}) {
	fs.StringVar(&d.addr, "addr", "127.0.0.1:7420", "address the API listens on")
	fs.StringVar(&d.dataDir, "data-dir", envOr("GUST_DATA_DIR", "/var/lib/gust"), "where gust keeps its database, images and containers")
	fs.StringVar(&d.imageCache, "image-cache", os.Getenv("GUST_IMAGE_CACHE"), "image layer directory (default DATA_DIR/layers)")
	fs.StringVar(&d.isolation, "isolation", "runc", "default sandbox isolation: runc or gvisor")
	fs.IntVar(&d.diskMiB, "sandbox-disk", 1024, "writable disk of each sandbox, MiB (held in memory: tmpfs)")
	fs.IntVar(&d.warmPool, "warm-pool", 2, "runc containers kept started ahead of demand for the latest image (0: off)")
	fs.BoolVar(&d.noInstall, "no-install", false, "do not apt-get install missing runtimes")
	fs.BoolVar(&d.noConfig, "no-config", false, "do not write the client config file")
	fs.StringVar(&d.tokenFile, "token-file", "", "file holding the API token (default: GUST_TOKEN, else one kept in DATA_DIR/token)")
	fs.StringVar(&d.token, "token", "", "API token; visible to every user in ps: prefer GUST_TOKEN or --token-file")
	fs.DurationVar(&d.auditRetention, "audit-retention", 90*24*time.Hour, "how long the audit log keeps an entry")
	d.tls.bind(fs)
	fs.IntVar(&d.archiveLimitMiB, "archive-limit", image.DefaultArchiveLimit>>20, "the most one archive (add_local files, function code, an OCI image or layer) may expand to, MiB: a gzip bomb is refused there")
	fs.StringVar(&d.runsc, "runsc", "", "runsc binary for gVisor (env "+container.RunscEnv+"; default: the one `gust install` built in "+container.RunscInstallPath+", else runsc on the PATH)")
}

// useRunsc makes --runsc the runsc every runtime of this process chooses (container.FindRunsc
// reads it from the environment), and logs which runsc gVisor containers run under.
func (d *daemonFlags) useRunsc(logger *log.Logger) {
	if d.runsc != "" {
		os.Setenv(container.RunscEnv, d.runsc)
	}
	p, from := container.FindRunsc()
	logger.Printf("gVisor runs under runsc %s, chosen by %s", container.DescribeRunsc(p), from)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (d *daemonFlags) layerDir() string {
	if d.imageCache != "" {
		return d.imageCache
	}
	return filepath.Join(d.dataDir, "layers")
}

func runUp(ctx context.Context, args []string) error {
	var d daemonFlags
	fs := newFlags("up")
	d.bind(fs)
	buildEgress := bindBuildEgress(fs)
	netFlags := bindNetwork(fs)
	ingressF := bindIngress(fs)
	d.billing = bindBilling(fs)
	if err := d.parse(fs, args, os.Stderr); err != nil {
		return err
	}
	d.ingress = ingressF.config(d.dataDir)
	logger := log.New(os.Stderr, "gust: ", log.LstdFlags)
	if !d.noInstall {
		if err := ensurePackages(ctx, logger); err != nil {
			return err
		}
	}
	d.useRunsc(logger)
	srv, httpSrv, _, token, err := startServer(ctx, &d, logger)
	if err != nil {
		return err
	}
	defer httpSrv.Close()
	stopPprof, err := startPprof(token, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	reportIngress(srv, !d.noConfig, logger)
	url := d.url
	if !d.noConfig {
		if path, err := writeClientConfig(url, token, d.tlsID); err != nil {
			logger.Printf("could not write client config: %v", err)
		} else {
			logger.Printf("client config written to %s", path)
		}
	}
	// The local worker speaks TLS when the server does (it listens beyond loopback): it pins
	// the server's certificate, and serves its own.
	wcfg := worker.Config{
		ServerURL: url, JoinToken: d.joinToken, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(d.dataDir, "containers"), LayerDir: d.layerDir(), DiskMiB: d.diskMiB, WarmPool: d.warmPool,
		BuildEgress: buildEgress.hosts(), BuildMirrors: buildEgress.mirrorList(), Logger: log.New(os.Stderr, "gust worker: ", log.LstdFlags),
		TestGPUs: os.Getenv("GUST_TEST_GPUS"), DeviceRoot: os.Getenv("GUST_TEST_DEVICE_ROOT"), // tests only
		Network: *netFlags.on, NetworkCIDR: *netFlags.cidr, NetworkAllow: strings.Split(*netFlags.allow, ","), NetworkMTU: *netFlags.mtu,
		DNSUpstream: netFlags.upstreams(),
	}
	if d.tlsID != nil {
		if wcfg.ServerTLS, err = tlsconf.ClientConfig(d.tlsID.Fingerprint, ""); err != nil {
			return err
		}
		if wcfg.TLS, err = tlsconf.LoadOrCreate(filepath.Join(d.dataDir, "tls"), "worker", nil); err != nil {
			return err
		}
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return err
	}
	srv.SetLocalWorker(w)
	logger.Printf("gust %s listening on %s (data in %s)", server.Version, url, d.dataDir)
	err = w.Run(ctx) // returns after ctx ends and every sandbox is gone
	logger.Printf("stopped")
	return err
}

// startServer opens the store and serves the API.
func startServer(ctx context.Context, d *daemonFlags, logger *log.Logger) (*server.Server, *http.Server, net.Listener, string, error) {
	if err := os.MkdirAll(d.dataDir, 0o700); err != nil {
		return nil, nil, nil, "", err
	}
	token, err := loadToken(d)
	if err != nil {
		return nil, nil, nil, "", err
	}
	join, err := loadJoinToken(d.dataDir)
	if err != nil {
		return nil, nil, nil, "", err
	}
	d.joinToken = join
	image.SetArchiveLimit(int64(d.archiveLimitMiB) << 20)
	st, err := openStore(d.dataDir)
	if err != nil {
		return nil, nil, nil, "", err
	}
	images, err := image.NewBuilder(d.layerDir())
	if err != nil {
		return nil, nil, nil, "", err
	}
	// GUST_HEARTBEAT_TIMEOUT (a Go duration) shortens how long an ephemeral app outlives its
	// client; the tests use it.
	hb, _ := time.ParseDuration(os.Getenv("GUST_HEARTBEAT_TIMEOUT"))
	// GUST_WORKER_TIMEOUT (a Go duration) shortens how long a silent worker is waited for.
	wt, _ := time.ParseDuration(os.Getenv("GUST_WORKER_TIMEOUT"))
	cfg := server.Config{Token: token, JoinToken: join, AuditRetention: d.auditRetention, DefaultIsolation: normIsolation(d.isolation), Images: images, Logger: logger,
		HeartbeatTimeout: hb, WorkerTimeout: wt, Ingress: d.ingress}
	if d.billing != nil {
		cfg.PriceFile = d.billing.prices
	}
	srv, err := server.New(ctx, cfg, st)
	if err != nil {
		return nil, nil, nil, "", err
	}
	if d.billing != nil {
		if err := serveMetrics(ctx, d.billing.metricsAddr, srv.MetricsHandler(), logger); err != nil {
			return nil, nil, nil, "", fmt.Errorf("--metrics-addr: %w", err)
		}
	}
	if d.tlsID, err = d.tls.identity(d.dataDir, "server", d.addr, false); err != nil {
		return nil, nil, nil, "", err
	}
	ln, err := net.Listen("tcp", d.addr)
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("listen on %s: %w (is another gust running? use --addr)", d.addr, err)
	}
	d.url = scheme(d.tlsID) + dialableAddr(ln.Addr())
	if d.tlsID != nil {
		ln = tls.NewListener(ln, d.tlsID.ServerConfig())
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	go httpSrv.Serve(ln)
	return srv, httpSrv, ln, token, nil
}

// dialableAddr is where clients on this machine reach a listener: one bound to every address
// (0.0.0.0, ::) is reached at 127.0.0.1, which is what the client config and the local worker
// must hold (a URL naming 0.0.0.0 or [::] is not an address to give anyone).
func dialableAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
}

// remoteURL is the server's URL as a worker on another machine writes it: this machine's name
// in place of loopback when the server listens on every address.
func remoteURL(url string, listen string) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host != "" && !net.ParseIP(host).IsUnspecified() {
		return url
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		return url
	}
	return strings.Replace(url, "127.0.0.1", name, 1)
}

// dataDirLock holds the data directory's shared lock for as long as the server runs (see
// lockDataDir); kept here, as the lock ends when the file is closed or collected.
var dataDirLock *os.File

// openStore opens the server's database. Its secrets are sealed with the key in
// DATA_DIR/secret.key, made at first start.
func openStore(dataDir string) (*store.Store, error) {
	lock, err := lockDataDir(dataDir, false)
	if err != nil {
		return nil, err
	}
	keyPath := store.KeyPath(dataDir)
	st, err := store.OpenSQLite(filepath.Join(dataDir, "gust.db"), store.WithKeyFile(keyPath))
	if err != nil {
		if errors.Is(err, store.ErrWrongSecretKey) {
			hint := "restore the secret.key this database was written with"
			if _, serr := os.Stat(keyPath + ".new"); serr == nil {
				hint = "a `gust secret rotate-key` was interrupted: run it again to finish it"
			}
			err = fmt.Errorf("%s does not open the secrets in %s: %s (%w)", keyPath, dataDir, hint, err)
		}
		return nil, errors.Join(err, lock.Close())
	}
	dataDirLock = lock
	return st, nil
}

func normIsolation(s string) string {
	if s == "runsc" {
		return "gvisor"
	}
	return s
}

// loadToken returns the operator's token: --token-file or --token (in d.token), or
// GUST_TOKEN, else the one kept in the data dir, made on first start.
func loadToken(d *daemonFlags) (string, error) {
	return loadOrMakeToken(d.token, "GUST_TOKEN", filepath.Join(d.dataDir, "token"), "gst_")
}

// loadJoinToken returns the token workers register with (and that does nothing else):
// GUST_JOIN_TOKEN, else the one kept in DATA_DIR/join-token, made on first start.
func loadJoinToken(dataDir string) (string, error) {
	return loadOrMakeToken("", "GUST_JOIN_TOKEN", filepath.Join(dataDir, "join-token"), "gjt_")
}

func loadOrMakeToken(given, env, path, prefix string) (string, error) {
	if given != "" {
		return given, nil
	}
	if t := os.Getenv(env); t != "" {
		return t, nil
	}
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	rand.Read(buf)
	t := prefix + hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", err
	}
	return t, nil
}

// writeClientConfig stores the server's URL and token as the active profile "default" of the
// client config file, where the CLI and SDKs look (GUST_CONFIG, else
// $XDG_CONFIG_HOME/gust/config.json, else ~/.config/gust/config.json), keeping the file's other
// profiles. A server serving TLS (id) has its certificate's fingerprint written beside them,
// for clients to pin.
func writeClientConfig(url, token string, id *tlsconf.Identity) (string, error) {
	path, err := gust.DefaultConfigPath()
	if err != nil {
		return "", err
	}
	cfg := gust.Config{ServerURL: url, Token: token, Profile: gust.DefaultProfile}
	if id != nil {
		cfg.TLSFingerprint = id.Fingerprint
	}
	return path, gust.WriteConfig(path, cfg)
}

// ensurePackages installs what gust runs on when it is missing: Debian's runc and
// debootstrap, and a current runsc built from the pinned gVisor module (container.InstallRunsc);
// Debian's runsc only when that cannot be built.
func ensurePackages(ctx context.Context, logger *log.Logger) error {
	need := map[string]string{"runc": "runc", "debootstrap": "debootstrap"}
	if os.Getenv(container.RunscEnv) == "" {
		if os.Geteuid() != 0 {
			if err := container.CheckPinnedRunsc(container.RunscInstallPath); err != nil {
				logger.Printf("not building runsc (needs root): %v", err)
			}
		} else if _, err := container.InstallRunsc(ctx, "", logger.Printf); err != nil {
			logger.Printf("could not build a current runsc, so gVisor falls back to Debian's (no ls/stat, no network namespaces): %v", err)
			need["runsc"] = "runsc"
		}
	}
	var missing []string
	for bin, pkg := range need {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, pkg)
		}
	}
	// Web endpoints and tunnels are named under gust.localhost; glibc resolves *.localhost
	// to this machine only through nss-myhostname (whose package adds it to nsswitch.conf),
	// so that Python's urllib and friends reach them as curl does.
	if libs, _ := filepath.Glob("/usr/lib/*/libnss_myhostname.so.2"); len(libs) == 0 {
		if libs, _ := filepath.Glob("/lib/*/libnss_myhostname.so.2"); len(libs) == 0 {
			missing = append(missing, "libnss-myhostname")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	if os.Geteuid() != 0 {
		return fmt.Errorf("gust needs %s: install them with `sudo apt-get install %s`, or run gust as root", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	logger.Printf("installing %s from Debian's packages", strings.Join(missing, ", "))
	run := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run(append([]string{"install", "-y", "-q"}, missing...)...); err != nil {
		if err2 := run("update", "-q"); err2 != nil {
			return errors.Join(err, err2)
		}
		if err := run(append([]string{"install", "-y", "-q"}, missing...)...); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/server"
	"github.com/gust-run/gust/internal/store"
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
	if err := d.parse(fs, args, os.Stderr); err != nil {
		return err
	}
	logger := log.New(os.Stderr, "gust: ", log.LstdFlags)
	if !d.noInstall {
		if err := ensurePackages(logger); err != nil {
			return err
		}
	}
	_, httpSrv, ln, token, err := startServer(ctx, &d, logger)
	if err != nil {
		return err
	}
	defer httpSrv.Close()
	stopPprof, err := startPprof(token, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	url := "http://" + ln.Addr().String()
	if !d.noConfig {
		if path, err := writeClientConfig(url, token); err != nil {
			logger.Printf("could not write client config: %v", err)
		} else {
			logger.Printf("client config written to %s", path)
		}
	}
	w, err := worker.New(worker.Config{
		ServerURL: url, JoinToken: d.joinToken, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(d.dataDir, "containers"), LayerDir: d.layerDir(), DiskMiB: d.diskMiB, WarmPool: d.warmPool,
		BuildEgress: strings.Split(*buildEgress, ","), Logger: log.New(os.Stderr, "gust worker: ", log.LstdFlags),
		TestGPUs: os.Getenv("GUST_TEST_GPUS"), DeviceRoot: os.Getenv("GUST_TEST_DEVICE_ROOT"), // tests only
	})
	if err != nil {
		return err
	}
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
	srv, err := server.New(ctx, server.Config{Token: token, JoinToken: join, AuditRetention: d.auditRetention, DefaultIsolation: normIsolation(d.isolation), Images: images, Logger: logger, HeartbeatTimeout: hb}, st)
	if err != nil {
		return nil, nil, nil, "", err
	}
	ln, err := net.Listen("tcp", d.addr)
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("listen on %s: %w (is another gust running? use --addr)", d.addr, err)
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	go httpSrv.Serve(ln)
	return srv, httpSrv, ln, token, nil
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
// profiles.
func writeClientConfig(url, token string) (string, error) {
	path, err := gust.DefaultConfigPath()
	if err != nil {
		return "", err
	}
	return path, gust.WriteConfig(path, gust.Config{ServerURL: url, Token: token, Profile: gust.DefaultProfile})
}

// ensurePackages installs the Debian packages gust runs on when they are missing.
func ensurePackages(logger *log.Logger) error {
	need := map[string]string{"runc": "runc", "runsc": "runsc", "debootstrap": "debootstrap"}
	var missing []string
	for bin, pkg := range need {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
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

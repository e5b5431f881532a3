package main

import (
	"bytes"
	"flag"
	"log"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/server"
	gust "github.com/gust-run/gust/sdk/go"
)

// ingressFlags configure the ingress of up and server: tunnels into sandboxes.
type ingressFlags struct {
	addr, domain, cert, key, tcpHost, publicTCPHost string
	publicPort                                      int
	fs                                              *flag.FlagSet
}

// defaultIngressAddr is the ingress's port unless told otherwise: a fixed one, so that web
// endpoints' and tunnels' URLs stay the same across restarts; a free port when it is taken.
const defaultIngressAddr = "127.0.0.1:7443"

func bindIngress(fs *flag.FlagSet) *ingressFlags {
	f := &ingressFlags{fs: fs}
	fs.StringVar(&f.addr, "ingress-addr", defaultIngressAddr, "address of the HTTPS ingress for web endpoints and sandboxes' tunnels (encrypted_ports); unset, a free port when 7443 is taken; \"off\" turns it off")
	fs.StringVar(&f.domain, "ingress-domain", ingress.DefaultBaseDomain, "base domain of tunnels' host names: point *.DOMAIN at this machine (*.localhost names resolve to loopback in curl and systemd-resolved)")
	fs.StringVar(&f.cert, "ingress-cert", "", "PEM certificate for *.DOMAIN (with --ingress-key); default: one signed by gust's own CA, DATA_DIR/"+ingress.CAFile)
	fs.StringVar(&f.key, "ingress-key", "", "PEM key of --ingress-cert")
	fs.StringVar(&f.tcpHost, "ingress-tcp-host", "127.0.0.1", "address raw TCP tunnels (unencrypted_ports) listen on, each on a port of its own")
	fs.StringVar(&f.publicTCPHost, "ingress-tcp-public-host", "", "host clients are told for raw TCP tunnels (default: --ingress-tcp-host, or DOMAIN when that is 0.0.0.0)")
	fs.IntVar(&f.publicPort, "ingress-public-port", 0, "port in tunnels' URLs when a proxy in front listens on another (default: the ingress's own)")
	return f
}

// config is the server's ingress configuration, nil when it is off.
func (f *ingressFlags) config(dataDir string) *ingress.Config {
	if f.addr == "" || f.addr == "off" {
		return nil
	}
	cfg := &ingress.Config{
		Addr: f.addr, BaseDomain: f.domain, PublicPort: f.publicPort, TCPHost: f.tcpHost, PublicTCPHost: f.publicTCPHost,
		CertFile: f.cert, KeyFile: f.key, CADir: dataDir,
	}
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == "ingress-addr" })
	if !set {
		cfg.FallbackAddr = "127.0.0.1:0"
	}
	return cfg
}

// reportIngress says where the ingress listens, and writes gust's CA next to the client config
// (when it writes that), so that clients and curl can trust the tunnels.
func reportIngress(srv *server.Server, writeConfig bool, logger *log.Logger) {
	in := srv.Ingress()
	if in == nil {
		logger.Printf("tunnels are off (--ingress-addr off)")
		return
	}
	logger.Printf("ingress for tunnels listening on %s for *.%s", in.Addr(), in.BaseDomain())
	ca := in.CA()
	if ca == nil || !writeConfig {
		return
	}
	cfgPath, err := gust.DefaultConfigPath()
	if err != nil {
		logger.Printf("could not write the ingress CA next to the client config: %v", err)
		return
	}
	path := filepath.Join(filepath.Dir(cfgPath), ingress.CAFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
		err = os.WriteFile(path, ca, 0o644)
	}
	if err != nil {
		logger.Printf("could not write the ingress CA to %s: %v", path, err)
		return
	}
	logger.Printf("tunnels' CA written to %s (e.g. curl --cacert %s https://HOST:PORT)", path, path)
	trustIngressCA(ca, logger)
}

// trustIngressCA adds gust's CA to the machine's trust store (Debian's ca-certificates), so
// that every program here (Python's ssl and urllib, curl, Go) reaches web endpoints and
// tunnels without being told about it, as Modal's URLs are reached. The CA can sign only names
// under the ingress's base domain (a critical name constraint), so trusting it trusts nothing
// else.
func trustIngressCA(ca []byte, logger *log.Logger) {
	const path = "/usr/local/share/ca-certificates/gust-ingress-ca.crt"
	if os.Geteuid() != 0 {
		return
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, ca) {
		return
	}
	update, err := exec.LookPath("update-ca-certificates")
	if err != nil {
		logger.Printf("the tunnels' CA is not in this machine's trust store (no update-ca-certificates): clients need --cacert")
		return
	}
	if err := os.WriteFile(path, ca, 0o644); err != nil {
		logger.Printf("could not add the tunnels' CA to this machine's trust store: %v", err)
		return
	}
	if out, err := exec.Command(update).CombinedOutput(); err != nil {
		logger.Printf("update-ca-certificates: %v: %s", err, bytes.TrimSpace(out))
		return
	}
	logger.Printf("tunnels' CA added to this machine's trust store (%s)", path)
}

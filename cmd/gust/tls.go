package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"

	"github.com/gust-run/gust/internal/tlsconf"
)

// TLS between the parts of a split gust. The rule (--tls=auto, the default): a daemon serves
// TLS when its API listens beyond loopback, or when --tls-cert is given; `gust up` on
// 127.0.0.1 stays plain HTTP, as nothing leaves the machine. A worker also serves TLS when its
// --server is https. --tls=on and --tls=off decide outright. Without --tls-cert and --tls-key,
// a daemon makes a self-signed certificate at first start (DATA_DIR/tls/server.crt or
// worker.crt, the key beside it mode 0600) and keeps it; clients pin its SHA-256 fingerprint,
// which `gust server` prints and writes into the client config, and the worker reports its
// own when it registers, for the server to pin.

// tlsFlags are --tls, --tls-cert and --tls-key, shared by up, server and worker.
type tlsFlags struct{ mode, cert, key string }

func (f *tlsFlags) bind(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&f.mode, "tls", envOr("GUST_TLS", tlsconf.ModeAuto), "serve the API over TLS: auto (when it listens beyond loopback, or --tls-cert is given), on, off (env GUST_TLS)")
	fs.StringVar(&f.cert, "tls-cert", "", "PEM certificate (chain) to serve; default: one made at first start in DATA_DIR/tls")
	fs.StringVar(&f.key, "tls-key", "", "PEM private key of --tls-cert")
}

// identity returns the certificate a daemon serves on addr, or nil for plain HTTP. name is
// "server" or "worker" (the files' names in DATA_DIR/tls); httpsPeer turns auto on (a worker
// whose server is https).
func (f *tlsFlags) identity(dataDir, name, addr string, httpsPeer bool) (*tlsconf.Identity, error) {
	if (f.cert == "") != (f.key == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	on, err := tlsconf.Enabled(f.mode, addr, f.cert != "")
	if err != nil {
		return nil, err
	}
	if !on && !(httpsPeer && (f.mode == tlsconf.ModeAuto || f.mode == "")) {
		return nil, nil
	}
	if f.cert != "" {
		return tlsconf.Load(f.cert, f.key)
	}
	host, _, _ := net.SplitHostPort(addr)
	return tlsconf.LoadOrCreate(filepath.Join(dataDir, "tls"), name, []string{host})
}

// serverTLSFlags are a worker's --server-fingerprint and --server-ca: how it verifies an https
// server.
type serverTLSFlags struct{ fingerprint, caFile string }

func (f *serverTLSFlags) bind(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&f.fingerprint, "server-fingerprint", envOr("GUST_SERVER_FINGERPRINT", ""), "SHA-256 fingerprint of an https server's certificate, which `gust server` prints (env GUST_SERVER_FINGERPRINT)")
	fs.StringVar(&f.caFile, "server-ca", envOr("GUST_SERVER_CA", ""), "PEM file of the CA that signed an https server's certificate (env GUST_SERVER_CA); neither flag: the system's CAs")
}

// config is the worker's tls.Config for its server.
func (f *serverTLSFlags) config() (*tls.Config, error) {
	if f.fingerprint != "" && f.caFile != "" {
		return nil, fmt.Errorf("give --server-fingerprint or --server-ca, not both")
	}
	return tlsconf.ClientConfig(f.fingerprint, f.caFile)
}

// scheme is the URL scheme of a daemon serving id.
func scheme(id *tlsconf.Identity) string {
	if id != nil {
		return "https://"
	}
	return "http://"
}

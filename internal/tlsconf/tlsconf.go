// Package tlsconf is TLS between gust's parts when they are split across machines: the
// server's and a worker's certificate (from files, or made at first start and kept in the
// data directory), and the client side that trusts a peer by the SHA-256 fingerprint of its
// certificate (pinning) or by a CA file. A leaf: it imports nothing of gust's; the server's
// assembly (cmd/gust), the worker and the worker protocol use it. The SDKs carry their own
// small copy of the pinning check, as they import nothing of gust's.
package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Identity is a certificate this process serves, with the fingerprint its clients pin.
type Identity struct {
	Cert tls.Certificate
	// Fingerprint is the hex SHA-256 of the leaf certificate's DER form (64 lowercase digits).
	Fingerprint string
}

// ServerConfig is the tls.Config that serves id.
func (id *Identity) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{id.Cert}, MinVersion: tls.VersionTLS12}
}

// Load reads a certificate (PEM, leaf first, any chain after) and its key from files, as given
// by --tls-cert and --tls-key.
func Load(certFile, keyFile string) (*Identity, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return identity(cert)
}

// LoadOrCreate returns the self-signed certificate kept in dir as name.crt and name.key,
// making it (ECDSA P-256, ten years, the key mode 0600 in a directory of mode 0700) when it is
// not there yet. hosts are the DNS names and IP addresses the certificate names besides
// localhost and the loopback addresses; clients that pin its fingerprint do not need them,
// clients that trust it as a CA file do.
func LoadOrCreate(dir, name string, hosts []string) (*Identity, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if _, err := os.Stat(certPath); err == nil {
		return Load(certPath, keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	certPEM, keyPEM, err := selfSigned(name, hosts)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate without its key would be taken as made on the next start.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return Load(certPath, keyPath)
}

// writeFile writes b to path with mode perm through a temporary file, so that a crash leaves
// the old file or the new one.
func writeFile(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	if err := os.Chmod(tmp, perm); err != nil { // WriteFile's mode passes through the umask
		return fmt.Errorf("TLS: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	return nil
}

func selfSigned(name string, hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS: making a key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, fmt.Errorf("TLS: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gust " + name, Organization: []string{"gust"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so that the file also serves as its clients' CA file
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS: making a certificate: %w", err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

func identity(cert tls.Certificate) (*Identity, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("TLS: the certificate file holds no certificate")
	}
	return &Identity{Cert: cert, Fingerprint: Fingerprint(cert.Certificate[0])}, nil
}

// Fingerprint is the hex SHA-256 of a certificate's DER form.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseFingerprint normalises a fingerprint as people write it: hex digits in either case,
// with or without colons, with or without a "sha256:" prefix. It returns 64 lowercase digits.
func ParseFingerprint(s string) (string, error) {
	f := strings.ToLower(strings.TrimSpace(s))
	f = strings.TrimPrefix(f, "sha256:")
	f = strings.ReplaceAll(f, ":", "")
	if b, err := hex.DecodeString(f); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("TLS fingerprint %q is not a SHA-256 fingerprint: want 64 hex digits (colons allowed), as `gust server` prints and writes into the client config", s)
	}
	return f, nil
}

// ErrFingerprint is the error of a peer whose certificate is not the pinned one.
var ErrFingerprint = errors.New("the server's TLS certificate does not have the pinned fingerprint")

// ClientConfig is the tls.Config of a client of a gust server or worker. With a fingerprint,
// the peer's certificate must be exactly that one (names and CAs are not checked: the pin says
// more than they do). Else with caFile, the peer must have a certificate for its name signed
// by a CA in that file. Else the system's CAs apply.
func ClientConfig(fingerprint, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if fingerprint != "" {
		want, err := ParseFingerprint(fingerprint)
		if err != nil {
			return nil, err
		}
		// Verification by pin replaces the usual chain check, which a self-signed
		// certificate would fail; VerifyConnection runs on every connection, resumed or not.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrFingerprint
			}
			got := Fingerprint(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				return fmt.Errorf("%w: it is sha256 %s, the pin is %s (is this the right server? was its certificate made again?)", ErrFingerprint, got, want)
			}
			return nil
		}
		return cfg, nil
	}
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// Loopback reports whether a listen address (host:port) is on the loopback interface only.
// An empty host or an unspecified address (":7420", "0.0.0.0:7420") listens everywhere.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Modes of --tls.
const (
	ModeAuto = "auto" // TLS unless the API listens on loopback only
	ModeOn   = "on"
	ModeOff  = "off"
)

// Enabled decides whether a daemon listening on addr serves TLS under mode: on and off say
// so; auto serves TLS when certificate files were given or when addr is not loopback.
func Enabled(mode, addr string, certGiven bool) (bool, error) {
	switch mode {
	case ModeOn:
		return true, nil
	case ModeOff:
		if certGiven {
			return false, errors.New("--tls=off with --tls-cert: give one or the other")
		}
		return false, nil
	case ModeAuto, "":
		return certGiven || !Loopback(addr), nil
	}
	return false, fmt.Errorf("--tls must be auto, on or off, not %q", mode)
}

package gust

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// A server split from its workers serves TLS. `gust server` makes its certificate at first
// start and writes its SHA-256 fingerprint into the client config (tls_fingerprint), so that
// clients pin it: the server must present exactly that certificate. A server whose certificate
// a CA signed is trusted through tls_ca_file, or the system's CAs.

// ErrCertificateMismatch is in the chain of the error of a call to a server whose TLS
// certificate does not have the pinned fingerprint (Config.TLSFingerprint).
var ErrCertificateMismatch = errors.New("gust: the server's TLS certificate does not have the pinned fingerprint")

// parseFingerprint normalises a SHA-256 fingerprint: hex in either case, colons and a
// "sha256:" prefix allowed. It returns 64 lowercase hex digits.
func parseFingerprint(s string) (string, error) {
	f := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:"), ":", "")
	if b, err := hex.DecodeString(f); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("gust TLS fingerprint %q is not a SHA-256 fingerprint: want 64 hex digits (GUST_TLS_FINGERPRINT or tls_fingerprint in the config file)", s)
	}
	return f, nil
}

// tlsConfig is how the client verifies an https server: by cfg's pinned fingerprint, else by
// its CA file, else nil (the system's CAs).
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.TLSFingerprint != "" {
		want, err := parseFingerprint(c.TLSFingerprint)
		if err != nil {
			return nil, err
		}
		return &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The pin replaces the chain and name checks, which a self-signed certificate
			// fails; VerifyConnection runs on every connection, resumed ones too.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return ErrCertificateMismatch
				}
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				got := hex.EncodeToString(sum[:])
				if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
					return fmt.Errorf("%w: it is %s, the pin is %s (is this the right server? check tls_fingerprint in the config file)", ErrCertificateMismatch, got, want)
				}
				return nil
			},
		}, nil
	}
	if c.TLSCAFile != "" {
		b, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("gust TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("gust TLS CA file %s holds no PEM certificate", c.TLSCAFile)
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
	}
	return nil, nil
}

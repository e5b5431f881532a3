package gust

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tlsServer is an https API answering /v1/health, and its certificate's fingerprint.
func tlsServer(t *testing.T) (*httptest.Server, string) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok","version":"test"}`)
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(srv.Certificate().Raw)
	return srv, hex.EncodeToString(sum[:])
}

func TestClientPinsTheServerCertificate(t *testing.T) {
	srv, fp := tlsServer(t)
	ctx := context.Background()
	colons := strings.ToUpper(fp[:2])
	for i := 2; i < len(fp); i += 2 {
		colons += ":" + strings.ToUpper(fp[i:i+2])
	}
	for _, pin := range []string{fp, "sha256:" + colons} {
		c, err := NewClient(Config{ServerURL: srv.URL, Token: "t", TLSFingerprint: pin})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Health(ctx); err != nil {
			t.Fatalf("pinned %s: %v", pin, err)
		}
	}
	wrong := strings.Repeat("ab", 32)
	c, err := NewClient(Config{ServerURL: srv.URL, Token: "t", TLSFingerprint: wrong})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(ctx); !errors.Is(err, ErrCertificateMismatch) {
		t.Fatalf("a wrong pin: want ErrCertificateMismatch, got %v", err)
	}
	// No pin: the system's CAs, which do not know the test server's certificate.
	c, _ = NewClient(Config{ServerURL: srv.URL, Token: "t"})
	if _, err := c.Health(ctx); err == nil {
		t.Fatal("an unknown certificate was accepted without a pin")
	}
	// A CA file holding the certificate.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	c, err = NewClient(Config{ServerURL: srv.URL, Token: "t", TLSCAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("with the CA file: %v", err)
	}
	for _, bad := range []Config{
		{ServerURL: "http://127.0.0.1:1", TLSFingerprint: fp},
		{ServerURL: srv.URL, TLSFingerprint: "nope"},
		{ServerURL: srv.URL, TLSCAFile: filepath.Join(t.TempDir(), "missing.pem")},
	} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("NewClient(%+v) accepted", bad)
		}
	}
}

func TestResolveTLS(t *testing.T) {
	f := &ConfigFile{ActiveProfile: "prod", Profiles: map[string]Profile{
		"prod": {ServerURL: "https://gust.example:7420", Token: "t", TLSFingerprint: "aa"},
	}}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg, err := Resolve(env(nil), f)
	if err != nil || cfg.TLSFingerprint != "aa" {
		t.Fatalf("the profile's pin: %+v %v", cfg, err)
	}
	cfg, _ = Resolve(env(map[string]string{"GUST_SERVER_URL": "http://127.0.0.1:7420"}), f)
	if cfg.TLSFingerprint != "" {
		t.Fatalf("the profile's pin applied to another server: %+v", cfg)
	}
	cfg, _ = Resolve(env(map[string]string{"GUST_SERVER_URL": "https://gust.example:7420/"}), f)
	if cfg.TLSFingerprint != "aa" {
		t.Fatalf("the profile's server from the environment lost its pin: %+v", cfg)
	}
	cfg, _ = Resolve(env(map[string]string{"GUST_TLS_CA_FILE": "/ca.pem"}), f)
	if cfg.TLSFingerprint != "" || cfg.TLSCAFile != "/ca.pem" {
		t.Fatalf("GUST_TLS_CA_FILE: %+v", cfg)
	}
	// The fields survive a rewrite of the file.
	path := filepath.Join(t.TempDir(), "config.json")
	if err := WriteConfig(path, Config{ServerURL: "https://h:1", Token: "t", TLSFingerprint: "bb"}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadConfig(path)
	if err != nil || got.TLSFingerprint != "bb" {
		t.Fatalf("ReadConfig after WriteConfig: %+v %v", got, err)
	}
}

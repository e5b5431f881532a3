package tlsconf

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKeepsOneIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	a, err := LoadOrCreate(dir, "server", []string{"10.1.2.3", "gust.example"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreate(dir, "server", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint != b.Fingerprint || len(a.Fingerprint) != 64 {
		t.Fatalf("a second start made another certificate: %s then %s", a.Fingerprint, b.Fingerprint)
	}
	for name, want := range map[string]os.FileMode{"server.key": 0o600, "server.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, want)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("the TLS directory has mode %v", fi.Mode().Perm())
	}
	leaf := a.Cert.Leaf
	if err := leaf.VerifyHostname("10.1.2.3"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("gust.example"); err != nil {
		t.Error(err)
	}
}

// serve starts an HTTPS server with id's certificate.
func serve(t *testing.T, id *Identity) string {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = id.ServerConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(cfg *tls.Config, url string) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func TestClientConfigPinsTheFingerprint(t *testing.T) {
	dir := t.TempDir()
	good, err := LoadOrCreate(dir, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadOrCreate(dir, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, good)
	upper := strings.ToUpper(good.Fingerprint)
	var colons []string
	for i := 0; i < len(upper); i += 2 {
		colons = append(colons, upper[i:i+2])
	}
	for _, fp := range []string{good.Fingerprint, "sha256:" + strings.Join(colons, ":")} {
		cfg, err := ClientConfig(fp, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := get(cfg, url); err != nil {
			t.Fatalf("pinned %s: %v", fp, err)
		}
	}
	cfg, err := ClientConfig(other.Fingerprint, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := get(cfg, url); err == nil || !errors.Is(err, ErrFingerprint) {
		t.Fatalf("a wrong pin: want ErrFingerprint, got %v", err)
	}
	// Without pin or CA the system's CAs apply, which do not know a self-signed certificate.
	plain, _ := ClientConfig("", "")
	if err := get(plain, url); err == nil {
		t.Fatal("a self-signed certificate passed the system's CAs")
	}
	// The certificate file as a CA file.
	ca, err := ClientConfig("", filepath.Join(dir, "a.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := get(ca, url); err != nil {
		t.Fatalf("the certificate as its own CA: %v", err)
	}
	wrongCA, _ := ClientConfig("", filepath.Join(dir, "b.crt"))
	if err := get(wrongCA, url); err == nil {
		t.Fatal("another CA file was accepted")
	}
	for _, bad := range []string{"abc", strings.Repeat("g", 64), good.Fingerprint[:62]} {
		if _, err := ClientConfig(bad, ""); err == nil {
			t.Errorf("fingerprint %q accepted", bad)
		}
	}
}

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		mode, addr string
		cert, want bool
		err        bool
	}{
		{"auto", "127.0.0.1:7420", false, false, false},
		{"auto", "localhost:7420", false, false, false},
		{"auto", "[::1]:7420", false, false, false},
		{"auto", "127.0.0.1:7420", true, true, false},
		{"auto", "0.0.0.0:7420", false, true, false},
		{"auto", ":7420", false, true, false},
		{"auto", "10.0.0.5:7420", false, true, false},
		{"on", "127.0.0.1:0", false, true, false},
		{"off", "0.0.0.0:7420", false, false, false},
		{"off", "0.0.0.0:7420", true, false, true},
		{"maybe", "127.0.0.1:0", false, false, true},
	} {
		got, err := Enabled(tc.mode, tc.addr, tc.cert)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Enabled(%q, %q, %v) = %v, %v", tc.mode, tc.addr, tc.cert, got, err)
		}
	}
}

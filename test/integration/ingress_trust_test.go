package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIngressCATrustedByMachine: `gust up` writing its client config also puts its ingress CA
// (name-constrained to the base domain) in the machine's trust store, so that a program that
// knows nothing of gust (Python's urllib, no cafile, the name resolved by the system through
// nss-myhostname) reaches a sandbox's tunnel by its URL, as a Modal user reaches Modal's.
func TestIngressCATrustedByMachine(t *testing.T) {
	needGust(t)
	const trusted = "/usr/local/share/ca-certificates/gust-ingress-ca.crt"
	if _, err := exec.LookPath("update-ca-certificates"); err != nil {
		t.Skip("no update-ca-certificates on this machine")
	}
	before, errBefore := os.ReadFile(trusted)
	t.Cleanup(func() { // the machine's trust store as it was
		if errBefore == nil {
			os.WriteFile(trusted, before, 0o644)
		} else {
			os.Remove(trusted)
		}
		exec.Command("update-ca-certificates", "--fresh").Run()
	})
	dir := t.TempDir()
	t.Setenv("HOME", filepath.Join(dir, "home")) // the client config (and the CA beside it) go there
	addr := freePort()
	dataDir := filepath.Join(dir, "data")
	g := startGust(t, "http://"+addr, "up", "--addr", addr, "--data-dir", dataDir, "--image-cache", imageCache, "--no-install",
		"--sandbox-disk", "256", "--warm-pool", "0")
	defer func() {
		stopDaemon(g)
		if err := checkNoLeftovers(dataDir); err != nil {
			t.Error(err)
		}
	}()
	ca, err := os.ReadFile(filepath.Join(dataDir, "ingress-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(trusted); err != nil || !bytes.Equal(got, ca) {
		t.Fatalf("the machine's trust store does not hold this gust's ingress CA (%v)", err)
	}
	image, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "ingress-trust", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	id := createRaw(t, map[string]any{
		"app_id": app.AppID, "image_id": image,
		"command":         []string{"python3", "-c", tunnelServer, "0"},
		"encrypted_ports": []int{8000}, "readiness_probe": map[string]any{"tcp_port": 8000},
	})
	if !waitReady(t, id, 30) {
		t.Fatal("the server did not come up within 30 s")
	}
	tu := tunnelsOf(t, id)[8000]
	url := fmt.Sprintf("https://%s:%d/", tu.Host, tu.Port)
	out, err := exec.Command("python3", "-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=20).status)", url).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "200" {
		t.Fatalf("urllib without a cafile, GET %s: %v\n%s", url, err, out)
	}
}

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecretsAtRest: a secret's values, named (Secret.from_name) or inline (Secret.from_dict),
// reach the function that names them but never appear in the clear in the database's files
// (gust.db and its WAL), read while gust runs, also once a container of the function has
// started (which writes its sandbox row). The key file is its owner's alone, and
// `gust secret rotate-key` refuses to run beside the server.
func TestSecretsAtRest(t *testing.T) {
	needGust(t)
	stamp := time.Now().UnixNano()
	name := fmt.Sprintf("at-rest-%d", stamp)
	named, inline := fmt.Sprintf("named-at-rest-%d", stamp), fmt.Sprintf("inline-at-rest-%d", stamp)
	dataDir := filepath.Join(gust.dataDir, "data")
	if err := api("POST", "/v1/secrets", map[string]any{"name": name, "env": map[string]string{"AT_REST": named}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := api("DELETE", "/v1/secrets/"+name, nil, nil); err != nil {
			t.Errorf("deleting the secret: %v", err)
		}
	})
	assertNotInDatabase(t, dataDir, named)

	// The function answers with a digest of the variable: its result (stored) is not the value.
	blob := uploadCode(t, map[string]string{"atrest.py": atRestModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "at-rest", "mode": "deployed",
		"code": map[string]string{"blob": blob, "module": "atrest"}, "functions": []map[string]any{{"name": "env_digest", "image_id": gust.imageID,
			"secrets": []map[string]any{{"name": name}, {"env": map[string]string{"INLINE_AT_REST": inline}}}}}}, &app); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() {
		if err := api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil); err != nil {
			t.Errorf("stopping the app: %v", err)
		}
	})
	for k, v := range map[string]string{"AT_REST": named, "INLINE_AT_REST": inline} {
		if got := callRemote(t, app.Functions["env_digest"], nil, k).value(t, 0); got != digest(v) {
			t.Fatalf("%s inside the function has digest %v, want %s", k, got, digest(v))
		}
	}
	// The container that answered is running, its row written.
	assertNotInDatabase(t, dataDir, named, inline)
	if strings.Contains(gustLog(), named) || strings.Contains(gustLog(), inline) {
		t.Fatal("a secret value appears in gust's own log")
	}

	fi, err := os.Stat(filepath.Join(dataDir, "secret.key"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("the secret key file: %v, %v; want 32 bytes, mode 0600", fi, err)
	}
	out, err := exec.Command(gust.bin, "secret", "rotate-key", "--data-dir", dataDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a gust server is running") {
		t.Fatalf("rotate-key beside the running server: %v\n%s", err, out)
	}
}

const atRestModule = `
import hashlib, os

def env_digest(name):
    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()
`

func digest(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

// assertNotInDatabase fails if the database's files in dataDir hold one of values in the clear.
func assertNotInDatabase(t *testing.T, dataDir string, values ...string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "gust.db*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no database files in %s: %v", dataDir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the secret value %q in the clear", filepath.Base(f), v)
			}
		}
	}
}

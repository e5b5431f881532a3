// Package pythonsdk embeds the gust Python SDK in the gust binary. The worker injects it into
// every function container (the runner, gust._runner, imports it), and `gust run` / `gust
// deploy` put it on python3's path, so that neither depends on pip or on the image's Python
// layout. Imported by cmd/gust and internal/worker.
package pythonsdk

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

//go:embed gust/*.py
var files embed.FS

// Hash identifies this copy of the SDK: its files' names and contents.
func Hash() string {
	h := sha256.New()
	names, _ := fs.Glob(files, "gust/*.py")
	sort.Strings(names)
	for _, n := range names {
		b, _ := files.ReadFile(n)
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Extract writes the SDK under dir/<hash>/gust (once; later calls find it there) and returns
// dir/<hash>, the directory to put on sys.path.
func Extract(dir string) (string, error) {
	root := filepath.Join(dir, Hash())
	if _, err := os.Stat(filepath.Join(root, ".complete")); err == nil {
		return root, nil
	}
	tmp, err := os.MkdirTemp(dir, ".sdk-")
	if err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("python sdk: %w", err)
		}
		if tmp, err = os.MkdirTemp(dir, ".sdk-"); err != nil {
			return "", fmt.Errorf("python sdk: %w", err)
		}
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "gust"), 0o755); err != nil {
		return "", err
	}
	names, _ := fs.Glob(files, "gust/*.py")
	for _, n := range names {
		b, _ := files.ReadFile(n)
		if err := os.WriteFile(filepath.Join(tmp, n), b, 0o644); err != nil {
			return "", fmt.Errorf("python sdk: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, root); err != nil {
		if _, serr := os.Stat(filepath.Join(root, ".complete")); serr == nil {
			return root, nil // another process got there first
		}
		return "", fmt.Errorf("python sdk: %w", err)
	}
	return root, nil
}

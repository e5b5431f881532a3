package gust

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// DefaultServerURL is where a client looks for the server when nothing else says.
const DefaultServerURL = "http://127.0.0.1:7420"

// Config says where the server is and which token to present.
type Config struct {
	// ServerURL is the API's base URL, e.g. http://127.0.0.1:7420 (no /v1). Empty means
	// DefaultServerURL; a URL without a scheme gets http://.
	ServerURL string `json:"server_url"`
	// Token is the bearer token sent on every request.
	Token string `json:"token"`
	// HTTPClient, if set, is used instead of the client's own (which reuses connections).
	HTTPClient *http.Client `json:"-"`
}

// DefaultConfigPath is the client config file: the one GUST_CONFIG names, else
// $XDG_CONFIG_HOME/gust/config.json, else ~/.config/gust/config.json. The file need not exist.
func DefaultConfigPath() (string, error) {
	if p := os.Getenv("GUST_CONFIG"); p != "" {
		return expandHome(p)
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("finding the gust config file: %w (set GUST_CONFIG or HOME)", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "gust", "config.json"), nil
}

func expandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expanding %s: %w", p, err)
	}
	return filepath.Join(home, p[1:]), nil
}

// LoadConfig resolves the client configuration. Each field comes from the environment
// (GUST_SERVER_URL, GUST_TOKEN) or else from the config file at DefaultConfigPath; the server
// URL defaults to DefaultServerURL. A missing default file is fine; a missing file that
// GUST_CONFIG names is an error.
func LoadConfig() (Config, error) {
	var cfg Config
	// Without a home directory there is no default file: the environment and defaults remain.
	if path, err := DefaultConfigPath(); err == nil {
		cfg, err = ReadConfig(path)
		if err != nil && (!errors.Is(err, fs.ErrNotExist) || os.Getenv("GUST_CONFIG") != "") {
			return Config{}, err
		}
	}
	if v := os.Getenv("GUST_SERVER_URL"); v != "" {
		cfg.ServerURL = v
	}
	if v := os.Getenv("GUST_TOKEN"); v != "" {
		cfg.Token = v
	}
	cfg.ServerURL = normalizeURL(cfg.ServerURL)
	return cfg, nil
}

// ReadConfig reads a config file {"server_url": ..., "token": ...}.
func ReadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading gust config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("gust config file %s must hold a JSON object {\"server_url\": ..., \"token\": ...}: %w", path, err)
	}
	return cfg, nil
}

// WriteConfig writes cfg's server URL and token to path (mode 0600), creating its directory
// (mode 0700). `gust up` writes the client config with it.
func WriteConfig(path string, cfg Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing gust config: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing gust config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	return nil
}

// normalizeURL trims a server URL and gives it a scheme.
func normalizeURL(u string) string {
	u = strings.TrimSpace(u)
	if u == "" {
		return DefaultServerURL
	}
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	scheme, rest, _ := strings.Cut(u, "://")
	return scheme + "://" + strings.TrimRight(rest, "/")
}

package gust

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	named := write("named.json", `{"server_url": "http://named:1", "token": "named-tok"}`)
	write("xdg/gust/config.json", `{"server_url": "http://xdg:2", "token": "xdg-tok"}`)
	write("home/.config/gust/config.json", `{"server_url": "http://home:3/", "token": "home-tok"}`)
	bad := write("bad.json", `{"server_url": `)
	partial := write("partial.json", `{"token": "only-tok"}`)

	tests := []struct {
		name      string
		env       map[string]string
		wantURL   string
		wantToken string
		wantErr   error // errors.Is target; nil for success
		anyErr    bool
	}{
		{name: "defaults without file", env: map[string]string{"HOME": filepath.Join(dir, "nohome")}, wantURL: DefaultServerURL},
		{name: "home file", env: map[string]string{"HOME": filepath.Join(dir, "home")}, wantURL: "http://home:3", wantToken: "home-tok"},
		{name: "xdg before home", env: map[string]string{"HOME": filepath.Join(dir, "home"), "XDG_CONFIG_HOME": filepath.Join(dir, "xdg")}, wantURL: "http://xdg:2", wantToken: "xdg-tok"},
		{name: "GUST_CONFIG before xdg", env: map[string]string{"XDG_CONFIG_HOME": filepath.Join(dir, "xdg"), "GUST_CONFIG": named}, wantURL: "http://named:1", wantToken: "named-tok"},
		{name: "env overrides file", env: map[string]string{"GUST_CONFIG": named, "GUST_SERVER_URL": "10.0.0.1:7420", "GUST_TOKEN": "env-tok"}, wantURL: "http://10.0.0.1:7420", wantToken: "env-tok"},
		{name: "env overrides one field", env: map[string]string{"GUST_CONFIG": named, "GUST_TOKEN": "env-tok"}, wantURL: "http://named:1", wantToken: "env-tok"},
		{name: "partial file", env: map[string]string{"GUST_CONFIG": partial}, wantURL: DefaultServerURL, wantToken: "only-tok"},
		{name: "missing GUST_CONFIG file", env: map[string]string{"GUST_CONFIG": filepath.Join(dir, "nope.json")}, wantErr: fs.ErrNotExist},
		{name: "bad json", env: map[string]string{"GUST_CONFIG": bad}, anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"GUST_CONFIG", "GUST_SERVER_URL", "GUST_TOKEN", "XDG_CONFIG_HOME", "HOME"} {
				t.Setenv(k, tt.env[k])
			}
			cfg, err := LoadConfig()
			if tt.wantErr != nil || tt.anyErr {
				if err == nil {
					t.Fatalf("LoadConfig() = %+v, want an error", cfg)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("LoadConfig() error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig(): %v", err)
			}
			if cfg.ServerURL != tt.wantURL || cfg.Token != tt.wantToken {
				t.Errorf("LoadConfig() = %q, %q; want %q, %q", cfg.ServerURL, cfg.Token, tt.wantURL, tt.wantToken)
			}
		})
	}
}

func TestDefaultConfigPath(t *testing.T) {
	t.Setenv("GUST_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "/home/u")
	if p, _ := DefaultConfigPath(); p != "/home/u/.config/gust/config.json" {
		t.Errorf("home: %s", p)
	}
	t.Setenv("XDG_CONFIG_HOME", "/x")
	if p, _ := DefaultConfigPath(); p != "/x/gust/config.json" {
		t.Errorf("xdg: %s", p)
	}
	t.Setenv("GUST_CONFIG", "~/g.json")
	if p, _ := DefaultConfigPath(); p != "/home/u/g.json" {
		t.Errorf("GUST_CONFIG: %s", p)
	}
}

func TestWriteConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "config.json")
	want := Config{ServerURL: "http://h:1", Token: "secret"}
	if err := WriteConfig(p, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadConfig(p)
	if err != nil || got.ServerURL != want.ServerURL || got.Token != want.Token {
		t.Errorf("ReadConfig = %+v, %v", got, err)
	}
	// Overwriting works and leaves no temporary files.
	if err := WriteConfig(p, Config{ServerURL: "http://h:2"}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(entries))
	}
}

func TestNewClientURL(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"", DefaultServerURL, true},
		{"127.0.0.1:9", "http://127.0.0.1:9", true},
		{"https://gust.example/", "https://gust.example", true},
		{"ftp://x", "", false},
		{"http://", "", false},
	} {
		c, err := NewClient(Config{ServerURL: tt.in})
		if (err == nil) != tt.ok {
			t.Errorf("NewClient(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && c.ServerURL() != tt.want {
			t.Errorf("NewClient(%q).ServerURL() = %q, want %q", tt.in, c.ServerURL(), tt.want)
		}
	}
}

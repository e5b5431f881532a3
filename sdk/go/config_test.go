package gust

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
			for _, k := range configEnv {
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

// configEnv are the variables LoadConfig reads.
var configEnv = []string{"GUST_CONFIG", "GUST_SERVER_URL", "GUST_TOKEN", "GUST_TOKEN_ID", "GUST_TOKEN_SECRET", "GUST_PROFILE", "XDG_CONFIG_HOME", "HOME"}

func TestLoadConfigProfiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	two := write("two.json", `{"active_profile": "b", "server_url": "http://flat:1", "token": "flat-tok",
		"profiles": {"a": {"server_url": "http://a:1", "token_id": "tk-a", "token_secret": "ts-a"},
		             "b": {"server_url": "http://b:2", "token_id": "tk-b", "token_secret": "ts-b"},
		             "legacy": {"token": "leg-tok"},
		             "nourl": {"token_id": "tk-n", "token_secret": "ts-n"}}}`)
	withDefault := write("default.json", `{"profiles": {"x": {"token": "x"}, "default": {"token": "d"}}}`)
	only := write("only.json", `{"profiles": {"solo": {"server_url": "s:9", "token": "s"}}}`)
	many := write("many.json", `{"token": "flat", "profiles": {"x": {"token": "x"}, "y": {"token": "y"}}}`)
	pairOverFlat := write("pair.json", `{"token": "flat", "profiles": {"default": {"token_id": "i", "token_secret": "s"}}}`)
	half := write("half.json", `{"profiles": {"default": {"token_id": "i"}}}`)
	badActive := write("badactive.json", `{"active_profile": "q", "profiles": {"a": {}}}`)

	tests := []struct {
		name    string
		env     map[string]string
		want    Config // HTTPClient unused
		wantErr string
	}{
		{name: "active profile", env: map[string]string{"GUST_CONFIG": two}, want: Config{ServerURL: "http://b:2", TokenID: "tk-b", TokenSecret: "ts-b", Profile: "b"}},
		{name: "GUST_PROFILE over active", env: map[string]string{"GUST_CONFIG": two, "GUST_PROFILE": "a"}, want: Config{ServerURL: "http://a:1", TokenID: "tk-a", TokenSecret: "ts-a", Profile: "a"}},
		{name: "legacy token in a profile", env: map[string]string{"GUST_CONFIG": two, "GUST_PROFILE": "legacy"}, want: Config{ServerURL: "http://flat:1", Token: "leg-tok", Profile: "legacy"}},
		{name: "url from the flat fields", env: map[string]string{"GUST_CONFIG": two, "GUST_PROFILE": "nourl"}, want: Config{ServerURL: "http://flat:1", TokenID: "tk-n", TokenSecret: "ts-n", Profile: "nourl"}},
		{name: "default without active", env: map[string]string{"GUST_CONFIG": withDefault}, want: Config{ServerURL: DefaultServerURL, Token: "d", Profile: "default"}},
		{name: "the only profile", env: map[string]string{"GUST_CONFIG": only}, want: Config{ServerURL: "http://s:9", Token: "s", Profile: "solo"}},
		{name: "none chosen among many", env: map[string]string{"GUST_CONFIG": many}, want: Config{ServerURL: DefaultServerURL, Token: "flat"}},
		{name: "profile pair over flat token", env: map[string]string{"GUST_CONFIG": pairOverFlat}, want: Config{ServerURL: DefaultServerURL, TokenID: "i", TokenSecret: "s", Profile: "default"}},
		{name: "env pair over profile", env: map[string]string{"GUST_CONFIG": two, "GUST_TOKEN_ID": "tk-e", "GUST_TOKEN_SECRET": "ts-e"}, want: Config{ServerURL: "http://b:2", TokenID: "tk-e", TokenSecret: "ts-e", Profile: "b"}},
		{name: "env pair over GUST_TOKEN", env: map[string]string{"GUST_CONFIG": two, "GUST_TOKEN_ID": "tk-e", "GUST_TOKEN_SECRET": "ts-e", "GUST_TOKEN": "t"}, want: Config{ServerURL: "http://b:2", TokenID: "tk-e", TokenSecret: "ts-e", Profile: "b"}},
		{name: "GUST_TOKEN over profile pair", env: map[string]string{"GUST_CONFIG": two, "GUST_TOKEN": "t"}, want: Config{ServerURL: "http://b:2", Token: "t", Profile: "b"}},
		{name: "env url over profile", env: map[string]string{"GUST_CONFIG": two, "GUST_SERVER_URL": "10.0.0.1:7420"}, want: Config{ServerURL: "http://10.0.0.1:7420", TokenID: "tk-b", TokenSecret: "ts-b", Profile: "b"}},
		{name: "env only", env: map[string]string{"HOME": filepath.Join(dir, "nohome"), "GUST_TOKEN_ID": "tk-e", "GUST_TOKEN_SECRET": "ts-e"}, want: Config{ServerURL: DefaultServerURL, TokenID: "tk-e", TokenSecret: "ts-e"}},
		{name: "env id without secret", env: map[string]string{"GUST_CONFIG": two, "GUST_TOKEN_ID": "tk-e"}, wantErr: "GUST_TOKEN_ID but not GUST_TOKEN_SECRET"},
		{name: "env secret without id", env: map[string]string{"GUST_CONFIG": two, "GUST_TOKEN_SECRET": "ts-e", "GUST_TOKEN": "t"}, wantErr: "GUST_TOKEN_SECRET but not GUST_TOKEN_ID"},
		{name: "unknown GUST_PROFILE", env: map[string]string{"GUST_CONFIG": two, "GUST_PROFILE": "zz"}, wantErr: `GUST_PROFILE names the gust profile "zz"`},
		{name: "unknown active_profile", env: map[string]string{"GUST_CONFIG": badActive}, wantErr: `active_profile names the gust profile "q"`},
		{name: "profile id without secret", env: map[string]string{"GUST_CONFIG": half}, wantErr: "token_id but not token_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range configEnv {
				t.Setenv(k, tt.env[k])
			}
			cfg, err := LoadConfig()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadConfig() = %+v, %v; want an error with %q", cfg, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig(): %v", err)
			}
			if cfg != tt.want {
				t.Errorf("LoadConfig() = %+v\nwant %+v", cfg, tt.want)
			}
		})
	}
}

func TestSaveProfile(t *testing.T) {
	dir := t.TempDir()
	read := func(p string) map[string]any {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("new file", func(t *testing.T) {
		p := filepath.Join(dir, "new", "config.json")
		if err := SaveProfile(p, "work", Profile{ServerURL: "http://w:1", TokenID: "tk-w", TokenSecret: "ts-w"}, false); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"active_profile": "work", "profiles": map[string]any{"work": map[string]any{"server_url": "http://w:1", "token_id": "tk-w", "token_secret": "ts-w"}}}
		if got := read(p); !reflect.DeepEqual(got, want) {
			t.Errorf("file = %v, want %v", got, want)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
		}
	})

	t.Run("legacy file becomes default, stays in use", func(t *testing.T) {
		p := filepath.Join(dir, "legacy.json")
		os.WriteFile(p, []byte(`{"server_url": "http://l:1", "token": "op", "theme": "dark"}`), 0o644)
		if err := SaveProfile(p, "other", Profile{TokenID: "tk-o", TokenSecret: "ts-o"}, false); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"active_profile": "default", "theme": "dark", "profiles": map[string]any{
			"default": map[string]any{"server_url": "http://l:1", "token": "op"},
			"other":   map[string]any{"token_id": "tk-o", "token_secret": "ts-o"},
		}}
		if got := read(p); !reflect.DeepEqual(got, want) {
			t.Errorf("file = %v, want %v", got, want)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
	})

	t.Run("replace one, keep the others and unknown keys", func(t *testing.T) {
		p := filepath.Join(dir, "merge.json")
		os.WriteFile(p, []byte(`{"active_profile": "a", "profiles": {"a": {"token": "a", "note": "keep"}, "b": {"token": "b"}}}`), 0o600)
		if err := SaveProfile(p, "a", Profile{ServerURL: "http://a2:1", TokenID: "tk-a", TokenSecret: "ts-a"}, false); err != nil {
			t.Fatal(err)
		}
		if err := SaveProfile(p, "c", Profile{Token: "c"}, true); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"active_profile": "c", "profiles": map[string]any{
			"a": map[string]any{"server_url": "http://a2:1", "token_id": "tk-a", "token_secret": "ts-a", "note": "keep"},
			"b": map[string]any{"token": "b"},
			"c": map[string]any{"token": "c"},
		}}
		if got := read(p); !reflect.DeepEqual(got, want) {
			t.Errorf("file = %v, want %v", got, want)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".config-") {
				t.Errorf("left a temporary file %s", e.Name())
			}
		}
	})
}

func TestClientAuthorization(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
		err  string
	}{
		{name: "id and secret", cfg: Config{TokenID: "tk-1", TokenSecret: "ts-1", Token: "ignored"}, want: "Bearer tk-1:ts-1"},
		{name: "opaque token", cfg: Config{Token: "op"}, want: "Bearer op"},
		{name: "none", cfg: Config{}, want: ""},
		{name: "id alone", cfg: Config{TokenID: "tk-1", Token: "op"}, err: "no token secret"},
		{name: "secret alone", cfg: Config{TokenSecret: "ts-1"}, err: "no token id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.ServerURL = srv.URL
			c, err := NewClient(tt.cfg)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("NewClient error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Health(t.Context()); err != nil {
				t.Fatal(err)
			}
			if a := <-got; a != tt.want {
				t.Errorf("Authorization %q, want %q", a, tt.want)
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
	if err != nil || got.ServerURL != want.ServerURL || got.Token != want.Token || got.Profile != DefaultProfile {
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

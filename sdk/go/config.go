package gust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultServerURL is where a client looks for the server when nothing else says.
const DefaultServerURL = "http://127.0.0.1:7420"

// DefaultProfile is the profile `gust up` writes, and the one used when the config file names
// none and holds several.
const DefaultProfile = "default"

// Config says where the server is and which credentials to present.
type Config struct {
	// ServerURL is the API's base URL, e.g. http://127.0.0.1:7420 (no /v1). Empty means
	// DefaultServerURL; a URL without a scheme gets http://.
	ServerURL string `json:"server_url"`
	// TokenID and TokenSecret are a workspace token (tk-..., ts-...), sent as
	// "Authorization: Bearer TokenID:TokenSecret". Give both or neither.
	TokenID     string `json:"token_id,omitempty"`
	TokenSecret string `json:"token_secret,omitempty"`
	// Token is a single opaque bearer token (the operator token `gust up` makes), used when
	// TokenID and TokenSecret are empty.
	Token string `json:"token,omitempty"`
	// TLSFingerprint pins an https server's certificate: the hex SHA-256 of its DER form
	// (colons allowed), as `gust server` writes into the config file. TLSCAFile instead trusts
	// the CAs in a PEM file. Neither: the system's CAs.
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
	TLSCAFile      string `json:"tls_ca_file,omitempty"`
	// Profile is the config file's profile the other fields came from, if any. NewClient
	// ignores it.
	Profile string `json:"-"`
	// HTTPClient, if set, is used instead of the client's own (which reuses connections).
	HTTPClient *http.Client `json:"-"`
}

// authorization is the Authorization header's value, or "" without credentials.
func (c Config) authorization() (string, error) {
	switch {
	case c.TokenID != "" && c.TokenSecret != "":
		return "Bearer " + c.TokenID + ":" + c.TokenSecret, nil
	case c.TokenID != "":
		return "", errors.New("gust config has a token id but no token secret: give both (GUST_TOKEN_ID and GUST_TOKEN_SECRET, or token_id and token_secret in the config file)")
	case c.TokenSecret != "":
		return "", errors.New("gust config has a token secret but no token id: give both (GUST_TOKEN_ID and GUST_TOKEN_SECRET, or token_id and token_secret in the config file)")
	case c.Token != "":
		return "Bearer " + c.Token, nil
	}
	return "", nil
}

// Profile is one named set of client settings in the config file.
type Profile struct {
	ServerURL   string `json:"server_url,omitempty"`
	TokenID     string `json:"token_id,omitempty"`
	TokenSecret string `json:"token_secret,omitempty"`
	Token       string `json:"token,omitempty"`
	// TLSFingerprint and TLSCAFile are how an https server is verified (see Config).
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
	TLSCAFile      string `json:"tls_ca_file,omitempty"`

	extra map[string]json.RawMessage // keys gust does not know, kept when the file is rewritten
}

// ConfigFile is the client config file:
//
//	{"active_profile": "default",
//	 "profiles": {"default": {"server_url": ..., "token_id": ..., "token_secret": ...}, ...}}
//
// The legacy flat form {"server_url": ..., "token": ...} is still read: its fields apply where
// the selected profile leaves one empty.
type ConfigFile struct {
	ActiveProfile string             `json:"active_profile,omitempty"`
	Profiles      map[string]Profile `json:"profiles,omitempty"`
	// The legacy flat fields.
	ServerURL   string `json:"server_url,omitempty"`
	TokenID     string `json:"token_id,omitempty"`
	TokenSecret string `json:"token_secret,omitempty"`
	Token       string `json:"token,omitempty"`

	extra map[string]json.RawMessage
}

var (
	profileKeys = []string{"server_url", "token_id", "token_secret", "token", "tls_fingerprint", "tls_ca_file"}
	fileKeys    = []string{"active_profile", "profiles", "server_url", "token_id", "token_secret", "token"}
)

// unmarshalKnown decodes b into known (a pointer to a struct without custom methods) and
// returns the keys not in names.
func unmarshalKnown(b []byte, known any, names []string) (map[string]json.RawMessage, error) {
	if err := json.Unmarshal(b, known); err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for _, n := range names {
		delete(all, n)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// marshalWithExtra encodes known (a struct) with the extra keys added.
func marshalWithExtra(known any, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(known)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for k, v := range extra {
		if _, ok := all[k]; !ok {
			all[k] = v
		}
	}
	return json.Marshal(all)
}

type plainProfile Profile

func (p *Profile) UnmarshalJSON(b []byte) error {
	var pp plainProfile
	extra, err := unmarshalKnown(b, &pp, profileKeys)
	if err != nil {
		return err
	}
	*p = Profile(pp)
	p.extra = extra
	return nil
}

func (p Profile) MarshalJSON() ([]byte, error) { return marshalWithExtra(plainProfile(p), p.extra) }

type plainConfigFile ConfigFile

func (f *ConfigFile) UnmarshalJSON(b []byte) error {
	var pf plainConfigFile
	extra, err := unmarshalKnown(b, &pf, fileKeys)
	if err != nil {
		return err
	}
	*f = ConfigFile(pf)
	f.extra = extra
	return nil
}

func (f ConfigFile) MarshalJSON() ([]byte, error) {
	return marshalWithExtra(plainConfigFile(f), f.extra)
}

// SelectProfile returns the profile to use: the one named by want (GUST_PROFILE) if not
// empty, else active_profile, else "default", else the only one. It returns "" and no error
// when none applies (the file has several profiles, none of them chosen, or none at all).
func (f *ConfigFile) SelectProfile(want string) (string, Profile, error) {
	source := "GUST_PROFILE"
	if want == "" {
		want, source = f.ActiveProfile, "active_profile"
	}
	if want != "" {
		p, ok := f.Profiles[want]
		if !ok {
			have := strings.Join(f.ProfileNames(), ", ")
			if have == "" {
				have = "none"
			}
			return "", Profile{}, fmt.Errorf("%s names the gust profile %q, which the config file does not have (profiles: %s); add it with `gust token set --profile %s`", source, want, have, want)
		}
		return want, p, nil
	}
	if p, ok := f.Profiles[DefaultProfile]; ok {
		return DefaultProfile, p, nil
	}
	if len(f.Profiles) == 1 {
		for name, p := range f.Profiles {
			return name, p, nil
		}
	}
	return "", Profile{}, nil
}

// ProfileNames returns the file's profile names, sorted.
func (f *ConfigFile) ProfileNames() []string {
	names := make([]string, 0, len(f.Profiles))
	for n := range f.Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// credentials are a token id and secret, or a single token, from one place.
type credentials struct{ id, secret, token string }

func (c credentials) empty() bool { return c == credentials{} }

// pickCredentials returns the credentials of one place (the environment, a profile, the flat
// fields), with an error naming what is missing when only half of an id and secret is there.
func pickCredentials(where, idName, secretName string, c credentials) (credentials, error) {
	switch {
	case c.id != "" && c.secret == "":
		return c, fmt.Errorf("%s has %s but not %s: give both, the token's id and its secret", where, idName, secretName)
	case c.secret != "" && c.id == "":
		return c, fmt.Errorf("%s has %s but not %s: give both, the token's id and its secret", where, secretName, idName)
	case c.id != "":
		return credentials{id: c.id, secret: c.secret}, nil
	}
	return credentials{token: c.token}, nil
}

// Resolve returns the configuration from getenv (os.Getenv, or a stand-in) and the file f
// (which may be nil). Each field comes from the environment, else the selected profile, else
// the file's flat fields. Credentials come whole from the first of these places that has
// any: GUST_TOKEN_ID with GUST_TOKEN_SECRET (both, or neither) win over GUST_TOKEN; in the
// file, token_id with token_secret win over token. The server URL defaults to
// DefaultServerURL.
func Resolve(getenv func(string) string, f *ConfigFile) (Config, error) {
	if f == nil {
		f = &ConfigFile{}
	}
	name, p, err := f.SelectProfile(getenv("GUST_PROFILE"))
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Profile: name}
	cfg.ServerURL = firstNonEmpty(getenv("GUST_SERVER_URL"), p.ServerURL, f.ServerURL)
	// The pin and the CA file come together from one place, and a profile's only with the
	// profile's server: GUST_SERVER_URL naming another server drops them.
	if fp, ca := getenv("GUST_TLS_FINGERPRINT"), getenv("GUST_TLS_CA_FILE"); fp != "" || ca != "" {
		cfg.TLSFingerprint, cfg.TLSCAFile = fp, ca
	} else if env := getenv("GUST_SERVER_URL"); env == "" || normalizeURL(env) == normalizeURL(p.ServerURL) {
		cfg.TLSFingerprint, cfg.TLSCAFile = p.TLSFingerprint, p.TLSCAFile
	}
	places := []struct {
		where, idName, secretName string
		c                         credentials
	}{
		{"the environment", "GUST_TOKEN_ID", "GUST_TOKEN_SECRET", credentials{getenv("GUST_TOKEN_ID"), getenv("GUST_TOKEN_SECRET"), getenv("GUST_TOKEN")}},
		{fmt.Sprintf("profile %q of the gust config file", name), "token_id", "token_secret", credentials{p.TokenID, p.TokenSecret, p.Token}},
		{"the gust config file", "token_id", "token_secret", credentials{f.TokenID, f.TokenSecret, f.Token}},
	}
	for _, pl := range places {
		c, err := pickCredentials(pl.where, pl.idName, pl.secretName, pl.c)
		if err != nil {
			return Config{}, err
		}
		if !c.empty() {
			cfg.TokenID, cfg.TokenSecret, cfg.Token = c.id, c.secret, c.token
			break
		}
	}
	cfg.ServerURL = normalizeURL(cfg.ServerURL)
	return cfg, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
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

// LoadConfig resolves the client configuration with Resolve, from the environment
// (GUST_SERVER_URL, GUST_TOKEN_ID and GUST_TOKEN_SECRET, GUST_TOKEN, GUST_PROFILE,
// GUST_TLS_FINGERPRINT or GUST_TLS_CA_FILE) and the
// config file at DefaultConfigPath. A missing default file is fine; a missing file that
// GUST_CONFIG names is an error.
func LoadConfig() (Config, error) {
	var f *ConfigFile
	// Without a home directory there is no default file: the environment and defaults remain.
	if path, err := DefaultConfigPath(); err == nil {
		f, err = ReadConfigFile(path)
		if err != nil && (!errors.Is(err, fs.ErrNotExist) || os.Getenv("GUST_CONFIG") != "") {
			return Config{}, err
		}
		if err == nil {
			cfg, err := Resolve(os.Getenv, f)
			if err != nil {
				return Config{}, fmt.Errorf("%s: %w", path, err)
			}
			return cfg, nil
		}
	}
	return Resolve(os.Getenv, nil)
}

// ReadConfigFile reads the config file at path. A missing file is an error satisfying
// errors.Is(err, fs.ErrNotExist).
func ReadConfigFile(path string) (*ConfigFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading gust config: %w", err)
	}
	var f ConfigFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("gust config file %s must hold a JSON object {\"active_profile\": ..., \"profiles\": {NAME: {\"server_url\", \"token_id\", \"token_secret\"}}}: %w", path, err)
	}
	return &f, nil
}

// ReadConfig reads the config file at path and resolves it without the environment: the
// selected profile (active_profile, else "default", else the only one) over the flat fields.
func ReadConfig(path string) (Config, error) {
	f, err := ReadConfigFile(path)
	if err != nil {
		return Config{}, err
	}
	cfg, err := Resolve(func(string) string { return "" }, f)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// WriteConfig stores cfg's server URL and credentials as the profile cfg.Profile ("default"
// when empty) in the config file at path, and makes it the active profile; other profiles in
// the file are kept (see SaveProfile). `gust up` writes the client config with it.
func WriteConfig(path string, cfg Config) error {
	name := cfg.Profile
	if name == "" {
		name = DefaultProfile
	}
	return SaveProfile(path, name, Profile{ServerURL: cfg.ServerURL, TokenID: cfg.TokenID, TokenSecret: cfg.TokenSecret, Token: cfg.Token,
		TLSFingerprint: cfg.TLSFingerprint, TLSCAFile: cfg.TLSCAFile}, true)
}

// SaveProfile stores p as the profile name in the config file at path (created if missing),
// replacing a profile of that name and keeping the others. With activate, name becomes the
// active profile; otherwise the profile in use before stays in use (active_profile is set to
// it if the file named none). A file in the legacy flat form first has its fields moved into
// the profile "default".
func SaveProfile(path, name string, p Profile, activate bool) error {
	if name == "" {
		return errors.New("a profile needs a name")
	}
	return UpdateConfigFile(path, func(f *ConfigFile) error {
		if len(f.Profiles) == 0 && (f.ServerURL != "" || f.Token != "" || f.TokenID != "" || f.TokenSecret != "") {
			f.Profiles = map[string]Profile{DefaultProfile: {ServerURL: f.ServerURL, TokenID: f.TokenID, TokenSecret: f.TokenSecret, Token: f.Token}}
			f.ServerURL, f.TokenID, f.TokenSecret, f.Token = "", "", "", ""
		}
		before, _, _ := f.SelectProfile("")
		if f.Profiles == nil {
			f.Profiles = map[string]Profile{}
		}
		// Keep the keys gust does not know.
		p.extra = f.Profiles[name].extra
		f.Profiles[name] = p
		switch {
		case activate:
			f.ActiveProfile = name
		case f.ActiveProfile == "" && before != "":
			f.ActiveProfile = before
		case f.ActiveProfile == "":
			f.ActiveProfile = name
		}
		return nil
	})
}

// UpdateConfigFile reads the config file at path (an empty one if missing), lets update change
// it, and writes it back (mode 0600, in a directory of mode 0700 if it makes one).
func UpdateConfigFile(path string, update func(*ConfigFile) error) error {
	f, err := ReadConfigFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = &ConfigFile{}, nil
	}
	if err != nil {
		return err
	}
	if err := update(f); err != nil {
		return err
	}
	return WriteConfigFile(path, f)
}

// WriteConfigFile writes f to path (mode 0600) atomically, creating its directory (mode
// 0700).
func WriteConfigFile(path string, f *ConfigFile) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	b.WriteByte('\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err != nil {
		return fmt.Errorf("writing gust config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing gust config: %w", err)
	}
	if _, err := tmp.Write(b.Bytes()); err != nil {
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

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDaemonTokenFlags parses the token flags of up, server and worker: a token file is read
// quietly, a token on the command line works with a warning, both at once is an error.
func TestDaemonTokenFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("token", "gst_abc\n", 0o600)
	shared := write("shared", "  gst_open \n", 0o644)
	empty := write("empty", "\n\n", 0o600)
	twoWords := write("two", "gst_a gst_b\n", 0o600)
	tests := []struct {
		name      string
		args      []string
		wantToken string
		wantErr   bool
		wantWarn  string // a substring of stderr; "" for none
	}{
		{"no token flags", nil, "", false, ""},
		{"token file", []string{"--token-file", good}, "gst_abc", false, ""},
		{"token file readable by others", []string{"--token-file", shared}, "gst_open", false, "readable by other users"},
		{"token flag", []string{"--token", "gst_flag"}, "gst_flag", false, "every user of this machine can read it"},
		{"both", []string{"--token", "x", "--token-file", good}, "", true, ""},
		{"missing file", []string{"--token-file", filepath.Join(dir, "nope")}, "", true, ""},
		{"empty file", []string{"--token-file", empty}, "", true, ""},
		{"two tokens in the file", []string{"--token-file", twoWords}, "", true, ""},
		{"a directory", []string{"--token-file", dir}, "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d daemonFlags
			fs := newFlags("test")
			d.bind(fs)
			var stderr bytes.Buffer
			err := d.parse(fs, tt.args, &stderr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && d.token != tt.wantToken {
				t.Errorf("token %q, want %q", d.token, tt.wantToken)
			}
			if tt.wantWarn == "" && stderr.Len() > 0 {
				t.Errorf("unexpected warning: %s", stderr.String())
			}
			if tt.wantWarn != "" && !strings.Contains(stderr.String(), tt.wantWarn) {
				t.Errorf("stderr %q, want a warning with %q", stderr.String(), tt.wantWarn)
			}
		})
	}
}

// TestLoadTokenPrecedence checks where the server's token comes from: the flags (file or
// value), then GUST_TOKEN, then the data directory's file, made on first start.
func TestLoadTokenPrecedence(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GUST_TOKEN", "")
	d := &daemonFlags{dataDir: dir}
	made, err := loadToken(d)
	if err != nil || !strings.HasPrefix(made, "gst_") {
		t.Fatalf("first start: %q, %v", made, err)
	}
	if again, err := loadToken(d); err != nil || again != made {
		t.Fatalf("second start: %q, %v; want the kept %q", again, err, made)
	}
	t.Setenv("GUST_TOKEN", "from-env")
	if got, err := loadToken(d); err != nil || got != "from-env" {
		t.Fatalf("with GUST_TOKEN: %q, %v", got, err)
	}
	d.token = "from-flags"
	if got, err := loadToken(d); err != nil || got != "from-flags" {
		t.Fatalf("with a token flag: %q, %v", got, err)
	}
}

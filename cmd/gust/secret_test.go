package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func TestSecretArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    map[string]string
		wantErr string
	}{
		{name: "pairs", args: []string{"s", "A=1", "B_2=x=y", "EMPTY="}, want: map[string]string{"A": "1", "B_2": "x=y", "EMPTY": ""}},
		{name: "value with spaces", args: []string{"s", "K=a b"}, want: map[string]string{"K": "a b"}},
		{name: "no pairs", args: []string{"s"}, wantErr: "at least one KEY=VALUE"},
		{name: "nothing", wantErr: "needs a name"},
		{name: "no equals", args: []string{"s", "A=1", "B"}, wantErr: `"B" is not KEY=VALUE`},
		{name: "empty key", args: []string{"s", "=1"}, wantErr: "not a valid environment variable name"},
		{name: "bad key", args: []string{"s", "1A=1"}, wantErr: `"1A" is not a valid`},
		{name: "dash key", args: []string{"s", "A-B=1"}, wantErr: `"A-B" is not a valid`},
		{name: "duplicate", args: []string{"s", "A=1", "A=2"}, wantErr: "A is given twice"},
		{name: "name missing", args: []string{"A=1", "B=2"}, wantErr: "name comes first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, env, err := secretArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || name != "s" || !reflect.DeepEqual(env, tt.want) {
				t.Errorf("secretArgs = %q, %v, %v; want s, %v", name, env, err, tt.want)
			}
		})
	}
}

// Flags may come anywhere among a command's arguments.
func TestSecretCreateFlags(t *testing.T) {
	fs := newFlags("secret create")
	force := fs.Bool("force", false, "")
	pos, _, err := parseArgs(fs, []string{"s", "A=1", "--force", "B=-x"}, -1)
	if err != nil || !*force || !reflect.DeepEqual(pos, []string{"s", "A=1", "B=-x"}) {
		t.Errorf("parseArgs = %q, force %v, %v", pos, *force, err)
	}
}

func TestPrintSecrets(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printSecrets(&b, []*gust.Secret{
		{Name: "zeta", Keys: []string{"B", "A"}, CreatedAt: now.Add(-5 * time.Minute)},
		{Name: "alpha", Keys: nil, CreatedAt: now.Add(-3 * time.Hour)},
	}, now)
	want := "NAME   KEYS  CREATED\n" +
		"alpha  -     3h ago\n" +
		"zeta   A, B  5m ago\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

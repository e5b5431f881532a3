package function

import (
	"errors"
	"strings"
	"testing"

	"github.com/gust-run/gust/internal/errdefs"
)

func TestWebHostLabel(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, tc := range []struct {
		name                string
		ws, app, fn, label  string
		ephemeral           bool
		wantHost, wantLabel string
	}{
		{"default label", "default", "my-app", "web", "", false, "default--my-app-web", "my-app-web"},
		{"names made DNS-safe", "Team_One", "My_App", "do_thing", "", false, "team-one--my-app-do-thing", "my-app-do-thing"},
		{"user label", "default", "a", "f", "echo", false, "default--echo", "echo"},
		{"ephemeral gets -dev", "default", "a", "f", "echo", true, "default--echo-dev", "echo-dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, label := WebHostLabel(tc.ws, tc.app, tc.fn, tc.label, tc.ephemeral)
			if host != tc.wantHost || label != tc.wantLabel {
				t.Fatalf("got %q %q, want %q %q", host, label, tc.wantHost, tc.wantLabel)
			}
		})
	}
	host, label := WebHostLabel("default", long, "f", "", false)
	host2, _ := WebHostLabel("default", long+"b", "f", "", false)
	if len(host) > 63 || !strings.HasPrefix(host, "default--aaa") || host == host2 || !ValidLabel(label) {
		t.Fatalf("a long name: %q (%d), %q: want at most 63 characters, unique by hash", host, len(host), host2)
	}
}

func TestWebValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		web  Web
		ok   bool
	}{
		{"asgi", Web{Type: WebASGI}, true},
		{"web_server", Web{Type: WebServer, Port: 8000}, true},
		{"web_server without a port", Web{Type: WebServer}, false},
		{"port out of range", Web{Type: WebServer, Port: 70000}, false},
		{"unknown type", Web{Type: "cgi"}, false},
		{"bad label", Web{Type: WebWSGI, Label: "Not_OK"}, false},
		{"double dash", Web{Type: WebWSGI, Label: "a--b"}, false},
		{"trailing dash", Web{Type: WebWSGI, Label: "ab-"}, false},
		{"fastapi method", Web{Type: WebFastAPI, Method: "post"}, true},
		{"fastapi bad method", Web{Type: WebFastAPI, Method: "FETCH"}, false},
		{"cls_method on a function", Web{Type: WebASGI, ClsMethod: "web"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.web
			err := w.validate("f", KindFunction)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("validate %+v: %v", tc.web, err)
			}
			if err == nil && (w.Port == 0 || w.StartupTimeout == 0) {
				t.Fatalf("defaults not filled: %+v", w)
			}
		})
	}
}

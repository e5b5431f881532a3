package function

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/wire"
)

// Kinds of web endpoint, as Modal's decorators make them.
const (
	WebASGI      = "asgi"       // @modal.asgi_app()
	WebWSGI      = "wsgi"       // @modal.wsgi_app()
	WebServer    = "web_server" // @modal.web_server(port)
	WebFastAPI   = "fastapi"    // @modal.fastapi_endpoint() (and the older web_endpoint)
	maxHostLabel = 63           // a DNS label: <workspace>--<label>
)

// WebPort is the container port the runner serves asgi_app, wsgi_app and fastapi_endpoint
// functions on (web_server functions serve their own port). The container sees it as
// GUST_WEB_PORT.
const WebPort = 8765

// Web is a web endpoint's configuration: requests to its URL reach a container of the
// function through the ingress (docs/api.md, "Web endpoints").
type Web struct {
	Type string `json:"type"`
	// Label is the part of the host name after "<workspace>--": the user's (label=) or, when
	// published, the default made of the app's and the function's names. Unique in a
	// workspace among active functions.
	Label          string        `json:"label,omitempty"`
	Port           int           `json:"port,omitempty"` // web_server's; WebPort otherwise
	StartupTimeout wire.Duration `json:"startup_timeout,omitempty"`
	Method         string        `json:"method,omitempty"` // fastapi_endpoint's
	Docs           bool          `json:"docs,omitempty"`
	// RequiresProxyAuth demands a workspace token in the Modal-Key and Modal-Secret headers.
	RequiresProxyAuth bool `json:"requires_proxy_auth,omitempty"`
	// ClsMethod is, on a class, the method that is the endpoint (one per class); its instance
	// is made (parameters' defaults, @enter) before the endpoint serves.
	ClsMethod string `json:"cls_method,omitempty"`
}

var (
	labelRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	methodsOK = map[string]bool{"GET": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "HEAD": true, "OPTIONS": true}
)

// ValidLabel reports whether s may be a web endpoint's label: lowercase letters, digits and
// dashes, at most 63, not starting or ending with a dash, and no "--" (which separates the
// workspace from the label in the host name).
func ValidLabel(s string) bool { return labelRE.MatchString(s) && !strings.Contains(s, "--") }

// validate checks a web endpoint's configuration and fills its defaults.
func (w *Web) validate(where, kind string) error {
	switch {
	case kind == KindClass && !fnNameRE.MatchString(w.ClsMethod):
		return errdefs.Invalid("%s: a class's web endpoint names its method (cls_method), got %q", where, w.ClsMethod)
	case kind != KindClass && w.ClsMethod != "":
		return errdefs.Invalid("%s: cls_method is for classes", where)
	}
	switch w.Type {
	case WebASGI, WebWSGI, WebFastAPI:
		w.Port = WebPort
	case WebServer:
		if w.Port < 1 || w.Port > 65535 {
			return errdefs.Invalid("%s: @web_server needs the port the server listens on (1-65535), got %d", where, w.Port)
		}
	default:
		return errdefs.Invalid("%s: web endpoint type must be asgi, wsgi, web_server or fastapi, got %q", where, w.Type)
	}
	if w.Label != "" && !ValidLabel(w.Label) {
		return errdefs.Invalid("%s: invalid label %q: a label may contain only lowercase letters, digits and dashes (at most 63, no leading, trailing or double dash)", where, w.Label)
	}
	if w.StartupTimeout < 0 || w.StartupTimeout.D() > time.Hour {
		return errdefs.Invalid("%s: startup_timeout must be between 0 and 3600 seconds", where)
	}
	if w.StartupTimeout == 0 {
		w.StartupTimeout = wire.Duration(5 * time.Second) // Modal's default
	}
	if w.Type == WebFastAPI {
		w.Method = strings.ToUpper(w.Method)
		if w.Method == "" {
			w.Method = "GET"
		}
		if !methodsOK[w.Method] {
			return errdefs.Invalid("%s: method %q is not an HTTP method", where, w.Method)
		}
	}
	return nil
}

// DNSName is a name made fit for a DNS label: lowercase letters, digits and single dashes.
func DNSName(s string) string {
	var b strings.Builder
	dash := true // no leading dash
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// WebHostLabel is the first label of a web endpoint's host name, as Modal makes it:
// <workspace>--<label>, where the label defaults to <app>-<function> and gets "-dev" in an
// ephemeral app (`gust serve`, `gust run`). One longer than a DNS label allows is cut, with a
// hash of the whole to keep it unique. It returns the label part (what follows "--").
func WebHostLabel(workspace, appName, fnName, label string, ephemeral bool) (string, string) {
	ws := DNSName(workspace)
	if ws == "" {
		ws = "ws"
	}
	if label == "" {
		label = DNSName(appName + "-" + fnName)
	}
	if ephemeral {
		label += "-dev"
	}
	if len(ws)+2+len(label) > maxHostLabel {
		sum := sha256.Sum256([]byte(ws + "--" + label))
		keep := max(maxHostLabel-len(ws)-2-7, 1)
		label = strings.TrimRight(label[:min(keep, len(label))], "-") + "-" + hex.EncodeToString(sum[:])[:6]
	}
	return ws + "--" + label, label
}

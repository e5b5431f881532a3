// Package endpoint serves Modal's web endpoints (asgi_app, wsgi_app, web_server,
// fastapi_endpoint): the HTTP requests that the ingress receives for host names
// <workspace>--<label>.<base domain>. Each request finds its function by workspace and label,
// checks proxy auth when the function asks for it (Modal-Key and Modal-Secret: a token of the
// workspace), holds a slot in one of the function's containers while it runs (the function
// engine counts it as an input, and starts a container when none is free), and is proxied to
// the container's port through the fleet's dialer: the same path as sandboxes' tunnels, the
// worker in this process under `gust up`. Bodies stream both ways without buffering, and
// websockets (an Upgrade) pass through. A request may run for the function's timeout.
//
// Imported by internal/server only.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/store"
)

// Engine finds web endpoints and holds their containers' slots (dispatch.Engine).
type Engine interface {
	WebFunction(workspaceID, label string) (function.Function, bool)
	AcquireWeb(ctx context.Context, fnID string) (*dispatch.WebSlot, error)
}

// Dialer opens a raw stream to a container's port (fleet.Fleet.DialPort).
type Dialer interface {
	DialPort(ctx context.Context, workerID, containerID string, port int) (net.Conn, error)
}

// Store is what the handler reads: workspaces (by host name) and tokens (proxy auth).
type Store interface {
	ListWorkspaces(ctx context.Context) ([]store.Workspace, error)
	GetToken(ctx context.Context, id string) (auth.Token, error)
}

var (
	_ Engine = (*dispatch.Engine)(nil)
	_ Store  = (*store.Store)(nil)
)

// Handler serves web endpoints' requests.
type Handler struct {
	eng   Engine
	dial  Dialer
	st    Store
	log   *log.Logger
	proxy *httputil.ReverseProxy

	mu      sync.Mutex
	wsByDNS map[string]string // workspace DNS name → ID
	wsRead  time.Time
}

// targetKey carries a request's container slot to the transport's dialer.
type targetKey struct{}

type target struct {
	slot *dispatch.WebSlot
	port int
}

// New returns a handler.
func New(eng Engine, d Dialer, st Store, logger *log.Logger) *Handler {
	h := &Handler{eng: eng, dial: d, st: st, log: logger}
	tr := &http.Transport{
		DialContext:         h.dialContainer,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		// The container's server may take as long as the function's timeout to answer.
		ResponseHeaderTimeout: 0,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(*target)
			pr.Out.URL.Scheme = "http"
			// One connection pool per container (and port): keep-alive connections are reused.
			pr.Out.URL.Host = t.slot.ContainerID + ":" + strconv.Itoa(t.port)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Proto", "https")
			if n := pr.In.ContentLength; n > 0 && pr.Out.Body != nil {
				// The transport reads a body of known length to its end and then once more
				// (to see it ends there); on an HTTP/2 request that read waits for the
				// stream's end, and when it failed after the answer, the container connection
				// went back to the pool as it was being closed, cutting the next answer on it.
				pr.Out.Body = limitedBody{io.LimitReader(pr.Out.Body, n), pr.Out.Body}
			}
		},
		Transport:     tr,
		FlushInterval: -1, // streamed answers (chunked, server-sent events) arrive as produced
		ErrorHandler:  h.proxyError,
		ErrorLog:      logger,
	}
	return h
}

func (h *Handler) dialContainer(ctx context.Context, _, _ string) (net.Conn, error) {
	t, ok := ctx.Value(targetKey{}).(*target)
	if !ok {
		return nil, errors.New("endpoint: a dial without a container")
	}
	return h.dial.DialPort(ctx, t.slot.WorkerID, t.slot.ContainerID, t.port)
}

func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		http.Error(w, "gust: the request ran past the web endpoint's timeout\n", http.StatusGatewayTimeout)
	case errors.Is(err, context.Canceled):
		// The client went away.
	default:
		h.log.Printf("web endpoint %s: %v", r.Host, err)
		http.Error(w, "gust: the web endpoint's container did not answer: "+err.Error()+"\n", http.StatusBadGateway)
	}
}

// limitedBody is a request body cut at its declared length.
type limitedBody struct {
	io.Reader
	io.Closer
}

// HostLabel is the first label of a host name (without port), lowercased.
func HostLabel(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, _, _ := strings.Cut(strings.ToLower(host), ".")
	return label
}

// ServeHTTP proxies one request to a container of its web endpoint.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, label, _ := strings.Cut(HostLabel(r.Host), "--")
	fn, err := h.find(r.Context(), ws, label)
	if err != nil {
		writeError(w, err)
		return
	}
	web := fn.Spec.Web
	if web.RequiresProxyAuth {
		if err := h.checkProxyAuth(r, fn.WorkspaceID); err != nil {
			writeError(w, err)
			return
		}
	}
	r.Header.Del("Modal-Key")
	r.Header.Del("Modal-Secret")
	// A request waits for a free container slot for up to the function's timeout, then runs
	// for up to that timeout (Modal's timeout is the run's, not the queue's).
	wait, cancelWait := context.WithTimeout(r.Context(), fn.Spec.Timeout.D())
	slot, err := h.eng.AcquireWeb(wait, fn.ID)
	cancelWait()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = errdefs.WithKind(errdefs.ErrUnavailable, fmt.Sprintf("no container of the web endpoint was free within its timeout of %v", fn.Spec.Timeout.D()))
		}
		if r.Context().Err() == nil {
			writeError(w, err)
		}
		return
	}
	defer slot.Release()
	// The app may answer before it reads the request's body (or never read it): without full
	// duplex, the server would discard the body at the answer's first write, under the
	// transport that is still sending it, and the transport would then close the container
	// connection and cut the answer.
	_ = http.NewResponseController(w).EnableFullDuplex() // an HTTP/2 request is full duplex already
	ctx, cancel := context.WithTimeout(r.Context(), fn.Spec.Timeout.D())
	defer cancel()
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, targetKey{}, &target{slot: slot, port: web.Port})))
}

// find is the active web endpoint of a host name.
func (h *Handler) find(ctx context.Context, wsDNS, label string) (function.Function, error) {
	wsID, err := h.workspace(ctx, wsDNS)
	if err == nil {
		if fn, ok := h.eng.WebFunction(wsID, label); ok {
			return fn, nil
		}
	}
	return function.Function{}, errdefs.NotFound("no web endpoint is served at %s--%s: check the URL (Function.get_web_url()), and that its app is deployed or running", wsDNS, label)
}

// workspace maps a workspace's DNS name to its ID, from a copy of the list read at most every
// few seconds (and again for a name it does not know).
func (h *Handler) workspace(ctx context.Context, dns string) (string, error) {
	h.mu.Lock()
	id, ok := h.wsByDNS[dns]
	fresh := time.Since(h.wsRead) < 5*time.Second
	h.mu.Unlock()
	if ok && fresh {
		if id == "" {
			return "", errdefs.NotFound("workspace %q is ambiguous", dns)
		}
		return id, nil
	}
	if !ok && time.Since(h.wsRead) < 200*time.Millisecond {
		return "", errdefs.NotFound("no workspace %q", dns)
	}
	wss, err := h.st.ListWorkspaces(ctx)
	if err != nil {
		return "", err
	}
	m := make(map[string]string, len(wss))
	for _, w := range wss {
		dns := function.DNSName(w.Name)
		if _, twice := m[dns]; twice {
			m[dns] = "" // ambiguous: publishing refuses web endpoints in either
			continue
		}
		m[dns] = w.ID
	}
	h.mu.Lock()
	h.wsByDNS, h.wsRead = m, time.Now()
	h.mu.Unlock()
	if id := m[dns]; id != "" {
		return id, nil
	}
	return "", errdefs.NotFound("no workspace %q", dns)
}

var errProxyAuth = errdefs.WithKind(errdefs.ErrUnauthorized, "this web endpoint requires proxy auth: send a token of its workspace in the Modal-Key (token id) and Modal-Secret (token secret) headers")

// checkProxyAuth accepts a user token of the endpoint's workspace in Modal's headers.
func (h *Handler) checkProxyAuth(r *http.Request, wsID string) error {
	id, secret := r.Header.Get("Modal-Key"), r.Header.Get("Modal-Secret")
	if id == "" || secret == "" {
		return errProxyAuth
	}
	t, err := h.st.GetToken(r.Context(), id)
	if err != nil || !auth.Matches(t.Hash, secret) || t.WorkspaceID != wsID || t.Kind != auth.User || t.Usable(time.Now()) != nil {
		return errProxyAuth
	}
	return nil
}

// writeError answers with a plain-text error: a browser or curl shows it as it is.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, errdefs.ErrUnauthorized):
		code = http.StatusUnauthorized
	case errors.Is(err, errdefs.ErrUnavailable):
		code = http.StatusServiceUnavailable
	case errors.Is(err, errdefs.ErrInvalid):
		code = http.StatusBadRequest
	}
	http.Error(w, "gust: "+err.Error()+"\n", code)
}

package worker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
)

// Function containers reach the server through a unix socket the worker serves, bind-mounted
// at /.gust/run/api.sock: a function may call other functions (f.remote() inside g) and create
// sandboxes, as in Modal. Containers have no network path to the server. Each function
// container presents its own credential (GUST_TOKEN_ID and GUST_TOKEN_SECRET, minted by the
// server when it starts and revoked when it ends); the server decides what it may do. The
// worker adds nothing of its own.

const apiSocketMount = "/.gust/run"

// serveContainerAPI listens on the socket that function containers use.
func (w *Worker) serveContainerAPI() (dir string, closeFn func(), err error) {
	dir = filepath.Join(w.cfg.StateDir, "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("container API socket: %w", err)
	}
	target, err := url.Parse(w.cfg.ServerURL)
	if err != nil {
		return "", nil, fmt.Errorf("container API: server URL %q: %w", w.cfg.ServerURL, err)
	}
	sock := filepath.Join(dir, "api.sock")
	// An earlier worker's socket would make Listen fail.
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("container API socket: removing the old one: %w", err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return "", nil, fmt.Errorf("container API socket: %w", err)
	}
	// Functions may run as any user of their image.
	if err := os.Chmod(sock, 0o666); err != nil {
		// The listener is unused: closing it cannot lose anything.
		_ = ln.Close()
		return "", nil, fmt.Errorf("container API socket: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
		},
		FlushInterval: -1,
		// An https server is verified as the worker's own connection to it is.
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: w.cfg.ServerTLS, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second},
		ErrorHandler: func(rw http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(rw, errdefs.Unavailable("the gust server is unreachable from this worker: %v", err))
		},
	}
	srv := &http.Server{ReadHeaderTimeout: apiHeaderTimeout, IdleTimeout: 2 * time.Minute, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		// Whole body first: a streamed answer must not race an unread request body.
		body, err := io.ReadAll(io.LimitReader(r.Body, 256<<20))
		if err != nil {
			httpapi.WriteError(rw, errdefs.Invalid("reading request body: %v", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		proxy.ServeHTTP(rw, r)
	})}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			w.log.Printf("the container API socket %s stopped: %v", sock, err)
		}
	}()
	closeFn = func() {
		if err := srv.Close(); err != nil {
			w.log.Printf("closing the container API socket: %v", err)
		}
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.log.Printf("removing the container API socket: %v", err)
		}
	}
	return dir, closeFn, nil
}

package ingress

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Web endpoints (Modal's asgi_app, wsgi_app, web_server, fastapi_endpoint) come in on the
// same HTTPS listener as tunnels, by host name <workspace>--<label>.<base domain>: their
// connections, once TLS ends here, are served by an HTTP server whose handler (internal/
// endpoint) routes each request to a container of its function. Tunnels' labels are random
// and never hold "--".

// WebHandler serves web endpoints' requests.
type WebHandler interface {
	http.Handler
}

// SetWeb starts serving web endpoints with h.
func (i *Ingress) SetWeb(h WebHandler) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.web != nil || i.closed {
		return
	}
	ln := &connListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: i.ln.Addr()}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: handshakeTimeout, IdleTimeout: 2 * time.Minute, ErrorLog: i.log}
	i.web = &webServer{srv: srv, ln: ln}
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		_ = srv.Serve(ln) // ends at Stop
	}()
}

type webServer struct {
	srv *http.Server
	ln  *connListener
}

// webFor reports whether a host name is a web endpoint's, when web endpoints are served.
func (i *Ingress) webFor(name string) *webServer {
	label, ok := strings.CutSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), "."+i.cfg.BaseDomain)
	if !ok || strings.Contains(label, ".") || !strings.Contains(label, "--") {
		return nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.web
}

// WebURL is the URL of a web endpoint whose host name's first label is hostLabel.
func (i *Ingress) WebURL(hostLabel string) string {
	return Tunnel{Host: hostLabel + "." + i.cfg.BaseDomain, Port: i.port}.URL()
}

// stopWeb closes the web endpoints' server and its connections.
func (i *Ingress) stopWeb() {
	i.mu.Lock()
	w := i.web
	i.mu.Unlock()
	if w != nil {
		w.ln.Close()
		w.srv.Close()
	}
}

// connListener hands the HTTP server the connections that the TLS listener accepted for web
// endpoints.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func (l *connListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// webTLS is the TLS configuration of web endpoints: HTTP/1.1, from which websockets upgrade.
// (HTTP/2 is not offered yet: with it, a container connection was now and then cut while
// reused, after an HTTP/2 request with a body; see endpoint's TestHTTP2BodyKeepsConnections.)
func webTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.NextProtos = []string{"http/1.1"}
	return c
}

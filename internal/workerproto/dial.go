package workerproto

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
)

// DialPort opens a TCP stream to port inside a container on this worker: an HTTP request to
// the worker's connect endpoint, authenticated like every other, whose 101 answer leaves the
// connection a raw byte stream to the container's port. The ingress splices clients' tunnels
// onto it. The connection is a fresh one (never from the shared pool), so that closing it
// ends the stream.
func (c *WorkerClient) DialPort(ctx context.Context, containerID string, port int) (net.Conn, error) {
	var d net.Dialer
	var conn net.Conn
	var err error
	if c.base.Scheme == "https" {
		td := tls.Dialer{NetDialer: &d, Config: c.tls}
		conn, err = td.DialContext(ctx, "tcp", hostPort(c.base.Host, "443"))
	} else {
		conn, err = d.DialContext(ctx, "tcp", hostPort(c.base.Host, "80"))
	}
	if err != nil {
		return nil, errdefs.Unavailable("worker unreachable: %v", err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true) // small request/response traffic must not wait for Nagle
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	path := "/v1/sandboxes/" + containerID + "/ports/" + strconv.Itoa(port) + "/connect"
	req := "GET " + path + " HTTP/1.1\r\nHost: " + c.base.Host + "\r\nAuthorization: Bearer " + c.token +
		"\r\nConnection: Upgrade\r\nUpgrade: " + ConnectUpgrade + "\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, errdefs.Unavailable("worker unreachable: %v", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, errdefs.Unavailable("worker's answer to a connect: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var body httpapi.ErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Message == "" {
			return nil, errdefs.Unavailable("connect to port %d of %s: the worker answered %s", port, containerID, resp.Status)
		}
		return nil, errdefs.WithKind(errdefs.FromKind(body.Error.Kind), body.Error.Message)
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// The container spoke first (an SSH banner, say) and its bytes came with the answer.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// bufferedConn is a connection whose first bytes were read ahead into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the stream, passing a client's EOF on.
func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("connection %T cannot half-close", b.Conn)
}

// hostPort adds the scheme's default port to host when it names none.
func hostPort(host, def string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), def)
}

// Splice copies bytes both ways between a and b until both directions end, passing each
// side's EOF on as a half-close, then closes both. Between two TCP connections the kernel
// moves the bytes (splice(2)).
//
// A connection that wraps another only to be told of its closing (NetConn, as *tls.Conn has,
// here without buffered bytes of its own) is copied through the one it wraps, so that the
// wrapper does not cost the kernel's splice.
func Splice(a, b net.Conn) { SpliceWith(a, b, nil) }

// CopyFunc copies src to dst until src's EOF, as io.Copy.
type CopyFunc func(dst, src net.Conn) (int64, error)

// SpliceWith is Splice whose copy from b to a is bToA (nil: as Splice copies), for a
// side that a plain io.Copy serves badly (a TLS connection: see the ingress).
func SpliceWith(a, b net.Conn, bToA CopyFunc) {
	done := make(chan struct{}, 2)
	plain := func(dst, src net.Conn) (int64, error) { return io.Copy(dst, src) }
	half := func(dst, src net.Conn, copyFn CopyFunc) {
		if copyFn == nil {
			copyFn = plain
		}
		rdst := rawConn(dst)
		_, err := copyFn(rdst, rawConn(src))
		if cw, ok := rdst.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			// No half-close (or the copy failed): end both directions.
			a.Close()
			b.Close()
		}
		done <- struct{}{}
	}
	go half(a, b, bToA)
	half(b, a, nil)
	<-done // each half sends one: wait for the other, which may still be copying after a half-close
	<-done
	a.Close()
	b.Close()
}

// Unwrapper is a connection that only watches another: reading and writing it is reading and
// writing the one NetConn returns.
type Unwrapper interface {
	NetConn() net.Conn
}

// rawConn is the TCP connection under c's watchers, or c.
func rawConn(c net.Conn) net.Conn {
	for {
		u, ok := c.(Unwrapper)
		if !ok {
			return c
		}
		if _, isTLS := c.(*tls.Conn); isTLS {
			return c // its NetConn carries ciphertext
		}
		c = u.NetConn()
	}
}

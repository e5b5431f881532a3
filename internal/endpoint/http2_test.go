package endpoint

import (
	"bufio"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/auth"
)

// TestHTTP2BodyKeepsConnections: an HTTP/2 request with a body, then a streamed answer on the
// container connection it leaves in the pool, many times. Before the body was cut at its
// length, the transport's last read of an HTTP/2 body could fail after the answer and close
// the connection while the next request used it (the stream came cut after its first line).
func TestHTTP2BodyKeepsConnections(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for i := range 3 {
				io.WriteString(w, "line\n")
				w.(http.Flusher).Flush()
				if i < 2 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", "2")
		_ = b
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	h := New(&fakeEngine{}, fakeDialer{app.Listener.Addr().String()}, fakeStore{auth.Token{}}, log.New(io.Discard, "", 0))
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	h2 := srv.Client()
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}}
	for i := range 200 {
		req, _ := http.NewRequest("POST", srv.URL+"/h2", strings.NewReader("over h2"))
		req.Host = "default--echo.gust.localhost"
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatal("not h2")
		}
		req, _ = http.NewRequest("GET", srv.URL+"/stream", strings.NewReader("x"))
		req.Host = "default--echo.gust.localhost"
		resp, err = h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(bufio.NewReader(resp.Body))
		resp.Body.Close()
		if string(b) != "line\nline\nline\n" {
			t.Fatalf("iteration %d: %q %v", i, b, err)
		}
	}
}

package endpoint

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/wire"
)

// fakes: one workspace "default" (ws-1) with web endpoints "echo" and "private"; every slot is
// in container sb-1, whose port is a local HTTP server.

type fakeEngine struct{ acquired int }

func (f *fakeEngine) WebFunction(ws, label string) (function.Function, bool) {
	// ws-3 and ws-4 (twin, Twin) have an echo too: their shared host name reaches neither.
	if !(ws == "ws-1" && (label == "echo" || label == "private") || (ws == "ws-3" || ws == "ws-4") && label == "echo") {
		return function.Function{}, false
	}
	return function.Function{ID: "fu-" + label, WorkspaceID: ws, Spec: function.Spec{Timeout: wire.Duration(time.Second),
		Web: &function.Web{Type: function.WebWSGI, Label: label, Port: function.WebPort, RequiresProxyAuth: label == "private"}}}, true
}

func (f *fakeEngine) AcquireWeb(ctx context.Context, fnID string) (*dispatch.WebSlot, error) {
	f.acquired++
	return &dispatch.WebSlot{WorkerID: "wk-1", ContainerID: "sb-1"}, nil
}

type fakeDialer struct{ addr string }

func (d fakeDialer) DialPort(ctx context.Context, workerID, containerID string, port int) (net.Conn, error) {
	if workerID != "wk-1" || containerID != "sb-1" || port != function.WebPort {
		return nil, errdefs.NotFound("no such container port")
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.addr)
}

type fakeStore struct{ tok auth.Token }

func (s fakeStore) ListWorkspaces(context.Context) ([]store.Workspace, error) {
	return []store.Workspace{{ID: "ws-1", Name: "default"}, {ID: "ws-2", Name: "Other_One"},
		{ID: "ws-3", Name: "twin"}, {ID: "ws-4", Name: "Twin"}}, nil
}

func (s fakeStore) GetToken(_ context.Context, id string) (auth.Token, error) {
	if id != s.tok.ID {
		return auth.Token{}, errdefs.NotFound("no token")
	}
	return s.tok, nil
}

func TestHandler(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for i := range 3 {
				io.WriteString(w, "line\n")
				w.(http.Flusher).Flush()
				if i < 2 {
					time.Sleep(200 * time.Millisecond)
				}
			}
			return
		}
		if r.URL.Path == "/slow" {
			time.Sleep(1500 * time.Millisecond)
		}
		w.Header().Set("X-Key-Seen", r.Header.Get("Modal-Key"))
		io.WriteString(w, "host="+r.Host+" proto="+r.Header.Get("X-Forwarded-Proto"))
	}))
	defer app.Close()
	_, secret := auth.NewCredential()
	tok := auth.Token{ID: "tk-1", WorkspaceID: "ws-1", Kind: auth.User, Role: auth.Member, Hash: auth.Hash(secret)}
	eng := &fakeEngine{}
	h := New(eng, fakeDialer{app.Listener.Addr().String()}, fakeStore{tok}, log.New(io.Discard, "", 0))
	srv := httptest.NewServer(h)
	defer srv.Close()
	do := func(host, path string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = host
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, tc := range []struct {
		name, host, path string
		hdr              map[string]string
		code             int
		body             string
	}{
		{"proxied", "default--echo.gust.localhost:443", "/", nil, 200, "host=default--echo.gust.localhost:443 proto=https"},
		{"unknown label", "default--nope.gust.localhost", "/", nil, 404, "no web endpoint"},
		{"unknown workspace", "nobody--echo.gust.localhost", "/", nil, 404, "no web endpoint"},
		{"another workspace", "other-one--echo.gust.localhost", "/", nil, 404, "no web endpoint"},
		{"an ambiguous workspace", "twin--echo.gust.localhost", "/", nil, 404, "no web endpoint"},
		{"proxy auth missing", "default--private.gust.localhost", "/", nil, 401, "Modal-Key"},
		{"proxy auth wrong", "default--private.gust.localhost", "/", map[string]string{"Modal-Key": "tk-1", "Modal-Secret": "x"}, 401, "Modal-Key"},
		{"proxy auth", "default--private.gust.localhost", "/", map[string]string{"Modal-Key": "tk-1", "Modal-Secret": secret}, 200, "host="},
		{"timeout", "default--echo.gust.localhost", "/slow", nil, 504, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(tc.host, tc.path, tc.hdr)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tc.code, tc.body)
			}
			if resp.Header.Get("X-Key-Seen") != "" {
				t.Fatal("the Modal-Key header reached the app")
			}
		})
	}
	t.Run("streamed", func(t *testing.T) {
		req, _ := http.NewRequest("GET", srv.URL+"/stream", nil)
		req.Host = "default--echo.gust.localhost"
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		first := time.Since(start)
		io.ReadAll(br)
		if all := time.Since(start); all-first < 300*time.Millisecond {
			t.Fatalf("first line after %v, all after %v: buffered", first, all)
		}
	})
}

func TestHostLabel(t *testing.T) {
	for in, want := range map[string]string{
		"Default--Echo.gust.localhost:8443": "default--echo",
		"default--echo.gust.localhost":      "default--echo",
		"localhost":                         "localhost",
	} {
		if got := HostLabel(in); got != want {
			t.Errorf("HostLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

package workerproto

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/tlsconf"
)

// WorkerClient is the server's one way to call a worker: typed calls for what the server asks
// itself (exec, snapshot), and Relay for clients' requests that the worker answers (exec
// streams, files, logs).
type WorkerClient struct {
	api   httpapi.Client
	relay *httputil.ReverseProxy
	base  *url.URL
	token string
	tls   *tls.Config // an https worker's pinned certificate (DialPort)
}

// workerTransport is shared by every WorkerClient: connections to a worker are kept warm.
var workerTransport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}

// NewWorkerClient returns a client of the worker whose API is at addr. An https addr is
// trusted only with the certificate whose SHA-256 fingerprint the worker reported when it
// registered.
func NewWorkerClient(addr, token, fingerprint string) (*WorkerClient, error) {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, errdefs.Invalid("worker addr %q is not a URL such as http://10.0.0.5:7421", addr)
	}
	transport := workerTransport
	var tc *tls.Config
	if u.Scheme == "https" {
		// One transport per worker: each has its own pinned certificate.
		var err error
		tc, err = tlsconf.ClientConfig(fingerprint, "")
		if err != nil || fingerprint == "" {
			return nil, errdefs.Invalid("worker addr %q is https: it needs the fingerprint of the worker's certificate (%v)", addr, err)
		}
		transport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, TLSClientConfig: tc, TLSHandshakeTimeout: 10 * time.Second}
	}
	c := &WorkerClient{api: httpapi.Client{BaseURL: addr, Token: token, HTTP: &http.Client{Transport: transport}}, base: u, token: token, tls: tc}
	c.relay = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("Authorization", "Bearer "+token)
		},
		FlushInterval: -1, // streams are NDJSON: pass each line on at once
		Transport:     transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(w, errdefs.Unavailable("worker unreachable: %v", err))
		},
	}
	return c, nil
}

// Relay passes a client's request to the worker and its answer back as it streams. The caller
// has read the request body already (see api.forward).
func (c *WorkerClient) Relay(w http.ResponseWriter, r *http.Request) { c.relay.ServeHTTP(w, r) }

// Exec runs a command in a container to its end, copying its output to out, and returns how
// it exited.
func (c *WorkerClient) Exec(ctx context.Context, containerID string, req ExecRequest, out io.Writer) (ExitLine, error) {
	resp, err := c.api.Open(ctx, http.MethodPost, "/v1/sandboxes/"+containerID+"/execs", req)
	if err != nil {
		return ExitLine{}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line struct {
			OutputLine
			ExitCode *int   `json:"exit_code"`
			Error    string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return ExitLine{}, fmt.Errorf("exec in %s: a line of its output is not JSON: %w", containerID, err)
		}
		if line.ExitCode != nil {
			return ExitLine{ExitCode: *line.ExitCode, Error: line.Error}, nil
		}
		if len(line.Data) > 0 {
			if _, err := out.Write(line.Data); err != nil {
				return ExitLine{}, err
			}
		}
	}
	return ExitLine{}, errdefs.Unavailable("exec in %s: its output ended before its exit (%v)", containerID, sc.Err())
}

// Snapshot saves a running container's changes as a new layer on the worker.
func (c *WorkerClient) Snapshot(ctx context.Context, containerID string) (SnapshotResponse, error) {
	var snap SnapshotResponse
	err := c.api.Do(ctx, http.MethodPost, "/v1/sandboxes/"+containerID+"/snapshot", nil, &snap)
	return snap, err
}

// SetNetwork replaces a running container's network policy on its worker, atomically.
func (c *WorkerClient) SetNetwork(ctx context.Context, containerID string, p sandbox.NetworkPolicy) error {
	return c.api.Do(ctx, http.MethodPut, "/v1/sandboxes/"+containerID+"/network", NetworkUpdate{Network: p}, nil)
}

// ServerClient is a worker's one way to call the server.
type ServerClient struct {
	join httpapi.Client // with the join token: registration only
	api  httpapi.Client // with the worker's own credential
	id   atomic.Value   // string: this worker's ID once registered
	cred atomic.Value   // string: its credential, from the registration
}

// WorkerID is this worker's ID, "" before it registered.
func (c *ServerClient) WorkerID() string {
	id, _ := c.id.Load().(string)
	return id
}

// NewServerClient returns a client of the server at serverURL.
// joinToken registers the worker; every later call presents the credential the server
// gives it then. tc is how an https server is verified (tlsconf.ClientConfig: a pinned
// fingerprint or a CA file); nil means the system's CAs.
func NewServerClient(serverURL, joinToken string, tc *tls.Config) *ServerClient {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, TLSClientConfig: tc, TLSHandshakeTimeout: 10 * time.Second}}
	c := &ServerClient{join: httpapi.Client{BaseURL: serverURL, Token: joinToken, HTTP: hc}}
	c.api = httpapi.Client{BaseURL: serverURL, HTTP: hc, TokenFunc: func() string {
		cred, _ := c.cred.Load().(string)
		return cred
	}}
	return c
}

// Register introduces the worker (again, after a blip, when req.WorkerID is set) and keeps the
// ID the server gives it.
func (c *ServerClient) Register(ctx context.Context, req RegisterRequest) error {
	var resp RegisterResponse
	if err := c.join.Do(ctx, http.MethodPost, "/v1/workers/register", req, &resp); err != nil {
		return err
	}
	c.cred.Store(resp.Credential)
	c.id.Store(resp.WorkerID)
	return nil
}

// Assignments waits up to wait for work.
func (c *ServerClient) Assignments(ctx context.Context, wait time.Duration) ([]Assignment, error) {
	var as Assignments
	path := "/v1/workers/" + c.WorkerID() + "/assignments?wait=" + strconv.FormatFloat(wait.Seconds(), 'f', -1, 64)
	err := c.api.Do(ctx, http.MethodGet, path, nil, &as)
	return as.Assignments, err
}

// ReportState tells the server a container's new state.
func (c *ServerClient) ReportState(ctx context.Context, containerID string, st StateReport) error {
	return c.api.Do(ctx, http.MethodPost, "/v1/workers/"+c.WorkerID()+"/sandboxes/"+containerID+"/state", st, nil)
}

// SendEvents posts a batch of function events.
func (c *ServerClient) SendEvents(ctx context.Context, evs []Event) error {
	return c.api.Do(ctx, http.MethodPost, "/v1/workers/"+c.WorkerID()+"/events", Events{Events: evs}, nil)
}

// VolumeHead returns the current version of volume vid, which container cid mounts.
func (c *ServerClient) VolumeHead(ctx context.Context, vid, cid string) (string, error) {
	var v struct {
		Head string `json:"version_id"`
	}
	err := c.api.Do(ctx, http.MethodGet, "/v1/workers/"+c.WorkerID()+"/volumes/"+vid+"?container="+url.QueryEscape(cid), nil, &v)
	return v.Head, err
}

// CommitVolume applies changes that container cid made under its mount of volume vid (their
// files' blobs are stored already) and returns the new version.
func (c *ServerClient) CommitVolume(ctx context.Context, vid, cid string, changes any) (string, error) {
	var v struct {
		Head string `json:"version_id"`
	}
	err := c.api.Do(ctx, http.MethodPost, "/v1/workers/"+c.WorkerID()+"/volumes/"+vid+"/commit", map[string]any{"container_id": cid, "changes": changes}, &v)
	return v.Head, err
}

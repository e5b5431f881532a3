package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/worker"
)

// What the `gust bench` commands share: a gust started in this process, and a client of its
// HTTP API.

// startBenchGust runs gust (server, worker with a warm pool) in this process on a scratch data
// dir, sharing the given image cache, and returns a client of its HTTP API and a function that
// stops it all and removes the scratch dir.
func startBenchGust(ctx context.Context, imageCache string) (*benchClient, func(), error) {
	tmp, err := os.MkdirTemp("", "gust-bench-")
	if err != nil {
		return nil, nil, err
	}
	quiet := log.New(io.Discard, "", 0)
	d := daemonFlags{addr: "127.0.0.1:0", dataDir: filepath.Join(tmp, "data"), imageCache: imageCache, isolation: "runc", diskMiB: 256, token: "bench", warmPool: 2}
	// GUST_BENCH_RELAY=1: raw tunnels relayed by the ingress, as before the kernel forwarded them.
	d.ingress = &ingress.Config{Addr: "127.0.0.1:0", CADir: d.dataDir, Logger: quiet, Relay: os.Getenv("GUST_BENCH_RELAY") != ""}
	srv, httpSrv, ln, token, err := startServer(ctx, &d, quiet)
	if err != nil {
		removeScratch(tmp)
		return nil, nil, err
	}
	url := "http://" + ln.Addr().String()
	w, err := worker.New(worker.Config{ServerURL: url, JoinToken: d.joinToken, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(d.dataDir, "containers"), LayerDir: d.layerDir(), DiskMiB: d.diskMiB, WarmPool: d.warmPool, Logger: quiet,
		Network:     envOr("GUST_NETWORK", "true") == "true", // as `gust up` runs: every container on the bridge
		NetworkMTU:  envInt("GUST_NETWORK_MTU", 0),
		DNSUpstream: splitUpstreams(os.Getenv("GUST_DNS_UPSTREAM"))})
	if err != nil {
		closeBenchServer(httpSrv)
		removeScratch(tmp)
		return nil, nil, err
	}
	benchIngress.Store(srv.Ingress())
	if os.Getenv("GUST_BENCH_REMOTE_WORKER") == "" { // set: tunnels go through the worker's API, as to another machine
		srv.SetLocalWorker(w)
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(wctx) }()
	stop := func() {
		stopWorker()
		if err := <-workerDone; err != nil {
			benchWarn("the worker: %v", err)
		}
		closeBenchServer(httpSrv)
		removeScratch(tmp)
	}
	c := newBenchClient(url, token, tmp)
	return c, stop, nil
}

func closeBenchServer(srv *http.Server) {
	if err := srv.Close(); err != nil {
		benchWarn("closing the server: %v", err)
	}
}

// removeScratch removes a benchmark's scratch directory; a failure is reported, not returned:
// the measurements stand, but the directory (perhaps a whole base image) is left behind.
func removeScratch(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		benchWarn("%v (remove it by hand)", err)
	}
}

// benchWarn reports on stderr something that went wrong beside the measurements.
func benchWarn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gust: bench: "+format+"\n", args...)
}

// benchClient speaks the HTTP API directly, through gust's internal client: the benchmark
// measures the API, not an SDK.
type benchClient struct {
	url, token, tmp string
	api             httpapi.Client
}

func newBenchClient(url, token, tmp string) *benchClient {
	return &benchClient{url: url, token: token, tmp: tmp, api: httpapi.Client{BaseURL: url, Token: token,
		HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}}
}

func (c *benchClient) do(method, path string, in any) (*http.Response, error) {
	return c.api.Open(context.Background(), method, path, in)
}

// closeBody closes a response body that was read as far as needed. Its error is dropped on
// purpose: closing a read body reports nothing about the answer already read.
func closeBody(resp *http.Response) { _ = resp.Body.Close() }

func (c *benchClient) json(method, path string, in, out any) error {
	return c.api.Do(context.Background(), method, path, in, out)
}

func (c *benchClient) image() (string, error) {
	resp, err := c.do("POST", "/v1/images", map[string]string{"kind": "debian_slim"})
	if err != nil {
		return "", err
	}
	defer closeBody(resp)
	return readImageStream(resp, true)
}

// imageSpec resolves an image definition through the API.
func (c *benchClient) imageSpec(spec map[string]any) (string, error) {
	resp, err := c.do(http.MethodPost, "/v1/images", spec)
	if err != nil {
		return "", err
	}
	defer closeBody(resp)
	return readImageStream(resp, false)
}

// readImageStream follows an image build stream to its image id, printing the log if asked.
func readImageStream(resp *http.Response, printLogs bool) (string, error) {
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Log   string `json:"log"`
			Image *struct {
				ID string `json:"image_id"`
			} `json:"image"`
			Error *struct{ Message string } `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return "", fmt.Errorf("bad line in the image stream: %w", err)
		}
		switch {
		case line.Image != nil:
			return line.Image.ID, nil
		case line.Error != nil:
			return "", errors.New(line.Error.Message)
		case line.Log != "" && printLogs:
			fmt.Println("  " + line.Log)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading the image stream: %w", err)
	}
	return "", errors.New("image stream ended early")
}

func (c *benchClient) app() (string, error) {
	var a struct {
		ID string `json:"app_id"`
	}
	err := c.json("POST", "/v1/apps/lookup", map[string]any{"name": "bench", "create_if_missing": true}, &a)
	return a.ID, err
}

// create makes a sandbox. Its 512 MiB of memory differs from the default, so the warm pool
// (which serves default sandboxes) never serves it: this is the cold path.
func (c *benchClient) create(appID, imageID, iso string) (string, error) {
	return c.createWith(map[string]any{"app_id": appID, "image_id": imageID, "isolation": iso, "memory": 512})
}

// createWarm makes a sandbox with default resources, which the warm pool may serve.
func (c *benchClient) createWarm(appID, imageID string) (string, error) {
	return c.createWith(map[string]any{"app_id": appID, "image_id": imageID})
}

func (c *benchClient) createWith(req map[string]any) (string, error) {
	var sb struct {
		ID string `json:"sandbox_id"`
	}
	err := c.json("POST", "/v1/sandboxes", req, &sb)
	return sb.ID, err
}

// terminate ends a sandbox. A sandbox left running would skew every later measurement, so its
// error is the benchmark's.
func (c *benchClient) terminate(id string) error {
	if err := c.json("POST", "/v1/sandboxes/"+id+"/terminate", nil, nil); err != nil {
		return fmt.Errorf("terminating sandbox %s: %w", id, err)
	}
	return nil
}

// execFirstOutput runs a command and returns when its first output (or, with none, its exit)
// arrives, then drains the stream.
func (c *benchClient) execFirstOutput(id string, argv ...string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.do("POST", "/v1/sandboxes/"+id+"/execs", map[string]any{"command": argv})
	if err != nil {
		return 0, err
	}
	defer closeBody(resp)
	sc := bufio.NewScanner(resp.Body)
	var first time.Duration
	for sc.Scan() {
		line := sc.Bytes()
		if first == 0 && (bytes.Contains(line, []byte(`"stream"`)) || bytes.Contains(line, []byte(`"exit_code"`))) {
			first = time.Since(start)
		}
		if bytes.Contains(line, []byte(`"exit_code"`)) {
			var e struct {
				ExitCode int `json:"exit_code"`
			}
			if err := json.Unmarshal(line, &e); err != nil {
				return first, fmt.Errorf("%v: bad exit line %q: %w", argv, line, err)
			}
			if e.ExitCode != 0 {
				return first, fmt.Errorf("%v exited %d", argv, e.ExitCode)
			}
		}
	}
	return first, sc.Err()
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/worker"
	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "bench web", summary: "benchmark web endpoints through the ingress against the same app served directly", run: runBenchWeb})
}

const benchWebAppName = "gust-bench-web"

// benchWebApp is a WSGI endpoint answering "ok" (warm, @concurrent) and the same app with a
// one-second scaledown window for cold requests.
const benchWebApp = `import gust as modal

app = modal.App("` + benchWebAppName + `")


def ok(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@app.function(cpu=1)
@modal.concurrent(max_inputs=64)
@modal.wsgi_app()
def warm():
    return ok


@app.function(cpu=1, scaledown_window=1)
@modal.wsgi_app()
def cold():
    return ok
`

// runBenchWeb starts gust in this process, deploys benchWebApp and measures, through the
// ingress (HTTPS, the endpoint's URL) and directly (plain HTTP to the same server in the same
// container, dialled in its network namespace), interleaved in one run: the round trip of one
// request at a time on a kept-alive connection, and requests per second with --clients
// connections at once; then cold requests to the endpoint scaled to zero.
func runBenchWeb(ctx context.Context, args []string) error {
	fs := newFlags("bench web")
	n := fs.Int("n", 2000, "requests per latency measurement")
	clients := fs.Int("clients", 16, "concurrent connections of the throughput measurement")
	secs := fs.Float64("seconds", 3, "seconds per throughput measurement")
	colds := fs.Int("cold", 10, "cold requests (each waits for scale to zero, about 2 s)")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache (the base image is built there if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("gust bench web runs containers and enters their network namespace: run it as root")
	}
	bc, stop, err := startBenchGust(ctx, *imageCache)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Println("resolving the base image (built once with debootstrap if missing)...")
	if _, err := bc.image(); err != nil {
		return err
	}
	if err := deployPythonApp(ctx, bc, benchWebAppName, benchWebApp); err != nil {
		return err
	}
	c, err := gust.NewClient(gust.Config{ServerURL: bc.url, Token: bc.token})
	if err != nil {
		return err
	}
	warmFn, err := c.FunctionFromName(ctx, benchWebAppName, "warm")
	if err != nil {
		return err
	}
	coldFn, err := c.FunctionFromName(ctx, benchWebAppName, "cold")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(bc.tmp, "data", ingress.CAFile))
	if err != nil {
		return err
	}
	p, err := newWebPaths(ca, warmFn.WebURL, *clients)
	if err != nil {
		return err
	}
	if err := p.get(p.viaIngress, p.url); err != nil { // starts the container
		return fmt.Errorf("the first request: %w", err)
	}
	pid, err := pidWithEnv("GUST_FUNCTION_ID=" + warmFn.ID) // its runner, in its container
	if err != nil {
		return err
	}
	ns := fmt.Sprintf("/proc/%d/ns/net", pid)
	var spec struct {
		Web struct {
			Port int `json:"port"`
		} `json:"web"`
	}
	if err := json.Unmarshal(warmFn.Spec, &spec); err != nil || spec.Web.Port == 0 {
		return fmt.Errorf("the endpoint's spec names no port: %s (%v)", warmFn.Spec, err)
	}
	port := spec.Web.Port
	p.direct = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *clients, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return worker.DialIn(ctx, ns, "127.0.0.1:"+strconv.Itoa(port))
	}}}

	fmt.Printf("\ngust bench web: %d requests, %d connections × %.0f s, %d cold requests, 2-core machine shared with other work, %s\n", *n, *clients, *secs, *colds, time.Now().Format(time.RFC3339))
	fmt.Printf("ingress: HTTPS to the endpoint's URL (TLS, the ingress, a container slot, the worker's dial); direct: plain HTTP to the same server in the same container, dialled in its network namespace\n\n")
	var inLat, dirLat []time.Duration
	var inRPS, dirRPS []float64
	for range 3 { // interleaved, so that the machine's other load falls on both
		l, err := p.latencies(p.viaIngress, p.url, *n/3)
		if err != nil {
			return fmt.Errorf("latency through the ingress: %w", err)
		}
		inLat = append(inLat, l...)
		if l, err = p.latencies(p.direct, "http://direct/", *n/3); err != nil {
			return fmt.Errorf("latency direct: %w", err)
		}
		dirLat = append(dirLat, l...)
		r, err := p.throughput(p.viaIngress, p.url, *clients, *secs/3)
		if err != nil {
			return fmt.Errorf("throughput through the ingress: %w", err)
		}
		inRPS = append(inRPS, r)
		if r, err = p.throughput(p.direct, "http://direct/", *clients, *secs/3); err != nil {
			return fmt.Errorf("throughput direct: %w", err)
		}
		dirRPS = append(dirRPS, r)
	}
	benchRow("measurement", "p50", "p99", "base p50", "base p99", "p50 ×", "target")
	i50, d50 := pct(inLat, 50), pct(dirLat, 50)
	benchRow("warm WSGI request, one at a time", ms(i50), ms(pct(inLat, 99)), ms(d50), ms(pct(dirLat, 99)),
		fmt.Sprintf("%.2f×", float64(i50)/float64(d50)), verdict(i50-d50 <= 2*time.Millisecond, fmt.Sprintf("≤ 2 ms added p50 (added %s)", ms(i50-d50))))
	ir, dr := median(inRPS), median(dirRPS)
	fmt.Printf("%-46s %10.0f %10s %10.0f %10s %7.2f×  %s\n", fmt.Sprintf("requests/s, %d connections", *clients), ir, "", dr, "", ir/dr,
		verdict(ir >= dr/2, "≥ 0.5× direct"))

	if *colds > 0 {
		coldP, err := newWebPaths(ca, coldFn.WebURL, 1)
		if err != nil {
			return err
		}
		var ds []time.Duration
		for range *colds {
			if err := waitScaledToZero(ctx, coldFn, 30*time.Second); err != nil {
				return err
			}
			coldP.viaIngress.CloseIdleConnections()
			start := time.Now()
			if err := coldP.get(coldP.viaIngress, coldP.url); err != nil {
				return fmt.Errorf("cold request: %w", err)
			}
			ds = append(ds, time.Since(start))
		}
		c50 := pct(ds, 50)
		benchRow("cold request (scaled to zero) → answer", ms(c50), ms(pct(ds, 99)), "", "", "", verdict(c50 <= 300*time.Millisecond, "≤ 300 ms p50"))
	}
	return nil
}

// webPaths are the ways to a web endpoint's server.
type webPaths struct {
	url                string
	viaIngress, direct *http.Client
}

func newWebPaths(ca []byte, webURL string, conns int) (*webPaths, error) {
	u, err := url.Parse(webURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("the endpoint's URL %q: %v", webURL, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	addr := net.JoinHostPort("127.0.0.1", u.Port())
	var d net.Dialer
	return &webPaths{url: webURL + "/", viaIngress: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: conns,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
	}}}, nil
}

func (p *webPaths) get(c *http.Client, u string) error {
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	closeBody(resp)
	if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
		err = fmt.Errorf("%d %q", resp.StatusCode, b)
	}
	return err
}

// latencies times n requests one after another on one kept-alive connection.
func (p *webPaths) latencies(c *http.Client, u string, n int) ([]time.Duration, error) {
	var ds []time.Duration
	for i := range n + 20 {
		start := time.Now()
		if err := p.get(c, u); err != nil {
			return nil, err
		}
		if i >= 20 { // the first ones warm the connection up
			ds = append(ds, time.Since(start))
		}
	}
	return ds, nil
}

// throughput is requests per second with conns connections sending one request after another
// for secs seconds.
func (p *webPaths) throughput(c *http.Client, u string, conns int, secs float64) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(time.Duration(secs * float64(time.Second)))
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := p.get(c, u); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds(), firstErr
}

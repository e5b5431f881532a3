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
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/worker"
)

func init() {
	register(&command{name: "bench sandbox", summary: "benchmark sandbox start and exec against bare runc/runsc", run: runBenchSandbox})
}

// runBenchSandbox starts gust in this process on a scratch data dir, then measures it through
// its HTTP API beside the bare runtimes on the same root filesystem.
func runBenchSandbox(ctx context.Context, args []string) error {
	fs := newFlags("bench sandbox")
	n := fs.Int("n", 30, "samples per measurement")
	idle := fs.Int("idle", 100, "idle sandboxes to hold for the density measurement (0 skips it)")
	isoList := fs.String("isolation", "runc,gvisor", "runtimes to measure")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache (the base image is built there if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, stop, err := startBenchGust(ctx, *imageCache)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Println("resolving the base image (built once with debootstrap if missing)...")
	imageID, err := c.image()
	if err != nil {
		return err
	}
	appID, err := c.app()
	if err != nil {
		return err
	}
	builder, _ := image.NewBuilder(*imageCache)
	layer, err := builder.EnsureDebianSlim(ctx, nil)
	if err != nil {
		return err
	}
	rt, err := container.New(container.Config{StateDir: filepath.Join(c.tmp, "baseline")})
	if err != nil {
		return err
	}
	// Wait for the worker.
	for i := 0; ; i++ {
		id, err := c.create(appID, imageID, "runc")
		if err == nil {
			c.terminate(id)
			break
		}
		if i > 100 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}

	fmt.Printf("\ngust bench sandbox: %d samples each, 2-core machine, %s\n\n", *n, time.Now().Format(time.RFC3339))
	fmt.Printf("%-44s %10s %10s %10s %10s %8s\n", "measurement", "p50", "p99", "base p50", "base p99", "p50 ×")
	for _, iso := range strings.Split(*isoList, ",") {
		iso = strings.TrimSpace(iso)
		if rt.Available(iso) != nil {
			fmt.Printf("%s: not installed, skipped\n", iso)
			continue
		}
		bare := "runc"
		if iso == "gvisor" {
			bare = "runsc"
		}
		// Baseline: a bare `runc run` of echo on the same rootfs, time to first output.
		bl, err := rt.NewBaseline(iso, []string{layer}, []string{"/bin/echo", "hi"})
		if err != nil {
			return err
		}
		var base []time.Duration
		for i := 0; i < *n; i++ {
			d, err := bl.Run(i)
			if err != nil {
				bl.Close()
				return err
			}
			base = append(base, d)
		}
		bl.Close()
		var got []time.Duration
		for i := 0; i < *n; i++ {
			start := time.Now()
			id, err := c.create(appID, imageID, iso)
			if err != nil {
				return err
			}
			if _, err := c.execFirstOutput(id, "echo", "hi"); err != nil {
				return err
			}
			got = append(got, time.Since(start))
			c.terminate(id)
		}
		report(fmt.Sprintf("create → first exec output (%s) vs %s run", iso, bare), got, base)
		if iso == "runc" {
			// The same with the warm pool: default resources, so a pooled container serves it.
			// Pauses between samples let the pool refill, as it would between real requests.
			var warm []time.Duration
			for i := 0; i < *n; i++ {
				time.Sleep(150 * time.Millisecond)
				start := time.Now()
				id, err := c.createWarm(appID, imageID)
				if err != nil {
					return err
				}
				if _, err := c.execFirstOutput(id, "echo", "hi"); err != nil {
					return err
				}
				warm = append(warm, time.Since(start))
				c.terminate(id)
			}
			report("  the same from the warm pool vs runc run", warm, base)
		}

		// Exec round trip in a running sandbox vs `runc exec`.
		bl, err = rt.NewBaseline(iso, []string{layer}, []string{"/bin/sleep", "infinity"})
		if err != nil {
			return err
		}
		if err := bl.StartDetached(); err != nil {
			bl.Close()
			return err
		}
		base = base[:0]
		for i := 0; i < *n; i++ {
			d, err := bl.Exec("/bin/true")
			if err != nil {
				bl.Close()
				return err
			}
			base = append(base, d)
		}
		bl.Close()
		id, err := c.create(appID, imageID, iso)
		if err != nil {
			return err
		}
		got = got[:0]
		for i := 0; i < *n*3; i++ {
			start := time.Now()
			if _, err := c.execFirstOutput(id, "true"); err != nil {
				return err
			}
			got = append(got, time.Since(start))
		}
		c.terminate(id)
		report(fmt.Sprintf("exec round trip (%s) vs %s exec", iso, bare), got, base)
	}

	if *idle > 0 {
		if err := benchIdle(c, appID, imageID, *idle); err != nil {
			return err
		}
	}
	return nil
}

// startBenchGust runs gust (server, worker with a warm pool) in this process on a scratch data
// dir, sharing the given image cache, and returns a client of its HTTP API.
func startBenchGust(ctx context.Context, imageCache string) (*benchClient, func(), error) {
	tmp, err := os.MkdirTemp("", "gust-bench-")
	if err != nil {
		return nil, nil, err
	}
	quiet := log.New(io.Discard, "", 0)
	d := daemonFlags{addr: "127.0.0.1:0", dataDir: filepath.Join(tmp, "data"), imageCache: imageCache, isolation: "runc", diskMiB: 256, token: "bench", warmPool: 2}
	_, httpSrv, ln, token, err := startServer(ctx, &d, quiet)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	url := "http://" + ln.Addr().String()
	w, err := worker.New(worker.Config{ServerURL: url, Token: token, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(d.dataDir, "containers"), LayerDir: d.layerDir(), DiskMiB: d.diskMiB, WarmPool: d.warmPool, Logger: quiet})
	if err != nil {
		httpSrv.Close()
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	go func() { w.Run(wctx); close(workerDone) }()
	stop := func() {
		stopWorker()
		<-workerDone
		httpSrv.Close()
		os.RemoveAll(tmp)
	}
	c := &benchClient{url: url, token: token, tmp: tmp, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	return c, stop, nil
}

func benchIdle(c *benchClient, appID, imageID string, k int) error {
	goruntime.GC()
	rss0, avail0 := selfRSS(), memAvailable()
	ids := make([]string, 0, k)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	var firstErr error
	start := time.Now()
	for i := 0; i < k; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, err := c.create(appID, imageID, "runc")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = err
				return
			}
			ids = append(ids, id)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(time.Second)
	goruntime.GC()
	rss1, avail1 := selfRSS(), memAvailable()
	held := len(ids)
	for _, id := range ids {
		if _, err := c.execFirstOutput(id, "true"); err != nil {
			firstErr = errors.Join(firstErr, fmt.Errorf("idle sandbox %s stopped answering: %w", id, err))
			break
		}
	}
	var twg sync.WaitGroup
	for _, id := range ids {
		twg.Add(1)
		sem <- struct{}{}
		go func() { defer twg.Done(); defer func() { <-sem }(); c.terminate(id) }()
	}
	twg.Wait()
	if held == 0 {
		return firstErr
	}
	perWorker := float64(rss1-rss0) / float64(held)
	perHost := float64(avail0-avail1) / float64(held)
	fmt.Printf("\nidle sandboxes (runc): %d held (created in %.1f s, %.0f/s); all answered an exec\n", held, elapsed.Seconds(), float64(held)/elapsed.Seconds())
	fmt.Printf("  worker RSS growth per sandbox: %.2f MiB (target < 5 MiB)\n", perWorker/(1<<20))
	fmt.Printf("  machine memory per idle sandbox (gust-init + kernel): %.2f MiB → about %.0f idle sandboxes in 24 GiB\n",
		perHost/(1<<20), 24*1024/(perHost/(1<<20)))
	return firstErr
}

func report(name string, got, base []time.Duration) {
	p50, p99 := pct(got, 50), pct(got, 99)
	b50, b99 := pct(base, 50), pct(base, 99)
	fmt.Printf("%-44s %10s %10s %10s %10s %7.2f×\n", name, ms(p50), ms(p99), ms(b50), ms(b99), float64(p50)/float64(b50))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func selfRSS() int64 { return procField("/proc/self/status", "VmRSS:") }

func memAvailable() int64 { return procField("/proc/meminfo", "MemAvailable:") }

func procField(file, key string) int64 {
	b, _ := os.ReadFile(file)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// benchClient speaks the HTTP API directly: the benchmark measures the API, not an SDK.
type benchClient struct {
	url, token, tmp string
	http            *http.Client
}

func (c *benchClient) do(method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.url+path, body)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

func (c *benchClient) json(method, path string, in, out any) error {
	resp, err := c.do(method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *benchClient) image() (string, error) {
	resp, err := c.do("POST", "/v1/images", map[string]string{"kind": "debian_slim"})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	return readImageStream(resp, true)
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
		json.Unmarshal(sc.Bytes(), &line)
		switch {
		case line.Image != nil:
			return line.Image.ID, nil
		case line.Error != nil:
			return "", errors.New(line.Error.Message)
		case line.Log != "" && printLogs:
			fmt.Println("  " + line.Log)
		}
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

func (c *benchClient) terminate(id string) {
	c.json("POST", "/v1/sandboxes/"+id+"/terminate", nil, nil)
}

// execFirstOutput runs a command and returns when its first output (or, with none, its exit)
// arrives, then drains the stream.
func (c *benchClient) execFirstOutput(id string, argv ...string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.do("POST", "/v1/sandboxes/"+id+"/execs", map[string]any{"command": argv})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
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
			json.Unmarshal(line, &e)
			if e.ExitCode != 0 {
				return first, fmt.Errorf("%v exited %d", argv, e.ExitCode)
			}
		}
	}
	return first, sc.Err()
}

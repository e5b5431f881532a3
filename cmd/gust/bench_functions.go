package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "bench functions", summary: "benchmark function cold start, warm .remote(), .map throughput and scale-out", run: runBenchFunctions})
}

// benchAppName is the app `gust bench functions` deploys (again at each run, replacing itself).
const benchAppName = "gust-bench-functions"

// benchApp is the Python app it deploys. Small reservations let ten containers of sleep1 fit a
// 2-core machine.
const benchApp = `import time

import gust

app = gust.App("` + benchAppName + `")


@app.function(cpu=0.125, memory=128)
def ping(x=0):
    return x


@app.function(cpu=0.125, memory=128, max_containers=10)
def sleep1(i):
    time.sleep(1)
    return i


@app.function(cpu=0.125, memory=128, scaledown_window=1)
def cold(x=0):
    return x
`

// runBenchFunctions deploys a small Python app to a gust started in this process (or a
// running one) and measures its functions through the Go SDK and the HTTP API. It reports
// against the targets; missing one is not an error.
func runBenchFunctions(ctx context.Context, args []string) error {
	fs := cliFlags("bench functions", "[flags]",
		"Deploys a small Python app and measures: cold start (scale from zero) of a trivial function,\n"+
			"the warm .remote() round trip beside a bare HTTP round trip, .map throughput over trivial\n"+
			"inputs, and 100 one-second inputs on 10 containers against the ideal 10 s.")
	n := fs.Int("n", 20, "samples for the cold start and (×3) the warm round trip")
	mapN := fs.Int("map", 10000, "inputs of the map throughput measurement (0 skips it)")
	scaleN := fs.Int("scale", 100, "one-second inputs of the scale-out measurement, on at most 10 containers (0 skips it)")
	server := fs.String("server", "", "measure this running gust (http://HOST:PORT, token from GUST_TOKEN or the config file) instead of starting one here")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache of the gust started here (the base image is built there if missing)")
	if pos, _, err := parseArgs(fs, args, -1); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("bench functions takes no arguments, got %q", pos)
	}
	if *n < 1 {
		return errors.New("--n must be at least 1")
	}

	bc, stop, err := benchFunctionsTarget(ctx, *server, *imageCache)
	if err != nil {
		return err
	}
	defer stop()
	c, err := gust.NewClient(gust.Config{ServerURL: bc.url, Token: bc.token})
	if err != nil {
		return err
	}
	fns, err := deployBenchFunctions(ctx, bc, c)
	if err != nil {
		return err
	}
	if *server != "" {
		defer stopBenchApp(ctx, c, fns["ping"].AppID)
	}
	if err := waitFirstResult(ctx, fns["ping"]); err != nil {
		return err
	}

	fmt.Printf("\ngust bench functions: %d samples, 2-core machine, %s\n\n", *n, time.Now().Format(time.RFC3339))
	benchRow("measurement", "p50", "p99", "base p50", "base p99", "p50 ×", "target")
	if err := benchColdStart(ctx, fns["cold"], *n); err != nil {
		return err
	}
	if err := benchWarmRemote(ctx, c, fns["ping"], *n); err != nil {
		return err
	}
	if *mapN > 0 {
		if err := benchMap(ctx, bc, fns["ping"], *mapN); err != nil {
			return err
		}
	}
	if *scaleN > 0 {
		if err := benchScaleOut(ctx, bc, fns["sleep1"], *scaleN); err != nil {
			return err
		}
	}
	return nil
}

// benchFunctionsTarget starts gust in this process, or with server set returns a client of that
// running gust (and a stop that does nothing).
func benchFunctionsTarget(ctx context.Context, server, imageCache string) (*benchClient, func(), error) {
	if server == "" {
		return startBenchGust(ctx, imageCache)
	}
	cfg, err := gust.LoadConfig()
	if err != nil {
		return nil, nil, err
	}
	bc := newBenchClient(strings.TrimRight(server, "/"), cfg.Token, "")
	return bc, func() {}, nil
}

// deployBenchFunctions resolves the base image, deploys the benchmark app and looks up its
// functions, their output silenced.
func deployBenchFunctions(ctx context.Context, bc *benchClient, c *gust.Client) (map[string]*gust.Function, error) {
	fmt.Println("resolving the base image (built once with debootstrap if missing)...")
	if _, err := bc.image(); err != nil {
		return nil, err
	}
	fmt.Println("deploying the benchmark app with python3...")
	start := time.Now()
	if err := deployBenchApp(ctx, bc); err != nil {
		return nil, err
	}
	fmt.Printf("  deployed in %.1f s\n", time.Since(start).Seconds())
	fns := map[string]*gust.Function{}
	for _, name := range []string{"ping", "sleep1", "cold"} {
		f, err := c.FunctionFromName(ctx, benchAppName, name)
		if err != nil {
			return nil, err
		}
		f.Stdout, f.Stderr = io.Discard, io.Discard
		fns[name] = f
	}
	return fns, nil
}

// stopBenchApp stops the benchmark app on a gust that outlives the benchmark.
func stopBenchApp(ctx context.Context, c *gust.Client, appID string) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.StopApp(sctx, appID); err != nil {
		fmt.Fprintln(os.Stderr, "gust: stopping the benchmark app:", err)
	}
}

// waitFirstResult calls f once: the first call waits for the worker and the first container.
func waitFirstResult(ctx context.Context, f *gust.Function) error {
	fmt.Println("waiting for a first result...")
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if _, err := f.Remote(wctx, 0); err != nil {
		return fmt.Errorf("first call of ping: %w", err)
	}
	return nil
}

// benchColdStart times n calls of f, each after it has been scaled to zero.
func benchColdStart(ctx context.Context, f *gust.Function, n int) error {
	var coldTimes []time.Duration
	for i := 0; i < n; i++ {
		if err := waitScaledToZero(ctx, f, time.Minute); err != nil {
			return err
		}
		start := time.Now()
		if _, err := f.Remote(ctx, i); err != nil {
			return fmt.Errorf("cold start %d: %w", i, err)
		}
		coldTimes = append(coldTimes, time.Since(start))
	}
	p50 := pct(coldTimes, 50)
	benchRow("cold start (scale from zero) → result", ms(p50), ms(pct(coldTimes, 99)), "", "", "",
		verdict(p50 <= 300*time.Millisecond, "≤ 300 ms p50 (Modal: ~1 s)"))
	return nil
}

// benchWarmRemote times 3n warm calls of f, each beside a bare HTTP round trip to the same
// server.
func benchWarmRemote(ctx context.Context, c *gust.Client, f *gust.Function, n int) error {
	var warm, health []time.Duration
	for i := 0; i < n*3; i++ {
		start := time.Now()
		if _, err := f.Remote(ctx, i); err != nil {
			return fmt.Errorf("warm call %d: %w", i, err)
		}
		warm = append(warm, time.Since(start))
		start = time.Now()
		if _, err := c.Health(ctx); err != nil {
			return err
		}
		health = append(health, time.Since(start))
	}
	w50, h50 := pct(warm, 50), pct(health, 50)
	benchRow("warm .remote() round trip vs GET /v1/health", ms(w50), ms(pct(warm, 99)), ms(h50), ms(pct(health, 99)),
		fmt.Sprintf("%.2f×", float64(w50)/float64(h50)), verdict(w50 <= 5*time.Millisecond, "≤ 5 ms p50"))
	return nil
}

// benchMap measures the map throughput of f over n trivial inputs.
func benchMap(ctx context.Context, bc *benchClient, f *gust.Function, n int) error {
	d, err := bc.mapCall(ctx, f.ID, n, 1000)
	if err != nil {
		return fmt.Errorf("map over %d inputs: %w", n, err)
	}
	rate := float64(n) / d.Seconds()
	benchRow(fmt.Sprintf(".map over %d trivial inputs, inputs/s", n), fmt.Sprintf("%.0f/s", rate), "", "", "", "",
		verdict(rate >= 1000, fmt.Sprintf("≥ 1,000/s (took %.2f s)", d.Seconds())))
	return nil
}

// benchScaleOut maps f, a one-second function on at most 10 containers, over n inputs from
// zero containers, against the ideal time.
func benchScaleOut(ctx context.Context, bc *benchClient, f *gust.Function, n int) error {
	if err := waitScaledToZero(ctx, f, 2*time.Minute); err != nil {
		fmt.Fprintln(os.Stderr, "gust:", err, "(measuring anyway)")
	}
	d, err := bc.mapCall(ctx, f.ID, n, 1000)
	if err != nil {
		return fmt.Errorf("%d one-second inputs: %w", n, err)
	}
	ideal := time.Duration((n+9)/10) * time.Second
	benchRow(fmt.Sprintf("%d one-second inputs (10 containers) vs ideal", n), fmt.Sprintf("%.2f s", d.Seconds()), "",
		fmt.Sprintf("%.2f s", ideal.Seconds()), "", fmt.Sprintf("%.2f×", d.Seconds()/ideal.Seconds()), "")
	return nil
}

// benchRow prints one row of the report's table.
func benchRow(name, p50, p99, b50, b99, ratio, target string) {
	fmt.Printf("%-46s %10s %10s %10s %10s %8s  %s\n", name, p50, p99, b50, b99, ratio, target)
}

// verdict says whether a measurement met its target.
func verdict(ok bool, target string) string {
	if ok {
		return target + ": met"
	}
	return target + ": MISSED"
}

// deployBenchApp writes the benchmark app to a scratch directory and deploys it with python3
// and the SDK built into this binary, as `gust deploy` would.
func deployBenchApp(ctx context.Context, bc *benchClient) error {
	return deployPythonApp(ctx, bc, benchAppName, benchApp)
}

// deployPythonApp deploys the Python source src as the app name, as deployBenchApp does.
func deployPythonApp(ctx context.Context, bc *benchClient, name, src string) error {
	dir, err := os.MkdirTemp("", "gust-bench-app-")
	if err != nil {
		return err
	}
	defer removeScratch(dir)
	file := filepath.Join(dir, "bench_app.py")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		return err
	}
	sdk, err := pythonSDKDir()
	if err != nil {
		return err
	}
	environ := withEnv(os.Environ(), "GUST_SERVER_URL="+bc.url, "GUST_TOKEN="+bc.token)
	path, argv, env, err := pythonCommand(sdk, []string{"deploy", file, "--name", name}, environ)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	cmd.Env, cmd.Dir = env, dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("deploying the benchmark app: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// withEnv returns environ with the given KEY=VALUE entries set, replacing those of the same keys.
func withEnv(environ []string, set ...string) []string {
	out := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for _, s := range set {
			if sk, _, _ := strings.Cut(s, "="); sk == k {
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// waitScaledToZero waits until the function has no containers.
func waitScaledToZero(ctx context.Context, f *gust.Function, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if err := f.Refresh(ctx); err != nil {
			return err
		}
		if f.Stats.Containers == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still has %d containers after %s (autoscaler: %s)", f.Name, f.Stats.Containers, limit, orDash(f.Stats.Reason))
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// mapCall maps the function over 0..n-1 through the raw API: a map call made with the first
// batch of inputs, the others added in batches, then the call's stream read until every output
// is in. It returns the time from the first request to the last output; any output other than
// success is an error.
func (c *benchClient) mapCall(ctx context.Context, fnID string, n, batch int) (time.Duration, error) {
	inputs := func(from, to int) []map[string]any {
		out := make([]map[string]any, 0, to-from)
		for i := from; i < to; i++ {
			// An int and an empty map: Marshal cannot fail.
			args, _ := json.Marshal(map[string]any{"args": []int{i}, "kwargs": map[string]any{}})
			out = append(out, map[string]any{"args": args, "format": "json"}) // []byte: base64 in JSON
		}
		return out
	}
	start := time.Now()
	var call struct {
		ID    string `json:"call_id"`
		Count int    `json:"count"`
	}
	first := min(n, batch)
	if err := c.json(http.MethodPost, "/v1/functions/"+fnID+"/calls", map[string]any{"kind": "map", "inputs": inputs(0, first), "stream": false}, &call); err != nil {
		return 0, err
	}
	for from := first; from < n; from += batch {
		if err := c.json(http.MethodPost, "/v1/calls/"+call.ID+"/inputs", map[string]any{"inputs": inputs(from, min(n, from+batch))}, nil); err != nil {
			return 0, err
		}
	}
	got := 0
	for got < n {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if time.Since(start) > 10*time.Minute {
			return 0, fmt.Errorf("only %d of %d outputs after 10 minutes", got, n)
		}
		more, err := c.readOutputs(call.ID, got, n)
		if err != nil {
			return 0, err
		}
		got += more
	}
	return time.Since(start), nil
}

// readOutputs reads one stream of a call's outputs from the from-th, until the total reaches n
// or the stream ends, and returns how many it read.
func (c *benchClient) readOutputs(callID string, from, n int) (int, error) {
	resp, err := c.do(http.MethodGet, "/v1/calls/"+callID+"/stream?from="+strconv.Itoa(from)+"&timeout=10", nil)
	if err != nil {
		return 0, err
	}
	defer closeBody(resp)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	got := 0
	for from+got < n && sc.Scan() {
		var line struct {
			Output *struct {
				Index  int    `json:"index"`
				Status string `json:"status"`
				Error  string `json:"error"`
			} `json:"output"`
			Error *struct{ Message string } `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return got, fmt.Errorf("bad line in the call's stream: %w", err)
		}
		switch {
		case line.Error != nil:
			return got, errors.New(line.Error.Message)
		case line.Output != nil:
			if line.Output.Status != "success" {
				return got, fmt.Errorf("input %d ended %s: %s", line.Output.Index, line.Output.Status, line.Output.Error)
			}
			got++
		}
	}
	return got, sc.Err()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

func init() {
	register(&command{name: "bench queue", summary: "benchmark Queue put -> blocked get latency and Dict throughput beside a bare API round trip", run: runBenchQueue})
}

// runBenchQueue starts gust's server in this process (no worker: Dicts and Queues need none)
// and measures through the Go SDK over HTTP, as clients and containers reach it:
//   - baseline: GET /v1/health, the bare round trip of the same client and server;
//   - Queue: the latency from the start of a put to the return of a get already blocked on
//     the partition (a long poll: the put's commit wakes it), and a put's round trip;
//   - Dict: put and get round trips, and throughput with several clients at once.
func runBenchQueue(ctx context.Context, args []string) error {
	fs := newFlags("bench queue")
	n := fs.Int("n", 500, "samples per latency measurement")
	clients := fs.Int("clients", 8, "concurrent clients of the throughput measurement")
	dur := fs.Duration("duration", 3*time.Second, "how long each throughput measurement runs")
	containers := fs.Int("containers", 0, "also measure this many puts across two function containers (needs root, runc and the base image; 0 skips it)")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache, for --containers (the base image is built there if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var url, token string
	var bc *benchClient
	if *containers > 0 {
		// Server and worker: the functions need one.
		var stop func()
		var err error
		if bc, stop, err = startBenchGust(ctx, *imageCache); err != nil {
			return err
		}
		defer stop()
		url, token = bc.url, bc.token
	} else {
		// The server alone: Dicts and Queues need no worker.
		tmp, err := os.MkdirTemp("", "gust-bench-queue-")
		if err != nil {
			return err
		}
		defer removeScratch(tmp)
		d := daemonFlags{addr: "127.0.0.1:0", dataDir: filepath.Join(tmp, "data"), imageCache: filepath.Join(tmp, "layers"), isolation: "runc", token: "bench"}
		sctx, stopServer := context.WithCancel(ctx)
		defer stopServer()
		_, httpSrv, ln, tok, err := startServer(sctx, &d, log.New(io.Discard, "", 0))
		if err != nil {
			return err
		}
		defer closeBenchServer(httpSrv)
		url, token = "http://"+ln.Addr().String(), tok
	}
	c, err := gust.NewClient(gust.Config{ServerURL: url, Token: token})
	if err != nil {
		return err
	}
	hc := &http.Client{}
	health := func() error {
		resp, err := hc.Get(url + "/v1/health")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}

	q, err := c.EphemeralQueue(ctx)
	if err != nil {
		return err
	}
	defer q.Close(context.Background())
	dict, err := c.EphemeralDict(ctx)
	if err != nil {
		return err
	}
	defer dict.Close(context.Background())

	// Warm the connections and SQLite's caches.
	for range 20 {
		if err := health(); err != nil {
			return err
		}
		if err := q.Put(ctx, [][]byte{{1}}, gust.QueuePutOptions{}); err != nil {
			return err
		}
		if _, err := q.Get(ctx, 1, gust.QueueGetOptions{}); err != nil {
			return err
		}
	}

	// Interleave the baseline and the measurement, so that load from elsewhere on the
	// machine falls on both alike.
	whoami := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	var base, authed, putGet, put, dput, dget []time.Duration
	value := gust.PickleString("a small value, as pickled by Python")
	for i := range *n {
		t0 := time.Now()
		if err := health(); err != nil {
			return err
		}
		base = append(base, time.Since(t0))
		t0 = time.Now()
		if err := whoami(); err != nil {
			return err
		}
		authed = append(authed, time.Since(t0))

		lat, err := blockedGet(ctx, q, value)
		if err != nil {
			return err
		}
		putGet = append(putGet, lat)

		t0 = time.Now()
		if err := q.Put(ctx, [][]byte{value}, gust.QueuePutOptions{Partition: "unread"}); err != nil {
			return err
		}
		put = append(put, time.Since(t0))
		if i%1000 == 999 {
			if err := q.Clear(ctx, "unread", false); err != nil {
				return err
			}
		}

		key := gust.PickleString(fmt.Sprintf("key-%d", i%100))
		t0 = time.Now()
		if _, err := dict.Put(ctx, key, value, false); err != nil {
			return err
		}
		dput = append(dput, time.Since(t0))
		t0 = time.Now()
		if _, _, err := dict.Get(ctx, key); err != nil {
			return err
		}
		dget = append(dget, time.Since(t0))
	}

	fmt.Printf("\ngust bench queue: %d samples each, server in this process, Go SDK over loopback HTTP, %s\n", *n, time.Now().Format(time.RFC3339))
	fmt.Printf("baseline: GET /v1/health round trip, measured interleaved with each sample\n\n")
	fmt.Printf("%-44s %10s %10s %10s %10s %8s\n", "measurement", "p50", "p99", "base p50", "base p99", "p50 ×")
	row := func(name string, ds []time.Duration) {
		p50, b50 := pct(ds, 50), pct(base, 50)
		fmt.Printf("%-44s %10s %10s %10s %10s %8.2f\n", name, round(p50), round(pct(ds, 99)), round(b50), round(pct(base, 99)), float64(p50)/float64(b50))
	}
	row("GET /v1/whoami (authenticated, one read)", authed)
	row("queue: put -> blocked get returns", putGet)
	row("queue: put round trip", put)
	row("dict: put round trip", dput)
	row("dict: get round trip", dget)

	// Throughput: clients at once, each doing its own keys.
	for _, m := range []struct {
		name string
		op   func(i, k int) error
	}{
		{"GET /v1/health (baseline)", func(i, k int) error { return health() }},
		{"dict put", func(i, k int) error {
			_, err := dict.Put(ctx, gust.PickleString(fmt.Sprintf("c%d-%d", i, k%1000)), value, false)
			return err
		}},
		{"dict get", func(i, k int) error {
			_, _, err := dict.Get(ctx, gust.PickleString(fmt.Sprintf("c%d-%d", i, k%1000)))
			return err
		}},
	} {
		ops, err := throughput(*clients, *dur, m.op)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		fmt.Printf("%-44s %10.0f ops/s with %d clients\n", m.name, ops, *clients)
	}
	if *containers > 0 {
		return benchQueueContainers(ctx, bc, c, *containers)
	}
	return nil
}

// blockedGet starts a get on an empty partition, waits until the server holds it, then puts
// and returns the time from the start of the put to the get's return.
func blockedGet(ctx context.Context, q *gust.Queue, value []byte) (time.Duration, error) {
	type res struct {
		at  time.Time
		err error
	}
	done := make(chan res, 1)
	go func() {
		vals, err := q.Get(ctx, 1, gust.QueueGetOptions{Partition: "lat", Timeout: 30 * time.Second})
		if err == nil && len(vals) != 1 {
			err = errors.New("blocked get returned no item")
		}
		done <- res{time.Now(), err}
	}()
	// The get must be parked on the server before the put: give it time to arrive.
	time.Sleep(2 * time.Millisecond)
	t0 := time.Now()
	if err := q.Put(ctx, [][]byte{value}, gust.QueuePutOptions{Partition: "lat"}); err != nil {
		return 0, err
	}
	r := <-done
	if r.err != nil {
		return 0, r.err
	}
	return r.at.Sub(t0), nil
}

// throughput runs op from clients goroutines for d and returns operations per second.
func throughput(clients int, d time.Duration, op func(client, k int) error) (float64, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	var firstErr error
	end := time.Now().Add(d)
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := 0
			for time.Now().Before(end) {
				if err := op(i, k); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				k++
			}
			mu.Lock()
			total += k
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds(), firstErr
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

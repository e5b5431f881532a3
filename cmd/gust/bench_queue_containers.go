package main

import (
	"context"
	"fmt"
	"io"
	"time"

	gust "github.com/gust-run/gust/sdk/go"
)

// The --containers part of `gust bench queue`: the measurement, a Queue put in one
// function container to the return of a get blocked in another, through the Python SDK and
// the worker's API socket, as Modal programs do it. Both containers run on this machine, so
// time.time() in one and in the other read the same clock.

const benchQueueAppName = "gust-bench-queue"

const benchQueueApp = `import time

import gust

app = gust.App("` + benchQueueAppName + `")


@app.function(cpu=1.0, memory=256)
def consumer(qid, n):
    q = gust.Queue.from_id(qid)
    q.put("ready", partition="ready")
    lat = []
    for _ in range(n):
        t = q.get(timeout=120)
        lat.append(time.time() - t)
    return lat


@app.function(cpu=1.0, memory=256)
def producer(qid, n, gap):
    from gust import _http

    q = gust.Queue.from_id(qid)
    c = _http.get_client()
    q.get(partition="ready", timeout=120)  # the consumer is up and about to block
    base = []
    for _ in range(n):
        time.sleep(gap)
        t0 = time.perf_counter()
        c.json("GET", "/v1/health", auth=False)
        base.append(time.perf_counter() - t0)
        time.sleep(gap)  # the consumer is blocked again by now
        q.put(time.time())
    return base
`

// benchQueueContainers deploys the two functions and measures n puts.
func benchQueueContainers(ctx context.Context, bc *benchClient, c *gust.Client, n int) error {
	fmt.Println("resolving the base image (built once with debootstrap if missing)...")
	if _, err := bc.image(); err != nil {
		return err
	}
	fmt.Println("deploying the two functions with python3...")
	if err := deployPythonApp(ctx, bc, benchQueueAppName, benchQueueApp); err != nil {
		return err
	}
	fns := map[string]*gust.Function{}
	for _, name := range []string{"consumer", "producer"} {
		f, err := c.FunctionFromName(ctx, benchQueueAppName, name)
		if err != nil {
			return err
		}
		f.Stdout, f.Stderr = io.Discard, io.Discard
		fns[name] = f
	}
	defer stopBenchApp(ctx, c, fns["consumer"].AppID)
	q, err := c.EphemeralQueue(ctx)
	if err != nil {
		return err
	}
	defer q.Close(context.Background())
	cons, err := fns["consumer"].Spawn(ctx, q.ID, n)
	if err != nil {
		return err
	}
	prod, err := fns["producer"].Spawn(ctx, q.ID, n, 0.01)
	if err != nil {
		return err
	}
	var lat, base []float64
	if err := cons.Get(ctx, 5*time.Minute, &lat); err != nil {
		return fmt.Errorf("the consumer: %w", err)
	}
	if err := prod.Get(ctx, time.Minute, &base); err != nil {
		return fmt.Errorf("the producer: %w", err)
	}
	secs := func(xs []float64) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x * float64(time.Second))
		}
		return out
	}
	l, b := secs(lat), secs(base)
	fmt.Printf("\nacross two function containers (Python SDK, worker API socket), %d samples\n", n)
	fmt.Printf("baseline: GET /v1/health from the producer's container, interleaved with the puts\n\n")
	fmt.Printf("%-44s %10s %10s %10s %10s %8s\n", "measurement", "p50", "p99", "base p50", "base p99", "p50 ×")
	fmt.Printf("%-44s %10s %10s %10s %10s %8.2f  %s\n", "queue: put in A -> blocked get in B returns",
		round(pct(l, 50)), round(pct(l, 99)), round(pct(b, 50)), round(pct(b, 99)), float64(pct(l, 50))/float64(pct(b, 50)),
		verdict(pct(l, 50) <= 2*time.Millisecond, "target p50 ≤ 2 ms"))
	return nil
}

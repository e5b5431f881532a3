package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/reaper"
)

func init() {
	register(&command{name: "bench images", summary: "benchmark image resolution, layered starts and the cold base build", run: runBenchImages})
}

func runBenchImages(ctx context.Context, args []string) error {
	fs := newFlags("bench images")
	n := fs.Int("n", 30, "samples per measurement")
	cold := fs.Bool("cold", true, "also build the base cold beside the machine's own debootstrap (about 2 minutes)")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, stop, err := startBenchGust(ctx, *imageCache)
	if err != nil {
		return err
	}
	defer stop()
	base, err := c.image()
	if err != nil {
		return err
	}
	appID, err := c.app()
	if err != nil {
		return err
	}
	// A 10-layer image: the base and nine run_commands layers, unique to this run.
	run := time.Now().UnixNano()
	var steps []map[string]any
	for i := 1; i <= 9; i++ {
		steps = append(steps, map[string]any{"type": "run_commands", "commands": []string{fmt.Sprintf("echo %d-%d > /layer-%d", run, i, i)}})
	}
	spec := map[string]any{"kind": "debian_slim", "steps": steps}
	start := time.Now()
	ten, err := c.imageSpec(spec)
	if err != nil {
		return err
	}
	coldBuild := time.Since(start)

	fmt.Printf("\ngust bench images: %d samples each, 2-core machine, %s\n\n", *n, time.Now().Format(time.RFC3339))
	fmt.Printf("%-44s %10s %10s %10s %10s %8s\n", "measurement", "p50", "p99", "base p50", "base p99", "p50 ×")
	var resolve, health []time.Duration
	for i := 0; i < *n; i++ {
		start := time.Now()
		if _, err := c.imageSpec(spec); err != nil {
			return err
		}
		resolve = append(resolve, time.Since(start))
		start = time.Now()
		resp, err := c.http.Get(c.url + "/v1/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		health = append(health, time.Since(start))
	}
	report("cached 10-layer image resolve vs GET /health", resolve, health)
	fmt.Printf("  (target: ≤ 20 ms; its 9 layers were built cold in %.1f s)\n", coldBuild.Seconds())

	var one, many []time.Duration
	for i := 0; i < *n; i++ {
		for _, im := range []string{base, ten} {
			start := time.Now()
			id, err := c.createWith(map[string]any{"app_id": appID, "image_id": im, "memory": 512})
			if err != nil {
				return err
			}
			if _, err := c.execFirstOutput(id, "cat", "/etc/hostname"); err != nil {
				return err
			}
			d := time.Since(start)
			c.terminate(id)
			if im == base {
				one = append(one, d)
			} else {
				many = append(many, d)
			}
		}
	}
	report("start → first output, 10 layers vs 1 layer", many, one)
	fmt.Printf("  (target: ≤ 1.2×)\n")

	if *cold {
		tmp, err := os.MkdirTemp("", "gust-bench-cold-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		b, err := image.NewBuilder(filepath.Join(tmp, "gust"))
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := b.EnsureDebianSlim(ctx, nil); err != nil {
			return err
		}
		gustCold := time.Since(start)
		start = time.Now()
		if out, err := reaper.CombinedOutput(exec.Command("debootstrap", image.DebootstrapArgs(filepath.Join(tmp, "plain"))...)); err != nil {
			return fmt.Errorf("debootstrap: %v: %s", err, out)
		}
		plain := time.Since(start)
		fmt.Printf("%-44s %10.1f s %21.1f s %17.2f×\n", "cold base image vs the machine's debootstrap", gustCold.Seconds(), plain.Seconds(), gustCold.Seconds()/plain.Seconds())
	}
	return nil
}

// imageSpec resolves an image definition through the API.
func (c *benchClient) imageSpec(spec map[string]any) (string, error) {
	resp, err := c.do(http.MethodPost, "/v1/images", spec)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	return readImageStream(resp, false)
}

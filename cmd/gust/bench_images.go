package main

import (
	"context"
	"fmt"
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
	spec := tenLayerSpec()
	start := time.Now()
	ten, err := c.imageSpec(spec)
	if err != nil {
		return err
	}
	coldBuild := time.Since(start)

	printBenchHeader("images", *n)
	if err := benchResolve(c, spec, *n, coldBuild); err != nil {
		return err
	}
	if err := benchLayeredStarts(c, appID, base, ten, *n); err != nil {
		return err
	}
	if *cold {
		return benchColdBase(ctx)
	}
	return nil
}

// tenLayerSpec is a 10-layer image: the base and nine run_commands layers, unique to this run.
func tenLayerSpec() map[string]any {
	run := time.Now().UnixNano()
	var steps []map[string]any
	for i := 1; i <= 9; i++ {
		steps = append(steps, map[string]any{"type": "run_commands", "commands": []string{fmt.Sprintf("echo %d-%d > /layer-%d", run, i, i)}})
	}
	return map[string]any{"kind": "debian_slim", "steps": steps}
}

// benchResolve times resolving the cached image of spec beside a bare HTTP round trip.
func benchResolve(c *benchClient, spec map[string]any, n int, coldBuild time.Duration) error {
	var resolve, health []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := c.imageSpec(spec); err != nil {
			return err
		}
		resolve = append(resolve, time.Since(start))
		start = time.Now()
		resp, err := c.api.HTTP.Get(c.url + "/v1/health")
		if err != nil {
			return err
		}
		closeBody(resp)
		health = append(health, time.Since(start))
	}
	report("cached 10-layer image resolve vs GET /health", resolve, health)
	fmt.Printf("  (target: ≤ 20 ms; its 9 layers were built cold in %.1f s)\n", coldBuild.Seconds())
	return nil
}

// benchLayeredStarts times sandboxes of the 10-layer image and of the base, alternately, from
// the request to their first output.
func benchLayeredStarts(c *benchClient, appID, base, ten string, n int) error {
	var one, many []time.Duration
	for i := 0; i < n; i++ {
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
			if err := c.terminate(id); err != nil {
				return err
			}
			if im == base {
				one = append(one, d)
			} else {
				many = append(many, d)
			}
		}
	}
	report("start → first output, 10 layers vs 1 layer", many, one)
	fmt.Printf("  (target: ≤ 1.2×)\n")
	return nil
}

// benchColdBase builds the base image cold in a scratch directory, then runs the machine's own
// debootstrap of the same, and prints the two times.
func benchColdBase(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "gust-bench-cold-")
	if err != nil {
		return err
	}
	defer removeScratch(tmp)
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
	return nil
}

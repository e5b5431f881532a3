package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/image"
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
	runscs := fs.String("runsc", "", "comma-separated runsc binaries to measure gVisor under, one after the other in this run, "+
		"e.g. "+container.RunscInstallPath+",/usr/bin/runsc (default: the one gust chooses)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	isos := strings.Split(*isoList, ",")
	for i, rs := range strings.Split(*runscs, ",") {
		rs = strings.TrimSpace(rs)
		if rs != "" {
			// Each gust started below, and the bare baseline beside it, runs this runsc.
			os.Setenv(container.RunscEnv, rs)
		}
		if err := benchSandboxWith(ctx, *imageCache, *n, isos, i == 0, *idle); err != nil {
			return err
		}
	}
	return nil
}

// benchSandboxWith starts gust and measures each isolation under the runsc it chooses now;
// first prints the table's head and measures runc and idle sandboxes, which do not depend on
// the runsc.
func benchSandboxWith(ctx context.Context, imageCache string, n int, isos []string, first bool, idle int) error {
	b, stop, err := startSandboxBench(ctx, imageCache, n)
	if err != nil {
		return err
	}
	defer stop()
	if first {
		printBenchHeader("sandbox", n)
	}
	p, _ := container.FindRunsc()
	fmt.Printf("runsc: %s\n", container.DescribeRunsc(p))
	for _, iso := range isos {
		if iso = strings.TrimSpace(iso); iso == "runc" && !first {
			continue
		}
		if err := b.measureIsolation(iso); err != nil {
			return err
		}
	}
	if first && idle > 0 {
		if err := benchIdle(b.c, b.appID, b.imageID, idle); err != nil {
			return err
		}
	}
	return nil
}

// sandboxBench is what `gust bench sandbox` measures with: gust's HTTP API, and the bare
// runtime on the base image's layer.
type sandboxBench struct {
	c              *benchClient
	rt             *container.Runtime
	layer          string // the base image's layer, the bare runtime's root filesystem
	appID, imageID string
	n              int // samples per measurement
}

// startSandboxBench starts gust in this process, resolves the base image and an app through its
// API, makes the bare runtime for the baselines, and waits for the worker. stop ends gust.
func startSandboxBench(ctx context.Context, imageCache string, n int) (_ *sandboxBench, _ func(), retErr error) {
	c, stop, err := startBenchGust(ctx, imageCache)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if retErr != nil {
			stop()
		}
	}()
	fmt.Println("resolving the base image (built once with debootstrap if missing)...")
	b := &sandboxBench{c: c, n: n}
	if b.imageID, err = c.image(); err != nil {
		return nil, nil, err
	}
	if b.appID, err = c.app(); err != nil {
		return nil, nil, err
	}
	builder, err := image.NewBuilder(imageCache)
	if err != nil {
		return nil, nil, err
	}
	if b.layer, err = builder.EnsureDebianSlim(ctx, nil); err != nil {
		return nil, nil, err
	}
	if b.rt, err = container.New(container.Config{StateDir: filepath.Join(c.tmp, "baseline")}); err != nil {
		return nil, nil, err
	}
	if err := b.waitForWorker(); err != nil {
		return nil, nil, err
	}
	return b, stop, nil
}

// waitForWorker creates sandboxes until one is made (the worker has registered), and ends it.
func (b *sandboxBench) waitForWorker() error {
	for i := 0; ; i++ {
		id, err := b.c.create(b.appID, b.imageID, "runc")
		if err == nil {
			return b.c.terminate(id)
		}
		if i > 100 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// printBenchHeader prints the title and the column heads of a benchmark's table.
func printBenchHeader(what string, n int) {
	fmt.Printf("\ngust bench %s: %d samples each, 2-core machine, %s\n\n", what, n, time.Now().Format(time.RFC3339))
	fmt.Printf("%-44s %10s %10s %10s %10s %8s\n", "measurement", "p50", "p99", "base p50", "base p99", "p50 ×")
}

// measureIsolation prints the rows of one runtime: create → first exec output beside a bare
// run (for runc, also from the warm pool), then the exec round trip beside a bare exec.
func (b *sandboxBench) measureIsolation(iso string) error {
	if b.rt.Available(iso) != nil {
		fmt.Printf("%s: not installed, skipped\n", iso)
		return nil
	}
	bare := "runc"
	if iso == "gvisor" {
		bare = "runsc"
	}
	base, err := b.bareRuns(iso)
	if err != nil {
		return err
	}
	got, err := b.startToFirstOutput(0, func() (string, error) { return b.c.create(b.appID, b.imageID, iso) })
	if err != nil {
		return err
	}
	report(fmt.Sprintf("create → first exec output (%s) vs %s run", iso, bare), got, base)
	if iso == "runc" {
		// The same with the warm pool: default resources, so a pooled container serves it.
		// Pauses between samples let the pool refill, as it would between real requests.
		warm, err := b.startToFirstOutput(150*time.Millisecond, func() (string, error) { return b.c.createWarm(b.appID, b.imageID) })
		if err != nil {
			return err
		}
		report("  the same from the warm pool vs runc run", warm, base)
	}

	if base, err = b.bareExecs(iso); err != nil {
		return err
	}
	if got, err = b.execRoundTrips(iso); err != nil {
		return err
	}
	report(fmt.Sprintf("exec round trip (%s) vs %s exec", iso, bare), got, base)
	return nil
}

// bareRuns is the baseline of a start: a bare `runc run` (or runsc) of echo on the same
// rootfs, timed to its first output.
func (b *sandboxBench) bareRuns(iso string) (_ []time.Duration, retErr error) {
	bl, err := b.rt.NewBaseline(iso, []string{b.layer}, []string{"/bin/echo", "hi"})
	if err != nil {
		return nil, err
	}
	defer closeBaseline(bl, &retErr)
	var base []time.Duration
	for i := 0; i < b.n; i++ {
		d, err := bl.Run(i)
		if err != nil {
			return nil, err
		}
		base = append(base, d)
	}
	return base, nil
}

// bareExecs is the baseline of an exec: `runc exec` (or runsc) of true in a running container.
func (b *sandboxBench) bareExecs(iso string) (_ []time.Duration, retErr error) {
	bl, err := b.rt.NewBaseline(iso, []string{b.layer}, []string{"/bin/sleep", "infinity"})
	if err != nil {
		return nil, err
	}
	defer closeBaseline(bl, &retErr)
	if err := bl.StartDetached(); err != nil {
		return nil, err
	}
	var base []time.Duration
	for i := 0; i < b.n; i++ {
		d, err := bl.Exec("/bin/true")
		if err != nil {
			return nil, err
		}
		base = append(base, d)
	}
	return base, nil
}

// closeBaseline removes a baseline's containers and bundle; what it cannot remove is an error
// too, after the measurement's own.
func closeBaseline(bl *container.Baseline, retErr *error) {
	if err := bl.Close(); err != nil {
		*retErr = errors.Join(*retErr, err)
	}
}

// startToFirstOutput times sandboxes made by create from the request to the first output of an
// echo in them, pausing before each sample.
func (b *sandboxBench) startToFirstOutput(pause time.Duration, create func() (string, error)) ([]time.Duration, error) {
	var got []time.Duration
	for i := 0; i < b.n; i++ {
		if pause > 0 {
			time.Sleep(pause)
		}
		start := time.Now()
		id, err := create()
		if err != nil {
			return nil, err
		}
		if _, err := b.c.execFirstOutput(id, "echo", "hi"); err != nil {
			return nil, err
		}
		got = append(got, time.Since(start))
		if err := b.c.terminate(id); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// execRoundTrips times execs of true in one running sandbox, three times as many as n.
func (b *sandboxBench) execRoundTrips(iso string) ([]time.Duration, error) {
	id, err := b.c.create(b.appID, b.imageID, iso)
	if err != nil {
		return nil, err
	}
	var got []time.Duration
	for i := 0; i < b.n*3; i++ {
		start := time.Now()
		if _, err := b.c.execFirstOutput(id, "true"); err != nil {
			return nil, err
		}
		got = append(got, time.Since(start))
	}
	if err := b.c.terminate(id); err != nil {
		return nil, err
	}
	return got, nil
}

// benchIdle creates k idle sandboxes, checks that each still answers an exec, and prints what
// holding them cost the worker and the machine.
func benchIdle(c *benchClient, appID, imageID string, k int) error {
	goruntime.GC()
	rss0, err := selfRSS()
	if err != nil {
		return err
	}
	avail0, err := memAvailable()
	if err != nil {
		return err
	}
	start := time.Now()
	ids, firstErr := createIdle(c, appID, imageID, k)
	elapsed := time.Since(start)
	time.Sleep(time.Second)
	goruntime.GC()
	rss1, rssErr := selfRSS()
	avail1, availErr := memAvailable()
	held := len(ids)
	firstErr = errors.Join(firstErr, checkIdle(c, ids), terminateAll(c, ids), rssErr, availErr)
	if held == 0 || rssErr != nil || availErr != nil {
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

// benchIdleParallel is how many sandboxes benchIdle creates or terminates at once.
const benchIdleParallel = 4

// createIdle creates k sandboxes, a few at a time, and returns those made and the first error.
func createIdle(c *benchClient, appID, imageID string, k int) ([]string, error) {
	ids := make([]string, 0, k)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, benchIdleParallel)
	var firstErr error
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
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			ids = append(ids, id)
		}()
	}
	wg.Wait()
	return ids, firstErr
}

// checkIdle runs true in each sandbox, stopping at the first that does not answer.
func checkIdle(c *benchClient, ids []string) error {
	for _, id := range ids {
		if _, err := c.execFirstOutput(id, "true"); err != nil {
			return fmt.Errorf("idle sandbox %s stopped answering: %w", id, err)
		}
	}
	return nil
}

// terminateAll ends the sandboxes, a few at a time, and returns every failure.
func terminateAll(c *benchClient, ids []string) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, benchIdleParallel)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.terminate(id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
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

func selfRSS() (int64, error) { return procField("/proc/self/status", "VmRSS:") }

func memAvailable() (int64, error) { return procField("/proc/meminfo", "MemAvailable:") }

// procField reads the "key N kB" line of a /proc file, in bytes.
func procField(file, key string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &kb); err != nil {
				return 0, fmt.Errorf("%s: %s%s: %w", file, key, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s line", file, key)
}

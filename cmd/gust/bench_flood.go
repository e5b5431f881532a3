package main

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"time"
)

func init() {
	register(&command{name: "bench flood", summary: "benchmark the worker's memory while sandboxes print with nobody reading", run: runBenchFlood})
}

// runBenchFlood starts gust in this process and holds sandboxes that print as fast as they can
// (their command is `yes`, and an exec of `yes` runs in each with nobody reading either),
// sampling this process's RSS, beside a baseline of as many idle sandboxes. Unread output must
// not grow the worker's memory with time: the growth should match the baseline's.
func runBenchFlood(ctx context.Context, args []string) error {
	fs := newFlags("bench flood")
	n := fs.Int("n", 20, "sandboxes")
	duration := fs.Duration("duration", time.Minute, "how long they print")
	baseline := fs.Duration("baseline", 15*time.Second, "how long the idle baseline is held")
	warmUp := fs.Duration("warm-up", 3*time.Second, "time after the sandboxes start before the start figure is taken")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache (the base image is built there if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, stop, err := startSandboxBench(ctx, *imageCache, 1)
	if err != nil {
		return err
	}
	defer stop()

	fmt.Printf("\ngust bench flood: %d sandboxes, 2-core machine, %s\n\n", *n, time.Now().Format(time.RFC3339))
	fmt.Printf("%-40s %10s %10s %10s %10s\n", "phase (gust RSS, MiB)", "start", "max", "end", "growth")
	idle, err := b.floodPhase(*n, []string{"sleep", "infinity"}, nil, *warmUp, *baseline)
	if err != nil {
		return err
	}
	idle.print(fmt.Sprintf("baseline: %d idle, %v", *n, *baseline))
	flood, err := b.floodPhase(*n, []string{"yes"}, []string{"yes", "exec"}, *warmUp, *duration)
	if err != nil {
		return err
	}
	flood.print(fmt.Sprintf("flood: %d printing unread, %v", *n, *duration))
	fmt.Printf("\nflood growth %+.1f MiB against the baseline's %+.1f MiB (target: within a few MiB, not growing with time)\n",
		mib(flood.max-flood.start), mib(idle.max-idle.start))
	return nil
}

// rssSamples are the figures of one phase, in bytes.
type rssSamples struct{ start, max, end int64 }

func (s rssSamples) print(name string) {
	fmt.Printf("%-40s %10.1f %10.1f %10.1f %+10.1f\n", name, mib(s.start), mib(s.max), mib(s.end), mib(s.max-s.start))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// floodPhase creates n sandboxes running command (and an unread exec of execArgv in each, if
// set), waits warmUp, samples this process's RSS for d, and terminates them.
func (b *sandboxBench) floodPhase(n int, command, execArgv []string, warmUp, d time.Duration) (_ rssSamples, retErr error) {
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = b.c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "command": command})
			if errs[i] == nil && execArgv != nil {
				errs[i] = b.c.json("POST", "/v1/sandboxes/"+ids[i]+"/execs", map[string]any{"command": execArgv, "stream": false}, nil)
			}
		}()
	}
	wg.Wait()
	var made []string
	for _, id := range ids {
		if id != "" {
			made = append(made, id)
		}
	}
	defer func() { retErr = errors.Join(retErr, terminateAll(b.c, made)) }()
	if err := errors.Join(errs...); err != nil {
		return rssSamples{}, err
	}
	time.Sleep(warmUp)
	goruntime.GC()
	var s rssSamples
	var err error
	if s.start, err = selfRSS(); err != nil {
		return s, err
	}
	s.max = s.start
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		rss, err := selfRSS()
		if err != nil {
			return s, err
		}
		s.max = max(s.max, rss)
	}
	s.end, err = selfRSS()
	if err != nil {
		return s, err
	}
	s.max = max(s.max, s.end)
	return s, checkIdle(b.c, made)
}

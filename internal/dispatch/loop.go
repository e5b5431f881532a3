package dispatch

import (
	"fmt"
	"time"

	"github.com/gust-run/gust/internal/autoscaler"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/workerproto"
)

// maxStarting bounds the containers of one function starting at once, so that a large map
// scales up in steps instead of starting thousands of containers on a few cores.
const maxStarting = 4

// stepPlan is what one step decided under the lock, for the placer to carry out after it.
type stepPlan struct {
	sends   map[*fnContainer][]workerproto.Input
	starts  []*fnContainer
	stops   []string
	due     []function.Function
	orphans []string
}

// Step is one turn of the loop: it hands queued inputs to containers with free slots, lets
// the autoscaler start and stop containers, and fires due schedules.
func (e *Engine) Step() {
	now := e.clock.Now()
	plan := stepPlan{sends: map[*fnContainer][]workerproto.Input{}}
	haveWorkers := e.placer.HasWorkers()
	freeMiB := e.placer.FreeMemoryMiB()
	e.mu.Lock()
	for _, fs := range e.fns {
		if fs.fn.State == function.StateStopped {
			continue
		}
		if fs.fn.Heartbeat && fs.fn.State == function.StateActive && now.Sub(fs.lastBeat) > e.cfg.HeartbeatTimeout {
			plan.orphans = append(plan.orphans, fs.fn.ID)
			continue
		}
		e.releaseDelayed(fs, now)
		e.fillWeb(fs)
		e.fill(fs, plan.sends)
		freeMiB = e.scale(fs, now, haveWorkers, freeMiB, &plan)
		if sc := fs.fn.Spec.Schedule; sc != nil && fs.fn.Mode == function.ModeDeployed && fs.fn.State == function.StateActive {
			if fs.nextRun.IsZero() {
				fs.nextRun = sc.Next(now)
			} else if !now.Before(fs.nextRun) {
				fs.nextRun = sc.Next(now)
				plan.due = append(plan.due, fs.fn)
			}
		}
	}
	e.mu.Unlock()
	e.carryOut(plan)
}

// carryOut does what a step decided, outside the lock.
func (e *Engine) carryOut(plan stepPlan) {
	for c, ins := range plan.sends {
		e.placer.SendInputs(c.workerID, c.id, ins)
	}
	for _, c := range plan.starts {
		go e.startContainer(c)
	}
	for _, id := range plan.stops {
		go e.terminate(id, "scaled down: idle for the function's scaledown_window")
	}
	for _, fn := range plan.due {
		go e.fireSchedule(fn)
	}
	if len(plan.orphans) > 0 {
		go e.stopOrphans(plan.orphans)
	}
}

// releaseDelayed puts retries whose backoff has passed back in the queue.
func (e *Engine) releaseDelayed(fs *fnState, now time.Time) {
	kept := fs.delayed[:0]
	for _, qi := range fs.delayed {
		if now.After(qi.notBefore) && e.move(qi, inputQueued) {
			qi.queuedAt = now
			fs.queue = append(fs.queue, qi)
		} else {
			kept = append(kept, qi)
		}
	}
	fs.delayed = kept
}

// holdAhead is how many inputs beyond its max_inputs a container may hold on its worker: about
// 50 ms of work, so that fast inputs travel in batches while slow ones stay in the queue for
// whichever container frees up first.
func (fs *fnState) holdAhead() int {
	k := 1
	if fs.avgRun > 0 {
		k = int(50*time.Millisecond/fs.avgRun) + 1
	}
	return fs.fn.Spec.MaxInputs * min(k, 32)
}

// fill hands queued inputs to ready containers, least loaded first: every free slot, then,
// while inputs still wait, as many again for each container to hold ready on its worker,
// which starts the next the moment one ends instead of waiting for a round trip to here
// (docs/functions.md, "Prefetch").
func (e *Engine) fill(fs *fnState, sends map[*fnContainer][]workerproto.Input) {
	if len(fs.queue) == 0 {
		return
	}
	cs := make([]*fnContainer, 0, len(fs.containers))
	for _, c := range fs.containers {
		if c.taking() {
			cs = append(cs, c)
		}
	}
	byBusy(cs)
	maxIn := fs.fn.Spec.MaxInputs
	for pass, limit := range []int{maxIn, maxIn + fs.holdAhead()} {
		to := inputRunning
		if pass == 1 {
			to = inputHeld
		}
		for _, c := range cs {
			if pass == 1 && c.calls {
				continue // see fnContainer.calls
			}
			for free := limit - c.busy(); free > 0 && len(fs.queue) > 0; free-- {
				qi := fs.queue[0]
				fs.queue = fs.queue[1:]
				e.assign(qi, c, to)
				sends[c] = append(sends[c], qi.in)
			}
		}
	}
}

// scale asks the autoscaler what to start and stop, within the workers' free memory; it
// returns the memory left.
func (e *Engine) scale(fs *fnState, now time.Time, haveWorkers bool, freeMiB int, plan *stepPlan) int {
	dec := autoscaler.Decide(scaleConfig(fs), scaleState(fs, now))
	fs.reason = dec.Reason
	switch {
	case dec.Start > 0 && !haveWorkers:
		// Just restarted, or the workers are away: the inputs wait, they do not fail.
		fs.reason = "waiting for a worker to connect; " + dec.Reason
	case dec.Start > 0 && now.After(fs.retryStartAt):
		n := min(dec.Start, freeMiB/fs.fn.Spec.MemoryMiB, maxStarting-starting(fs))
		freeMiB -= max(n, 0) * fs.fn.Spec.MemoryMiB
		if n < dec.Start {
			fs.reason += fmt.Sprintf("; starting %d now (at most %d start at once, and only as many as the workers' free memory holds)", max(n, 0), maxStarting)
		}
		for i := 0; i < n; i++ {
			c := &fnContainer{id: ids.New(ids.Sandbox), fnID: fs.fn.ID, state: containerStarting, inflight: map[string]*queuedInput{}, idleSince: now}
			fs.containers[c.id] = c
			e.containers[c.id] = c
			plan.starts = append(plan.starts, c)
		}
	}
	for _, id := range dec.Stop {
		if c := fs.containers[id]; c != nil && e.drain(c) {
			plan.stops = append(plan.stops, id)
		}
	}
	return freeMiB
}

func starting(fs *fnState) int {
	n := 0
	for _, c := range fs.containers {
		if c.state == containerStarting {
			n++
		}
	}
	return n
}

func scaleConfig(fs *fnState) autoscaler.Config {
	sp := fs.fn.Spec
	cfg := autoscaler.Config{Min: sp.MinContainers, Buffer: sp.BufferContainers, Target: sp.TargetConcurrency(),
		ScaledownWindow: sp.ScaledownWindow.D(), AvgRun: fs.avgRun}
	if sp.MaxContainers != nil {
		cfg.Max = *sp.MaxContainers
	}
	if fs.fn.State != function.StateActive {
		// Replaced by a newer deploy: finish what it has, keep nothing warm, and let idle
		// containers go at once.
		cfg.Min, cfg.Buffer, cfg.ScaledownWindow = 0, 0, 0
	}
	return cfg
}

func scaleState(fs *fnState, now time.Time) autoscaler.State {
	st := autoscaler.State{Queued: len(fs.queue) + len(fs.webQueue), Now: now}
	for _, c := range fs.containers {
		if !c.live() {
			continue
		}
		st.Containers = append(st.Containers, autoscaler.Container{ID: c.id, Starting: c.state == containerStarting, Inflight: c.busy(), IdleSince: c.idleSince})
	}
	return st
}

// stopOrphans stops ephemeral functions whose client stopped sending heartbeats.
func (e *Engine) stopOrphans(ids []string) {
	e.mu.Lock()
	for _, id := range ids {
		if fs := e.fns[id]; fs != nil {
			e.markStopped(fs) // not again at the next step
		}
	}
	e.mu.Unlock()
	e.log.Printf("stopping %d function(s) of an ephemeral app: no heartbeat from its client for %v", len(ids), e.cfg.HeartbeatTimeout)
	if err := e.StopFunctions(ids, fmt.Sprintf("the client that ran the app went away (no heartbeat for %v)", e.cfg.HeartbeatTimeout)); err != nil {
		e.log.Printf("stopping functions: %v", err)
	}
}

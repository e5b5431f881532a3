// Package autoscaler decides how many containers a function should have. It is pure logic: the
// function engine (internal/dispatch) gives it the function's bounds and what it sees now
// (queued inputs, containers and how busy each is) and gets back how many to start, which idle
// ones to stop, and why. Imported by internal/dispatch only.
//
// The rule, as Modal documents it: enough containers for the work at each container's target
// concurrency (and, once inputs' run time is known, no more than clear it within a second),
// plus buffer_containers idle extras while there is work, never fewer than
// min_containers nor more than max_containers; a container above that need is stopped once it
// has been idle for scaledown_window. With no work and min_containers 0 that is zero.
package autoscaler

import (
	"fmt"
	"sort"
	"time"
)

// Config is a function's scaling bounds.
type Config struct {
	Min, Max        int // Max 0 means no limit
	Buffer          int
	Target          int // inputs per container the plan assumes (≥ 1)
	ScaledownWindow time.Duration
	// AvgRun is how long an input has been taking (0 while unknown). With it, a queue of quick
	// inputs asks only for the containers that clear it within Horizon, not one per input:
	// a map of ten thousand millisecond inputs needs a few containers, not thousands.
	AvgRun time.Duration
}

// Horizon is how soon the planned containers should clear the work they are planned for.
const Horizon = time.Second

// Container is one of the function's containers as the server sees it.
type Container struct {
	ID        string
	Starting  bool      // placed, not yet taking inputs
	Inflight  int       // inputs running in it
	IdleSince time.Time // when Inflight last dropped to 0
}

// State is what the function has now.
type State struct {
	Queued     int // inputs waiting for a container slot
	Containers []Container
	Now        time.Time
}

// Decision is what to do.
type Decision struct {
	Desired int
	Start   int
	Stop    []string
	Reason  string
}

// Decide returns the plan for one function.
func Decide(cfg Config, st State) Decision {
	target := max(cfg.Target, 1)
	busy := st.Queued
	for _, c := range st.Containers {
		busy += c.Inflight
	}
	need := (busy + target - 1) / target
	if cfg.AvgRun > 0 && busy > 0 {
		work := time.Duration(busy) * cfg.AvgRun / time.Duration(target)
		need = min(need, max(1, int((work+Horizon-1)/Horizon)))
	}
	desired := need
	if busy > 0 {
		desired += cfg.Buffer
	}
	desired = max(desired, cfg.Min)
	capped := false
	if cfg.Max > 0 && desired > cfg.Max {
		desired, capped = cfg.Max, true
	}
	have := len(st.Containers)
	work := fmt.Sprintf("%d queued + %d running inputs at %d per container", st.Queued, busy-st.Queued, target)
	if cfg.AvgRun > 0 {
		work += fmt.Sprintf(", about %v each", cfg.AvgRun.Round(time.Millisecond/10))
	}
	d := Decision{Desired: desired}
	switch {
	case desired > have:
		d.Start = desired - have
		d.Reason = fmt.Sprintf("scaling up %d → %d: %s", have, desired, work)
		if busy == 0 {
			d.Reason = fmt.Sprintf("scaling up %d → %d: min_containers is %d", have, desired, cfg.Min)
		} else if cfg.Buffer > 0 {
			d.Reason += fmt.Sprintf(", +%d buffer", cfg.Buffer)
		}
		if capped {
			d.Reason += fmt.Sprintf(" (capped by max_containers %d)", cfg.Max)
		}
	case desired < have:
		// Stop the longest-idle containers that have been idle for the whole window.
		var idle []Container
		for _, c := range st.Containers {
			if !c.Starting && c.Inflight == 0 && st.Now.Sub(c.IdleSince) >= cfg.ScaledownWindow {
				idle = append(idle, c)
			}
		}
		sort.Slice(idle, func(i, j int) bool { return idle[i].IdleSince.Before(idle[j].IdleSince) })
		for _, c := range idle[:min(len(idle), have-desired)] {
			d.Stop = append(d.Stop, c.ID)
		}
		if len(d.Stop) > 0 {
			d.Reason = fmt.Sprintf("scaling down %d → %d: %d container(s) idle for the scaledown_window of %v", have, have-len(d.Stop), len(d.Stop), cfg.ScaledownWindow)
		} else {
			d.Reason = fmt.Sprintf("holding %d (want %d): waiting for scaledown_window %v of idleness; %s", have, desired, cfg.ScaledownWindow, work)
		}
	default:
		d.Reason = fmt.Sprintf("steady at %d: %s", have, work)
		if capped {
			d.Reason += fmt.Sprintf(" (capped by max_containers %d)", cfg.Max)
		}
		if have == 0 {
			d.Reason = "scaled to zero: no inputs"
		}
	}
	return d
}

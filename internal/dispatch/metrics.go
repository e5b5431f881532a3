package dispatch

import "time"

// QueueStat is one function's queue and containers, for the operator's metrics.
type QueueStat struct {
	FunctionID  string
	Name        string
	WorkspaceID string
	// Queued inputs wait for a container; Delayed wait out a retry's backoff; Running are
	// in containers.
	Queued, Delayed, Running int
	Containers, Starting     int
	// OldestQueued is when the input that has waited longest in the queue joined it (zero:
	// none waits).
	OldestQueued time.Time
}

// QueueStats returns every active function's queue and containers.
func (e *Engine) QueueStats() []QueueStat {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]QueueStat, 0, len(e.fns))
	for _, fs := range e.fns {
		q := QueueStat{FunctionID: fs.fn.ID, Name: fs.fn.Name, WorkspaceID: fs.fn.WorkspaceID, Queued: len(fs.queue), Delayed: len(fs.delayed)}
		for _, qi := range fs.queue { // mostly oldest first, but a requeued input goes in front
			if q.OldestQueued.IsZero() || qi.queuedAt.Before(q.OldestQueued) {
				q.OldestQueued = qi.queuedAt
			}
		}
		for _, c := range fs.containers {
			if !c.live() {
				continue
			}
			q.Containers++
			q.Running += len(c.inflight)
			if c.state == containerStarting {
				q.Starting++
			}
		}
		out = append(out, q)
	}
	return out
}

package dispatch

import (
	"strings"
	"testing"
)

// TestStartCancelledWhenStopped: a container still starting (waiting for GPUs that others
// hold) stops waiting when its function stops, and that is not counted as a failed start.
func TestStartCancelledWhenStopped(t *testing.T) {
	h := newHarness(t, nil)
	h.p.mu.Lock()
	h.p.blockCreate = true
	h.p.mu.Unlock()
	h.call(1)
	h.e.Step()
	waitFor(t, "the container's start to begin", func() bool {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return len(h.p.created) == 1
	})
	if err := h.e.StopFunctions([]string{h.fn.ID}, "the app stopped"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the waiting start to give up", func() bool {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		return len(h.e.containers) == 0
	})
	if strings.Contains(h.logBuf.String(), "did not start") {
		t.Fatalf("a start cancelled by the stop was logged as a failure:\n%s", h.logBuf.String())
	}
}

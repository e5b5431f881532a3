package dispatch

import (
	"context"
	"errors"
	"io"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/wire"
	"github.com/gust-run/gust/internal/workerproto"
)

func webSpec(maxInputs int) func(*function.Spec) {
	return func(sp *function.Spec) {
		sp.Web = &function.Web{Type: function.WebWSGI, Label: "echo"}
		sp.MaxInputs = maxInputs
		sp.ScaledownWindow = wire.Duration(2 * time.Second)
	}
}

// acquire asks for a slot in the background.
func (h *harness) acquire(ctx context.Context) chan webGrant {
	ch := make(chan webGrant, 1)
	go func() {
		s, err := h.e.AcquireWeb(ctx, h.fn.ID)
		ch <- webGrant{slot: s, err: err}
	}()
	return ch
}

func (h *harness) webWaiting() int {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	return len(h.e.fns[h.fn.ID].webQueue)
}

// A request to a web endpoint with no container starts one (scale from zero), gets a slot in
// it once it is ready, and holds it: with max_inputs 1 the next request waits, then gets the
// slot the first gives back; the container goes after the scaledown window once idle.
func TestWebSlots(t *testing.T) {
	h := newHarness(t, webSpec(1))
	if fn, ok := h.e.WebFunction("ws-default", "echo"); !ok || fn.ID != h.fn.ID {
		t.Fatalf("WebFunction found %v %v", fn.ID, ok)
	}
	if _, ok := h.e.WebFunction("ws-other", "echo"); ok {
		t.Fatal("another workspace's label matched")
	}
	restarted := New(h.st, newFakePlacer(), Config{Clock: h.clock, Logger: log.New(io.Discard, "", 0)})
	if err := restarted.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fn, ok := restarted.WebFunction("ws-default", "echo"); !ok || fn.ID != h.fn.ID {
		t.Fatalf("after a restart WebFunction found %v %v", fn.ID, ok)
	}
	first := h.acquire(context.Background())
	waitFor(t, "the request to wait", func() bool { return h.webWaiting() == 1 })
	c := h.readyContainer() // the step that starts it counts the waiting request
	h.e.Step()
	g := <-first
	if g.err != nil || g.slot.ContainerID != c || g.slot.WorkerID != "wk-1" {
		t.Fatalf("first request: %+v %v", g.slot, g.err)
	}
	second := h.acquire(context.Background())
	waitFor(t, "the second request to wait", func() bool { return h.webWaiting() == 1 })
	h.e.Step()
	if _, st := h.e.Describe(h.fn); st.Running != 1 || st.Pending != 1 {
		t.Fatalf("stats %+v: want 1 running, 1 pending", st)
	}
	g.slot.Release()
	g2 := <-second
	if g2.err != nil || g2.slot.ContainerID != c {
		t.Fatalf("second request: %+v %v", g2.slot, g2.err)
	}
	g2.slot.Release()
	h.clock.advance(3 * time.Second)
	h.e.Step()
	waitFor(t, "the idle container to stop", func() bool {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return len(h.p.stopped) == 1
	})
}

// With @concurrent(max_inputs=3), three requests share one warm container at once.
func TestWebConcurrentSlots(t *testing.T) {
	h := newHarness(t, webSpec(3))
	first := h.acquire(context.Background())
	waitFor(t, "the request to wait", func() bool { return h.webWaiting() == 1 })
	c := h.readyContainer()
	h.e.Step()
	slots := []*WebSlot{(<-first).slot}
	for range 2 {
		s, err := h.e.AcquireWeb(context.Background(), h.fn.ID) // free slots: no wait
		if err != nil || s.ContainerID != c {
			t.Fatalf("%+v %v", s, err)
		}
		slots = append(slots, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := h.e.AcquireWeb(ctx, h.fn.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fourth request: %v, want to wait (and give up at its deadline)", err)
	}
	if h.webWaiting() != 0 {
		t.Fatal("a request that gave up is still waiting")
	}
	for _, s := range slots {
		s.Release()
	}
	if _, st := h.e.Describe(h.fn); st.Running != 0 || st.IdleContainers != 1 {
		t.Fatalf("stats after release %+v", st)
	}
}

// Waiting requests fail, not hang, when the function's code does not import or its app stops.
func TestWebWaitersFail(t *testing.T) {
	h := newHarness(t, webSpec(1))
	w := h.acquire(context.Background())
	waitFor(t, "the request to wait", func() bool { return h.webWaiting() == 1 })
	h.e.Step()
	var c string
	waitFor(t, "a container", func() bool {
		ids := h.containerIDs()
		if len(ids) == 1 && h.workerOf(ids[0]) != "" {
			c = ids[0]
			return true
		}
		return false
	})
	h.e.HandleEvents("wk-1", []workerproto.Event{{ContainerID: c, Type: workerproto.EventInitError, Error: "ImportError: needs FastAPI"}})
	if g := <-w; !errors.Is(g.err, errdefs.ErrUnavailable) || !strings.Contains(g.err.Error(), "needs FastAPI") {
		t.Fatalf("after the import failed: %v", g.err)
	}
	w = h.acquire(context.Background())
	waitFor(t, "the request to wait", func() bool { return h.webWaiting() == 1 })
	if err := h.e.StopFunctions([]string{h.fn.ID}, "stopped by the test"); err != nil {
		t.Fatal(err)
	}
	if g := <-w; !errors.Is(g.err, errdefs.ErrNotFound) {
		t.Fatalf("after the app stopped: %v", g.err)
	}
}

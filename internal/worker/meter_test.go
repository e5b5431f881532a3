package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/workerproto"
)

// cgroupBox is a container whose cgroup reading the test sets.
type cgroupBox struct {
	Container
	mu  sync.Mutex
	u   container.Usage
	err error
}

func (c *cgroupBox) Usage() (container.Usage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.u, c.err
}

type usageSink struct {
	mu   sync.Mutex
	got  []metering.Interval
	fail bool
}

func (s *usageSink) SendUsage(_ context.Context, ivs []metering.Interval) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("server unreachable")
	}
	s.got = append(s.got, ivs...)
	return nil
}

// TestUsageMeterSpool meters a container, loses the server, "crashes", and checks that the
// next meter on the same state directory sends what was owed, the open interval closed at its
// last sample, each seq once.
func TestUsageMeterSpool(t *testing.T) {
	dir := t.TempDir()
	sink := &usageSink{fail: true}
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	u := newUsageMeter(dir, 3*time.Second, sink, t.Logf)
	u.now = func() time.Time { return clock }
	c := &cgroupBox{}
	u.start(workerproto.ContainerSpec{ID: "sb-1", CPU: 1, MemoryMiB: 1024}, c)
	for i := 1; i <= 7; i++ {
		clock = clock.Add(time.Second)
		c.mu.Lock()
		c.u.CPU += 500 * time.Millisecond
		c.mu.Unlock()
		u.sampleAll()
	}
	// Cut at 3 s and 6 s; open since 6 s, sampled to 7 s. Nothing reached the server.
	if len(u.pending) != 2 {
		t.Fatalf("pending %d, want 2", len(u.pending))
	}
	// The worker dies here. A new one on the same directory owes three intervals.
	sink.fail = false
	u2 := newUsageMeter(dir, 3*time.Second, sink, t.Logf)
	if len(u2.pending) != 3 {
		t.Fatalf("recovered %d intervals, want 3", len(u2.pending))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u2.sender(ctx)
	u2.flushFor(5 * time.Second)
	sink.mu.Lock()
	got := append([]metering.Interval(nil), sink.got...)
	sink.mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("sent %d, want 3", len(got))
	}
	total, cpu := 0.0, 0.0
	for i, iv := range got {
		if iv.Seq != int64(i) || iv.ContainerID != "sb-1" {
			t.Errorf("interval %d: %+v", i, iv)
		}
		total += iv.Seconds()
		cpu += iv.CPUSeconds
	}
	if total != 7 || cpu != 3.5 || !got[2].Final {
		t.Errorf("seconds %v cpu %v last %+v; want 7, 3.5, final", total, cpu, got[2])
	}
	// A third start owes nothing: the spool was emptied as the server took it.
	if u3 := newUsageMeter(dir, 3*time.Second, sink, t.Logf); len(u3.pending) != 0 {
		t.Errorf("a third start owes %d intervals", len(u3.pending))
	}
}

// TestUsageMeterFinish checks a container's last interval when its cgroup is already gone:
// the time since the last sample counts at the request.
func TestUsageMeterFinish(t *testing.T) {
	sink := &usageSink{}
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	u := newUsageMeter("", 10*time.Second, sink, t.Logf)
	u.now = func() time.Time { return clock }
	c := &cgroupBox{}
	u.start(workerproto.ContainerSpec{ID: "sb-2", CPU: 2, MemoryMiB: 512}, c)
	clock = clock.Add(2 * time.Second)
	u.sampleAll()
	c.mu.Lock()
	c.err = errors.New("gone")
	c.mu.Unlock()
	clock = clock.Add(1500 * time.Millisecond)
	u.finish("sb-2")
	u.finish("sb-2") // again: nothing
	if len(u.pending) != 1 {
		t.Fatalf("pending %d", len(u.pending))
	}
	iv := u.pending[0]
	if !iv.Final || iv.Seconds() != 3.5 || iv.BillableCPU != 7 || iv.BillableMemory != 1.75 {
		t.Errorf("final interval %+v", iv)
	}
}

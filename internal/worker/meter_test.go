package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
// next meter on the same state directory sends what was owed, the open interval closed at the
// last heartbeat (its time since the last cut billed at the request), each seq once.
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
	// 7 s metered; the CPU of the open interval (6–7 s) is unknown, billed at the request.
	if total != 7 || cpu != 3 || !got[2].Final || got[2].BillableCPU != 1 || got[2].BillableMemory != 1 {
		t.Errorf("seconds %v cpu %v last %+v; want 7, 3, final billed 1 core-s and 1 GiB-s", total, cpu, got[2])
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

// ledgerSink records intervals as the server does: each (container, seq) once.
type ledgerSink struct {
	mu   sync.Mutex
	got  map[string]metering.Interval
	sent int
}

func (s *ledgerSink) SendUsage(_ context.Context, ivs []metering.Interval) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, iv := range ivs {
		s.sent++
		k := fmt.Sprintf("%s/%d", iv.ContainerID, iv.Seq)
		if _, ok := s.got[k]; !ok {
			s.got[k] = iv
		}
	}
	return nil
}

// seconds totals what was recorded for a container, and says whether its last is final.
func (s *ledgerSink) seconds(id string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	total, final := 0.0, false
	for _, iv := range s.got {
		if iv.ContainerID == id {
			total += iv.Seconds()
			final = final || iv.Final
		}
	}
	return total, final
}

// send runs a meter's sender until what it owes is sent.
func send(t *testing.T, u *usageMeter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.sender(ctx)
	u.flushFor(5 * time.Second)
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.pending) > 0 {
		t.Fatalf("%d interval(s) not sent", len(u.pending))
	}
}

// TestUsageMeterSpoolPerCut: three containers sampled each second for 30 s with 10 s
// intervals rewrite the spool at the start and at each grid cut (every container cut at the
// same tick), not every tick; the heartbeat holds the last tick.
func TestUsageMeterSpoolPerCut(t *testing.T) {
	dir := t.TempDir()
	sink := &ledgerSink{got: map[string]metering.Interval{}}
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(300 * time.Millisecond) // off the grid
	u := newUsageMeter(dir, 10*time.Second, sink, t.Logf)
	u.now = func() time.Time { return clock }
	for i := range 3 {
		u.start(workerproto.ContainerSpec{ID: fmt.Sprintf("sb-%d", i), CPU: 1, MemoryMiB: 1024}, &cgroupBox{})
	}
	for range 30 {
		clock = clock.Add(time.Second)
		u.sampleAll()
	}
	// Starts (one rewrite at the first tick), cuts at 10, 20 and 30 s on the grid.
	if u.saves != 4 {
		t.Errorf("the spool was rewritten %d times over 30 ticks, want 4 (the starts and three cuts)", u.saves)
	}
	if len(u.pending) != 9 {
		t.Errorf("%d intervals cut, want 9", len(u.pending))
	}
	for _, iv := range u.pending {
		if iv.Seq > 0 && iv.Start.Nanosecond() != 300*1e6 || iv.End.Sub(iv.Start) > 10*time.Second {
			t.Errorf("interval off the grid: %+v", iv)
		}
	}
	if hb := readHeartbeat(filepath.Join(dir, "usage", "alive")); !hb.Equal(clock) {
		t.Errorf("heartbeat %v, want the last tick %v", hb, clock)
	}
}

// TestUsageMeterCrashNeverTwice crashes the worker at the awkward moments: after intervals
// were sent but before the spool was rewritten (the spool still lists them), and after a
// container's final interval was sent but before the spool knew it ended. The next worker
// on the directory reports what it owes once: each container's recorded seconds are its
// metered life, counted once, up to the last heartbeat at most.
func TestUsageMeterCrashNeverTwice(t *testing.T) {
	dir := t.TempDir()
	sink := &ledgerSink{got: map[string]metering.Interval{}}
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	u := newUsageMeter(dir, 4*time.Second, sink, t.Logf)
	u.now = func() time.Time { return clock }
	a, b := &cgroupBox{}, &cgroupBox{}
	u.start(workerproto.ContainerSpec{ID: "sb-a", CPU: 1, MemoryMiB: 1024}, a)
	u.start(workerproto.ContainerSpec{ID: "sb-b", CPU: 1, MemoryMiB: 1024}, b)
	for range 9 {
		clock = clock.Add(time.Second)
		u.sampleAll()
	}
	// Cuts at 4 and 8 s are sent; the spool still lists them as pending (no rewrite since).
	send(t, u)
	// sb-b ends at 9.5 s; its final interval reaches the server, and the worker dies before
	// the spool is rewritten: the spool on disk is the one from before.
	clock = clock.Add(500 * time.Millisecond)
	spool, err := os.ReadFile(u.spool)
	if err != nil {
		t.Fatal(err)
	}
	var f spoolFile
	if err := json.Unmarshal(spool, &f); err != nil || len(f.Pending) != 4 || len(f.Open) != 2 {
		t.Fatalf("the spool before the crash: %d pending, %d open (%v), want the 4 sent and 2 open", len(f.Pending), len(f.Open), err)
	}
	u.finish("sb-b")
	send(t, u)
	if err := os.WriteFile(u.spool, spool, 0o600); err != nil {
		t.Fatal(err)
	}
	sentBefore := sink.sent
	// Crash. sb-a ran until the crash; the last heartbeat was at 9 s.
	u2 := newUsageMeter(dir, 4*time.Second, sink, t.Logf)
	send(t, u2)
	if sink.sent <= sentBefore {
		t.Fatalf("the restarted worker sent nothing")
	}
	if s, final := sink.seconds("sb-a"); s != 9 || !final {
		t.Errorf("sb-a: %v s recorded (final %v), want 9 (to the last heartbeat), once", s, final)
	}
	if s, final := sink.seconds("sb-b"); s != 9.5 || !final {
		t.Errorf("sb-b: %v s recorded (final %v), want 9.5 (its end), once", s, final)
	}
	// A third start owes nothing new.
	n := len(sink.got)
	u3 := newUsageMeter(dir, 4*time.Second, sink, t.Logf)
	send(t, u3)
	if len(sink.got) != n {
		t.Errorf("a third start recorded %d more intervals", len(sink.got)-n)
	}
}

// BenchmarkUsageMeterTick: a tick of 500 metered containers with 10 s intervals, the spool
// rewritten every tick (as before) against once an interval (now). Compare ns/op and
// spool-bytes/tick of the two in the same run.
func BenchmarkUsageMeterTick(b *testing.B) {
	for _, every := range []bool{true, false} {
		name := "spool-per-cut"
		if every {
			name = "spool-every-tick"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
			u := newUsageMeter(dir, 10*time.Second, &ledgerSink{got: map[string]metering.Interval{}}, func(string, ...any) {})
			u.now = func() time.Time { return clock }
			for i := range 500 {
				u.start(workerproto.ContainerSpec{ID: fmt.Sprintf("sb-%03d", i), CPU: 1, MemoryMiB: 1024}, &cgroupBox{})
			}
			u.sampleAll()
			var written int64
			b.ResetTimer()
			for range b.N {
				clock = clock.Add(time.Second)
				if every {
					u.mu.Lock()
					u.dirty = true
					u.mu.Unlock()
				}
				before := u.saves
				u.sampleAll()
				if u.saves > before {
					if st, err := os.Stat(u.spool); err == nil {
						written += st.Size()
					}
				}
				u.mu.Lock()
				u.pending = u.pending[:0] // as if sent
				u.mu.Unlock()
			}
			b.ReportMetric(float64(written)/float64(b.N), "spool-bytes/tick")
		})
	}
}

package worker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/container"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/workerproto"
)

// The worker's side of the usage ledger: every container it runs is sampled from its cgroup
// each tick (a second by default), the samples fold into intervals (metering.Meter: the larger
// of request and use, per sample) cut every interval (10 s by default, GUST_METER_INTERVAL),
// and the intervals go to the server, which records each (container, seq) once.
//
// What the worker owes survives a crash: the unsent intervals and each open interval are kept
// in a spool file (StateDir/usage/spool.json), rewritten at each tick that changed them. A
// worker that starts again sends the spool's intervals, and closes each open one at its last
// saved sample (the container went with the old worker): at most one tick of resolution is
// lost, and nothing is counted twice.

// usageReader is a container whose cgroup can be read (container.Container).
type usageReader interface {
	Usage() (container.Usage, error)
}

// usageSender is a server that takes usage (workerproto.ServerClient).
type usageSender interface {
	SendUsage(ctx context.Context, ivs []metering.Interval) error
}

// Defaults of the meter's periods.
const (
	defaultMeterInterval = 10 * time.Second
	defaultMeterTick     = time.Second
)

// meterPeriods reads GUST_METER_INTERVAL and GUST_METER_TICK (Go durations) for the tests'
// shorter periods, else the defaults.
func meterPeriods(interval time.Duration) (time.Duration, time.Duration) {
	if interval <= 0 {
		interval = defaultMeterInterval
		if d, err := time.ParseDuration(os.Getenv("GUST_METER_INTERVAL")); err == nil && d > 0 {
			interval = d
		}
	}
	tick := defaultMeterTick
	if d, err := time.ParseDuration(os.Getenv("GUST_METER_TICK")); err == nil && d > 0 {
		tick = d
	}
	return interval, min(tick, interval)
}

type meteredBox struct {
	m      *metering.Meter
	reader usageReader
	last   metering.Sample
}

// usageMeter meters the worker's containers.
type usageMeter struct {
	interval, tick time.Duration
	spool          string // file; "" keeps nothing on disk
	send           usageSender
	logf           func(string, ...any)
	now            func() time.Time

	mu      sync.Mutex
	boxes   map[string]*meteredBox
	pending []metering.Interval
	dirty   bool
	wake    chan struct{}
}

// spoolFile is what the spool holds.
type spoolFile struct {
	Pending []metering.Interval `json:"pending"`
	// Open are the open intervals, each as far as its last sample.
	Open []metering.Interval `json:"open"`
}

func newUsageMeter(stateDir string, interval time.Duration, send usageSender, logf func(string, ...any)) *usageMeter {
	iv, tick := meterPeriods(interval)
	u := &usageMeter{interval: iv, tick: tick, send: send, logf: logf, now: time.Now,
		boxes: map[string]*meteredBox{}, wake: make(chan struct{}, 1)}
	if stateDir != "" {
		dir := filepath.Join(stateDir, "usage")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			logf("usage spool: %v; usage not yet sent is lost if the worker stops", err)
		} else {
			u.spool = filepath.Join(dir, "spool.json")
			u.recover()
		}
	}
	return u
}

// recover takes what a previous worker on this state directory owed: its unsent intervals,
// and its open ones closed at their last saved sample.
func (u *usageMeter) recover() {
	b, err := os.ReadFile(u.spool)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			u.logf("usage spool %s: %v", u.spool, err)
		}
		return
	}
	var f spoolFile
	if err := json.Unmarshal(b, &f); err != nil {
		u.logf("usage spool %s is corrupt (%v): its usage is lost", u.spool, err)
		return
	}
	u.pending = f.Pending
	for _, iv := range f.Open {
		iv.Final = true
		u.pending = append(u.pending, iv)
	}
	if len(u.pending) > 0 {
		u.logf("usage: %d interval(s) a previous run owed the server, sending them", len(u.pending))
		u.dirty = true
		u.save()
	}
}

// start meters a container from now: its first sample is the baseline, so that what a warm
// container used before it was taken is nobody's.
func (u *usageMeter) start(spec workerproto.ContainerSpec, c Container) {
	r, ok := c.(usageReader)
	if u == nil || !ok {
		return
	}
	s, err := sample(r, u.now())
	if err != nil {
		u.logf("container %s: not metered: %v", spec.ID, err)
		return
	}
	// The GPUs placed on it (the server chose the type among the request's preferences).
	m := metering.NewMeter(spec.ID, spec.CPU, float64(spec.MemoryMiB)/1024, spec.GPUType, spec.GPUCount, s)
	u.mu.Lock()
	if _, dup := u.boxes[spec.ID]; !dup {
		u.boxes[spec.ID] = &meteredBox{m: m, reader: r, last: s}
		u.dirty = true
	}
	u.mu.Unlock()
}

// finish takes a container's last sample and cuts its final interval. Call it before the
// runtime removes the container's cgroup; a second call does nothing.
func (u *usageMeter) finish(id string) {
	if u == nil {
		return
	}
	u.mu.Lock()
	mb := u.boxes[id]
	delete(u.boxes, id)
	u.mu.Unlock()
	if mb == nil {
		return
	}
	now := u.now()
	s, err := sample(mb.reader, now)
	if err != nil {
		// The cgroup is gone: the time since the last sample counts at the request.
		s = mb.last
		s.At = now
	}
	mb.m.Add(s)
	iv, _ := mb.m.Cut(true)
	u.mu.Lock()
	u.pending = append(u.pending, iv)
	u.dirty = true
	u.mu.Unlock()
	u.kick()
}

func sample(r usageReader, at time.Time) (metering.Sample, error) {
	cu, err := r.Usage()
	if err != nil {
		return metering.Sample{}, err
	}
	return metering.Sample{At: at, CPU: cu.CPU, Memory: cu.Memory, Peak: cu.Peak, PeakSinceLast: cu.PeakSinceLast}, nil
}

func (u *usageMeter) kick() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// run samples every tick and sends what is owed until ctx ends.
func (u *usageMeter) run(ctx context.Context) {
	go u.sender(ctx)
	t := time.NewTicker(u.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			u.sampleAll()
		}
	}
}

// sampleAll samples every metered container and cuts the intervals that are due.
func (u *usageMeter) sampleAll() {
	u.mu.Lock()
	boxes := make([]*meteredBox, 0, len(u.boxes))
	for _, mb := range u.boxes {
		boxes = append(boxes, mb)
	}
	u.mu.Unlock()
	now := u.now()
	var cut []metering.Interval
	for _, mb := range boxes {
		s, err := sample(mb.reader, now)
		if err != nil {
			continue // ending: finish takes its last sample
		}
		u.mu.Lock()
		if u.boxes[mb.m.ContainerID] == mb { // not finished meanwhile
			mb.m.Add(s)
			mb.last = s
			if now.Sub(mb.m.Open().Start) >= u.interval {
				if iv, ok := mb.m.Cut(false); ok {
					cut = append(cut, iv)
				}
			}
		}
		u.mu.Unlock()
	}
	u.mu.Lock()
	u.pending = append(u.pending, cut...)
	u.dirty = u.dirty || len(boxes) > 0
	u.mu.Unlock()
	u.save()
	if len(cut) > 0 {
		u.kick()
	}
}

// save rewrites the spool when something changed.
func (u *usageMeter) save() {
	u.mu.Lock()
	if !u.dirty || u.spool == "" {
		u.mu.Unlock()
		return
	}
	f := spoolFile{Pending: append([]metering.Interval(nil), u.pending...)}
	for _, mb := range u.boxes {
		f.Open = append(f.Open, mb.m.Open())
	}
	u.dirty = false
	u.mu.Unlock()
	b, err := json.Marshal(f)
	if err == nil {
		tmp := u.spool + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, u.spool)
		}
	}
	if err != nil {
		u.logf("usage spool: %v", err)
	}
}

// sender sends pending intervals in batches, retrying until the server has them.
func (u *usageMeter) sender(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.wake:
		case <-time.After(u.interval):
		}
		for ctx.Err() == nil {
			u.mu.Lock()
			n := min(len(u.pending), workerproto.MaxUsageBatch)
			batch := append([]metering.Interval(nil), u.pending[:n]...)
			u.mu.Unlock()
			if n == 0 {
				break
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := u.send.SendUsage(sctx, batch)
			cancel()
			if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
				// Unreachable, or not registered yet: try again later.
				sleep(ctx, backoff)
				backoff = min(2*backoff, 10*time.Second)
				continue
			}
			if err != nil {
				u.logf("usage: the server refused %d interval(s) (dropped): %v", n, err)
			}
			backoff = 200 * time.Millisecond
			u.mu.Lock()
			u.pending = u.pending[n:]
			u.dirty = true
			u.mu.Unlock()
			u.save()
		}
	}
}

// flushFor waits up to d for the pending intervals to reach the server (a shutdown).
func (u *usageMeter) flushFor(d time.Duration) {
	if u == nil {
		return
	}
	deadline := time.Now().Add(d)
	u.kick()
	for time.Now().Before(deadline) {
		u.mu.Lock()
		n := len(u.pending)
		u.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

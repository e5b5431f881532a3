package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
// What the worker owes survives a crash. Intervals are cut on a wall-clock grid (multiples of
// the interval since the Unix epoch), so every container's interval ends at the same tick, and
// the spool (StateDir/usage/spool.json: the unsent intervals and each open one) is rewritten
// only then, or when a container starts or ends: once an interval, not once a tick. Each tick
// writes instead a heartbeat (StateDir/usage/alive: the tick's time, 21 bytes in place),
// after the spool when the spool changed. A worker that starts again sends the spool's
// intervals, and closes each open one at the heartbeat (the container went with the old
// worker; it was running then), billing the time since its last saved sample at its request:
// at most one tick of wall time is lost, the CPU used above the request since the last cut is
// not known, and nothing is counted twice (the server records each (container, seq) once, and
// an interval is spooled before it is sent).

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
	dirty   bool // the spool must be rewritten: a cut, a start, an end
	wake    chan struct{}
	alive   *os.File // the heartbeat; nil keeps none
	// saves counts spool rewrites (a test and the benchmark read it).
	saves int
	// saveMu orders rewrites (the ticker's and the sender's): a snapshot taken earlier never
	// lands on disk after a later one, which the heartbeat would then overstate.
	saveMu sync.Mutex
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
			f, err := os.OpenFile(filepath.Join(dir, "alive"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				logf("usage heartbeat: %v; a crash loses up to an interval of usage", err)
			}
			u.alive = f
		}
	}
	return u
}

// recover takes what a previous worker on this state directory owed: its unsent intervals,
// and its open ones closed at its last heartbeat (or their last saved sample, if later).
func (u *usageMeter) recover() {
	alive := readHeartbeat(filepath.Join(filepath.Dir(u.spool), "alive"))
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
		if alive.After(iv.End) && alive.Sub(iv.End).Seconds() < metering.MaxIntervalSeconds-iv.Seconds() {
			// Running until the heartbeat, at its request: what it used is unknown.
			dt := alive.Sub(iv.End).Seconds()
			iv.BillableCPU += iv.CPURequest * dt
			iv.BillableMemory += iv.MemoryGiB * dt
			iv.End = alive
		}
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
	slot := now.UnixNano() / int64(u.interval)
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
			// Cut on the grid: every container at the same tick, so the spool is written
			// once an interval.
			if slot > mb.m.Open().Start.UnixNano()/int64(u.interval) {
				if iv, ok := mb.m.Cut(false); ok {
					cut = append(cut, iv)
				}
			}
		}
		u.mu.Unlock()
	}
	u.mu.Lock()
	u.pending = append(u.pending, cut...)
	u.dirty = u.dirty || len(cut) > 0
	u.mu.Unlock()
	// The heartbeat only after the spool holds every container that ended before this tick:
	// recovery bills the spool's open intervals up to it.
	if u.save() && len(boxes) > 0 {
		u.heartbeat(now)
	}
	if len(cut) > 0 {
		u.kick()
	}
}

// heartbeat records that the worker metered its open containers at t: 20 digits of Unix
// nanoseconds and a newline, written in place (one small write, no rename).
func (u *usageMeter) heartbeat(t time.Time) {
	if u.alive == nil {
		return
	}
	if _, err := u.alive.WriteAt([]byte(fmt.Sprintf("%020d\n", t.UnixNano())), 0); err != nil {
		u.logf("usage heartbeat: %v", err)
	}
}

// readHeartbeat reads a heartbeat file; zero when there is none or it is unreadable.
func readHeartbeat(path string) time.Time {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 20 {
		return time.Time{}
	}
	n, err := strconv.ParseInt(string(b[:20]), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// save rewrites the spool when something changed; false when it could not.
func (u *usageMeter) save() bool {
	u.saveMu.Lock()
	defer u.saveMu.Unlock()
	u.mu.Lock()
	if !u.dirty || u.spool == "" {
		u.mu.Unlock()
		return true
	}
	f := spoolFile{Pending: append([]metering.Interval(nil), u.pending...)}
	for _, mb := range u.boxes {
		f.Open = append(f.Open, mb.m.Open())
	}
	u.dirty = false
	u.saves++
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
		u.mu.Lock()
		u.dirty = true // try again at the next tick
		u.mu.Unlock()
		return false
	}
	return true
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
			// The spool may keep what was sent until its next rewrite (the next cut): sent
			// again after a crash, the server records it once. With nothing open, there is
			// no next cut: rewrite it now.
			u.dirty = u.dirty || len(u.boxes) == 0
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

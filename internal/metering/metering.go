// Package metering is the arithmetic of gust's usage ledger, shared by the worker that measures
// containers and the server that records and prices what it measured: the interval a worker
// reports (Interval), the per-second billable rule (Meter), the price table (Prices), the
// reports over recorded intervals (Report, Summarize) and the duty-cycle advisor (Advise). It
// is pure: no I/O but reading a price file, no clock but the times it is given. It imports
// nothing of gust's but errdefs, so that both sides may use it.
//
// The billable rule is Modal's: each second, a container is billed for the larger of what it
// requested and what it used, CPU and memory separately; GPUs are billed for the seconds they
// are held.
package metering

import (
	"math"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

// GiB is a gibibyte in bytes.
const GiB = 1 << 30

// Interval is what a worker reports of one container for one stretch of its life. Seq numbers
// a container's intervals from 0 without gaps, so that the server records each one once
// however often it is sent (a retry, a worker that restarted and sends its spool again).
type Interval struct {
	ContainerID string    `json:"container_id"`
	Seq         int64     `json:"seq"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	// CPURequest and MemoryGiB are what the container asked for; GPUType and GPUCount what it
	// held (the server fills them from its record when the worker does not know them).
	CPURequest float64 `json:"cpu_request"`
	MemoryGiB  float64 `json:"memory_gib"`
	GPUType    string  `json:"gpu_type,omitempty"`
	GPUCount   int     `json:"gpu_count,omitempty"`
	// CPUSeconds is the CPU time the container's cgroup used over the interval; MemoryPeak its
	// peak memory in bytes.
	CPUSeconds float64 `json:"cpu_seconds"`
	MemoryPeak int64   `json:"memory_peak_bytes"`
	// BillableCPU (core-seconds) and BillableMemory (GiB-seconds) sum, second by second, the
	// larger of request and use (Meter).
	BillableCPU    float64 `json:"billable_cpu_core_seconds"`
	BillableMemory float64 `json:"billable_memory_gib_seconds"`
	// Final marks a container's last interval: it ended.
	Final bool `json:"final,omitempty"`
	// StorageClass, StorageBytes and StorageGiBSeconds meter a stored object instead of a
	// container (storage.go): its class, its size at the reading, and GiB × seconds.
	StorageClass      string  `json:"storage_class,omitempty"`
	StorageBytes      int64   `json:"storage_bytes,omitempty"`
	StorageGiBSeconds float64 `json:"storage_gib_seconds,omitempty"`
}

// Seconds is the interval's wall time.
func (iv Interval) Seconds() float64 { return iv.End.Sub(iv.Start).Seconds() }

// MaxIntervalSeconds bounds one interval: a worker that lost the server sends what it owes in
// intervals no longer than this.
const MaxIntervalSeconds = 3600

// Validate refuses an interval that no honest worker would send.
func (iv Interval) Validate() error {
	d := iv.Seconds()
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) || v < 0 }
	switch {
	case iv.ContainerID == "":
		return errdefs.Invalid("usage interval without a container_id")
	case iv.Seq < 0:
		return errdefs.Invalid("usage interval %s/%d: seq must be 0 or more", iv.ContainerID, iv.Seq)
	case iv.Start.IsZero() || iv.End.Before(iv.Start) || d > MaxIntervalSeconds:
		return errdefs.Invalid("usage interval %s/%d: end must follow start by at most %d s", iv.ContainerID, iv.Seq, MaxIntervalSeconds)
	case bad(iv.CPURequest) || bad(iv.MemoryGiB) || bad(iv.CPUSeconds) ||
		bad(iv.BillableCPU) || bad(iv.BillableMemory) || iv.MemoryPeak < 0 || bad(iv.StorageGiBSeconds) || iv.StorageBytes < 0:
		return errdefs.Invalid("usage interval %s/%d: figures must be finite and not negative", iv.ContainerID, iv.Seq)
	case iv.GPUCount < 0 || iv.GPUCount > 64:
		return errdefs.Invalid("usage interval %s/%d: gpu_count must be 0 to 64", iv.ContainerID, iv.Seq)
	}
	return nil
}

// Sample is one reading of a container's cgroup: its cumulative CPU time and its memory.
type Sample struct {
	At time.Time
	// CPU is the cgroup's cumulative CPU time.
	CPU time.Duration
	// Memory is the memory in use now; Peak the most since the last sample when
	// PeakSinceLast, else since the container started (it then only raises MemoryPeak).
	Memory, Peak  int64
	PeakSinceLast bool
}

// Meter accumulates one container's samples into intervals, applying the billable rule at
// each sample: between two samples dt apart, CPU billed is max(request×dt, used) and memory
// billed max(request, in use)×dt. Sampling each second makes that Modal's per-second rule.
type Meter struct {
	ContainerID string
	CPURequest  float64
	MemoryGiB   float64
	GPUType     string
	GPUCount    int

	seq     int64
	start   time.Time // of the open interval
	last    Sample
	started bool
	cur     Interval
}

// NewMeter starts metering a container at its first sample.
func NewMeter(id string, cpu, memGiB float64, gpuType string, gpus int, first Sample) *Meter {
	m := &Meter{ContainerID: id, CPURequest: cpu, MemoryGiB: memGiB, GPUType: gpuType, GPUCount: gpus}
	m.last, m.started = first, true
	m.open(first.At)
	return m
}

// Resume continues metering a container whose intervals up to seq-1 were already cut (a
// worker's spool after a restart).
func (m *Meter) Resume(seq int64) { m.seq = seq; m.cur.Seq = seq }

func (m *Meter) open(at time.Time) {
	m.start = at
	m.cur = Interval{ContainerID: m.ContainerID, Seq: m.seq, Start: at, CPURequest: m.CPURequest, MemoryGiB: m.MemoryGiB,
		GPUType: m.GPUType, GPUCount: m.GPUCount}
}

// Add takes a new sample. A counter that went backwards (a container whose cgroup was made
// again) counts as no CPU used since the last sample.
func (m *Meter) Add(s Sample) {
	dt := s.At.Sub(m.last.At).Seconds()
	if dt < 0 {
		return
	}
	used := max((s.CPU - m.last.CPU).Seconds(), 0)
	m.cur.CPUSeconds += used
	m.cur.BillableCPU += max(m.CPURequest*dt, used)
	inUse := s.Memory
	if s.PeakSinceLast {
		inUse = max(inUse, s.Peak)
	}
	mem := float64(inUse) / GiB
	m.cur.BillableMemory += max(m.MemoryGiB, mem) * dt
	m.cur.MemoryPeak = max(m.cur.MemoryPeak, s.Memory, s.Peak)
	m.last = s
}

// Cut closes the open interval at the last sample and opens the next; final marks the
// container's end. An interval of no time that is not final is not cut (ok false).
func (m *Meter) Cut(final bool) (Interval, bool) {
	iv := m.cur
	iv.End = m.last.At
	iv.Final = final
	if !final && !iv.End.After(iv.Start) {
		return iv, false
	}
	m.seq++
	m.open(m.last.At)
	return iv, true
}

// Seq is the sequence number the next interval will have.
func (m *Meter) Seq() int64 { return m.seq }

// Open is the open interval as far as the last sample.
func (m *Meter) Open() Interval {
	iv := m.cur
	iv.End = m.last.At
	return iv
}

package container

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is one reading of a container's cgroup: what the usage ledger meters.
type Usage struct {
	// CPU is the cgroup's cumulative CPU time (all its processes, user and system).
	CPU time.Duration
	// Memory is the memory charged to it now; Peak the most since the last reading when
	// PeakSinceLast (cgroup v1, whose reading resets it), else since it started (v2).
	Memory, Peak  int64
	PeakSinceLast bool
}

// Usage reads the container's cgroup, under cgroup v1 (cpuacct and memory controllers) or v2
// (cpu.stat, memory.current, memory.peak). Under v1 it resets the memory peak for the next
// reading; v2 resets memory.peak only for the descriptor that wrote it, so its peak is the
// container's lifetime one.
func (c *Container) Usage() (Usage, error) { return ReadUsage(c.rt.cfg.cgroupsPath(c.ID)) }

// cgroupRoot is where cgroupfs is mounted; tests point it elsewhere.
var cgroupRoot = "/sys/fs/cgroup"

// ReadUsage reads the cgroup at path cg (as in a spec's cgroupsPath: "/gust/<id>").
func ReadUsage(cg string) (Usage, error) {
	var u Usage
	if ns, err := readInt(cgroupRoot + "/cpuacct" + cg + "/cpuacct.usage"); err == nil {
		u.CPU = time.Duration(ns)
		mem := cgroupRoot + "/memory" + cg
		u.Memory, _ = readInt(mem + "/memory.usage_in_bytes")
		u.Peak, _ = readInt(mem + "/memory.max_usage_in_bytes")
		// Writing 0 resets the peak to what is in use now: the next reading's peak is its own.
		u.PeakSinceLast = os.WriteFile(mem+"/memory.max_usage_in_bytes", []byte("0"), 0) == nil
		return u, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return u, err
	}
	dir := cgroupRoot + cg
	stat, err := os.ReadFile(dir + "/cpu.stat")
	if err != nil {
		return u, fmt.Errorf("container usage: no cgroup v1 cpuacct or v2 cpu.stat for %s: %w", cg, err)
	}
	for _, line := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return u, fmt.Errorf("container usage: %s/cpu.stat: %w", dir, err)
			}
			u.CPU = time.Duration(us) * time.Microsecond
		}
	}
	u.Memory, _ = readInt(dir + "/memory.current")
	u.Peak, _ = readInt(dir + "/memory.peak")
	return u, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

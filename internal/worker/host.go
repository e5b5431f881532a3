package worker

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/reaper"
)

// What the worker tells the server about its machine when it registers.

// hostMemoryMiB is the machine's memory; 1 GiB when /proc/meminfo cannot say.
func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 1024
	}
	var kb int
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return 1024
	}
	return kb / 1024
}

// detectGPUs lists the machine's NVIDIA GPUs through nvidia-smi; none without it.
func detectGPUs() []gpu.Device {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil
	}
	out, err := reaper.CombinedOutput(exec.Command(path, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"))
	if err != nil {
		return nil
	}
	return parseGPUs(string(out))
}

// parseGPUs reads nvidia-smi's "name, memory" lines. A memory it cannot read is 0: the GPU
// still counts, for requests that name no memory size.
func parseGPUs(out string) []gpu.Device {
	var gpus []gpu.Device
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, mem, ok := strings.Cut(line, ",")
		if !ok {
			continue
		}
		m, err := strconv.Atoi(strings.TrimSpace(mem))
		if err != nil {
			m = 0
		}
		gpus = append(gpus, gpu.Device{Model: strings.TrimSpace(name), MemoryMiB: m})
	}
	return gpus
}

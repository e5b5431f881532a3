package worker

import (
	"fmt"
	"os"
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

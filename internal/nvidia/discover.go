// Package nvidia is what a worker knows of this machine's NVIDIA GPUs: it finds them
// (nvidia-smi, or an inventory declared for tests), puts the assigned ones into a container's
// OCI spec through the Container Device Interface (the machine's CDI spec where one exists,
// else one generated from what was found and kept current when the driver changes), and
// samples their memory and utilisation. Everything here is a no-op on a machine without
// GPUs. Imported by internal/worker.
package nvidia

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gust-run/gust/internal/gpu"
	"github.com/gust-run/gust/internal/reaper"
)

// Config says where to look.
type Config struct {
	// Root is the root of the device tree and driver files ("" is /): /dev/nvidia*,
	// /proc/driver/nvidia/version and the driver's libraries are looked for under it. Tests
	// point it at a fake tree.
	Root string
	// TestGPUs declares an inventory instead of asking nvidia-smi: a comma-separated list of
	// types, each optionally with a count ("H100:2,A100-80GB"). For tests only (the
	// environment variable GUST_TEST_GPUS); the devices are /dev/nvidia0... under Root.
	TestGPUs string
	// CDIDirs are where the machine's CDI specs are (nil: /etc/cdi and /var/run/cdi).
	CDIDirs []string
	// StateDir is where a generated CDI spec is written.
	StateDir string
	// NvidiaSMI is the nvidia-smi binary ("" looks it up in PATH).
	NvidiaSMI string
}

// GPU is one device as the worker knows it: what it reports, and its device node.
type GPU struct {
	gpu.Device
	// Minor is the device's minor number: its node is /dev/nvidia<Minor>.
	Minor int
}

// Inventory is what discovery found.
type Inventory struct {
	GPUs []GPU
	// Test is set for a declared test inventory.
	Test bool
}

// Devices is the inventory as the worker reports it.
func (inv Inventory) Devices() []gpu.Device {
	out := make([]gpu.Device, len(inv.GPUs))
	for i, g := range inv.GPUs {
		out[i] = g.Device
	}
	return out
}

// byUUID finds a device.
func (inv Inventory) byUUID(uuid string) (GPU, bool) {
	for _, g := range inv.GPUs {
		if g.UUID == uuid {
			return g, true
		}
	}
	return GPU{}, false
}

// queryFields is what discovery asks nvidia-smi for, in this order.
const queryFields = "index,uuid,name,memory.total,driver_version,mig.mode.current"

// Discover finds the machine's GPUs: the declared test inventory if there is one, else what
// nvidia-smi lists; none (and no error) on a machine without nvidia-smi.
func Discover(ctx context.Context, cfg Config) (Inventory, error) {
	if cfg.TestGPUs != "" {
		return TestInventory(cfg.TestGPUs)
	}
	smi := cfg.smi()
	if smi == "" {
		return Inventory{}, nil
	}
	out, err := reaper.CombinedOutput(exec.CommandContext(ctx, smi, "--query-gpu="+queryFields, "--format=csv,noheader,nounits"))
	if err != nil {
		return Inventory{}, fmt.Errorf("nvidia-smi --query-gpu: %w: %s", err, strings.TrimSpace(string(out)))
	}
	gpus, err := ParseQuery(string(out))
	if err != nil {
		return Inventory{}, err
	}
	// The CUDA version and the minor numbers are only in the long report.
	if q, err := reaper.CombinedOutput(exec.CommandContext(ctx, smi, "-q")); err == nil {
		applyReport(gpus, string(q))
	}
	return Inventory{GPUs: gpus}, nil
}

func (cfg Config) smi() string {
	if cfg.NvidiaSMI != "" {
		return cfg.NvidiaSMI
	}
	p, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return ""
	}
	return p
}

// ParseQuery reads nvidia-smi's CSV answer to --query-gpu=queryFields. A memory it cannot
// read is 0: the GPU still counts, for requests that name no memory size.
func ParseQuery(out string) ([]GPU, error) {
	var gpus []GPU
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 4 {
			return nil, fmt.Errorf("nvidia-smi: unexpected line %q (want %s)", line, queryFields)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi: index %q in line %q", f[0], line)
		}
		mem, _ := strconv.Atoi(f[3])
		d := gpu.Device{Index: idx, UUID: f[1], Model: f[2], MemoryMiB: mem}
		if len(f) > 4 {
			d.Driver = f[4]
		}
		if len(f) > 5 && f[5] != "[N/A]" && f[5] != "N/A" {
			d.MIG = f[5]
		}
		d.Type = gpu.Normalize(d.Model, d.MemoryMiB)
		gpus = append(gpus, GPU{Device: d, Minor: idx})
	}
	return gpus, nil
}

// applyReport reads nvidia-smi -q: the CUDA version for all, and each GPU's minor number
// (its /dev/nvidiaN, which need not be its index).
func applyReport(gpus []GPU, q string) {
	cuda := ""
	uuid := ""
	for _, line := range strings.Split(q, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "CUDA Version":
			cuda = v
		case "GPU UUID":
			uuid = v
		case "Minor Number":
			if n, err := strconv.Atoi(v); err == nil {
				for i := range gpus {
					if gpus[i].UUID == uuid {
						gpus[i].Minor = n
					}
				}
			}
		}
	}
	for i := range gpus {
		gpus[i].CUDA = cuda
	}
}

// testMemoryMiB is each type's memory in a declared inventory, as the real ones report it.
var testMemoryMiB = map[string]int{
	"T4": 15360, "L4": 23034, "A10": 23028, "A10G": 23028, "A100-40GB": 40960, "A100-80GB": 81920,
	"L40S": 46068, "H100": 81559, "H200": 143771, "B200": 183359,
}

// TestInventory is a declared inventory ("H100:2,A100-80GB"): devices nvidia0... with made-up
// UUIDs. Only concrete types may be declared.
func TestInventory(decl string) (Inventory, error) {
	inv := Inventory{Test: true}
	for _, part := range strings.Split(decl, ",") {
		c, err := gpu.ParseChoice(part)
		if err != nil {
			return Inventory{}, fmt.Errorf("GUST_TEST_GPUS: %w", err)
		}
		mem, ok := testMemoryMiB[c.Type]
		if !ok {
			return Inventory{}, fmt.Errorf("GUST_TEST_GPUS: declare concrete types such as H100 or A100-80GB, not %q", c.Type)
		}
		for range c.Count {
			i := len(inv.GPUs)
			inv.GPUs = append(inv.GPUs, GPU{Minor: i, Device: gpu.Device{
				Index: i, UUID: fmt.Sprintf("GPU-7e570000-0000-4000-8000-%012d", i), Model: "NVIDIA " + c.Type + " (declared for tests)",
				Type: c.Type, MemoryMiB: mem, Driver: "test", MIG: "Disabled",
			}})
		}
	}
	return inv, nil
}

// path is p under the configured root.
func (cfg Config) path(p string) string {
	if cfg.Root == "" || cfg.Root == "/" {
		return p
	}
	return filepath.Join(cfg.Root, p)
}

// errNoDriver: the machine has GPUs listed but not the files a container needs.
var errNoDriver = errors.New("the NVIDIA driver's device nodes are missing")

// statDevice checks that a device node exists.
func statDevice(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoDriver, err)
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("%w: %s is not a device node", errNoDriver, p)
	}
	return nil
}

package nvidia

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/gust-run/gust/internal/reaper"
)

// Usage is one sample of a GPU: its memory in use and how busy it was.
type Usage struct {
	MemoryUsedMiB  int
	UtilizationPct int
}

// Sampler reads GPUs' memory and utilisation through nvidia-smi. Its zero value, and one on a
// machine without nvidia-smi (a test inventory's, for one), samples nothing.
type Sampler struct{ smi string }

// NewSampler returns the machine's sampler; a declared test inventory has nothing to sample.
func NewSampler(cfg Config) Sampler {
	if cfg.TestGPUs != "" {
		return Sampler{}
	}
	return Sampler{smi: cfg.smi()}
}

// Enabled reports whether samples can be taken here.
func (s Sampler) Enabled() bool { return s.smi != "" }

// Sample reads the given GPUs (by UUID); nil without nvidia-smi or GPUs.
func (s Sampler) Sample(ctx context.Context, uuids []string) (map[string]Usage, error) {
	if s.smi == "" || len(uuids) == 0 {
		return nil, nil
	}
	out, err := reaper.CombinedOutput(exec.CommandContext(ctx, s.smi, "--query-gpu=uuid,memory.used,utilization.gpu", "--format=csv,noheader,nounits", "--id="+strings.Join(uuids, ",")))
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return ParseSample(string(out)), nil
}

// ParseSample reads "uuid, memory.used, utilization.gpu" lines; fields it cannot read are 0.
func ParseSample(out string) map[string]Usage {
	m := map[string]Usage{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		mem, _ := strconv.Atoi(strings.TrimSpace(f[1]))
		util, _ := strconv.Atoi(strings.TrimSpace(f[2]))
		m[strings.TrimSpace(f[0])] = Usage{MemoryUsedMiB: mem, UtilizationPct: util}
	}
	return m
}

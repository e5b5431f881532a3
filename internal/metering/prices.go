package metering

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/gust-run/gust/internal/errdefs"
)

// Prices is the price table, in US dollars: per CPU core-second, per GiB-second of memory,
// and per second of each GPU type (names as gpu.Types spells them).
type Prices struct {
	CPUPerCoreSecond   float64            `json:"cpu_per_core_second"`
	MemoryPerGiBSecond float64            `json:"memory_per_gib_second"`
	GPUPerSecond       map[string]float64 `json:"gpu_per_second"`
	// StoragePerGiBSecond prices each storage class (StorageVolume, StorageImage,
	// StorageDictQueu) per GiB held for a second.
	StoragePerGiBSecond map[string]float64 `json:"storage_per_gib_second"`
	// Reserved are the operator's reserved-capacity prices for the advisor, per second by
	// resource ("cpu", "memory" per GiB, a GPU type), as the price file's "reserved" gives them;
	// resources it leaves out are the serverless price × the advisor's reserved factor.
	Reserved map[string]float64 `json:"reserved_per_second,omitempty"`
	// Source says where the figures come from, for `gust billing rates`.
	Source string `json:"source,omitempty"`
}

// DefaultSource says where DefaultPrices come from.
const DefaultSource = "Modal's published list prices (modal.com/pricing, base rates, as of June 2026)"

// DefaultPrices are Modal's published per-second list prices as of June 2026 (modal.com/pricing;
// the base rates, before region and non-preemptible multipliers). An operator sets their own
// with a price file (LoadPrices).
func DefaultPrices() Prices {
	return Prices{
		CPUPerCoreSecond:   0.0000131,
		MemoryPerGiBSecond: 0.00000222,
		GPUPerSecond: map[string]float64{
			"B200":      0.001736,
			"H200":      0.001261,
			"H100":      0.001097,
			"A100-80GB": 0.000694,
			"A100-40GB": 0.000583,
			"A100":      0.000583, // Modal's gpu="A100" is the 40 GB card
			"L40S":      0.000542,
			"A10G":      0.000306,
			"L4":        0.000222,
			"T4":        0.000164,
		},
		// Volumes at Modal's $0.09 per GiB-month (30 days; as third-party summaries of its
		// pricing page give it, its free allowance left out); image layers and Dicts/Queues
		// are free there.
		StoragePerGiBSecond: map[string]float64{StorageVolume: 0.09 / (30 * 86400), StorageImage: 0, StorageDictQueu: 0},
		Source:              DefaultSource,
	}
}

// GPURate is the price of one GPU of a type for a second; an unknown type costs as the
// dearest known one, so that nothing runs free by a name the table lacks.
func (p Prices) GPURate(typ string) float64 {
	if r, ok := p.GPUPerSecond[strings.ToUpper(typ)]; ok {
		return r
	}
	dear := 0.0
	for _, r := range p.GPUPerSecond {
		dear = max(dear, r)
	}
	return dear
}

// Validate refuses negative, infinite or missing figures.
func (p Prices) Validate() error {
	ok := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }
	if !ok(p.CPUPerCoreSecond) || !ok(p.MemoryPerGiBSecond) {
		return errdefs.Invalid("prices: cpu_per_core_second and memory_per_gib_second must be numbers of dollars, 0 or more")
	}
	for t, r := range p.GPUPerSecond {
		if !ok(r) {
			return errdefs.Invalid("prices: gpu_per_second[%q] must be a number of dollars, 0 or more", t)
		}
	}
	for c, r := range p.StoragePerGiBSecond {
		if !ok(r) {
			return errdefs.Invalid("prices: storage_per_gib_second[%q] must be a number of dollars, 0 or more", c)
		}
	}
	for res, r := range p.Reserved {
		if !ok(r) {
			return errdefs.Invalid("prices: reserved[%q] must be a price of 0 or more", res)
		}
	}
	return nil
}

// LoadPrices reads a price file: JSON with Prices' fields. Fields it leaves out keep their
// defaults; GPU types it names replace the default's, others stay.
func LoadPrices(path string) (Prices, error) {
	p := DefaultPrices()
	b, err := os.ReadFile(path)
	if err != nil {
		return p, fmt.Errorf("prices: %w", err)
	}
	var f struct {
		CPU     *float64           `json:"cpu_per_core_second"`
		Memory  *float64           `json:"memory_per_gib_second"`
		GPU     map[string]float64 `json:"gpu_per_second"`
		Storage map[string]float64 `json:"storage_per_gib_second"`
		// Reserved prices as the advisor's --reserved writes them: {"H100": "2.50/h"}.
		Reserved map[string]string `json:"reserved"`
		Source   string            `json:"source"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return p, fmt.Errorf("prices: %s is not a price file (JSON with cpu_per_core_second, memory_per_gib_second, gpu_per_second, storage_per_gib_second, reserved): %w", path, err)
	}
	for c, r := range f.Storage {
		p.StoragePerGiBSecond[c] = r
	}
	for res, v := range f.Reserved {
		name, perSec, err := ParseRate(res + "=" + v)
		if err != nil {
			return p, fmt.Errorf("prices: %s: reserved: %w", path, err)
		}
		if p.Reserved == nil {
			p.Reserved = map[string]float64{}
		}
		p.Reserved[name] = perSec
	}
	if f.CPU != nil {
		p.CPUPerCoreSecond = *f.CPU
	}
	if f.Memory != nil {
		p.MemoryPerGiBSecond = *f.Memory
	}
	for t, r := range f.GPU {
		p.GPUPerSecond[strings.ToUpper(t)] = r
	}
	p.Source = "the operator's price file " + path
	if f.Source != "" {
		p.Source = f.Source
	}
	return p, p.Validate()
}

// Scaled is p with every price multiplied by k.
func (p Prices) Scaled(k float64) Prices {
	out := Prices{CPUPerCoreSecond: p.CPUPerCoreSecond * k, MemoryPerGiBSecond: p.MemoryPerGiBSecond * k, GPUPerSecond: map[string]float64{},
		StoragePerGiBSecond: map[string]float64{}, Source: p.Source}
	for t, r := range p.GPUPerSecond {
		out.GPUPerSecond[t] = r * k
	}
	for c, r := range p.StoragePerGiBSecond {
		out.StoragePerGiBSecond[c] = r * k
	}
	return out
}

// ParseRate reads a rate as the advisor's --reserved flag writes it: "H100=2.50/h",
// "cpu=0.03/h", "memory=0.004/h" (per GiB), with /s, /h, or /mo (30 days) as the period.
// It returns the resource (a GPU type upper-cased, or "cpu" or "memory") and dollars per second.
func ParseRate(s string) (resource string, perSecond float64, err error) {
	name, val, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || name == "" {
		return "", 0, errdefs.Invalid("rate %q: write RESOURCE=PRICE/PERIOD, e.g. H100=2.50/h, cpu=0.03/h or memory=0.004/h", s)
	}
	num, per, _ := strings.Cut(strings.TrimPrefix(val, "$"), "/")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return "", 0, errdefs.Invalid("rate %q: the price must be a number of dollars, 0 or more", s)
	}
	switch per {
	case "s", "sec":
	case "", "h", "hr", "hour":
		v /= 3600
	case "mo", "month":
		v /= 30 * 86400
	default:
		return "", 0, errdefs.Invalid("rate %q: the period must be s, h or mo", s)
	}
	name = strings.ToLower(name)
	if name != "cpu" && name != "memory" {
		name = strings.ToUpper(name)
	}
	return name, v, nil
}

// With is p with one rate (from ParseRate) set.
func (p Prices) With(resource string, perSecond float64) Prices {
	out := p.Scaled(1)
	switch resource {
	case "cpu":
		out.CPUPerCoreSecond = perSecond
	case "memory":
		out.MemoryPerGiBSecond = perSecond
	default:
		out.GPUPerSecond[resource] = perSecond
	}
	return out
}

// Resource names in cost breakdowns.
const (
	ResourceCPU    = "cpu"
	ResourceMemory = "memory"
)

// GPUResource names a GPU type in a cost breakdown: "gpu:H100".
func GPUResource(typ string) string { return "gpu:" + strings.ToUpper(typ) }

// Costs is a cost broken down by resource (ResourceCPU, ResourceMemory, GPUResource).
type Costs map[string]float64

// Total sums the breakdown in a fixed order, so that equal ledgers give equal totals.
func (c Costs) Total() float64 {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t := 0.0
	for _, k := range keys {
		t += c[k]
	}
	return t
}

// Add adds o into c.
func (c Costs) Add(o Costs) {
	for k, v := range o {
		c[k] += v
	}
}

// Cost prices one interval.
func (p Prices) Cost(iv Interval) Costs {
	if iv.StorageClass != "" {
		return Costs{StorageResource(iv.StorageClass): iv.StorageGiBSeconds * p.StorageRate(iv.StorageClass)}
	}
	c := Costs{ResourceCPU: iv.BillableCPU * p.CPUPerCoreSecond, ResourceMemory: iv.BillableMemory * p.MemoryPerGiBSecond}
	if iv.GPUCount > 0 && iv.GPUType != "" {
		c[GPUResource(iv.GPUType)] = float64(iv.GPUCount) * iv.Seconds() * p.GPURate(iv.GPUType)
	}
	return c
}

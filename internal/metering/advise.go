package metering

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// DefaultReservedFactor is what reserved capacity costs against the serverless price of the
// same resources when the operator names no reserved prices: half, a usual discount of
// reserved or owned machines over per-second list prices. Say your own with --reserved.
const DefaultReservedFactor = 0.5

// Recommendations.
const (
	StayServerless = "serverless"
	Reserve        = "reserve"
	Split          = "split"
)

// Concurrency is a distribution of containers running at once, weighted by time.
type Concurrency struct {
	P50  int `json:"p50"`
	P95  int `json:"p95"`
	Peak int `json:"peak"`
}

// Advice is the advisor's answer for one function (or the sandboxes of one app) and one
// resource class (a GPU type, or "cpu" for containers without GPUs). Money is in dollars;
// monthly figures scale the window to 30 days.
type Advice struct {
	Kind          string `json:"kind"` // function or app (its sandboxes)
	ID            string `json:"id"`
	Name          string `json:"name"`
	ResourceClass string `json:"resource_class"`

	WindowSeconds    float64     `json:"window_seconds"`
	BusySeconds      float64     `json:"busy_seconds"`
	DutyCycle        float64     `json:"duty_cycle"`
	ContainerSeconds float64     `json:"container_seconds"`
	Concurrency      Concurrency `json:"concurrency"`

	// ServerlessCostPerSecond is what the work cost here per second of the window;
	// ServerlessContainerSecond per second of one container.
	ServerlessCostPerSecond   float64 `json:"serverless_cost_per_second"`
	ServerlessContainerSecond float64 `json:"serverless_cost_per_container_second"`
	ReservedContainerSecond   float64 `json:"reserved_cost_per_container_second"`
	// BreakEvenUtilization is the share of the time a reserved container must be busy to cost
	// less than the same work serverless.
	BreakEvenUtilization float64 `json:"break_even_utilization"`

	ServerlessMonthly float64 `json:"serverless_monthly"`
	ReservedMonthly   float64 `json:"reserved_monthly"` // reserved for the peak
	// Recommendation is serverless, reserve or split; Floor the reserved containers (split:
	// min_containers), RecommendedMonthly its cost and MonthlySaving what it saves against
	// staying serverless.
	Recommendation     string  `json:"recommendation"`
	Floor              int     `json:"floor"`
	Setting            string  `json:"setting,omitempty"`
	RecommendedMonthly float64 `json:"recommended_monthly"`
	MonthlySaving      float64 `json:"monthly_saving"`
	Summary            string  `json:"summary"`
	// Timeline is the concurrency over the window: each step's start and containers.
	Timeline []Step `json:"timeline,omitempty"`
}

// Step is a change of concurrency.
type Step struct {
	At         time.Time `json:"at"`
	Containers int       `json:"containers"`
}

const month = 30 * 86400.0

// Advise reads the ledger over [from, to) and answers, for each function and each app's
// sandboxes, per resource class: serverless, reserve, or split with a reserved floor.
// reserved prices reserved capacity (per second, whether busy or not).
func Advise(recs []Record, p, reserved Prices, from, to time.Time) []Advice {
	type key struct{ kind, id, class string }
	groups := map[key][]Record{}
	names := map[key]string{}
	for _, r := range recs {
		part, ok := r.clip(from, to)
		if !ok || part.Seconds() == 0 || part.Kind == KindStorage { // storage has no concurrency to reserve
			continue
		}
		k := key{"app", part.AppID, "cpu"}
		names[k] = part.AppName
		switch part.Kind {
		case KindFunction:
			k.kind, k.id = "function", part.FunctionID
			names[k] = part.FunctionName
		case KindImageBuild:
			k.id = ImageBuildsObject
			names[k] = "image builds"
		}
		if part.GPUCount > 0 {
			k.class = part.GPUType
		}
		groups[k] = append(groups[k], part)
	}
	out := make([]Advice, 0, len(groups))
	for k, g := range groups {
		a := adviseOne(g, p, reserved, from, to)
		a.Kind, a.ID, a.Name, a.ResourceClass = k.kind, k.id, names[k], k.class
		if k.kind == "app" && a.Floor > 0 {
			// Sandboxes have no min_containers: the floor is capacity held for them.
			a.Setting = fmt.Sprintf("reserved capacity for %d sandbox(es)", a.Floor)
		}
		a.Summary = summarize(a)
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ServerlessMonthly != out[j].ServerlessMonthly {
			return out[i].ServerlessMonthly > out[j].ServerlessMonthly
		}
		return out[i].ID+out[i].ResourceClass < out[j].ID+out[j].ResourceClass
	})
	return out
}

// adviseOne does the arithmetic for one group of records inside [from, to).
func adviseOne(recs []Record, p, reserved Prices, from, to time.Time) Advice {
	W := to.Sub(from).Seconds()
	a := Advice{WindowSeconds: W}
	// Concurrency: a sweep over the intervals' starts and ends.
	delta := map[time.Time]int{}
	cost, rcost := 0.0, 0.0
	for _, r := range recs {
		delta[r.Start]++
		delta[r.End]--
		a.ContainerSeconds += r.Seconds()
		cost += p.Cost(r.Interval).Total()
		d := r.Seconds()
		rcost += reserved.Cost(Interval{Start: r.Start, End: r.End, BillableCPU: r.CPURequest * d, BillableMemory: r.MemoryGiB * d,
			GPUType: r.GPUType, GPUCount: r.GPUCount}).Total()
	}
	times := make([]time.Time, 0, len(delta))
	for t := range delta {
		times = append(times, t)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	// at[k] is the time spent with exactly k containers.
	at := map[int]float64{}
	level, prev := 0, from
	a.Timeline = append(a.Timeline, Step{At: from, Containers: 0})
	for _, t := range times {
		at[level] += t.Sub(prev).Seconds()
		level += delta[t]
		prev = t
		if n := len(a.Timeline); a.Timeline[n-1].Containers != level {
			if a.Timeline[n-1].At.Equal(t) {
				a.Timeline[n-1].Containers = level
			} else {
				a.Timeline = append(a.Timeline, Step{At: t, Containers: level})
			}
		}
	}
	at[level] += to.Sub(prev).Seconds()
	for k := range at {
		a.Concurrency.Peak = max(a.Concurrency.Peak, k)
	}
	a.BusySeconds = W - at[0]
	if W > 0 {
		a.DutyCycle = a.BusySeconds / W
		a.ServerlessCostPerSecond = cost / W
	}
	a.Concurrency.P50, a.Concurrency.P95 = quantile(at, W, 0.5), quantile(at, W, 0.95)
	if a.ContainerSeconds > 0 {
		a.ServerlessContainerSecond = cost / a.ContainerSeconds
		a.ReservedContainerSecond = rcost / a.ContainerSeconds
	}
	if a.ServerlessContainerSecond > 0 {
		a.BreakEvenUtilization = a.ReservedContainerSecond / a.ServerlessContainerSecond
	}
	scale := month / math.Max(W, 1)
	a.ServerlessMonthly = cost * scale
	a.ReservedMonthly = float64(a.Concurrency.Peak) * a.ReservedContainerSecond * W * scale
	// above[k] is the time spent with at least k containers: reserving the k-th container
	// pays when above[k]/W exceeds the break-even utilisation.
	above := make([]float64, a.Concurrency.Peak+2)
	for k := a.Concurrency.Peak; k >= 1; k-- {
		above[k] = above[k+1] + at[k]
	}
	costWith := func(n int) float64 {
		excess := 0.0
		for k := n + 1; k <= a.Concurrency.Peak; k++ {
			excess += above[k]
		}
		return float64(n)*a.ReservedContainerSecond*W + excess*a.ServerlessContainerSecond
	}
	best, bestCost := 0, costWith(0)
	for n := 1; n <= a.Concurrency.Peak; n++ {
		if c := costWith(n); c < bestCost-1e-12 {
			best, bestCost = n, c
		}
	}
	a.Floor = best
	a.RecommendedMonthly = bestCost * scale
	a.MonthlySaving = a.ServerlessMonthly - a.RecommendedMonthly
	switch {
	case best == 0:
		a.Recommendation = StayServerless
	case best >= a.Concurrency.Peak:
		a.Recommendation = Reserve
		a.Setting = fmt.Sprintf("min_containers=%d", best)
	default:
		a.Recommendation = Split
		a.Setting = fmt.Sprintf("min_containers=%d", best)
	}
	return a
}

// quantile is the smallest concurrency k with at least q of the window at k or below.
func quantile(at map[int]float64, W float64, q float64) int {
	keys := make([]int, 0, len(at))
	for k := range at {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	sum := 0.0
	for _, k := range keys {
		sum += at[k]
		if sum >= q*W-1e-9 {
			return k
		}
	}
	if len(keys) == 0 {
		return 0
	}
	return keys[len(keys)-1]
}

// summarize says the advice in plain words.
func summarize(a Advice) string {
	what := fmt.Sprintf("%s %s (%s)", a.Kind, a.Name, a.ResourceClass)
	if a.Kind == "app" {
		what = fmt.Sprintf("sandboxes of app %s (%s)", a.Name, a.ResourceClass)
	}
	head := fmt.Sprintf("%s: busy %.0f%% of the window, concurrency p50 %d, p95 %d, peak %d; break-even utilisation %.0f%%. ",
		what, 100*a.DutyCycle, a.Concurrency.P50, a.Concurrency.P95, a.Concurrency.Peak, 100*a.BreakEvenUtilization)
	switch a.Recommendation {
	case StayServerless:
		return head + fmt.Sprintf("Stay serverless: $%.2f/month as it runs; reserving even one container would cost $%.2f/month.",
			a.ServerlessMonthly, a.ReservedContainerSecond*month)
	case Reserve:
		return head + fmt.Sprintf("Reserve %d container(s) (%s): $%.2f/month instead of $%.2f/month serverless, saving $%.2f/month.",
			a.Floor, a.Setting, a.RecommendedMonthly, a.ServerlessMonthly, a.MonthlySaving)
	}
	return head + fmt.Sprintf("Split: reserve a floor of %d (set %s) and let bursts above it run serverless: $%.2f/month instead of $%.2f/month serverless, saving $%.2f/month.",
		a.Floor, a.Setting, a.RecommendedMonthly, a.ServerlessMonthly, a.MonthlySaving)
}

package metering

import (
	"math"
	"strings"
	"testing"
	"time"
)

// ledger makes a recorded ledger: for each container, its life as 10-second intervals (the
// way workers report), of one function.
func ledger(lives [][2]float64) []Record {
	var out []Record
	for i, l := range lives {
		id := "fc-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		seq := int64(0)
		for s := l[0]; s < l[1]; s += 10 {
			d := math.Min(10, l[1]-s)
			r := rec("ap-1", id, seq, t0.Add(time.Duration(s*float64(time.Second))), d, 1, nil)
			r.Kind, r.FunctionID, r.FunctionName, r.SandboxID = KindFunction, "fn-1", "work", ""
			out = append(out, r)
			seq++
		}
	}
	return out
}

// advisorPrices: one core at $1 per second, nothing for memory; reserved at half.
var advisorPrices = Prices{CPUPerCoreSecond: 1, GPUPerSecond: map[string]float64{}}

func advise(t *testing.T, recs []Record, window float64) Advice {
	t.Helper()
	adv := Advise(recs, advisorPrices, advisorPrices.Scaled(DefaultReservedFactor), t0, t0.Add(time.Duration(window)*time.Second))
	if len(adv) != 1 {
		t.Fatalf("advice for %d groups, want 1", len(adv))
	}
	a := adv[0]
	if a.Kind != "function" || a.ID != "fn-1" || a.ResourceClass != "cpu" || !near(a.BreakEvenUtilization, 0.5, 1e-9) {
		t.Errorf("advice %+v", a)
	}
	return a
}

func TestAdviseBursty(t *testing.T) {
	// 10 s of work every 100 s: a 10% duty cycle.
	var lives [][2]float64
	for s := 0.0; s < 10000; s += 100 {
		lives = append(lives, [2]float64{s, s + 10})
	}
	a := advise(t, ledger(lives), 10000)
	if !near(a.DutyCycle, 0.1, 1e-9) || a.Concurrency.Peak != 1 || a.Concurrency.P50 != 0 || a.Concurrency.P95 != 1 {
		t.Errorf("duty %v concurrency %+v", a.DutyCycle, a.Concurrency)
	}
	if a.Recommendation != StayServerless || a.Floor != 0 || a.MonthlySaving != 0 {
		t.Errorf("recommendation %s floor %d saving %v", a.Recommendation, a.Floor, a.MonthlySaving)
	}
	if !near(a.ServerlessCostPerSecond, 0.1, 1e-9) || !near(a.ServerlessMonthly, 0.1*month, 1e-3) {
		t.Errorf("serverless %v/s, %v/month", a.ServerlessCostPerSecond, a.ServerlessMonthly)
	}
	if !strings.Contains(a.Summary, "Stay serverless") {
		t.Errorf("summary %q", a.Summary)
	}
}

func TestAdvisePlateau(t *testing.T) {
	// One container busy 800 s of every 1000 s: 80%.
	var lives [][2]float64
	for s := 0.0; s < 10000; s += 1000 {
		lives = append(lives, [2]float64{s, s + 800})
	}
	a := advise(t, ledger(lives), 10000)
	if !near(a.DutyCycle, 0.8, 1e-9) || a.Concurrency.Peak != 1 || a.Concurrency.P50 != 1 {
		t.Errorf("duty %v concurrency %+v", a.DutyCycle, a.Concurrency)
	}
	if a.Recommendation != Reserve || a.Floor != 1 || a.Setting != "min_containers=1" {
		t.Errorf("recommendation %s floor %d setting %s", a.Recommendation, a.Floor, a.Setting)
	}
	// Serverless 0.8 $/s; one reserved container 0.5 $/s: saves 0.3 $/s.
	if !near(a.MonthlySaving, 0.3*month, 1e-3) || !near(a.RecommendedMonthly, 0.5*month, 1e-3) {
		t.Errorf("saving %v recommended %v", a.MonthlySaving, a.RecommendedMonthly)
	}
	if !strings.Contains(a.Summary, "Reserve 1") {
		t.Errorf("summary %q", a.Summary)
	}
}

func TestAdviseSplit(t *testing.T) {
	// A floor of 2 containers all the time, and 3 more for 50 s of every 1000 s (5%).
	lives := [][2]float64{{0, 10000}, {0, 10000}}
	for s := 0.0; s < 10000; s += 1000 {
		for k := 0; k < 3; k++ {
			lives = append(lives, [2]float64{s + 500, s + 550})
		}
	}
	a := advise(t, ledger(lives), 10000)
	if a.Concurrency.P50 != 2 || a.Concurrency.P95 != 2 || a.Concurrency.Peak != 5 || !near(a.DutyCycle, 1, 1e-9) {
		t.Errorf("concurrency %+v duty %v", a.Concurrency, a.DutyCycle)
	}
	if a.Recommendation != Split || a.Floor != 2 || a.Setting != "min_containers=2" {
		t.Errorf("recommendation %s floor %d setting %s", a.Recommendation, a.Floor, a.Setting)
	}
	// Serverless: 2 + 3×0.05 = 2.15 $/s. Split: 2×0.5 + 0.15 = 1.15 $/s. Saving 1 $/s.
	if !near(a.ServerlessMonthly, 2.15*month, 1e-2) || !near(a.RecommendedMonthly, 1.15*month, 1e-2) || !near(a.MonthlySaving, month, 1e-2) {
		t.Errorf("serverless %v recommended %v saving %v", a.ServerlessMonthly, a.RecommendedMonthly, a.MonthlySaving)
	}
	if !strings.Contains(a.Summary, "min_containers=2") {
		t.Errorf("summary %q", a.Summary)
	}
	// The reserved price named per resource moves the break-even: reserved at 0.9 of
	// serverless, the floor of 2 (busy all the time) still pays, the spikes do not.
	adv := Advise(ledger(lives), advisorPrices, advisorPrices.With("cpu", 0.9), t0, t0.Add(10000*time.Second))
	if adv[0].Floor != 2 || !near(adv[0].BreakEvenUtilization, 0.9, 1e-9) {
		t.Errorf("at 0.9: %+v", adv[0])
	}
}

func TestAdviseGroupsByFunctionAndClass(t *testing.T) {
	recs := ledger([][2]float64{{0, 100}})
	gpu := rec("ap-1", "fc-gpu", 0, t0, 100, 1, nil)
	gpu.Kind, gpu.FunctionID, gpu.FunctionName, gpu.SandboxID, gpu.GPUType, gpu.GPUCount = KindFunction, "fn-1", "work", "", "H100", 1
	sb := rec("ap-1", "sb-1", 0, t0, 100, 1, nil)
	adv := Advise(append(recs, gpu, sb), DefaultPrices(), DefaultPrices().Scaled(0.5), t0, t0.Add(1000*time.Second))
	classes := map[string]bool{}
	for _, a := range adv {
		classes[a.Kind+"/"+a.ID+"/"+a.ResourceClass] = true
	}
	for _, want := range []string{"function/fn-1/cpu", "function/fn-1/H100", "app/ap-1/cpu"} {
		if !classes[want] {
			t.Errorf("no advice for %s: %v", want, classes)
		}
	}
	if adv[0].ResourceClass != "H100" {
		t.Errorf("the dearest group (the GPU) is not first: %+v", adv[0])
	}
}

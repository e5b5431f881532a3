package metering

import (
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// TestBillableRule checks Modal's rule: each second, the larger of request and use, CPU and
// memory separately.
func TestBillableRule(t *testing.T) {
	// One core requested; 4 s busy at 2 cores, then 4 s idle. Memory: 1 GiB requested,
	// 3 GiB used in the first 2 s.
	m := NewMeter("sb-1", 1, 1, "", 0, Sample{At: t0})
	cpu := time.Duration(0)
	for s := 1; s <= 8; s++ {
		if s <= 4 {
			cpu += 2 * time.Second
		}
		mem := int64(GiB / 2)
		if s <= 2 {
			mem = 3 * GiB
		}
		m.Add(Sample{At: t0.Add(time.Duration(s) * time.Second), CPU: cpu, Memory: mem})
	}
	iv, ok := m.Cut(true)
	if !ok || !iv.Final {
		t.Fatalf("cut: %+v %v", iv, ok)
	}
	if iv.Seconds() != 8 || iv.CPUSeconds != 8 {
		t.Errorf("seconds %v cpu %v, want 8 and 8", iv.Seconds(), iv.CPUSeconds)
	}
	// CPU: 4 s at 2 (use wins) + 4 s at 1 (request wins) = 12 core-seconds.
	if !near(iv.BillableCPU, 12, 1e-9) {
		t.Errorf("billable cpu %v, want 12", iv.BillableCPU)
	}
	// Memory: 2 s at 3 GiB + 6 s at 1 GiB (request) = 12 GiB-seconds.
	if !near(iv.BillableMemory, 12, 1e-9) {
		t.Errorf("billable memory %v, want 12", iv.BillableMemory)
	}
	if iv.MemoryPeak != 3*GiB {
		t.Errorf("peak %d", iv.MemoryPeak)
	}
}

func TestMeterCutsNumberedIntervals(t *testing.T) {
	m := NewMeter("sb-1", 0.5, 1, "H100", 1, Sample{At: t0})
	if _, ok := m.Cut(false); ok {
		t.Fatal("an empty interval was cut")
	}
	var ivs []Interval
	for s := 1; s <= 25; s++ {
		m.Add(Sample{At: t0.Add(time.Duration(s) * time.Second), CPU: time.Duration(s) * 100 * time.Millisecond})
		if s%10 == 0 {
			iv, ok := m.Cut(false)
			if !ok {
				t.Fatal("no cut")
			}
			ivs = append(ivs, iv)
		}
	}
	last, _ := m.Cut(true)
	ivs = append(ivs, last)
	total := 0.0
	for i, iv := range ivs {
		if iv.Seq != int64(i) {
			t.Errorf("interval %d has seq %d", i, iv.Seq)
		}
		if i > 0 && !iv.Start.Equal(ivs[i-1].End) {
			t.Errorf("interval %d starts at %v, the last ended at %v", i, iv.Start, ivs[i-1].End)
		}
		if iv.GPUType != "H100" || iv.GPUCount != 1 {
			t.Errorf("gpu %s:%d", iv.GPUType, iv.GPUCount)
		}
		total += iv.Seconds()
	}
	if total != 25 || !ivs[2].Final || ivs[2].Seconds() != 5 {
		t.Errorf("total %v, last %+v", total, ivs[2])
	}
	// A counter that goes backwards counts as nothing used.
	m.Add(Sample{At: t0.Add(26 * time.Second), CPU: 0})
	if iv, _ := m.Cut(false); iv.CPUSeconds != 0 || !near(iv.BillableCPU, 0.5, 1e-9) {
		t.Errorf("after a reset: %+v", iv)
	}
}

func TestValidate(t *testing.T) {
	good := Interval{ContainerID: "sb-1", Start: t0, End: t0.Add(10 * time.Second), CPURequest: 1, MemoryGiB: 1}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Interval){
		"no id":        func(iv *Interval) { iv.ContainerID = "" },
		"negative seq": func(iv *Interval) { iv.Seq = -1 },
		"backwards":    func(iv *Interval) { iv.End = t0.Add(-time.Second) },
		"too long":     func(iv *Interval) { iv.End = t0.Add(2 * time.Hour) },
		"NaN":          func(iv *Interval) { iv.CPUSeconds = math.NaN() },
		"negative":     func(iv *Interval) { iv.BillableCPU = -1 },
		"inf":          func(iv *Interval) { iv.BillableMemory = math.Inf(1) },
		"gpus":         func(iv *Interval) { iv.GPUCount = 1000 },
	} {
		iv := good
		mod(&iv)
		if iv.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPricing(t *testing.T) {
	p := DefaultPrices()
	iv := Interval{Start: t0, End: t0.Add(100 * time.Second), BillableCPU: 200, BillableMemory: 400, GPUType: "h100", GPUCount: 2}
	c := p.Cost(iv)
	want := Costs{"cpu": 200 * 0.0000131, "memory": 400 * 0.00000222, "gpu:H100": 2 * 100 * 0.001097}
	for k, v := range want {
		if !near(c[k], v, 1e-12) {
			t.Errorf("%s: %v, want %v", k, c[k], v)
		}
	}
	if !near(c.Total(), want.Total(), 1e-12) {
		t.Errorf("total %v", c.Total())
	}
	// An unknown GPU costs as the dearest known one.
	if p.GPURate("X9000") != p.GPUPerSecond["B200"] {
		t.Errorf("unknown gpu rate %v", p.GPURate("X9000"))
	}
	if Money(0.0012345678912) != "0.001234568" || Money(0) != "0.0" || Money(2) != "2.0" {
		t.Errorf("money: %s %s %s", Money(0.0012345678912), Money(0), Money(2))
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]struct {
		res string
		per float64
	}{
		"H100=2.50/h":    {"H100", 2.5 / 3600},
		"h100=$3.6/h":    {"H100", 0.001},
		"cpu=0.03/h":     {"cpu", 0.03 / 3600},
		"memory=0.001/s": {"memory", 0.001},
		"A10G=720/mo":    {"A10G", 720.0 / (30 * 86400)},
		"L4=1":           {"L4", 1.0 / 3600},
	} {
		res, per, err := ParseRate(in)
		if err != nil || res != want.res || !near(per, want.per, 1e-15) {
			t.Errorf("%s: %s %v %v", in, res, per, err)
		}
	}
	for _, bad := range []string{"H100", "=2/h", "H100=x/h", "H100=-1/h", "H100=2/week", "H100=NaN/h"} {
		if _, _, err := ParseRate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLoadPrices(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/prices.json"
	if err := writeFile(path, `{"cpu_per_core_second": 0.00002, "gpu_per_second": {"h100": 0.0005}}`); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.CPUPerCoreSecond != 0.00002 || p.GPUPerSecond["H100"] != 0.0005 || p.MemoryPerGiBSecond != DefaultPrices().MemoryPerGiBSecond ||
		p.GPUPerSecond["A10G"] != DefaultPrices().GPUPerSecond["A10G"] || !strings.Contains(p.Source, path) {
		t.Errorf("loaded %+v", p)
	}
	if err := writeFile(path, `{"cpu_per_core_second": -1}`); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrices(path); err == nil {
		t.Error("a negative price was accepted")
	}
	if err := writeFile(path, `not json`); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrices(path); err == nil {
		t.Error("a broken file was accepted")
	}
}

func rec(app, container string, seq int64, start time.Time, secs float64, cpu float64, tags map[string]string) Record {
	end := start.Add(time.Duration(secs * float64(time.Second)))
	return Record{Interval: Interval{ContainerID: container, Seq: seq, Start: start, End: end, CPURequest: cpu, MemoryGiB: 1,
		BillableCPU: cpu * secs, BillableMemory: secs, CPUSeconds: secs / 2},
		WorkspaceID: "ws-a", Kind: KindSandbox, AppID: app, AppName: "name-" + app, SandboxID: container, Tags: tags}
}

// TestReportBucketing checks rows per object and interval, an interval split across two
// buckets by time, full intervals only, and tag selection.
func TestReportBucketing(t *testing.T) {
	p := Prices{CPUPerCoreSecond: 1, MemoryPerGiBSecond: 0, GPUPerSecond: map[string]float64{}}
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	recs := []Record{
		rec("ap-1", "sb-1", 0, day.Add(10*time.Hour), 100, 1, map[string]string{"team": "a", "x": "1"}),
		// 23:59:00 for 120 s: 60 s on the 1st, 60 on the 2nd.
		rec("ap-1", "sb-2", 0, day.Add(24*time.Hour-time.Minute), 120, 2, map[string]string{"team": "a"}),
		rec("ap-2", "sb-3", 0, day.Add(5*time.Hour), 10, 1, nil),
		// On the 3rd: outside a report that ends on the 3rd.
		rec("ap-2", "sb-4", 0, day.Add(49*time.Hour), 10, 1, nil),
	}
	start, end, err := ReportWindow(day.Add(3*time.Hour), day.Add(48*time.Hour+5*time.Minute), t0, Daily, nil)
	if err != nil || !start.Equal(day) || !end.Equal(day.Add(48*time.Hour)) {
		t.Fatalf("window %v %v %v", start, end, err)
	}
	rows := Report(recs, p, start, end, Daily, []string{"team"}, nil)
	got := map[string]string{}
	for _, r := range rows {
		got[r.ObjectID+"@"+r.IntervalStart.Format("01-02")] = r.Cost
		if r.EnvironmentName != "main" {
			t.Errorf("environment %q", r.EnvironmentName)
		}
		if r.ObjectID == "ap-1" && (r.Tags["team"] != "a" || r.Tags["x"] != "" || r.Description != "name-ap-1") {
			t.Errorf("row %+v", r)
		}
		if r.ObjectID == "ap-2" && len(r.Tags) != 0 {
			t.Errorf("ap-2 tags %v", r.Tags)
		}
	}
	want := map[string]string{"ap-1@03-01": "220.0", "ap-1@03-02": "120.0", "ap-2@03-01": "10.0"}
	if len(got) != len(want) {
		t.Errorf("rows %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: cost %s, want %s (all: %v)", k, got[k], v, got)
		}
	}
	// Hourly: sb-2's two minutes fall in two hours.
	rows = Report(recs[1:2], p, day, day.Add(48*time.Hour), Hourly, []string{"*"}, nil)
	if len(rows) != 2 || rows[0].Cost != "120.0" || rows[1].Cost != "120.0" || rows[0].Tags["team"] != "a" {
		t.Errorf("hourly rows %+v", rows)
	}
	if rows[0].CostByResource["cpu"] != "120.0" {
		t.Errorf("by resource %v", rows[0].CostByResource)
	}
	if _, _, err := ReportWindow(time.Time{}, time.Time{}, t0, Daily, nil); err == nil {
		t.Error("no start accepted")
	}
	if _, err := ParseResolution("w"); err == nil {
		t.Error("resolution w accepted")
	}
}

func TestSummarize(t *testing.T) {
	p := Prices{CPUPerCoreSecond: 1, GPUPerSecond: map[string]float64{}}
	recs := []Record{
		rec("ap-1", "sb-1", 0, t0, 10, 1, map[string]string{"team": "a"}),
		rec("ap-1", "sb-1", 1, t0.Add(10*time.Second), 10, 1, map[string]string{"team": "a"}),
		rec("ap-2", "sb-2", 0, t0, 10, 3, nil),
	}
	rows := Summarize(recs, p, t0.Add(-time.Hour), t0.Add(time.Hour), ByApp, nil)
	if len(rows) != 2 || rows[0].ID != "ap-2" || rows[0].Cost != "30.0" || rows[1].WallSeconds != 20 || rows[1].Containers != 1 {
		t.Errorf("by app: %+v", rows)
	}
	rows = Summarize(recs, p, t0.Add(-time.Hour), t0.Add(15*time.Second), BySandbox, nil)
	if len(rows) != 2 || rows[1].ID != "sb-1" || rows[1].WallSeconds != 15 || rows[1].BillableCPUSeconds != 15 {
		t.Errorf("by sandbox, clipped: %+v", rows)
	}
	rows = Summarize(recs, p, t0.Add(-time.Hour), time.Time{}, ByTag, nil)
	if len(rows) != 2 || rows[0].ID != "(untagged)" || rows[1].ID != "team=a" {
		t.Errorf("by tag: %+v", rows)
	}
	rows = Summarize(recs, p, t0.Add(-time.Hour), time.Time{}, ByDay, nil)
	if len(rows) != 1 || rows[0].ID != "2026-03-01" || rows[0].Cost != "50.0" {
		t.Errorf("by day: %+v", rows)
	}
}

func TestLiveCost(t *testing.T) {
	p := Prices{CPUPerCoreSecond: 1, GPUPerSecond: map[string]float64{}}
	recs := []Record{rec("ap-1", "sb-1", 0, t0, 10, 2, nil)}
	now := t0.Add(15 * time.Second)
	l := LiveCost("sb-1", recs, p, map[string]Interval{"sb-1": {Start: t0, CPURequest: 2}}, now)
	if l.Cost != "20.0" || l.EstimatedCost != "30.0" || !l.Running || !l.MeteredUntil.Equal(t0.Add(10*time.Second)) {
		t.Errorf("live %+v", l)
	}
	l = LiveCost("sb-1", recs, p, nil, now)
	if l.Cost != "20.0" || l.EstimatedCost != "20.0" || l.Running {
		t.Errorf("ended %+v", l)
	}
}

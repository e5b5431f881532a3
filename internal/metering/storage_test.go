package metering

import (
	"strings"
	"testing"
	"time"
)

// TestStorageRecords: a reading bills each object's size over its slot (from its creation
// when that falls in the slot), numbered by the slot so that a second reading of the same
// slot is the same record; empty and nameless objects are left out.
func TestStorageRecords(t *testing.T) {
	period := time.Minute
	k := StorageSlot(t0.Add(90*time.Second), period) // the slot ending at t0+60s
	if end := time.Unix(0, k*int64(period)).UTC(); !end.Equal(t0.Add(time.Minute)) {
		t.Fatalf("slot %d ends %v", k, end)
	}
	objs := []StorageObject{
		{ID: "vo-1", WorkspaceID: "ws-a", Class: StorageVolume, Name: "data", Bytes: 2 * GiB},
		{ID: "vo-2", WorkspaceID: "ws-a", Class: StorageVolume, Name: "new", Bytes: GiB, Since: t0.Add(45 * time.Second)},
		{ID: "vo-3", WorkspaceID: "ws-a", Class: StorageVolume, Bytes: 0},
		{ID: "vo-4", WorkspaceID: "ws-a", Class: StorageVolume, Bytes: GiB, Since: t0.Add(2 * time.Minute)}, // made after the slot
	}
	recs := StorageRecords(objs, k, period)
	if len(recs) != 2 {
		t.Fatalf("records %+v", recs)
	}
	if r := recs[0]; r.Seq != k || r.Kind != KindStorage || r.StorageGiBSeconds != 120 || r.Seconds() != 60 || r.Validate() != nil {
		t.Errorf("vo-1: %+v", r)
	}
	if r := recs[1]; r.StorageGiBSeconds != 15 || !r.Start.Equal(t0.Add(45*time.Second)) {
		t.Errorf("vo-2: %+v", r)
	}
	again := StorageRecords(objs, k, period)
	if again[0].ContainerID != recs[0].ContainerID || again[0].Seq != recs[0].Seq {
		t.Errorf("a second reading of the slot is another record: %+v", again[0])
	}

	// Priced per class; a class the table lacks is priced as the dearest.
	p := DefaultPrices()
	c := p.Cost(recs[0].Interval)
	want := 120 * 0.09 / (30 * 86400)
	if len(c) != 1 || !near(c[StorageResource(StorageVolume)], want, 1e-15) {
		t.Errorf("cost %v, want %v for storage:volume only", c, want)
	}
	if p.StorageRate("tape") != p.StorageRate(StorageVolume) || p.StorageRate(StorageImage) != 0 {
		t.Errorf("rates: tape %v, image %v", p.StorageRate("tape"), p.StorageRate(StorageImage))
	}

	// Usage counts GiB-seconds, no container and no wall time; reports leave out what is
	// free, and the advisor ignores storage.
	free := StorageRecords([]StorageObject{{ID: "ws-a/image", WorkspaceID: "ws-a", Class: StorageImage, Bytes: GiB}}, k, period)
	all := append(recs, free...)
	rows := Summarize(all, p, t0.Add(-time.Hour), t0.Add(time.Hour), ByApp, nil)
	got := map[string]UsageRow{}
	for _, r := range rows {
		got[r.ID] = r
	}
	if r := got["vo-1"]; r.StorageGiBSeconds != 120 || r.Containers != 0 || r.WallSeconds != 0 || r.Name != "data" || r.CostByResource["storage:volume"] == "" {
		t.Errorf("usage of vo-1: %+v", r)
	}
	if r := got["ws-a/image"]; r.StorageGiBSeconds != 60 || r.Cost != "0.0" {
		t.Errorf("usage of image uploads: %+v", r)
	}
	if rows := Summarize(all, p, t0.Add(-time.Hour), t0.Add(time.Hour), BySandbox, nil); len(rows) != 0 {
		t.Errorf("storage among containers: %+v", rows)
	}
	rep := Report(all, p, t0.Add(-time.Hour), t0.Add(time.Hour), Hourly, nil, nil)
	for _, r := range rep {
		if r.ObjectID == "ws-a/image" {
			t.Errorf("a free object in the report: %+v", r)
		}
	}
	if len(rep) != 2 {
		t.Errorf("report %+v, want vo-1 and vo-2", rep)
	}
	if adv := Advise(all, p, p.Scaled(0.5), t0.Add(-time.Hour), t0.Add(time.Hour)); len(adv) != 0 {
		t.Errorf("advice on storage: %+v", adv)
	}
}

// TestParseTZ: UTC, offsets in Modal's forms, IANA names; bad ones are refused with the forms.
func TestParseTZ(t *testing.T) {
	for in, off := range map[string]int{"": 0, "UTC": 0, "5": 5 * 3600, "-4": -4 * 3600, "+05:30": 5*3600 + 1800, "-0330": -(3*3600 + 1800), "+14": 14 * 3600} {
		loc, err := ParseTZ(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if _, got := t0.In(loc).Zone(); got != off {
			t.Errorf("%q: offset %d, want %d", in, got, off)
		}
	}
	if loc, err := ParseTZ("America/New_York"); err != nil || loc.String() != "America/New_York" {
		t.Errorf("IANA: %v %v", loc, err)
	}
	for _, bad := range []string{"local", "+15", "5:75", "Mars/Olympus", "1x"} {
		if _, err := ParseTZ(bad); err == nil || !strings.Contains(err.Error(), "tz") {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}

// TestReportInZone: with a zone, days start at its midnight (given in UTC), a DST day is 23
// hours, and usage by day names the zone's dates.
func TestReportInZone(t *testing.T) {
	ny, err := ParseTZ("America/New_York")
	if err != nil {
		t.Skip("no zone database:", err)
	}
	p := Prices{CPUPerCoreSecond: 1, GPUPerSecond: map[string]float64{}}
	// 2026-03-08 is the spring-forward day in New York: 00:00 EST = 05:00Z, next midnight
	// 00:00 EDT = 2026-03-09 04:00Z.
	day := time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC)
	recs := []Record{
		rec("ap-1", "sb-1", 0, day.Add(-30*time.Minute), 3600, 1, nil),             // 30 min on the 7th, 30 on the 8th
		rec("ap-1", "sb-2", 0, day.Add(22*time.Hour+30*time.Minute), 3600, 1, nil), // 30 min on the 8th, 30 on the 9th
	}
	start, end, err := ReportWindow(day.Add(-24*time.Hour), day.Add(48*time.Hour), t0, Daily, ny)
	if err != nil {
		t.Fatal(err)
	}
	if !start.Equal(time.Date(2026, 3, 7, 5, 0, 0, 0, time.UTC)) || !end.Equal(time.Date(2026, 3, 10, 4, 0, 0, 0, time.UTC)) {
		t.Fatalf("window %v – %v", start, end)
	}
	rows := Report(recs, p, start, end, Daily, nil, ny)
	want := map[time.Time]string{
		time.Date(2026, 3, 7, 5, 0, 0, 0, time.UTC): "1800.0",
		time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC): "3600.0", // 23 hours long
		time.Date(2026, 3, 9, 4, 0, 0, 0, time.UTC): "1800.0",
	}
	if len(rows) != len(want) {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if want[r.IntervalStart] != r.Cost || r.IntervalStart.Location() != time.UTC {
			t.Errorf("row %v cost %s, want %q", r.IntervalStart, r.Cost, want[r.IntervalStart])
		}
	}
	days := Summarize(recs, p, start, end, ByDay, ny)
	if len(days) != 3 || days[0].ID != "2026-03-07" || days[1].ID != "2026-03-08" || days[1].WallSeconds != 3600 || days[2].ID != "2026-03-09" {
		t.Errorf("usage by day in New York: %+v", days)
	}
	// UTC days split the same usage otherwise: each sandbox within one UTC day.
	if utc := Summarize(recs, p, start, end, ByDay, nil); len(utc) != 2 || utc[0].ID != "2026-03-08" || utc[0].WallSeconds != 3600 || utc[1].ID != "2026-03-09" {
		t.Errorf("usage by UTC day: %+v", utc)
	}
}

// TestLoadPricesStorageAndReserved: the price file sets storage prices per class and the
// advisor's reserved prices in --reserved's form.
func TestLoadPricesStorageAndReserved(t *testing.T) {
	path := t.TempDir() + "/prices.json"
	if err := writeFile(path, `{"storage_per_gib_second": {"volume": 1e-8, "image": 2e-9}, "reserved": {"H100": "2.50/h", "cpu": "0.01/h"}}`); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.StorageRate(StorageVolume) != 1e-8 || p.StorageRate(StorageImage) != 2e-9 || p.StorageRate(StorageDictQueu) != 0 ||
		!near(p.Reserved["H100"], 2.5/3600, 1e-15) || !near(p.Reserved["cpu"], 0.01/3600, 1e-15) {
		t.Errorf("loaded %+v", p)
	}
	for _, bad := range []string{`{"reserved": {"H100": "cheap"}}`, `{"storage_per_gib_second": {"volume": -1}}`} {
		if err := writeFile(path, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadPrices(path); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

package metering

import (
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

// Kinds of metered containers.
const (
	KindSandbox    = "sandbox"
	KindFunction   = "function"
	KindImageBuild = "image_build"
)

// BilledToTag, on an image build's container (in the system workspace), names the workspace
// whose request made it run: the build is billed there.
const BilledToTag = "gust.billed_to"

// ImageBuildsObject is the report object that image builds are billed under.
const ImageBuildsObject = "image-builds"

// Record is a recorded interval with whom it belongs to: the workspace that pays, the app,
// function and sandbox it ran for, and the tags (its app's under its sandbox's) it had when
// recorded.
type Record struct {
	Interval
	WorkspaceID  string            `json:"workspace_id"`
	Kind         string            `json:"kind"`
	AppID        string            `json:"app_id"`
	AppName      string            `json:"app_name"`
	FunctionID   string            `json:"function_id,omitempty"`
	FunctionName string            `json:"function_name,omitempty"`
	SandboxID    string            `json:"sandbox_id,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
	// EndedBy says why the server closed the container's usage itself with this (final, empty)
	// interval, e.g. that its worker was lost; empty for what a worker reported.
	EndedBy string `json:"ended_by,omitempty"`
}

// object is the report object a record is billed under (Modal's object_id, description): its
// app, or image builds.
func (r Record) object() (id, description string) {
	switch r.Kind {
	case KindImageBuild:
		return ImageBuildsObject, "image builds"
	case KindStorage:
		return r.ContainerID, r.AppName
	}
	return r.AppID, r.AppName
}

// clip scales a record's additive figures to the part of it inside [from, to); ok is false
// when none of it is.
func (r Record) clip(from, to time.Time) (Record, bool) {
	s, e := r.Start, r.End
	if s.Before(from) {
		s = from
	}
	if !to.IsZero() && e.After(to) {
		e = to
	}
	full := r.Seconds()
	if full == 0 {
		// A final interval of no time holds nothing to bill but belongs where it falls.
		return r, !r.Start.Before(from) && (to.IsZero() || r.Start.Before(to))
	}
	if !e.After(s) {
		return r, false
	}
	if s.Equal(r.Start) && e.Equal(r.End) {
		return r, true
	}
	f := e.Sub(s).Seconds() / full
	r.Start, r.End = s, e
	r.CPUSeconds *= f
	r.BillableCPU *= f
	r.BillableMemory *= f
	r.StorageGiBSeconds *= f
	return r, true
}

// Resolution is a report's bucket width.
type Resolution string

// The resolutions, as Modal names them.
const (
	Daily  Resolution = "d"
	Hourly Resolution = "h"
)

// ParseResolution checks a resolution.
func ParseResolution(s string) (Resolution, error) {
	switch Resolution(s) {
	case "", Daily:
		return Daily, nil
	case Hourly:
		return Hourly, nil
	}
	return "", errdefs.Invalid("resolution must be \"d\" (daily) or \"h\" (hourly), got %q", s)
}

// Width is the bucket's length.
func (r Resolution) Width() time.Duration {
	if r == Hourly {
		return time.Hour
	}
	return 24 * time.Hour
}

// Floor is the start of the bucket t falls in (UTC).
func (r Resolution) Floor(t time.Time) time.Time { return r.FloorIn(t, time.UTC) }

// FloorIn is the start of the bucket t falls in, with days and hours as loc's clocks read
// them (nil is UTC); it is returned in UTC.
func (r Resolution) FloorIn(t time.Time, loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	l := t.In(loc)
	y, m, d := l.Date()
	if r == Hourly {
		return time.Date(y, m, d, l.Hour(), 0, 0, 0, loc).UTC()
	}
	return time.Date(y, m, d, 0, 0, 0, 0, loc).UTC()
}

// next is the start of the bucket after the one starting at b: a day in loc may be 23 or
// 25 hours long.
func (r Resolution) next(b time.Time, loc *time.Location) time.Time {
	if r == Hourly || loc == nil || loc == time.UTC {
		return b.Add(r.Width())
	}
	return r.FloorIn(b.Add(36*time.Hour), loc)
}

// ParseTZ reads a time zone for reports' days and hours: "" or UTC, an offset from UTC in
// hours (5, -4, +05:30, -0330), or an IANA name (America/New_York, from the system's zone
// database). "local" is the client's own zone, which only the client knows: it sends its name
// or offset instead.
func ParseTZ(s string) (*time.Location, error) {
	s = strings.TrimSpace(s)
	switch strings.ToUpper(s) {
	case "", "UTC", "Z", "GMT":
		return time.UTC, nil
	case "LOCAL":
		return nil, errdefs.Invalid("tz \"local\" is the client's zone: send its IANA name (Europe/Paris) or offset (+01:00)")
	}
	if s[0] == '+' || s[0] == '-' || (s[0] >= '0' && s[0] <= '9') {
		sign, rest := 1, s
		if rest[0] == '+' || rest[0] == '-' {
			if rest[0] == '-' {
				sign = -1
			}
			rest = rest[1:]
		}
		hh, mm, colon := strings.Cut(rest, ":")
		if !colon && len(rest) == 4 {
			hh, mm = rest[:2], rest[2:]
		}
		h, err1 := strconv.Atoi(hh)
		m := 0
		var err2 error
		if mm != "" {
			m, err2 = strconv.Atoi(mm)
		}
		if err1 != nil || err2 != nil || len(hh) > 2 || h > 14 || m < 0 || m > 59 {
			return nil, errdefs.Invalid("tz %q: an offset is hours from UTC, -12 to +14, as 5, -4, +05:30 or -0330", s)
		}
		off := sign * (h*3600 + m*60)
		name := fmt.Sprintf("%+03d:%02d", sign*h, m)
		if sign < 0 && h == 0 {
			name = fmt.Sprintf("-00:%02d", m)
		}
		return time.FixedZone(name, off), nil
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		return nil, errdefs.Invalid("tz %q is not a time zone: use UTC, an offset (5, -4, +05:30) or an IANA name (America/New_York)", s)
	}
	return loc, nil
}

// ReportRow is one row of a billing report, with Modal's fields (WorkspaceBillingReportItem):
// an object's cost over one interval. Costs are decimal strings, as Python's Decimal reads them.
type ReportRow struct {
	ObjectID        string            `json:"object_id"`
	Description     string            `json:"description"`
	EnvironmentName string            `json:"environment_name"`
	IntervalStart   time.Time         `json:"interval_start"`
	Cost            string            `json:"cost"`
	CostByResource  map[string]string `json:"cost_by_resource"`
	Tags            map[string]string `json:"tags"`
}

// EnvironmentName is the one environment gust has, named as Modal names its default.
const EnvironmentName = "main"

// Money formats dollars as a decimal string to the nano-dollar, without trailing zeros.
func Money(v float64) string {
	s := strconv.FormatFloat(v, 'f', 9, 64)
	s = strings.TrimRight(s, "0")
	if strings.HasSuffix(s, ".") {
		s += "0"
	}
	return s
}

// ReportWindow rounds a report's range as Modal does: start down to its bucket, end (exclusive;
// zero is now) down to a bucket, so that only full intervals are reported.
func ReportWindow(start, end, now time.Time, res Resolution, loc *time.Location) (time.Time, time.Time, error) {
	if start.IsZero() {
		return start, end, errdefs.Invalid("start is required (an RFC 3339 time or a date such as 2026-01-01)")
	}
	if end.IsZero() {
		end = now
	}
	s, e := res.FloorIn(start, loc), res.FloorIn(end, loc)
	if !e.After(s) && !end.After(start) {
		return s, e, errdefs.Invalid("end (%s) must be after start (%s)", end.Format(time.RFC3339), start.Format(time.RFC3339))
	}
	return s, e, nil
}

// Report buckets records into Modal's billing report rows over [start, end): one row per
// object and interval, its cost broken down by resource, and the tags named in tagNames ("*":
// all) that the object had in that interval. Rows are ordered by interval, then object.
// Buckets are days or hours on loc's clocks (nil: UTC); their starts are given in UTC. Stored
// objects priced at nothing (image uploads and Dicts by default) have no rows.
func Report(recs []Record, p Prices, start, end time.Time, res Resolution, tagNames []string, loc *time.Location) []ReportRow {
	type key struct {
		obj    string
		bucket time.Time
	}
	type acc struct {
		desc  string
		costs Costs
		tags  map[string]string
	}
	all := len(tagNames) == 1 && tagNames[0] == "*"
	want := map[string]bool{}
	for _, t := range tagNames {
		want[t] = true
	}
	rows := map[key]*acc{}
	for _, r := range recs {
		if r.Kind == KindStorage && p.StorageRate(r.StorageClass) == 0 {
			continue
		}
		for b := res.FloorIn(r.Start, loc); b.Before(end) && !b.After(r.End); b = res.next(b, loc) {
			part, ok := r.clip(maxTime(b, start), minTime(res.next(b, loc), end))
			if !ok {
				continue
			}
			id, desc := r.object()
			k := key{id, b}
			a := rows[k]
			if a == nil {
				a = &acc{desc: desc, costs: Costs{}, tags: map[string]string{}}
				rows[k] = a
			}
			a.costs.Add(p.Cost(part.Interval))
			for tk, tv := range r.Tags {
				if all || want[tk] {
					a.tags[tk] = tv
				}
			}
			if r.Seconds() == 0 {
				break
			}
		}
	}
	out := make([]ReportRow, 0, len(rows))
	for k, a := range rows {
		row := ReportRow{ObjectID: k.obj, Description: a.desc, EnvironmentName: EnvironmentName, IntervalStart: k.bucket,
			Cost: Money(a.costs.Total()), CostByResource: map[string]string{}, Tags: a.tags}
		for res, v := range a.costs {
			row.CostByResource[res] = Money(v)
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].IntervalStart.Equal(out[j].IntervalStart) {
			return out[i].IntervalStart.Before(out[j].IntervalStart)
		}
		return out[i].ObjectID < out[j].ObjectID
	})
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if b.IsZero() || a.Before(b) {
		return a
	}
	return b
}

// Group is how Summarize groups usage.
type Group string

// The groupings of `gust usage --by`.
const (
	ByApp      Group = "app"
	ByFunction Group = "function"
	BySandbox  Group = "sandbox"
	ByTag      Group = "tag"
	ByDay      Group = "day"
)

// ParseGroup checks a grouping.
func ParseGroup(s string) (Group, error) {
	switch g := Group(s); g {
	case ByApp, ByFunction, BySandbox, ByTag, ByDay:
		return g, nil
	case "":
		return ByApp, nil
	}
	return "", errdefs.Invalid("by must be app, function, sandbox, tag or day, got %q", s)
}

// UsageRow is one group's raw usage: seconds, resource units and cost, every field named in
// its unit.
type UsageRow struct {
	// ID is the group's: an app, function or sandbox ID, "key=value" of a tag, or a day.
	ID                 string            `json:"id"`
	Name               string            `json:"name,omitempty"`
	Containers         int               `json:"containers"`
	WallSeconds        float64           `json:"wall_seconds"`
	CPUSeconds         float64           `json:"cpu_seconds"`
	BillableCPUSeconds float64           `json:"billable_cpu_core_seconds"`
	BillableMemGiBSecs float64           `json:"billable_memory_gib_seconds"`
	GPUSeconds         float64           `json:"gpu_seconds"`
	StorageGiBSeconds  float64           `json:"storage_gib_seconds"`
	MemoryPeakBytes    int64             `json:"memory_peak_bytes"`
	Cost               string            `json:"cost"`
	CostByResource     map[string]string `json:"cost_by_resource"`
	costs              Costs
	containers         map[string]bool
}

// Summarize totals records over [since, until) (until zero: open) into one row per group,
// dearest first. A record with several tags counts under each; one without under "(untagged)".
// Days (ByDay) are loc's (nil: UTC).
func Summarize(recs []Record, p Prices, since, until time.Time, by Group, loc *time.Location) []UsageRow {
	rows := map[string]*UsageRow{}
	add := func(id, name string, r Record) {
		u := rows[id]
		if u == nil {
			u = &UsageRow{ID: id, Name: name, costs: Costs{}, containers: map[string]bool{}}
			rows[id] = u
		}
		u.costs.Add(p.Cost(r.Interval))
		if r.Kind == KindStorage {
			// A stored object is no container: only its GiB-seconds and cost count.
			u.StorageGiBSeconds += r.StorageGiBSeconds
			return
		}
		u.containers[r.ContainerID] = true
		u.WallSeconds += r.Seconds()
		u.CPUSeconds += r.CPUSeconds
		u.BillableCPUSeconds += r.BillableCPU
		u.BillableMemGiBSecs += r.BillableMemory
		u.GPUSeconds += float64(r.GPUCount) * r.Seconds()
		u.MemoryPeakBytes = max(u.MemoryPeakBytes, r.MemoryPeak)
	}
	for _, r := range recs {
		if by == ByDay {
			for b := Daily.FloorIn(r.Start, loc); !b.After(r.End); b = Daily.next(b, loc) {
				if part, ok := r.clip(maxTime(b, since), minTime(Daily.next(b, loc), until)); ok {
					day := b
					if loc != nil {
						day = b.In(loc)
					}
					add(day.Format("2006-01-02"), "", part)
				}
				if r.Seconds() == 0 {
					break
				}
			}
			continue
		}
		part, ok := r.clip(since, until)
		if !ok {
			continue
		}
		switch by {
		case ByApp:
			id, name := part.object()
			add(id, name, part)
		case ByFunction:
			if part.FunctionID == "" {
				continue
			}
			add(part.FunctionID, part.FunctionName, part)
		case BySandbox:
			if part.Kind != KindStorage {
				add(part.ContainerID, sandboxName(part), part)
			}
		case ByTag:
			if len(part.Tags) == 0 {
				add("(untagged)", "", part)
			}
			for _, k := range slicesSorted(part.Tags) {
				add(k+"="+part.Tags[k], "", part)
			}
		}
	}
	out := make([]UsageRow, 0, len(rows))
	for _, u := range rows {
		u.Containers = len(u.containers)
		u.Cost = Money(u.costs.Total())
		u.CostByResource = map[string]string{}
		for k, v := range u.costs {
			u.CostByResource[k] = Money(v)
		}
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool {
		ci, cj := out[i].costs.Total(), out[j].costs.Total()
		if by == ByDay || ci == cj {
			return out[i].ID < out[j].ID
		}
		return ci > cj
	})
	return out
}

func sandboxName(r Record) string {
	switch r.Kind {
	case KindFunction:
		return fmt.Sprintf("%s (function %s)", r.AppName, r.FunctionName)
	case KindImageBuild:
		return "image build"
	}
	return r.AppName
}

func slicesSorted(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Live is what a running sandbox, function or app has cost so far: Confirmed is the cost of
// the intervals recorded, up to MeteredUntil; Estimated adds the time since at the rate of
// what was requested, while Running.
type Live struct {
	ID         string `json:"id"`
	Running    bool   `json:"running"`
	Containers int    `json:"containers"`
	// Intervals counts the intervals recorded; Closed says every container's last one is
	// among them (the figure is final for the containers that ended).
	Intervals      int               `json:"intervals"`
	Closed         bool              `json:"closed"`
	MeteredUntil   *time.Time        `json:"metered_until"`
	WallSeconds    float64           `json:"wall_seconds"`
	CPUSeconds     float64           `json:"cpu_seconds"`
	Cost           string            `json:"cost"`
	EstimatedCost  string            `json:"estimated_cost"`
	CostByResource map[string]string `json:"cost_by_resource"`
}

// LiveCost totals a set of records and estimates the unrecorded tail of the containers in
// running (ID → its requested CPU, memory and GPUs, and when it started) at their requested rate.
func LiveCost(id string, recs []Record, p Prices, running map[string]Interval, now time.Time) Live {
	l := Live{ID: id, Running: len(running) > 0, CostByResource: map[string]string{}}
	costs := Costs{}
	last := map[string]time.Time{}
	seen := map[string]bool{}
	final := map[string]bool{}
	for _, r := range recs {
		seen[r.ContainerID] = true
		final[r.ContainerID] = final[r.ContainerID] || r.Final
		l.Intervals++
		costs.Add(p.Cost(r.Interval))
		l.WallSeconds += r.Seconds()
		l.CPUSeconds += r.CPUSeconds
		if r.End.After(last[r.ContainerID]) {
			last[r.ContainerID] = r.End
		}
		if l.MeteredUntil == nil || r.End.After(*l.MeteredUntil) {
			t := r.End
			l.MeteredUntil = &t
		}
	}
	est := maps.Clone(costs)
	for cid, req := range running {
		seen[cid] = true
		from := req.Start
		if t, ok := last[cid]; ok && t.After(from) {
			from = t
		}
		if now.After(from) {
			tail := req
			tail.Start, tail.End = from, now
			d := tail.Seconds()
			tail.BillableCPU, tail.BillableMemory = req.CPURequest*d, req.MemoryGiB*d
			est.Add(p.Cost(tail))
		}
	}
	l.Containers = len(seen)
	l.Closed = len(final) > 0
	for cid := range seen {
		l.Closed = l.Closed && final[cid]
	}
	l.Cost, l.EstimatedCost = Money(costs.Total()), Money(est.Total())
	for k, v := range costs {
		l.CostByResource[k] = Money(v)
	}
	return l
}

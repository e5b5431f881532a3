package store

import (
	"context"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/metering"
)

// TestUsageIdempotent checks that an interval recorded twice (a retry, a restarted worker's
// spool) counts once, and the range query.
func TestUsageIdempotent(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	mk := func(c string, seq int64, ws string) metering.Record {
		s := t0.Add(time.Duration(seq) * 10 * time.Second)
		return metering.Record{Interval: metering.Interval{ContainerID: c, Seq: seq, Start: s, End: s.Add(10 * time.Second), BillableCPU: 10},
			WorkspaceID: ws, AppID: "ap-1", Kind: metering.KindSandbox, Tags: map[string]string{"k": "v"}}
	}
	fresh, err := st.RecordUsage(ctx, []metering.Record{mk("sb-1", 0, "ws-a"), mk("sb-1", 1, "ws-a"), mk("sb-2", 0, "ws-b")})
	if err != nil || len(fresh) != 3 {
		t.Fatalf("first: %d %v", len(fresh), err)
	}
	fresh, err = st.RecordUsage(ctx, []metering.Record{mk("sb-1", 1, "ws-a"), mk("sb-1", 2, "ws-a"), mk("sb-1", 0, "ws-a")})
	if err != nil || len(fresh) != 1 || fresh[0].Seq != 2 {
		t.Fatalf("again: %d new, %v; want 1 (seq 2)", len(fresh), err)
	}
	recs, err := st.ListUsage(ctx, UsageFilter{WorkspaceID: "ws-a"})
	if err != nil || len(recs) != 3 {
		t.Fatalf("ws-a has %d intervals (%v), want 3", len(recs), err)
	}
	if recs[0].Tags["k"] != "v" || recs[2].Seq != 2 {
		t.Errorf("records %+v", recs)
	}
	recs, _ = st.ListUsage(ctx, UsageFilter{WorkspaceID: "ws-a", From: t0.Add(15 * time.Second), To: t0.Add(25 * time.Second)})
	if len(recs) != 2 {
		t.Errorf("range: %d intervals, want 2 (seq 1 and 2)", len(recs))
	}
	recs, _ = st.ListUsage(ctx, UsageFilter{WorkspaceID: "ws-a", ContainerID: "sb-2"})
	if len(recs) != 0 {
		t.Errorf("another workspace's container listed")
	}
	if err := st.SetAppTags(ctx, "ap-1", map[string]string{"team": "x"}); err != nil {
		t.Fatal(err)
	}
	if tags, err := st.AppTags(ctx, "ap-1"); err != nil || tags["team"] != "x" {
		t.Errorf("tags %v %v", tags, err)
	}
	if tags, err := st.AppTags(ctx, "ap-none"); err != nil || len(tags) != 0 {
		t.Errorf("no tags: %v %v", tags, err)
	}
	if err := st.PutWorkerName(ctx, "wk-1", "host", t0); err != nil {
		t.Fatal(err)
	}
	if name, _ := st.WorkerName(ctx, "wk-1"); name != "host" {
		t.Errorf("worker name %q", name)
	}
}

// TestCloseUsage: a container whose worker was lost is closed at its last recorded interval:
// its figure is final (closed) and unchanged, and what the worker sends when it comes back
// (its spool: intervals recorded already, later ones, its own final one) bills nothing more.
func TestCloseUsage(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	mk := func(c string, seq int64, final bool) metering.Record {
		s := t0.Add(time.Duration(seq) * 10 * time.Second)
		return metering.Record{Interval: metering.Interval{ContainerID: c, Seq: seq, Start: s, End: s.Add(10 * time.Second),
			CPURequest: 1, BillableCPU: 10, BillableMemory: 5, Final: final},
			WorkspaceID: "ws-a", AppID: "ap-1", Kind: metering.KindSandbox, Tags: map[string]string{"k": "v"}}
	}
	live := func(c string) metering.Live {
		t.Helper()
		recs, err := st.ListUsage(ctx, UsageFilter{WorkspaceID: "ws-a", ContainerID: c})
		if err != nil {
			t.Fatal(err)
		}
		return metering.LiveCost(c, recs, metering.DefaultPrices(), nil, t0.Add(time.Hour))
	}
	if _, err := st.RecordUsage(ctx, []metering.Record{mk("sb-1", 0, false), mk("sb-1", 1, false)}); err != nil {
		t.Fatal(err)
	}
	before := live("sb-1")
	if before.Closed {
		t.Fatal("closed before its end")
	}
	// The caller's attribution is only for a container with no interval: here the last one's.
	other := metering.Record{Interval: metering.Interval{ContainerID: "sb-1", Start: t0, End: t0}, WorkspaceID: "ws-other", AppID: "ap-other"}
	if ok, err := st.CloseUsage(ctx, other, "worker lost"); err != nil || !ok {
		t.Fatalf("close: %v %v", ok, err)
	}
	after := live("sb-1")
	if !after.Closed || after.Cost != before.Cost || after.WallSeconds != before.WallSeconds || after.Intervals != 3 {
		t.Fatalf("after closing: %+v; want closed, the cost and time of before (%s, %v s) and 3 intervals", after, before.Cost, before.WallSeconds)
	}
	recs, _ := st.ListUsage(ctx, UsageFilter{ContainerID: "sb-1"})
	if last := recs[len(recs)-1]; last.Seq != 2 || !last.Final || last.Seconds() != 0 || last.EndedBy != "worker lost" ||
		!last.Start.Equal(t0.Add(20*time.Second)) || last.WorkspaceID != "ws-a" || last.Tags["k"] != "v" {
		t.Fatalf("the closing interval: %+v", last)
	}
	if ok, err := st.CloseUsage(ctx, other, "worker lost"); err != nil || ok {
		t.Fatalf("closing twice: %v %v; want nothing done", ok, err)
	}
	// The worker comes back with its spool.
	fresh, err := st.RecordUsage(ctx, []metering.Record{mk("sb-1", 1, false), mk("sb-1", 2, false), mk("sb-1", 3, false), mk("sb-1", 4, true)})
	if err != nil || len(fresh) != 0 {
		t.Fatalf("the spool after the close recorded %d intervals (%v), want none", len(fresh), err)
	}
	if got := live("sb-1"); got.Cost != before.Cost || !got.Closed {
		t.Fatalf("after the spool: %+v, want %s and closed", got, before.Cost)
	}

	// A container that ended normally is not closed again, and its end stays the worker's.
	if _, err := st.RecordUsage(ctx, []metering.Record{mk("sb-2", 0, false), mk("sb-2", 1, true)}); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.CloseUsage(ctx, mk("sb-2", 0, false), "worker lost"); err != nil || ok {
		t.Fatalf("closing an ended container: %v %v", ok, err)
	}
	// One lost before its first interval is closed at its start, attributed as the caller says.
	none := metering.Record{Interval: metering.Interval{ContainerID: "sb-3", Start: t0, End: t0, CPURequest: 2},
		WorkspaceID: "ws-a", AppID: "ap-1", Kind: metering.KindSandbox}
	if ok, err := st.CloseUsage(ctx, none, "worker lost"); err != nil || !ok {
		t.Fatalf("close with no interval: %v %v", ok, err)
	}
	if got := live("sb-3"); !got.Closed || got.Containers != 1 || got.Cost != live("none").Cost {
		t.Fatalf("a container closed with no interval: %+v", got)
	}
	if fresh, err := st.RecordUsage(ctx, []metering.Record{mk("sb-3", 0, false), mk("sb-3", 1, true)}); err != nil || len(fresh) != 0 {
		t.Fatalf("a late spool of a container closed with no interval recorded %d (%v)", len(fresh), err)
	}
}

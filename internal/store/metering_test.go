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

package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
)

func open(t *testing.T) *Store {
	t.Helper()
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestApps(t *testing.T) {
	st, ctx := open(t), context.Background()
	if _, err := st.LookupApp(ctx, "a", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	a, err := st.LookupApp(ctx, "a", true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.LookupApp(ctx, "a", true)
	if err != nil || b.ID != a.ID {
		t.Fatalf("second lookup gave %v, %v", b, err)
	}
	if got, err := st.GetApp(ctx, a.ID); err != nil || got.Name != "a" {
		t.Fatalf("GetApp: %v %v", got, err)
	}
}

func TestSandboxes(t *testing.T) {
	st, ctx := open(t), context.Background()
	name := "web"
	sb := sandbox.Sandbox{ID: "sb-1", AppID: "ap-1", Name: &name, Status: sandbox.Running, Tags: map[string]string{"team": "x"}, CreatedAt: time.Now()}
	if err := st.InsertSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	dup := sb
	dup.ID = "sb-2"
	if err := st.InsertSandbox(ctx, dup); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("duplicate live name: want conflict, got %v", err)
	}
	list, err := st.ListSandboxes(ctx, SandboxFilter{Tags: map[string]string{"team": "x"}})
	if err != nil || len(list) != 1 {
		t.Fatalf("list by tag: %v %v", list, err)
	}
	code := 0
	sb.Status, sb.ExitCode = sandbox.Finished, &code
	if err := st.UpdateSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.ListSandboxes(ctx, SandboxFilter{}); len(list) != 0 {
		t.Fatalf("finished sandbox listed as live: %v", list)
	}
	if list, _ := st.ListSandboxes(ctx, SandboxFilter{IncludeFinished: true}); len(list) != 1 {
		t.Fatalf("include_finished: %v", list)
	}
	// The name is free again once the first has finished.
	if err := st.InsertSandbox(ctx, dup); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetSandbox(ctx, "sb-1")
	if err != nil || got.ExitCode == nil || *got.ExitCode != 0 {
		t.Fatalf("GetSandbox: %+v %v", got, err)
	}
}

func TestImages(t *testing.T) {
	st, ctx := open(t), context.Background()
	im := image.Image{ID: "im-1", Kind: image.KindDebianSlim, Hash: "h", Layers: []string{"/l"}, CreatedAt: time.Now()}
	if err := st.PutImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	got, ok, err := st.ImageByHash(ctx, "h")
	if err != nil || !ok || got.ID != "im-1" || len(got.Layers) != 1 || got.Layers[0] != "/l" {
		t.Fatalf("ImageByHash: %+v %v %v", got, ok, err)
	}
	if _, err := st.GetImage(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
}

func TestPruneKeepsOpenAndRecentInputs(t *testing.T) {
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	old := time.Now().Add(-30 * 24 * time.Hour)
	call := function.Call{ID: "fc-1", FunctionID: "fu-1", CreatedAt: old}
	ins := []function.Input{
		{ID: "in-done-old", CallID: "fc-1", FunctionID: "fu-1", Format: "json", Status: "pending", Seq: -1, CreatedAt: old},
		{ID: "in-done-new", CallID: "fc-1", FunctionID: "fu-1", Index: 1, Format: "json", Status: "pending", Seq: -1, CreatedAt: old},
		{ID: "in-open", CallID: "fc-1", FunctionID: "fu-1", Index: 2, Format: "json", Status: "pending", Seq: -1, CreatedAt: old},
	}
	if err := st.AddInputs(ctx, call, ins); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.FinishInputs(ctx, []function.Input{
		{ID: "in-done-old", Status: "success", Seq: 0, DoneAt: &old},
		{ID: "in-done-new", Status: "success", Seq: 1, DoneAt: &now},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Prune(ctx, time.Now().Add(-7*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	outs, _ := st.CallOutputs(ctx, "fc-1", 0)
	open, _ := st.OpenInputs(ctx)
	if len(outs) != 1 || outs[0].ID != "in-done-new" || len(open) != 1 || open[0].ID != "in-open" {
		t.Fatalf("after prune: outputs %v, open %v", outs, open)
	}
	if _, err := st.GetCall(ctx, "fc-1"); err != nil {
		t.Fatalf("a call with inputs left was pruned: %v", err)
	}
}

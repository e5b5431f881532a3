package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
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
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return st
}

func TestApps(t *testing.T) {
	st, ctx := open(t), context.Background()
	if _, err := st.LookupApp(ctx, "ws-default", "a", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	a, err := st.LookupApp(ctx, "ws-default", "a", true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.LookupApp(ctx, "ws-default", "a", true)
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
	if list, err := st.ListSandboxes(ctx, SandboxFilter{}); err != nil || len(list) != 0 {
		t.Fatalf("finished sandbox listed as live: %v %v", list, err)
	}
	if list, err := st.ListSandboxes(ctx, SandboxFilter{IncludeFinished: true}); err != nil || len(list) != 1 {
		t.Fatalf("include_finished: %v %v", list, err)
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
	st, ctx := open(t), context.Background()
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
	outs, err := st.CallOutputs(ctx, "fc-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	open, err := st.OpenInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].ID != "in-done-new" || len(open) != 1 || open[0].ID != "in-open" {
		t.Fatalf("after prune: outputs %v, open %v", outs, open)
	}
	if _, err := st.GetCall(ctx, "fc-1"); err != nil {
		t.Fatalf("a call with inputs left was pruned: %v", err)
	}
}

// A deploy marks the app's earlier deployed functions replaced: the IDs it reads back (a scan
// whose errors were once dropped) are the ones it returns and changes.
func TestDeployReplacesEarlierFunctions(t *testing.T) {
	st, ctx := open(t), context.Background()
	fn := func(id string) function.Function {
		return function.Function{ID: id, AppID: "ap-1", Name: "f", Mode: function.ModeDeployed, State: function.StateActive, CreatedAt: time.Now()}
	}
	if replaced, err := st.InsertFunctions(ctx, []function.Function{fn("fu-1")}, true); err != nil || len(replaced) != 0 {
		t.Fatalf("first deploy: replaced %v, %v", replaced, err)
	}
	replaced, err := st.InsertFunctions(ctx, []function.Function{fn("fu-2")}, true)
	if err != nil || len(replaced) != 1 || replaced[0] != "fu-1" {
		t.Fatalf("second deploy: replaced %v, %v", replaced, err)
	}
	old, err := st.GetFunction(ctx, "fu-1")
	if err != nil || old.State != function.StateReplaced {
		t.Fatalf("the replaced function: %+v, %v", old, err)
	}
	cur, err := st.DeployedFunction(ctx, "ap-1", "f")
	if err != nil || cur.ID != "fu-2" {
		t.Fatalf("DeployedFunction: %+v, %v", cur, err)
	}
}

func TestSecrets(t *testing.T) {
	st, ctx := open(t), context.Background()
	if _, err := st.PutSecret(ctx, "ws-default", "b", map[string]string{"K": "1"}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutSecret(ctx, "ws-default", "a", map[string]string{"K": "2", "J": "3"}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutSecret(ctx, "ws-default", "a", nil, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("existing secret without overwrite: want conflict, got %v", err)
	}
	list, err := st.ListSecrets(ctx, "ws-default")
	if err != nil || len(list) != 2 || list[0].Name != "a" || len(list[0].Keys) != 2 || list[1].Env["K"] != "1" {
		t.Fatalf("ListSecrets: %+v, %v", list, err)
	}
	if err := st.DeleteSecret(ctx, "ws-default", "a"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSecret(ctx, "ws-default", "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleting a missing secret: want not found, got %v", err)
	}
}

// An app keeps only its newest MaxAppLogBytes of logs; another app's are untouched.
func TestPruneCapsAppLogs(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	line := strings.Repeat("x", 1<<20)
	now := time.Now().UTC()
	var lines []LogLine
	for i := 0; i < MaxAppLogBytes>>20+8; i++ {
		lines = append(lines, LogLine{AppID: "ap-loud", Stream: "stdout", Data: line, Time: now})
	}
	lines = append(lines, LogLine{AppID: "ap-quiet", Stream: "stdout", Data: "hello", Time: now})
	if err := st.AppendLogs(ctx, lines); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Prune(ctx, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	loud, err := st.AppLogs(ctx, "ap-loud", 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(loud) != MaxAppLogBytes>>20 || loud[len(loud)-1].Seq != int64(len(lines)-1) {
		t.Fatalf("the loud app kept %d lines (last seq %d), want the newest %d", len(loud), loud[len(loud)-1].Seq, MaxAppLogBytes>>20)
	}
	if quiet, _ := st.AppLogs(ctx, "ap-quiet", 0, 10); len(quiet) != 1 {
		t.Fatalf("the quiet app's log: %v", quiet)
	}
}

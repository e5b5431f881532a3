package budget

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
)

// TestAdmit refuses a new container under a spent budget, names the budget, lets others
// through, warns once in the audit log, and stops running containers when the budget says so.
func TestAdmit(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "gust.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	p := metering.Prices{CPUPerCoreSecond: 1, GPUPerSecond: map[string]float64{}}
	c := New(st, p, nil)
	sb := func(app string, tags map[string]string) sandbox.Sandbox {
		return sandbox.Sandbox{ID: "sb-" + app, WorkspaceID: "ws-a", AppID: app, Tags: tags}
	}
	if err := c.Admit(ctx, sb("ap-1", nil)); err != nil {
		t.Fatalf("no budgets: %v", err)
	}
	// $10 spent by ap-1 this month.
	if _, err := st.RecordUsage(ctx, []metering.Record{{Interval: metering.Interval{ContainerID: "sb-x", Start: now.Add(-20 * time.Second),
		End: now.Add(-10 * time.Second), BillableCPU: 10}, WorkspaceID: "ws-a", AppID: "ap-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetAppTags(ctx, "ap-3", map[string]string{"team": "x"}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []metering.Budget{
		{ID: "bg-1", WorkspaceID: "ws-a", Scope: metering.ScopeApp, Target: "ap-1", MonthlyLimit: 5, WarnAt: 0.8},
		{ID: "bg-2", WorkspaceID: "ws-a", Scope: metering.ScopeTag, Target: "team=x", MonthlyLimit: 100, WarnAt: 0.8},
	} {
		if err := st.PutBudget(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	c.Changed("ws-a")
	err = c.Admit(ctx, sb("ap-1", nil))
	if !errors.Is(err, errdefs.ErrQuota) || !strings.Contains(err.Error(), "bg-1") {
		t.Fatalf("a spent app budget: %v", err)
	}
	if err := c.Admit(ctx, sb("ap-2", nil)); err != nil {
		t.Errorf("another app: %v", err)
	}
	if err := c.Admit(ctx, sandbox.Sandbox{WorkspaceID: "ws-system", AppID: "ap-1"}); err != nil {
		t.Errorf("an image build: %v", err)
	}
	// The tag budget: ap-3's tag (from the app) puts its sandboxes under bg-2, which is not spent.
	if err := c.Admit(ctx, sb("ap-3", nil)); err != nil {
		t.Errorf("ap-3: %v", err)
	}
	if err := st.InsertSandbox(ctx, sandbox.Sandbox{ID: "sb-run", WorkspaceID: "ws-a", AppID: "ap-1", Status: sandbox.Running, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	var stopped []string
	stop := func(_ context.Context, id, reason string) { stopped = append(stopped, id) }
	c.check(ctx, stop)
	c.check(ctx, stop)
	if len(stopped) != 0 {
		t.Errorf("stopped %v under a budget without stop_running", stopped)
	}
	entries, err := st.ListAudit(ctx, store.AuditFilter{WorkspaceID: "ws-a", Since: now.Add(-time.Hour)})
	if err != nil || len(entries) != 1 || entries[0].Object != "bg-1" || !strings.Contains(entries[0].Error, "exceeded") {
		t.Errorf("audit %+v %v; want one entry for bg-1", entries, err)
	}
	b := metering.Budget{ID: "bg-1", WorkspaceID: "ws-a", Scope: metering.ScopeApp, Target: "ap-1", MonthlyLimit: 5, WarnAt: 0.8, StopRunning: true}
	if err := st.PutBudget(ctx, b); err != nil {
		t.Fatal(err)
	}
	c.check(ctx, stop)
	if len(stopped) != 1 || stopped[0] != "sb-run" {
		t.Errorf("stopped %v, want sb-run", stopped)
	}
}

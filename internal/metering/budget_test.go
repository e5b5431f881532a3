package metering

import (
	"testing"
	"time"
)

func TestBudgetSpend(t *testing.T) {
	p := Prices{CPUPerCoreSecond: 1, GPUPerSecond: map[string]float64{}}
	now := time.Date(2026, 3, 20, 0, 0, 0, 0, time.UTC)
	month := MonthStart(now)
	recs := []Record{
		rec("ap-1", "sb-1", 0, month.Add(time.Hour), 10, 1, map[string]string{"team": "a"}), // $10
		rec("ap-2", "sb-2", 0, month.Add(time.Hour), 5, 1, nil),                             // $5
		// Straddles the month's start: only its 4 s in March count.
		rec("ap-1", "sb-3", 0, month.Add(-6*time.Second), 10, 1, map[string]string{"team": "a"}),
	}
	budgets := []Budget{
		{ID: "bg-ws", WorkspaceID: "ws-a", Scope: ScopeWorkspace, MonthlyLimit: 100, WarnAt: 0.8},
		{ID: "bg-app", WorkspaceID: "ws-a", Scope: ScopeApp, Target: "ap-1", MonthlyLimit: 16, WarnAt: 0.8},
		{ID: "bg-tag", WorkspaceID: "ws-a", Scope: ScopeTag, Target: "team=a", MonthlyLimit: 14, WarnAt: 0.8},
		{ID: "bg-other", WorkspaceID: "ws-b", Scope: ScopeWorkspace, MonthlyLimit: 1, WarnAt: 0.8},
	}
	got := map[string]BudgetStatus{}
	for _, s := range Spend(budgets, recs, p, now) {
		got[s.ID] = s
	}
	for id, want := range map[string]struct {
		spent float64
		state string
	}{"bg-ws": {19, BudgetOK}, "bg-app": {14, BudgetWarning}, "bg-tag": {14, BudgetExceeded}, "bg-other": {0, BudgetOK}} {
		if s := got[id]; !near(s.Spent, want.spent, 1e-9) || s.State != want.state {
			t.Errorf("%s: spent %v (%s), want %v (%s)", id, s.Spent, s.State, want.spent, want.state)
		}
	}
}

func TestBudgetValidate(t *testing.T) {
	good := Budget{Scope: ScopeTag, Target: "team=a", MonthlyLimit: 10}
	if err := good.Validate(); err != nil || good.WarnAt != DefaultWarnAt {
		t.Fatalf("%v %+v", err, good)
	}
	for name, b := range map[string]Budget{
		"scope":        {Scope: "org", MonthlyLimit: 1},
		"app target":   {Scope: ScopeApp, MonthlyLimit: 1},
		"tag target":   {Scope: ScopeTag, Target: "team", MonthlyLimit: 1},
		"zero limit":   {Scope: ScopeWorkspace},
		"warn too big": {Scope: ScopeWorkspace, MonthlyLimit: 1, WarnAt: 2},
	} {
		if b.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if !(Budget{Scope: ScopeTag, Target: "k=v"}).Covers("ap", map[string]string{"k": "v"}) ||
		(Budget{Scope: ScopeTag, Target: "k=v"}).Covers("ap", map[string]string{"k": "w"}) ||
		(Budget{Scope: ScopeApp, Target: "ap-1"}).Covers("ap-2", nil) {
		t.Error("Covers")
	}
}

package metering

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
)

// Budget scopes.
const (
	ScopeWorkspace = "workspace"
	ScopeApp       = "app"
	ScopeTag       = "tag"
)

// Budget states.
const (
	BudgetOK       = "ok"
	BudgetWarning  = "warning"
	BudgetExceeded = "exceeded"
)

// Budget is a monthly spending limit on a workspace, one of its apps, or a tag (Target
// "key=value"). Near it (WarnAt of the limit) gust warns; at it, new containers in its scope
// are refused, and running ones are stopped when StopRunning.
type Budget struct {
	ID           string    `json:"budget_id"`
	WorkspaceID  string    `json:"workspace_id"`
	Scope        string    `json:"scope"`
	Target       string    `json:"target,omitempty"`
	MonthlyLimit float64   `json:"monthly_limit"`
	WarnAt       float64   `json:"warn_at"`
	StopRunning  bool      `json:"stop_running"`
	CreatedAt    time.Time `json:"created_at"`
}

// DefaultWarnAt is the share of a budget at which gust warns.
const DefaultWarnAt = 0.8

// Validate checks a budget and fills WarnAt's default.
func (b *Budget) Validate() error {
	switch b.Scope {
	case ScopeWorkspace:
		b.Target = ""
	case ScopeApp:
		if b.Target == "" {
			return errdefs.Invalid("a budget of scope app needs target: the app's ID (ap-...)")
		}
	case ScopeTag:
		if k, _, ok := strings.Cut(b.Target, "="); !ok || k == "" {
			return errdefs.Invalid("a budget of scope tag needs target KEY=VALUE, got %q", b.Target)
		}
	default:
		return errdefs.Invalid("budget scope must be workspace, app or tag, got %q", b.Scope)
	}
	if math.IsNaN(b.MonthlyLimit) || math.IsInf(b.MonthlyLimit, 0) || b.MonthlyLimit <= 0 {
		return errdefs.Invalid("monthly_limit must be a number of dollars more than 0")
	}
	if b.WarnAt == 0 {
		b.WarnAt = DefaultWarnAt
	}
	if math.IsNaN(b.WarnAt) || b.WarnAt <= 0 || b.WarnAt > 1 {
		return errdefs.Invalid("warn_at must be a share of the limit, more than 0 and at most 1")
	}
	return nil
}

// Covers reports whether usage of an app with these tags falls under the budget.
func (b Budget) Covers(appID string, tags map[string]string) bool {
	switch b.Scope {
	case ScopeApp:
		return appID == b.Target
	case ScopeTag:
		k, v, _ := strings.Cut(b.Target, "=")
		got, ok := tags[k]
		return ok && got == v
	}
	return true
}

// Name says the budget in words, for errors and warnings.
func (b Budget) Name() string {
	what := "workspace " + b.WorkspaceID
	switch b.Scope {
	case ScopeApp:
		what = "app " + b.Target
	case ScopeTag:
		what = "tag " + b.Target
	}
	return fmt.Sprintf("budget %s (%s, $%.2f a month)", b.ID, what, b.MonthlyLimit)
}

// MonthStart is the start (UTC) of the month t falls in: budgets are per calendar month.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// BudgetStatus is a budget with what its scope has spent this month.
type BudgetStatus struct {
	Budget
	Month time.Time `json:"month"`
	Spent float64   `json:"spent"`
	State string    `json:"state"`
}

// Spend totals this month's spending of each budget over the workspace's records of the month.
func Spend(budgets []Budget, recs []Record, p Prices, now time.Time) []BudgetStatus {
	month := MonthStart(now)
	out := make([]BudgetStatus, len(budgets))
	for i, b := range budgets {
		out[i] = BudgetStatus{Budget: b, Month: month, State: BudgetOK}
	}
	for _, r := range recs {
		part, ok := r.clip(month, time.Time{})
		if !ok {
			continue
		}
		cost := p.Cost(part.Interval).Total()
		for i := range out {
			if out[i].WorkspaceID == r.WorkspaceID && out[i].Covers(r.AppID, r.Tags) {
				out[i].Spent += cost
			}
		}
	}
	for i := range out {
		switch s := &out[i]; {
		case s.Spent >= s.MonthlyLimit:
			s.State = BudgetExceeded
		case s.Spent >= s.WarnAt*s.MonthlyLimit:
			s.State = BudgetWarning
		}
	}
	return out
}

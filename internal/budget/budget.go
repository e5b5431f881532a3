// Package budget enforces workspaces' monthly spending limits (metering.Budget) over the usage
// ledger: it refuses new containers in the scope of a budget that is spent (Admit, which the
// fleet calls before it places a container), and, every few seconds (Run), writes a warning
// to the audit log when a budget passes its warning share or its limit, and stops the running
// containers of a spent budget that says so. Imported by internal/api (the routes) and
// internal/server (which wires Admit into the fleet and runs the loop).
package budget

import (
	"context"
	"log"
	"maps"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
)

// Store is what budgets read and write.
type Store interface {
	ListBudgets(ctx context.Context, ws string) ([]metering.Budget, error)
	ListUsage(ctx context.Context, f store.UsageFilter) ([]metering.Record, error)
	AppTags(ctx context.Context, appID string) (map[string]string, error)
	ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]sandbox.Sandbox, error)
	AppendAudit(ctx context.Context, es []store.AuditEntry) error
}

var _ Store = (*store.Store)(nil)

// cacheFor is how long Admit trusts a workspace's computed spending: admission stays off the
// ledger's hot path, and a spent budget is refused within this long.
const cacheFor = 5 * time.Second

// Checker holds the budgets' state.
type Checker struct {
	st     Store
	prices metering.Prices
	log    *log.Logger
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]cached // by workspace
	// warned remembers the state each budget was last announced in, this month.
	warned map[string]string
}

type cached struct {
	at       time.Time
	statuses []metering.BudgetStatus
}

// New returns a checker pricing the ledger at prices.
func New(st Store, prices metering.Prices, logger *log.Logger) *Checker {
	if logger == nil {
		logger = log.Default()
	}
	return &Checker{st: st, prices: prices, log: logger, now: time.Now, cache: map[string]cached{}, warned: map[string]string{}}
}

// Statuses computes the budgets of a workspace and what each has spent this month.
func (c *Checker) Statuses(ctx context.Context, ws string) ([]metering.BudgetStatus, error) {
	bs, err := c.st.ListBudgets(ctx, ws)
	if err != nil {
		return nil, err
	}
	now := c.now()
	sts := []metering.BudgetStatus{}
	if len(bs) > 0 { // a workspace without budgets costs admission no ledger read
		recs, err := c.st.ListUsage(ctx, store.UsageFilter{WorkspaceID: ws, From: metering.MonthStart(now)})
		if err != nil {
			return nil, err
		}
		sts = metering.Spend(bs, recs, c.prices, now)
	}
	c.mu.Lock()
	c.cache[ws] = cached{at: now, statuses: sts}
	c.mu.Unlock()
	return sts, nil
}

// Changed forgets a workspace's cached state (a budget was set or deleted).
func (c *Checker) Changed(ws string) {
	c.mu.Lock()
	delete(c.cache, ws)
	c.mu.Unlock()
}

// Admit refuses a new container whose workspace, app or tags are under a spent budget, with
// an error that names the budget. Containers of the system workspace (image builds) pass.
func (c *Checker) Admit(ctx context.Context, sb sandbox.Sandbox) error {
	if sb.WorkspaceID == "" || sb.WorkspaceID == auth.SystemWorkspace {
		return nil
	}
	c.mu.Lock()
	e, ok := c.cache[sb.WorkspaceID]
	c.mu.Unlock()
	sts := e.statuses
	if !ok || c.now().Sub(e.at) > cacheFor {
		var err error
		if sts, err = c.Statuses(ctx, sb.WorkspaceID); err != nil {
			return err
		}
	}
	var tags map[string]string
	for _, s := range sts {
		if s.State != metering.BudgetExceeded {
			continue
		}
		if tags == nil {
			tags = map[string]string{}
			if t, err := c.st.AppTags(ctx, sb.AppID); err == nil {
				maps.Copy(tags, t)
			}
			maps.Copy(tags, sb.Tags)
		}
		if s.Covers(sb.AppID, tags) {
			return errdefs.WithKind(errdefs.ErrQuota, s.Name()+" is spent: $"+metering.Money(s.Spent)+
				" this month; new containers are refused until next month (raise the limit with `gust billing budget set`)")
		}
	}
	return nil
}

// Run checks every budget every period until ctx ends: warnings in the audit log, and the
// running containers of a spent budget with StopRunning terminated through stop.
func (c *Checker) Run(ctx context.Context, period time.Duration, stop func(ctx context.Context, id, reason string)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.check(ctx, stop)
		}
	}
}

func (c *Checker) check(ctx context.Context, stop func(ctx context.Context, id, reason string)) {
	all, err := c.st.ListBudgets(ctx, "")
	if err != nil {
		c.log.Printf("budgets: %v", err)
		return
	}
	wss := map[string]bool{}
	for _, b := range all {
		wss[b.WorkspaceID] = true
	}
	for ws := range wss {
		sts, err := c.Statuses(ctx, ws)
		if err != nil {
			c.log.Printf("budgets of %s: %v", ws, err)
			continue
		}
		for _, s := range sts {
			c.announce(ctx, s)
			if s.State == metering.BudgetExceeded && s.StopRunning && stop != nil {
				c.stopScope(ctx, s, stop)
			}
		}
	}
}

// announce writes a budget's new state to the audit log, once per state and month.
func (c *Checker) announce(ctx context.Context, s metering.BudgetStatus) {
	key := s.ID + "@" + s.Month.Format("2006-01")
	c.mu.Lock()
	prev := c.warned[key]
	if s.State == metering.BudgetOK || prev == s.State || prev == metering.BudgetExceeded {
		c.mu.Unlock()
		return
	}
	c.warned[key] = s.State
	c.mu.Unlock()
	msg := s.Name() + " is at $" + metering.Money(s.Spent) + " this month: " + s.State
	c.log.Printf("%s (workspace %s)", msg, s.WorkspaceID)
	if err := c.st.AppendAudit(ctx, []store.AuditEntry{{Time: c.now(), WorkspaceID: s.WorkspaceID, Method: "BUDGET",
		Route: "budget " + s.State, Object: s.ID, Status: 402, Error: msg}}); err != nil {
		c.log.Printf("budgets: audit: %v", err)
	}
}

// stopScope terminates the running containers a spent budget covers.
func (c *Checker) stopScope(ctx context.Context, s metering.BudgetStatus, stop func(ctx context.Context, id, reason string)) {
	sbs, err := c.st.ListSandboxes(ctx, store.SandboxFilter{WorkspaceID: s.WorkspaceID, Functions: true})
	if err != nil {
		c.log.Printf("budget %s: %v", s.ID, err)
		return
	}
	tags := map[string]map[string]string{}
	for _, sb := range sbs {
		if _, ok := tags[sb.AppID]; !ok {
			tags[sb.AppID], _ = c.st.AppTags(ctx, sb.AppID)
		}
		t := maps.Clone(tags[sb.AppID])
		if t == nil {
			t = map[string]string{}
		}
		maps.Copy(t, sb.Tags)
		if s.Covers(sb.AppID, t) {
			stop(ctx, sb.ID, s.Name()+" is spent")
		}
	}
}

package gust

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Rates is the server's price table, in dollars (GET /v1/billing/rates).
type Rates struct {
	CPUPerCoreSecond   float64            `json:"cpu_per_core_second"`
	MemoryPerGiBSecond float64            `json:"memory_per_gib_second"`
	GPUPerSecond       map[string]float64 `json:"gpu_per_second"`
	// StoragePerGiBSecond prices stored data per class ("volume", "image", "dict_queue").
	StoragePerGiBSecond map[string]float64 `json:"storage_per_gib_second"`
	// Reserved are the operator's reserved prices for the advisor, per second by resource.
	Reserved map[string]float64 `json:"reserved_per_second,omitempty"`
	Source   string             `json:"source"`
}

// Rates returns the prices the server bills usage at.
func (c *Client) Rates(ctx context.Context) (*Rates, error) {
	var r Rates
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/billing/rates"}, &r); err != nil {
		return nil, fmt.Errorf("billing rates: %w", err)
	}
	return &r, nil
}

// BillingReportItem is one row of a billing report, with Modal's fields: an object's (an
// app's, or image builds') cost over one interval. Costs are decimal strings, exact to the
// nano-dollar (parse them with math/big or a decimal package to add them up exactly).
type BillingReportItem struct {
	ObjectID        string            `json:"object_id"`
	Description     string            `json:"description"`
	EnvironmentName string            `json:"environment_name"`
	IntervalStart   time.Time         `json:"interval_start"`
	Cost            string            `json:"cost"`
	CostByResource  map[string]string `json:"cost_by_resource"`
	Tags            map[string]string `json:"tags"`
}

// BillingReportOptions select a report, as modal.billing.workspace_billing_report does:
// Start (required) is rounded down to its interval; only full intervals before End (zero:
// now) are reported. Resolution is "d" (the default) or "h". TagNames are the tag keys to
// include, or "*" for all. TZ, when set, makes days and hours those of a time zone: an IANA
// name (America/New_York) or an offset (5, -4, +05:30); intervals still start at UTC times.
type BillingReportOptions struct {
	Start, End time.Time
	Resolution string
	TagNames   []string
	TZ         string
}

// BillingReport returns the workspace's costs by object and interval.
func (c *Client) BillingReport(ctx context.Context, opts BillingReportOptions) ([]*BillingReportItem, error) {
	q := url.Values{}
	if !opts.Start.IsZero() {
		q.Set("start", opts.Start.UTC().Format(time.RFC3339Nano))
	}
	if !opts.End.IsZero() {
		q.Set("end", opts.End.UTC().Format(time.RFC3339Nano))
	}
	if opts.Resolution != "" {
		q.Set("resolution", opts.Resolution)
	}
	for _, t := range opts.TagNames {
		q.Add("tag_names", t)
	}
	if opts.TZ != "" {
		q.Set("tz", opts.TZ)
	}
	var out struct {
		Rows []*BillingReportItem `json:"rows"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/billing/report", query: q}, &out); err != nil {
		return nil, fmt.Errorf("billing report: %w", err)
	}
	return out.Rows, nil
}

// UsageRow is one group's raw usage: seconds, resource units and cost.
type UsageRow struct {
	ID                       string            `json:"id"`
	Name                     string            `json:"name,omitempty"`
	Containers               int               `json:"containers"`
	WallSeconds              float64           `json:"wall_seconds"`
	CPUSeconds               float64           `json:"cpu_seconds"`
	BillableCPUCoreSeconds   float64           `json:"billable_cpu_core_seconds"`
	BillableMemoryGiBSeconds float64           `json:"billable_memory_gib_seconds"`
	GPUSeconds               float64           `json:"gpu_seconds"`
	StorageGiBSeconds        float64           `json:"storage_gib_seconds"` // stored data (volumes, image uploads, Dicts)
	MemoryPeakBytes          int64             `json:"memory_peak_bytes"`
	Cost                     string            `json:"cost"`
	CostByResource           map[string]string `json:"cost_by_resource"`
}

// UsageOptions select raw usage: [Since, Until) (zero: the last 30 days up to now), grouped By
// "app" (the default), "function", "sandbox", "tag" or "day"; days are TZ's (as in
// BillingReportOptions; default UTC).
type UsageOptions struct {
	Since, Until time.Time
	By           string
	TZ           string
}

func window(q url.Values, since, until time.Time) {
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if !until.IsZero() {
		q.Set("until", until.UTC().Format(time.RFC3339Nano))
	}
}

// Usage returns the workspace's usage by group, dearest first (by day: in order).
func (c *Client) Usage(ctx context.Context, opts UsageOptions) ([]*UsageRow, error) {
	q := url.Values{}
	window(q, opts.Since, opts.Until)
	if opts.By != "" {
		q.Set("by", opts.By)
	}
	if opts.TZ != "" {
		q.Set("tz", opts.TZ)
	}
	var out struct {
		Rows []*UsageRow `json:"rows"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/usage", query: q}, &out); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return out.Rows, nil
}

// LiveCost is what a sandbox or an app has cost so far: Cost over the intervals recorded (up
// to MeteredUntil), and EstimatedCost adding the time since at the requested rate while it
// runs: the figure to stop a runaway by.
type LiveCost struct {
	ID             string            `json:"id"`
	Running        bool              `json:"running"`
	Containers     int               `json:"containers"`
	Intervals      int               `json:"intervals"`
	Closed         bool              `json:"closed"` // every container's last interval is recorded
	MeteredUntil   *time.Time        `json:"metered_until"`
	WallSeconds    float64           `json:"wall_seconds"`
	CPUSeconds     float64           `json:"cpu_seconds"`
	Cost           string            `json:"cost"`
	EstimatedCost  string            `json:"estimated_cost"`
	CostByResource map[string]string `json:"cost_by_resource"`
}

// Dollars is EstimatedCost as a number.
func (l *LiveCost) Dollars() float64 {
	v, _ := strconv.ParseFloat(l.EstimatedCost, 64)
	return v
}

// SandboxCost returns what a sandbox has cost so far.
func (c *Client) SandboxCost(ctx context.Context, sandboxID string) (*LiveCost, error) {
	var l LiveCost
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/sandboxes/" + url.PathEscape(sandboxID) + "/usage"}, &l); err != nil {
		return nil, fmt.Errorf("cost of sandbox %s: %w", sandboxID, err)
	}
	return &l, nil
}

// AppCost returns what an app (its sandboxes and function containers) has cost so far.
func (c *Client) AppCost(ctx context.Context, appID string) (*LiveCost, error) {
	var l LiveCost
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/apps/" + url.PathEscape(appID) + "/usage"}, &l); err != nil {
		return nil, fmt.Errorf("cost of app %s: %w", appID, err)
	}
	return &l, nil
}

// AppTags returns an app's tags.
func (c *Client) AppTags(ctx context.Context, appID string) (map[string]string, error) {
	var out struct {
		Tags map[string]string `json:"tags"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/apps/" + url.PathEscape(appID) + "/tags"}, &out); err != nil {
		return nil, fmt.Errorf("tags of app %s: %w", appID, err)
	}
	return out.Tags, nil
}

// SetAppTags replaces an app's tags; usage recorded from now on carries them.
func (c *Client) SetAppTags(ctx context.Context, appID string, tags map[string]string) error {
	if tags == nil {
		tags = map[string]string{}
	}
	body := map[string]any{"tags": tags}
	if err := c.call(ctx, request{method: http.MethodPut, path: "/v1/apps/" + url.PathEscape(appID) + "/tags", json: body}, nil); err != nil {
		return fmt.Errorf("setting tags of app %s: %w", appID, err)
	}
	return nil
}

// Concurrency is a time-weighted distribution of containers running at once.
type Concurrency struct {
	P50  int `json:"p50"`
	P95  int `json:"p95"`
	Peak int `json:"peak"`
}

// Advice is the duty-cycle advisor's answer for one function (or one app's sandboxes) and
// one resource class: stay serverless, reserve, or split with a reserved floor.
type Advice struct {
	Kind                      string      `json:"kind"`
	ID                        string      `json:"id"`
	Name                      string      `json:"name"`
	ResourceClass             string      `json:"resource_class"`
	WindowSeconds             float64     `json:"window_seconds"`
	BusySeconds               float64     `json:"busy_seconds"`
	DutyCycle                 float64     `json:"duty_cycle"`
	ContainerSeconds          float64     `json:"container_seconds"`
	Concurrency               Concurrency `json:"concurrency"`
	ServerlessCostPerSecond   float64     `json:"serverless_cost_per_second"`
	ServerlessContainerSecond float64     `json:"serverless_cost_per_container_second"`
	ReservedContainerSecond   float64     `json:"reserved_cost_per_container_second"`
	BreakEvenUtilization      float64     `json:"break_even_utilization"`
	ServerlessMonthly         float64     `json:"serverless_monthly"`
	ReservedMonthly           float64     `json:"reserved_monthly"`
	Recommendation            string      `json:"recommendation"`
	Floor                     int         `json:"floor"`
	Setting                   string      `json:"setting,omitempty"`
	RecommendedMonthly        float64     `json:"recommended_monthly"`
	MonthlySaving             float64     `json:"monthly_saving"`
	Summary                   string      `json:"summary"`
	Timeline                  []struct {
		At         time.Time `json:"at"`
		Containers int       `json:"containers"`
	} `json:"timeline,omitempty"`
}

// AdviseOptions select the advisor's window ([Since, Until); zero: the last 7 days) and its
// reserved prices: Reserved rates such as "H100=2.50/h", "cpu=0.03/h", "memory=0.004/h",
// and ReservedFactor for the others (reserved over serverless; 0: the server's 0.5).
type AdviseOptions struct {
	Since, Until   time.Time
	Reserved       []string
	ReservedFactor float64
	Timeline       bool
}

// Advise runs the duty-cycle advisor over the workspace's ledger.
func (c *Client) Advise(ctx context.Context, opts AdviseOptions) ([]*Advice, error) {
	q := url.Values{}
	window(q, opts.Since, opts.Until)
	for _, r := range opts.Reserved {
		q.Add("reserved", r)
	}
	if opts.ReservedFactor > 0 {
		q.Set("reserved_factor", strconv.FormatFloat(opts.ReservedFactor, 'g', -1, 64))
	}
	if opts.Timeline {
		q.Set("timeline", "true")
	}
	var out struct {
		Advice []*Advice `json:"advice"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/billing/advise", query: q}, &out); err != nil {
		return nil, fmt.Errorf("billing advice: %w", err)
	}
	return out.Advice, nil
}

// Budget is a monthly spending limit on the workspace, an app (Target: its ID) or a tag
// (Target: "key=value"), with what its scope spent this month and its State: ok, warning
// (past WarnAt of the limit) or exceeded (new containers in its scope are refused).
type Budget struct {
	ID           string    `json:"budget_id,omitempty"`
	WorkspaceID  string    `json:"workspace_id,omitempty"`
	Scope        string    `json:"scope"`
	Target       string    `json:"target,omitempty"`
	MonthlyLimit float64   `json:"monthly_limit"`
	WarnAt       float64   `json:"warn_at,omitempty"`
	StopRunning  bool      `json:"stop_running,omitempty"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
	Month        time.Time `json:"month,omitzero"`
	Spent        float64   `json:"spent,omitempty"`
	State        string    `json:"state,omitempty"`
}

// SetBudget sets a budget (owners only); one of the same scope and target is replaced.
func (c *Client) SetBudget(ctx context.Context, b Budget) (*Budget, error) {
	body := map[string]any{"scope": b.Scope, "target": b.Target, "monthly_limit": b.MonthlyLimit, "warn_at": b.WarnAt, "stop_running": b.StopRunning}
	var out Budget
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/billing/budgets", json: body}, &out); err != nil {
		return nil, fmt.Errorf("setting a budget: %w", err)
	}
	return &out, nil
}

// Budgets lists the workspace's budgets and what each has spent this month.
func (c *Client) Budgets(ctx context.Context) ([]*Budget, error) {
	var out struct {
		Budgets []*Budget `json:"budgets"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/billing/budgets"}, &out); err != nil {
		return nil, fmt.Errorf("budgets: %w", err)
	}
	return out.Budgets, nil
}

// DeleteBudget removes a budget (owners only).
func (c *Client) DeleteBudget(ctx context.Context, id string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/billing/budgets/" + url.PathEscape(id)}, nil); err != nil {
		return fmt.Errorf("deleting budget %s: %w", id, err)
	}
	return nil
}

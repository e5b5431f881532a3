package api

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/budget"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ids"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// The usage ledger's routes: workers report what their containers used; clients read the
// rates, billing reports with Modal's rows, raw usage by group, the live cost of a sandbox or
// an app, and the duty-cycle advisor; apps carry tags that flow into usage.
func (a *API) billingRoutes(rt *router) {
	rt.handle("POST /v1/workers/{wid}/usage", a.handleWorkerUsage)
	rt.handle("GET /v1/billing/rates", a.handleBillingRates)
	rt.handle("GET /v1/billing/report", a.handleBillingReport)
	rt.handle("GET /v1/billing/advise", a.handleBillingAdvise)
	rt.handle("GET /v1/usage", a.handleUsage)
	rt.handle("GET /v1/sandboxes/{id}/usage", a.handleSandboxUsage)
	rt.handle("GET /v1/apps/{id}/usage", a.handleAppUsage)
	rt.handle("GET /v1/apps/{id}/tags", a.handleAppTagsGet)
	rt.handle("PUT /v1/apps/{id}/tags", a.handleAppTagsPut)
	rt.handle("POST /v1/billing/budgets", a.handleBudgetSet)
	rt.handle("GET /v1/billing/budgets", a.handleBudgetList)
	rt.handle("DELETE /v1/billing/budgets/{id}", a.handleBudgetDelete)
	rt.handle("GET /v1/metrics", a.handleMetrics)
}

// maxUsageBody bounds one usage report.
const maxUsageBody = 8 << 20

func (a *API) handleWorkerUsage(w http.ResponseWriter, r *http.Request) {
	wid := r.PathValue("wid")
	if err := a.fleet.CheckWorker(wid); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var req workerproto.UsageReport
	if err := httpapi.DecodeJSON(r, &req, maxUsageBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if len(req.Intervals) > workerproto.MaxUsageBatch {
		httpapi.WriteError(w, errdefs.Invalid("at most %d intervals in one report, got %d", workerproto.MaxUsageBatch, len(req.Intervals)))
		return
	}
	for _, iv := range req.Intervals {
		if err := iv.Validate(); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	ctx := r.Context()
	reporter, err := a.store.WorkerName(ctx, wid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	owners := map[string]bool{wid: true} // worker IDs that reporter speaks for
	skipped := 0
	seen := map[string]*metering.Record{}
	ended := map[string]sandbox.Sandbox{} // containers whose records have ended
	recs := make([]metering.Record, 0, len(req.Intervals))
	for _, iv := range req.Intervals {
		base, ok := seen[iv.ContainerID]
		if !ok {
			sb, err := a.store.GetSandbox(ctx, iv.ContainerID)
			if err == nil && !a.speaksFor(ctx, owners, reporter, sb.WorkerID) {
				err = errdefs.NotFound("container %s did not run on worker %s", sb.ID, wid)
			}
			if err != nil {
				// Not ours to record (a forgotten container, another worker's): skipped, so
				// that the rest of the batch is recorded.
				a.log.Printf("usage from worker %s for container %s: %v (skipped)", wid, iv.ContainerID, err)
				seen[iv.ContainerID] = nil
				skipped++
				continue
			}
			if sb.Status.Terminal() && sb.FinishedAt != nil {
				ended[sb.ID] = sb
			}
			rec := a.attribute(ctx, sb)
			if iv.Seq == 0 && sb.StartedAt != nil {
				a.meters.startLat.WithLabelValues(rec.Kind).Observe(sb.StartedAt.Sub(sb.CreatedAt).Seconds())
			}
			base = &rec
			seen[iv.ContainerID] = base
		}
		if base == nil {
			skipped++
			continue
		}
		if sb, ok := ended[iv.ContainerID]; ok && !iv.Final && iv.End.After(sb.FinishedAt.Add(orphanGrace)) {
			// Metered running well after its record ended: an orphan (the server restarted
			// and failed it while its worker ran on). Stop it, once per report.
			delete(ended, iv.ContainerID)
			if a.fleet.StopOrphan(wid, sb.ID, sb.Status) {
				a.log.Printf("container %s still runs on worker %s after its record ended (%s): stopping it", sb.ID, wid, sb.Status)
			}
		}
		rec := *base
		rec.Interval = iv
		if iv.GPUCount == 0 && base.GPUCount > 0 {
			rec.GPUType, rec.GPUCount = base.GPUType, base.GPUCount
		}
		recs = append(recs, rec)
	}
	fresh, err := a.store.RecordUsage(ctx, recs)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	a.meters.recorded(fresh, len(recs), skipped, a.cfg.Prices, time.Now())
	w.WriteHeader(http.StatusNoContent)
}

// CloseLostUsage ends the usage of a container that failed with its lost worker, at its last
// recorded interval (store.CloseUsage): no final interval will come from the worker, and what
// it reported is what is billed. The fleet calls it (fleet.OnLost).
func (a *API) CloseLostUsage(ctx context.Context, sb sandbox.Sandbox, why string) {
	rec := a.attribute(ctx, sb)
	start := sb.CreatedAt
	if sb.StartedAt != nil {
		start = *sb.StartedAt
	}
	rec.ContainerID, rec.Start, rec.End = sb.ID, start, start // attribute filled the GPUs
	if _, err := a.store.CloseUsage(ctx, rec, "the server: "+why); err != nil {
		a.log.Printf("closing the usage of container %s: %v", sb.ID, err)
	}
}

// orphanGrace is how long after its record ended a container may still be metered running
// before the server stops it: an interval cut just before a normal end may arrive after it.
const orphanGrace = 2 * time.Second

// speaksFor reports whether a worker named reporter may report for a container that ran on
// worker owner: its own, or one it had before it restarted under a new ID (same name).
func (a *API) speaksFor(ctx context.Context, owners map[string]bool, reporter, owner string) bool {
	if ok, known := owners[owner]; known {
		return ok
	}
	name, err := a.store.WorkerName(ctx, owner)
	ok := err == nil && name != "" && name == reporter
	owners[owner] = ok
	return ok
}

// attribute is who a container's usage belongs to: its workspace, app, function or sandbox,
// and its tags (the app's under the sandbox's). An image build is billed to the workspace
// that asked for it (metering.BilledToTag), or to the system workspace when none did.
func (a *API) attribute(ctx context.Context, sb sandbox.Sandbox) metering.Record {
	rec := metering.Record{WorkspaceID: sb.WorkspaceID, Kind: metering.KindSandbox, AppID: sb.AppID, SandboxID: sb.ID}
	tags := map[string]string{}
	if app, err := a.store.GetApp(ctx, sb.AppID); err == nil {
		rec.AppName = app.Name
		if t, err := a.store.AppTags(ctx, app.ID); err == nil {
			maps.Copy(tags, t)
		}
	}
	maps.Copy(tags, sb.Tags)
	if sb.FunctionID != "" {
		rec.Kind, rec.FunctionID, rec.SandboxID = metering.KindFunction, sb.FunctionID, ""
		if fn, err := a.store.GetFunction(ctx, sb.FunctionID); err == nil {
			rec.FunctionName = fn.Name
		}
	}
	if sb.WorkspaceID == auth.SystemWorkspace && sb.Tags["image_build"] != "" {
		rec.Kind = metering.KindImageBuild
		if ws := sb.Tags[metering.BilledToTag]; ws != "" {
			rec.WorkspaceID = ws
		}
		delete(tags, metering.BilledToTag)
	}
	if len(sb.GPU) > 0 {
		rec.GPUType, rec.GPUCount = sb.GPU[0].Type, max(sb.GPU[0].Count, 1)
	}
	if len(tags) > 0 {
		rec.Tags = tags
	}
	return rec
}

func (a *API) handleBillingRates(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, a.cfg.Prices)
}

// parseWhen reads a time in a query: RFC 3339, a date (2026-01-02, UTC midnight), or a
// time without a zone (UTC), as Modal's report takes naive times as UTC.
func parseWhen(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 && secs < 1e11 {
		return time.Unix(0, int64(secs*1e9)).UTC(), nil
	}
	return time.Time{}, errdefs.Invalid("%s %q is not a time: use RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02) or Unix seconds", name, v)
}

// tagNames reads tag_names: repeated, or comma-separated.
func tagNames(r *http.Request) []string {
	var out []string
	for _, v := range r.URL.Query()["tag_names"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

func (a *API) handleBillingReport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	res, err := metering.ParseResolution(q.Get("resolution"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	start, err := parseWhen("start", q.Get("start"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	end, err := parseWhen("end", q.Get("end"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	loc, err := metering.ParseTZ(q.Get("tz"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	start, end, err = metering.ReportWindow(start, end, time.Now(), res, loc)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	recs, err := a.store.ListUsage(r.Context(), store.UsageFilter{WorkspaceID: principal(r).WorkspaceID, From: start, To: end})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	rows := metering.Report(recs, a.cfg.Prices, start, end, res, tagNames(r), loc)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"start": start, "end": end, "resolution": res, "tz": loc.String(), "rows": rows})
}

// window reads since and until (default: the last 30 days up to now).
func window(r *http.Request, defaultSpan time.Duration) (time.Time, time.Time, error) {
	q := r.URL.Query()
	until, err := parseWhen("until", q.Get("until"))
	if err != nil {
		return until, until, err
	}
	if until.IsZero() {
		until = time.Now().UTC()
	}
	since, err := parseWhen("since", q.Get("since"))
	if err != nil {
		return since, until, err
	}
	if since.IsZero() {
		since = until.Add(-defaultSpan)
	}
	if !until.After(since) {
		return since, until, errdefs.Invalid("until (%s) must be after since (%s)", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	return since, until, nil
}

func (a *API) handleUsage(w http.ResponseWriter, r *http.Request) {
	by, err := metering.ParseGroup(r.URL.Query().Get("by"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	since, until, err := window(r, 30*24*time.Hour)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	loc, err := metering.ParseTZ(r.URL.Query().Get("tz"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	recs, err := a.store.ListUsage(r.Context(), store.UsageFilter{WorkspaceID: principal(r).WorkspaceID, From: since, To: until})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	rows := metering.Summarize(recs, a.cfg.Prices, since, until, by, loc)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"since": since, "until": until, "by": by, "tz": loc.String(), "rows": rows})
}

func (a *API) handleBillingAdvise(w http.ResponseWriter, r *http.Request) {
	since, until, err := window(r, 7*24*time.Hour)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q := r.URL.Query()
	factor := metering.DefaultReservedFactor
	if v := q.Get("reserved_factor"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= 10) {
			httpapi.WriteError(w, errdefs.Invalid("reserved_factor must be a number more than 0 and at most 10 (reserved price over serverless), got %q", v))
			return
		}
		factor = f
	}
	reserved := a.cfg.Prices.Scaled(factor)
	reserved.Source = "serverless rates × " + strconv.FormatFloat(factor, 'g', -1, 64)
	// The operator's reserved prices (the price file's "reserved"), then the request's.
	for _, res := range slices.Sorted(maps.Keys(a.cfg.Prices.Reserved)) {
		reserved = reserved.With(res, a.cfg.Prices.Reserved[res])
		reserved.Source += ", " + res + " from the price file"
	}
	for _, v := range q["reserved"] {
		res, perSec, err := metering.ParseRate(v)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		reserved = reserved.With(res, perSec)
		reserved.Source += ", " + v
	}
	recs, err := a.store.ListUsage(r.Context(), store.UsageFilter{WorkspaceID: principal(r).WorkspaceID, From: since, To: until})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	adv := metering.Advise(recs, a.cfg.Prices, reserved, since, until)
	if q.Get("timeline") != "true" {
		for i := range adv {
			adv[i].Timeline = nil
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"since": since, "until": until, "reserved": reserved, "advice": adv})
}

// running is what a live cost estimates the unrecorded tail of: the containers still
// pending or running, at their requested rate from when they were made.
func running(sbs ...sandbox.Sandbox) map[string]metering.Interval {
	out := map[string]metering.Interval{}
	for _, sb := range sbs {
		if sb.Status.Terminal() {
			continue
		}
		iv := metering.Interval{ContainerID: sb.ID, Start: sb.CreatedAt, CPURequest: sb.CPU, MemoryGiB: float64(sb.MemoryMiB) / 1024}
		if sb.StartedAt != nil {
			iv.Start = *sb.StartedAt
		}
		if len(sb.GPU) > 0 {
			iv.GPUType, iv.GPUCount = sb.GPU[0].Type, max(sb.GPU[0].Count, 1)
		}
		out[sb.ID] = iv
	}
	return out
}

func (a *API) handleSandboxUsage(w http.ResponseWriter, r *http.Request) {
	sb, err := a.sandboxOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	recs, err := a.store.ListUsage(r.Context(), store.UsageFilter{WorkspaceID: sb.WorkspaceID, ContainerID: sb.ID})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, metering.LiveCost(sb.ID, recs, a.cfg.Prices, running(sb), time.Now()))
}

func (a *API) handleAppUsage(w http.ResponseWriter, r *http.Request) {
	app, err := a.appOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	recs, err := a.store.ListUsage(r.Context(), store.UsageFilter{WorkspaceID: app.WorkspaceID, AppID: app.ID})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	live, err := a.store.ListSandboxes(r.Context(), store.SandboxFilter{WorkspaceID: app.WorkspaceID, AppID: app.ID, Functions: true})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, metering.LiveCost(app.ID, recs, a.cfg.Prices, running(live...), time.Now()))
}

func (a *API) handleAppTagsGet(w http.ResponseWriter, r *http.Request) {
	app, err := a.appOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	tags, err := a.store.AppTags(r.Context(), app.ID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"app_id": app.ID, "tags": tags})
}

func (a *API) handleAppTagsPut(w http.ResponseWriter, r *http.Request) {
	app, err := a.appOf(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var req struct {
		Tags map[string]string `json:"tags"`
	}
	if err := httpapi.DecodeJSON(r, &req, 256<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := sandbox.ValidateTags(req.Tags); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := a.store.SetAppTags(r.Context(), app.ID, req.Tags); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Tags == nil {
		req.Tags = map[string]string{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"app_id": app.ID, "tags": req.Tags})
}

// budgets is the checker, or an error when the server runs without one.
func (a *API) budgets() (*budget.Checker, error) {
	if a.cfg.Budgets == nil {
		return nil, errdefs.Unavailable("this server does not keep budgets")
	}
	return a.cfg.Budgets, nil
}

// handleBudgetSet sets a budget: a new one, or a new limit for the budget of the same scope
// and target.
func (a *API) handleBudgetSet(w http.ResponseWriter, r *http.Request) {
	bc, err := a.budgets()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var b metering.Budget
	if err := httpapi.DecodeJSON(r, &b, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := b.Validate(); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ws := principal(r).WorkspaceID
	if b.Scope == metering.ScopeApp {
		if _, err := a.appOf(r, b.Target); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	have, err := a.store.ListBudgets(r.Context(), ws)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	b.ID, b.WorkspaceID, b.CreatedAt = ids.New(ids.Budget), ws, time.Now().UTC()
	status := http.StatusCreated
	for _, h := range have {
		if h.Scope == b.Scope && h.Target == b.Target {
			b.ID, b.CreatedAt, status = h.ID, h.CreatedAt, http.StatusOK
		}
	}
	if err := a.store.PutBudget(r.Context(), b); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	bc.Changed(ws)
	sts, err := bc.Statuses(r.Context(), ws)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, s := range sts {
		if s.ID == b.ID {
			httpapi.WriteJSON(w, status, s)
			return
		}
	}
	httpapi.WriteJSON(w, status, b)
}

func (a *API) handleBudgetList(w http.ResponseWriter, r *http.Request) {
	bc, err := a.budgets()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sts, err := bc.Statuses(r.Context(), principal(r).WorkspaceID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"budgets": sts})
}

func (a *API) handleBudgetDelete(w http.ResponseWriter, r *http.Request) {
	bc, err := a.budgets()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ws := principal(r).WorkspaceID
	if err := a.store.DeleteBudget(r.Context(), ws, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	bc.Changed(ws)
	w.WriteHeader(http.StatusNoContent)
}

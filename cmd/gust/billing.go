package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gust-run/gust/internal/metering"
	gust "github.com/gust-run/gust/sdk/go"
)

// The usage ledger's commands: `gust billing rates|report|advise|cost` and `gust usage`.
func init() {
	register(&command{name: "billing rates", summary: "show the prices usage is billed at", run: withTerm(runBillingRates)})
	register(&command{name: "billing report", summary: "costs by app and day or hour, as Modal's billing report", run: withTerm(runBillingReport)})
	register(&command{name: "billing advise", summary: "duty cycles, and whether to stay serverless, reserve or split", run: withTerm(runBillingAdvise)})
	register(&command{name: "billing cost", summary: "what a running sandbox or app has cost so far", run: withTerm(runBillingCost)})
	register(&command{name: "usage", summary: "raw usage (seconds, resource units, cost) by app, function, sandbox, tag or day", run: withTerm(runUsageReport)})
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func runBillingRates(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("billing rates", "[--json]", "Shows the price table: per CPU core-second, per GiB-second of memory, per GPU-second of each type.")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	if err := noPositional(fs, args, "billing rates"); err != nil {
		return err
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	r, err := c.Rates(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(t.out, r)
	}
	tw := tabwriter.NewWriter(t.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "RESOURCE\tPER SECOND\tPER HOUR\n")
	fmt.Fprintf(tw, "cpu (per core)\t$%.8f\t$%.4f\n", r.CPUPerCoreSecond, r.CPUPerCoreSecond*3600)
	fmt.Fprintf(tw, "memory (per GiB)\t$%.8f\t$%.4f\n", r.MemoryPerGiBSecond, r.MemoryPerGiBSecond*3600)
	gpus := make([]string, 0, len(r.GPUPerSecond))
	for g := range r.GPUPerSecond {
		gpus = append(gpus, g)
	}
	sort.Slice(gpus, func(i, j int) bool { return r.GPUPerSecond[gpus[i]] > r.GPUPerSecond[gpus[j]] })
	for _, g := range gpus {
		fmt.Fprintf(tw, "gpu %s\t$%.6f\t$%.4f\n", g, r.GPUPerSecond[g], r.GPUPerSecond[g]*3600)
	}
	for _, cl := range sortedKeys(boolKeys(r.StoragePerGiBSecond)) {
		v := r.StoragePerGiBSecond[cl]
		fmt.Fprintf(tw, "storage %s (per GiB)\t$%.10f\t$%.4f/month\n", cl, v, v*30*86400)
	}
	for _, res := range sortedKeys(boolKeys(r.Reserved)) {
		fmt.Fprintf(tw, "reserved %s (advisor)\t$%.8f\t$%.4f\n", res, r.Reserved[res], r.Reserved[res]*3600)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(t.out, "\nSource: %s.\n", r.Source)
	return err
}

// parseWhen reads a date the way Modal's CLI does: ISO (2026-01-02, or a full RFC 3339 time),
// now, today, yesterday, or "N days ago" / "N hours ago"; dates and times without a zone are
// loc's (--tz; nil is UTC).
func parseWhen(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	s = strings.TrimSpace(strings.ToLower(s))
	day := midnight(now, loc)
	switch s {
	case "now":
		return now.UTC(), nil
	case "today":
		return day, nil
	case "yesterday":
		return day.AddDate(0, 0, -1), nil
	}
	if f := strings.Fields(s); len(f) == 3 && f[2] == "ago" {
		n, err := strconv.Atoi(f[0])
		if err == nil && n >= 0 {
			switch strings.TrimSuffix(f[1], "s") {
			case "day":
				return day.AddDate(0, 0, -n), nil
			case "hour":
				l := now.In(loc)
				return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), 0, 0, 0, loc).Add(-time.Duration(n) * time.Hour), nil
			case "week":
				return day.AddDate(0, 0, -7*n), nil
			}
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.ToUpper(s)); err == nil {
		return t.UTC(), nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, strings.ToUpper(s), loc); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date: use 2026-01-02, an RFC 3339 time, today, yesterday or \"3 days ago\"", s)
}

// midnight is the start of now's day in loc.
func midnight(now time.Time, loc *time.Location) time.Time {
	y, m, d := now.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// forRange is a convenience range: today, yesterday, this week, last week, this month, last
// month, in loc's days (nil: UTC).
func forRange(s string, now time.Time, loc *time.Location) (time.Time, time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	day := midnight(now, loc)
	week := day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7)) // Monday
	month := time.Date(day.Year(), day.Month(), 1, 0, 0, 0, 0, loc)
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "today":
		return day, day.AddDate(0, 0, 1), nil
	case "yesterday":
		return day.AddDate(0, 0, -1), day, nil
	case "this week":
		return week, week.AddDate(0, 0, 7), nil
	case "last week":
		return week.AddDate(0, 0, -7), week, nil
	case "this month":
		return month, month.AddDate(0, 1, 0), nil
	case "last month":
		return month.AddDate(0, -1, 0), month, nil
	}
	return time.Time{}, time.Time{}, fmt.Errorf("--for %q: use today, yesterday, this week, last week, this month or last month", s)
}

func runBillingReport(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("billing report", "--start DATE [--end DATE] | --for RANGE [-r d|h] [-t TAG ...] [--show-resources] [--json|--csv]",
		"Reports the workspace's costs by app (and image builds) per day or hour, as Modal's `modal billing report`.\nThe start is inclusive and rounded down to its interval; the end (default now) is exclusive, and only full intervals are reported.")
	start := fs.String("start", "", "start date: 2026-01-02, an RFC 3339 time, today, yesterday or \"3 days ago\" (UTC, or --tz)")
	end := fs.String("end", "", "end date (exclusive; default now)")
	forR := fs.String("for", "", "a range instead: today, yesterday, this week, last week, this month, last month")
	var res string
	fs.StringVar(&res, "resolution", "d", "d (daily) or h (hourly)")
	fs.StringVar(&res, "r", "d", "short for --resolution")
	var tags listFlag
	fs.Var(&tags, "tag-names", "tag keys to show (repeat, or comma-separate; * for all)")
	fs.Var(&tags, "t", "short for --tag-names")
	showRes := fs.Bool("show-resources", false, "break each cost down by resource (cpu, memory, each GPU type)")
	asJSON := fs.Bool("json", false, "print JSON")
	asCSV := fs.Bool("csv", false, "print CSV")
	tz := fs.String("tz", "", tzHelp)
	if err := noPositional(fs, args, "billing report"); err != nil {
		return err
	}
	loc, tzName, err := cliTZ(*tz)
	if err != nil {
		return err
	}
	now := time.Now()
	opts := gust.BillingReportOptions{Resolution: res, TagNames: tags, TZ: tzName}
	switch {
	case *forR != "" && (*start != "" || *end != ""):
		return errors.New("give either --for or --start/--end, not both")
	case *forR != "":
		opts.Start, opts.End, err = forRange(*forR, now, loc)
	case *start == "":
		return errors.New("--start or --for is required, e.g. --for \"this month\" or --start 2026-01-01")
	default:
		if opts.Start, err = parseWhen(*start, now, loc); err == nil && *end != "" {
			opts.End, err = parseWhen(*end, now, loc)
		}
	}
	if err != nil {
		return err
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	rows, err := c.BillingReport(ctx, opts)
	if err != nil {
		return err
	}
	warnBudgets(ctx, c, t)
	if *asJSON {
		return printJSON(t.out, rows)
	}
	tagKeys := map[string]bool{}
	resKeys := map[string]bool{}
	for _, r := range rows {
		for k := range r.Tags {
			tagKeys[k] = true
		}
		for k := range r.CostByResource {
			resKeys[k] = true
		}
	}
	tk, rk := sortedKeys(tagKeys), sortedKeys(resKeys)
	header := []string{"Object ID", "Description", "Environment", "Interval Start", "Cost"}
	if *showRes {
		header = append(header, rk...)
	}
	for _, k := range tk {
		header = append(header, "tag:"+k)
	}
	table := [][]string{header}
	total := new(big.Rat)
	for _, r := range rows {
		line := []string{r.ObjectID, r.Description, r.EnvironmentName, r.IntervalStart.In(loc).Format(time.RFC3339), r.Cost}
		if v, ok := new(big.Rat).SetString(r.Cost); ok {
			total.Add(total, v)
		}
		if *showRes {
			for _, k := range rk {
				line = append(line, r.CostByResource[k])
			}
		}
		for _, k := range tk {
			line = append(line, r.Tags[k])
		}
		table = append(table, line)
	}
	if *asCSV {
		w := csv.NewWriter(t.out)
		if err := w.WriteAll(table); err != nil {
			return err
		}
		return nil
	}
	if err := printRows(t, table); err != nil {
		return err
	}
	_, err = fmt.Fprintf(t.out, "\nTotal: $%s over %d row(s)\n", total.FloatString(6), len(rows))
	return err
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// printRows writes rows (the first is the header) as aligned columns.
func printRows(t cliIO, table [][]string) error {
	tw := tabwriter.NewWriter(t.out, 0, 0, 2, ' ', 0)
	for _, line := range table {
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	return tw.Flush()
}

// sinceFlag reads --since/--until: a date as parseWhen reads it (in loc), or a duration before
// now ("24h", "7d").
func sinceFlag(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if d, err := strconv.ParseFloat(n, 64); err == nil && d >= 0 {
			return now.Add(-time.Duration(d * 24 * float64(time.Hour))), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return parseWhen(s, now, loc)
}

// windowClient reads --since and --until (dates in loc; nil is UTC) and loads the client.
func windowClient(since, until string, loc *time.Location) (s, u time.Time, c *gust.Client, err error) {
	now := time.Now()
	if s, err = sinceFlag(since, now, loc); err != nil {
		return
	}
	if u, err = sinceFlag(until, now, loc); err != nil {
		return
	}
	c, _, err = loadClient()
	return
}

func runUsageReport(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("usage", "[--since T] [--until T] [--by app|function|sandbox|tag|day] [--format table|json|csv] [--tz TZ]",
		"Shows the raw usage of each group over a window (default the last 30 days): wall seconds, CPU seconds used, billable core- and GiB-seconds, GPU seconds, peak memory and cost.\nT is a date (2026-01-02, RFC 3339, today, yesterday, \"3 days ago\") or a duration before now (24h, 7d).")
	since := fs.String("since", "", "start of the window (default 30 days before --until)")
	until := fs.String("until", "", "end of the window (default now)")
	by := fs.String("by", "app", "group by app, function, sandbox, tag or day")
	format := fs.String("format", "table", "table, json or csv")
	tz := fs.String("tz", "", tzHelp+"; --by day groups by its days")
	if err := noPositional(fs, args, "usage"); err != nil {
		return err
	}
	if *format != "table" && *format != "json" && *format != "csv" {
		return fmt.Errorf("--format must be table, json or csv, got %q", *format)
	}
	loc, tzName, err := cliTZ(*tz)
	if err != nil {
		return err
	}
	s, u, c, err := windowClient(*since, *until, loc)
	if err != nil {
		return err
	}
	rows, err := c.Usage(ctx, gust.UsageOptions{Since: s, Until: u, By: *by, TZ: tzName})
	if err != nil {
		return err
	}
	warnBudgets(ctx, c, t)
	if *format == "json" {
		return printJSON(t.out, rows)
	}
	table := [][]string{{strings.ToUpper(*by), "NAME", "CONTAINERS", "WALL_SECONDS", "CPU_SECONDS", "BILLABLE_CPU_CORE_SECONDS",
		"BILLABLE_MEMORY_GIB_SECONDS", "GPU_SECONDS", "STORAGE_GIB_SECONDS", "MEMORY_PEAK_BYTES", "COST"}}
	for _, r := range rows {
		table = append(table, []string{r.ID, r.Name, strconv.Itoa(r.Containers), fmt.Sprintf("%.1f", r.WallSeconds), fmt.Sprintf("%.2f", r.CPUSeconds),
			fmt.Sprintf("%.1f", r.BillableCPUCoreSeconds), fmt.Sprintf("%.1f", r.BillableMemoryGiBSeconds), fmt.Sprintf("%.1f", r.GPUSeconds),
			fmt.Sprintf("%.1f", r.StorageGiBSeconds), strconv.FormatInt(r.MemoryPeakBytes, 10), r.Cost})
	}
	if *format == "csv" {
		return csv.NewWriter(t.out).WriteAll(table)
	}
	return printRows(t, table)
}

func runBillingCost(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("billing cost", "SANDBOX_ID | --app APP_ID [--json] [--watch SECONDS] [--max DOLLARS]",
		"Shows what a sandbox (or, with --app, an app's sandboxes and function containers) has cost so far: the cost recorded, and an estimate\nthat adds the time since at the requested rate while it runs. --max exits 3 once the estimate passes it, for scripts that stop a runaway.")
	app := fs.String("app", "", "an app ID instead of a sandbox")
	asJSON := fs.Bool("json", false, "print JSON")
	watch := fs.Float64("watch", 0, "print again every SECONDS until it ends (0: once)")
	maxCost := fs.Float64("max", 0, "exit with status 3 once the estimated cost passes this many dollars")
	pos, _, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if (len(pos) == 1) == (*app != "") {
		fs.Usage()
		return errors.New("give a sandbox ID or --app APP_ID")
	}
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	for {
		var l *gust.LiveCost
		if *app != "" {
			l, err = c.AppCost(ctx, *app)
		} else {
			l, err = c.SandboxCost(ctx, pos[0])
		}
		if err != nil {
			return err
		}
		if *asJSON {
			err = printJSON(t.out, l)
		} else {
			state := "ended"
			if l.Running {
				state = "running"
			}
			_, err = fmt.Fprintf(t.out, "%s (%s): $%s so far (recorded $%s over %.0f container-seconds, %.1f CPU seconds)\n",
				l.ID, state, l.EstimatedCost, l.Cost, l.WallSeconds, l.CPUSeconds)
		}
		if err != nil {
			return err
		}
		if *maxCost > 0 && l.Dollars() > *maxCost {
			fmt.Fprintf(t.err, "gust: %s has cost $%s, over --max $%v\n", l.ID, l.EstimatedCost, *maxCost)
			return exitCode(3)
		}
		if *watch <= 0 || !l.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(*watch * float64(time.Second))):
		}
	}
}

func runBillingAdvise(ctx context.Context, args []string, t cliIO) error {
	fs := t.flags("billing advise", "[--since T] [--until T] [--reserved RES=PRICE/PERIOD ...] [--reserved-factor F] [--json] [--plot usage.png]",
		"Reads the ledger over a window (default the last 7 days) and says, for each function (and each app's sandboxes) and resource class:\nits duty cycle (busy seconds over wall seconds), concurrency p50/p95/peak, what it cost, what reserved capacity would cost,\nthe break-even utilisation, and whether to stay serverless, reserve, or split (min_containers=N as the reserved floor),\nwith the monthly saving. Reserved prices: --reserved H100=2.50/h, cpu=0.03/h, memory=0.004/h (per GiB); others are the\nserverless price × --reserved-factor (default 0.5).")
	since := fs.String("since", "", "start of the window (default 7 days before --until)")
	until := fs.String("until", "", "end of the window (default now)")
	var reserved listFlag
	fs.Var(&reserved, "reserved", "a reserved price, RES=PRICE/PERIOD with period s, h or mo (repeat)")
	factor := fs.Float64("reserved-factor", 0, "reserved over serverless price for resources --reserved does not name (default 0.5)")
	asJSON := fs.Bool("json", false, "print JSON")
	plotPath := fs.String("plot", "", "also draw concurrency over time with the recommended floor to this file (.png, .svg or .pdf)")
	if err := noPositional(fs, args, "billing advise"); err != nil {
		return err
	}
	s, u, c, err := windowClient(*since, *until, nil)
	if err != nil {
		return err
	}
	adv, err := c.Advise(ctx, gust.AdviseOptions{Since: s, Until: u, Reserved: reserved, ReservedFactor: *factor, Timeline: *plotPath != ""})
	if err != nil {
		return err
	}
	if *plotPath != "" && len(adv) > 0 {
		start := s
		if start.IsZero() && len(adv[0].Timeline) > 0 {
			start = adv[0].Timeline[0].At
		}
		if err := plotAdvice(*plotPath, adv, start); err != nil {
			return fmt.Errorf("--plot %s: %w", *plotPath, err)
		}
		fmt.Fprintf(t.err, "wrote %s\n", *plotPath)
		for _, a := range adv {
			a.Timeline = nil
		}
	}
	if *asJSON {
		return printJSON(t.out, adv)
	}
	if len(adv) == 0 {
		_, err := fmt.Fprintln(t.out, "No usage in this window: nothing to advise on.")
		return err
	}
	table := [][]string{{"KIND", "NAME", "CLASS", "DUTY", "P50", "P95", "PEAK", "BREAK-EVEN", "SERVERLESS/MO", "RECOMMEND", "SETTING", "SAVING/MO"}}
	for _, a := range adv {
		table = append(table, []string{a.Kind, a.Name, a.ResourceClass, fmt.Sprintf("%.0f%%", 100*a.DutyCycle),
			strconv.Itoa(a.Concurrency.P50), strconv.Itoa(a.Concurrency.P95), strconv.Itoa(a.Concurrency.Peak),
			fmt.Sprintf("%.0f%%", 100*a.BreakEvenUtilization), fmt.Sprintf("$%.2f", a.ServerlessMonthly), a.Recommendation,
			orDash(a.Setting), fmt.Sprintf("$%.2f", a.MonthlySaving)})
	}
	if err := printRows(t, table); err != nil {
		return err
	}
	fmt.Fprintln(t.out)
	for _, a := range adv {
		fmt.Fprintf(t.out, "- %s\n", a.Summary)
	}
	return nil
}

func init() {
	register(&command{name: "billing budget", summary: "set, list or delete monthly budgets (workspace, app or tag)", run: withTerm(runBillingBudget)})
}

func runBillingBudget(ctx context.Context, args []string, t cliIO) error {
	if len(args) == 0 || (args[0] != "set" && args[0] != "list" && args[0] != "delete") {
		return errors.New("usage: gust billing budget set --scope workspace|app|tag [--target ID|KEY=VALUE] --limit DOLLARS [--warn-at 0.8] [--stop-running] | list [--json] | delete BUDGET_ID")
	}
	sub, args := args[0], args[1:]
	c, _, err := loadClient()
	if err != nil {
		return err
	}
	switch sub {
	case "set":
		fs := t.flags("billing budget set", "--scope workspace|app|tag [--target ID|KEY=VALUE] --limit DOLLARS [--warn-at F] [--stop-running]",
			"Sets a monthly budget (owners). Near it (--warn-at of the limit) the audit log and the CLI warn; at it, new containers in its scope\nare refused, and with --stop-running the running ones are stopped. A budget of the same scope and target is replaced.")
		scope := fs.String("scope", "workspace", "workspace, app or tag")
		target := fs.String("target", "", "the app ID (scope app) or KEY=VALUE (scope tag)")
		limit := fs.Float64("limit", 0, "dollars per calendar month (UTC)")
		warnAt := fs.Float64("warn-at", 0, "share of the limit at which to warn (default 0.8)")
		stopRunning := fs.Bool("stop-running", false, "stop running containers in its scope once it is spent")
		if err := noPositional(fs, args, "billing budget set"); err != nil {
			return err
		}
		b, err := c.SetBudget(ctx, gust.Budget{Scope: *scope, Target: *target, MonthlyLimit: *limit, WarnAt: *warnAt, StopRunning: *stopRunning})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(t.out, "%s: %s %s, $%.2f a month (warn at %.0f%%), $%.4f spent this month: %s\n",
			b.ID, b.Scope, b.Target, b.MonthlyLimit, 100*b.WarnAt, b.Spent, b.State)
		return err
	case "delete":
		if len(args) != 1 {
			return errors.New("usage: gust billing budget delete BUDGET_ID")
		}
		return c.DeleteBudget(ctx, args[0])
	}
	fs := t.flags("billing budget list", "[--json]", "Lists the workspace's budgets and what each has spent this month.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noPositional(fs, args, "billing budget list"); err != nil {
		return err
	}
	bs, err := c.Budgets(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(t.out, bs)
	}
	table := [][]string{{"BUDGET", "SCOPE", "TARGET", "LIMIT/MO", "SPENT", "USED", "STATE", "STOP RUNNING"}}
	for _, b := range bs {
		table = append(table, []string{b.ID, b.Scope, orDash(b.Target), fmt.Sprintf("$%.2f", b.MonthlyLimit), fmt.Sprintf("$%.4f", b.Spent),
			fmt.Sprintf("%.0f%%", 100*b.Spent/b.MonthlyLimit), b.State, strconv.FormatBool(b.StopRunning)})
	}
	return printRows(t, table)
}

// warnBudgets tells the user, on stderr, of budgets near or at their limit.
func warnBudgets(ctx context.Context, c *gust.Client, t cliIO) {
	bs, err := c.Budgets(ctx)
	if err != nil {
		return // a read-only view: the report matters more than the warning
	}
	for _, b := range bs {
		switch b.State {
		case "warning":
			fmt.Fprintf(t.err, "warning: budget %s (%s %s) has spent $%.4f of $%.2f this month (%.0f%%)\n", b.ID, b.Scope, b.Target, b.Spent, b.MonthlyLimit, 100*b.Spent/b.MonthlyLimit)
		case "exceeded":
			fmt.Fprintf(t.err, "warning: budget %s (%s %s) is spent ($%.4f of $%.2f): new containers in its scope are refused\n", b.ID, b.Scope, b.Target, b.Spent, b.MonthlyLimit)
		}
	}
}

func boolKeys(m map[string]float64) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

const tzHelp = "time zone of dates and days: local, an offset (5, -4, +05:30) or an IANA name (America/New_York); default UTC"

// cliTZ reads --tz: the zone to read dates in, and the name to send the server, which cannot
// know the client's "local".
func cliTZ(s string) (*time.Location, string, error) {
	if strings.EqualFold(strings.TrimSpace(s), "local") {
		s = localZoneName()
	}
	loc, err := metering.ParseTZ(s)
	if err != nil {
		return nil, "", fmt.Errorf("--tz: %w", err)
	}
	if loc == time.UTC {
		return loc, "", nil
	}
	return loc, s, nil
}

// localZoneName is this machine's zone as the server can read it: $TZ or /etc/localtime's
// IANA name, else today's offset.
func localZoneName() string {
	if tz := strings.TrimPrefix(os.Getenv("TZ"), ":"); tz != "" {
		if _, err := time.LoadLocation(tz); err == nil {
			return tz
		}
	}
	if target, err := os.Readlink("/etc/localtime"); err == nil {
		if _, name, ok := strings.Cut(target, "zoneinfo/"); ok {
			if _, err := time.LoadLocation(name); err == nil {
				return name
			}
		}
	}
	_, off := time.Now().Zone()
	sign := "+"
	if off < 0 {
		sign, off = "-", -off
	}
	return fmt.Sprintf("%s%02d:%02d", sign, off/3600, off%3600/60)
}

package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The usage ledger against real containers: CPU seconds read from the cgroup, wall time
// against the server's own clock, costs at the server's rates, attribution to apps, functions
// and tags, and a kill -9 of gust that neither loses nor double-counts an interval.

// meteredGust starts a gust of its own with short meter intervals (2 s intervals, 0.5 s
// samples) on dir, and points the API helpers at it; it returns the process, its arguments and
// the base image. The test's end stops it and checks it left nothing behind.
func meteredGust(t *testing.T, dir, addr string, extra ...string) (*os.Process, []string, string) {
	t.Helper()
	t.Setenv("GUST_METER_INTERVAL", "2s")
	t.Setenv("GUST_METER_TICK", "500ms")
	args := append([]string{"up", "--addr", addr, "--data-dir", dir, "--image-cache", imageCache, "--no-config", "--no-install",
		"--sandbox-disk", "256", "--warm-pool", "0"}, extra...)
	cmd := startGust(t, "http://"+addr, args...)
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // a test that killed it has already waited for it
		cmd.Wait()
		if err := checkNoLeftovers(dir); err != nil {
			t.Error(err)
		}
	})
	imageID, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Process, args, imageID
}

type liveCost struct {
	ID            string  `json:"id"`
	Running       bool    `json:"running"`
	Containers    int     `json:"containers"`
	Intervals     int     `json:"intervals"`
	Closed        bool    `json:"closed"`
	WallSeconds   float64 `json:"wall_seconds"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	Cost          string  `json:"cost"`
	EstimatedCost string  `json:"estimated_cost"`
	MeteredUntil  *string `json:"metered_until"`
}

type usageRow struct {
	ID                       string            `json:"id"`
	Name                     string            `json:"name"`
	Containers               int               `json:"containers"`
	WallSeconds              float64           `json:"wall_seconds"`
	CPUSeconds               float64           `json:"cpu_seconds"`
	BillableCPUCoreSeconds   float64           `json:"billable_cpu_core_seconds"`
	BillableMemoryGiBSeconds float64           `json:"billable_memory_gib_seconds"`
	StorageGiBSeconds        float64           `json:"storage_gib_seconds"`
	Cost                     string            `json:"cost"`
	CostByResource           map[string]string `json:"cost_by_resource"`
}

type rates struct {
	CPU    float64 `json:"cpu_per_core_second"`
	Memory float64 `json:"memory_per_gib_second"`
}

func usageBy(t *testing.T, by string) map[string]usageRow {
	t.Helper()
	var out struct {
		Rows []usageRow `json:"rows"`
	}
	if err := api("GET", "/v1/usage?by="+by+"&since="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), nil, &out); err != nil {
		t.Fatal(err)
	}
	m := map[string]usageRow{}
	for _, r := range out.Rows {
		m[r.ID] = r
	}
	return m
}

// waitFinalUsage waits until a container's usage is recorded to its end: not running, its
// last interval recorded, and no change between two reads a tick apart.
func waitFinalUsage(t *testing.T, path string, secs int) liveCost {
	t.Helper()
	var last liveCost
	for i := 0; i < secs*4; i++ {
		var l liveCost
		if err := api("GET", path, nil, &l); err != nil {
			t.Fatal(err)
		}
		if !l.Running && l.Closed && l.WallSeconds > 0 && l.WallSeconds == last.WallSeconds && l.Cost == last.Cost {
			return l
		}
		last = l
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: usage did not settle in %d s: %+v", path, secs, last)
	return last
}

func parseCost(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("cost %q: %v", s, err)
	}
	return v
}

// TestMeteringSandboxAccuracy runs a sandbox that burns 4 CPU-seconds on one core, then sleeps
// 4 s: the ledger's CPU seconds are within 5% of the burn, its wall seconds within one second
// of the server's own start and finish, and its cost is the rates applied to its billable
// units; the app's and the sandbox's tags reach the report.
func TestMeteringSandboxAccuracy(t *testing.T) {
	needGust(t)
	_, _, imageID := meteredGust(t, t.TempDir(), freePort())
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "metering", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	if err := api("PUT", "/v1/apps/"+app.AppID+"/tags", map[string]any{"tags": map[string]string{"team": "ml"}}, nil); err != nil {
		t.Fatal(err)
	}
	// Burn by CPU time, not wall time, so that a busy machine changes the wall time only.
	burn := "import time\nwhile time.process_time() < 4: pass\ntime.sleep(4)\nprint(time.process_time())"
	sbID, _ := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "cpu": 1, "memory": 512,
		"command": []string{"python3", "-c", burn}, "tags": map[string]string{"customer": "acme"}})
	// Live: while it runs, the estimate grows.
	time.Sleep(3 * time.Second)
	var during liveCost
	if err := api("GET", "/v1/sandboxes/"+sbID+"/usage", nil, &during); err != nil {
		t.Fatal(err)
	}
	if !during.Running || parseCost(t, during.EstimatedCost) <= 0 {
		t.Errorf("while running: %+v", during)
	}
	st := waitSandbox(t, sbID, 60)
	if st.Status != "finished" {
		t.Fatalf("sandbox ended %q", st.Status)
	}
	l := waitFinalUsage(t, "/v1/sandboxes/"+sbID+"/usage", 30)
	wall := serverWall(t, sbID)
	t.Logf("ledger: %.2f wall s, %.3f CPU s, $%s; server clock: %.2f s", l.WallSeconds, l.CPUSeconds, l.Cost, wall)
	if math.Abs(l.WallSeconds-wall) > 1 {
		t.Errorf("ledger wall seconds %.2f, the server's clock %.2f: more than 1 s apart", l.WallSeconds, wall)
	}
	// 4 s of burn, and the interpreter's start (a few hundredths).
	if l.CPUSeconds < 4*0.95 || l.CPUSeconds > 4*1.05+0.1 {
		t.Errorf("ledger CPU seconds %.3f, burned 4 (within 5%%)", l.CPUSeconds)
	}
	var r rates
	if err := api("GET", "/v1/billing/rates", nil, &r); err != nil {
		t.Fatal(err)
	}
	row, ok := usageBy(t, "sandbox")[sbID]
	if !ok {
		t.Fatalf("no usage row for %s", sbID)
	}
	// Billable: at least the request (1 core, 0.5 GiB) for every second, and the CPU used.
	if row.BillableCPUCoreSeconds < row.WallSeconds-0.01 || row.BillableCPUCoreSeconds < row.CPUSeconds-0.01 ||
		row.BillableCPUCoreSeconds > row.WallSeconds+0.5 || math.Abs(row.BillableMemoryGiBSeconds-row.WallSeconds/2) > 0.25 {
		t.Errorf("billable %+v", row)
	}
	want := row.BillableCPUCoreSeconds*r.CPU + row.BillableMemoryGiBSeconds*r.Memory
	if got := parseCost(t, row.Cost); math.Abs(got-want) > 1e-8 || parseCost(t, l.Cost) != got {
		t.Errorf("cost %v (live %s), rates say %v", got, l.Cost, want)
	}
	// The report: the app's row for today carries both tags and the same cost.
	var rep struct {
		Rows []struct {
			ObjectID       string            `json:"object_id"`
			Description    string            `json:"description"`
			Cost           string            `json:"cost"`
			Tags           map[string]string `json:"tags"`
			CostByResource map[string]string `json:"cost_by_resource"`
		} `json:"rows"`
	}
	start := time.Now().UTC().Add(-2 * time.Hour).Format(time.RFC3339)
	end := time.Now().UTC().Add(2 * time.Hour).Format(time.RFC3339)
	if err := api("GET", "/v1/billing/report?resolution=h&tag_names=*&start="+start+"&end="+end, nil, &rep); err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, rr := range rep.Rows {
		if rr.ObjectID != app.AppID {
			continue
		}
		total += parseCost(t, rr.Cost)
		if rr.Tags["team"] != "ml" || rr.Tags["customer"] != "acme" || rr.Description != "metering" || rr.CostByResource["cpu"] == "" {
			t.Errorf("report row %+v", rr)
		}
	}
	if math.Abs(total-parseCost(t, row.Cost)) > 1e-8 {
		t.Errorf("report total %v, usage %s (%+v)", total, row.Cost, rep.Rows)
	}
	if _, ok := usageBy(t, "tag")["customer=acme"]; !ok {
		t.Errorf("no usage under tag customer=acme")
	}
	// The CLI says the same: Modal's report as CSV with the tags, raw usage as JSON.
	for _, args := range [][]string{
		{"billing", "report", "--start", start, "--end", end, "-r", "h", "-t", "*", "--show-resources", "--csv"},
		{"usage", "--since", "1h", "--by", "sandbox", "--format", "json"},
		{"billing", "cost", sbID},
	} {
		cli := exec.Command(gust.bin, args...)
		cli.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
		out, err := cli.CombinedOutput()
		// The report's rows are hourly (the sandbox may straddle two hours): its app is there.
		want, cost := app.AppID, ""
		if args[0] == "usage" || args[1] == "cost" {
			want, cost = sbID, row.Cost
		}
		if err != nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), cost) {
			t.Errorf("gust %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// A budget the app has spent refuses its new sandboxes, naming the budget; another app's
	// still start.
	var b struct {
		ID    string `json:"budget_id"`
		State string `json:"state"`
	}
	if err := api("POST", "/v1/billing/budgets", map[string]any{"scope": "app", "target": app.AppID, "monthly_limit": 0.0001}, &b); err != nil {
		t.Fatal(err)
	}
	if b.State != "exceeded" {
		t.Errorf("budget state %q, want exceeded", b.State)
	}
	err := api("POST", "/v1/sandboxes", map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"true"}}, nil)
	if ae, ok := err.(*apiError); !ok || ae.Status != 403 || !strings.Contains(ae.Body, b.ID) || !strings.Contains(ae.Body, "quota_exceeded") {
		t.Errorf("a sandbox under a spent budget: %v", err)
	}
	var other struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "metering-other", "create_if_missing": true}, &other); err != nil {
		t.Fatal(err)
	}
	var fine struct {
		ID string `json:"sandbox_id"`
	}
	if err := api("POST", "/v1/sandboxes", map[string]any{"app_id": other.AppID, "image_id": imageID, "command": []string{"true"}}, &fine); err != nil {
		t.Errorf("another app's sandbox: %v", err)
	} else {
		createdMu.Lock()
		created = append(created, fine.ID)
		createdMu.Unlock()
		waitSandbox(t, fine.ID, 30)
	}
	cli := exec.Command(gust.bin, "billing", "budget", "list")
	cli.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), b.ID) || !strings.Contains(string(out), "exceeded") {
		t.Errorf("gust billing budget list: %v\n%s", err, out)
	}
	if err := api("DELETE", "/v1/billing/budgets/"+b.ID, nil, nil); err != nil {
		t.Error(err)
	}
}

// TestMeteringFunctionUsage: a function call's container is metered to its function, its app
// and its app's tags.
func TestMeteringFunctionUsage(t *testing.T) {
	needGust(t)
	_, _, imageID := meteredGust(t, t.TempDir(), freePort())
	app := publish(t, "metering-fn", "ephemeral", map[string]any{"name": "add", "image_id": imageID})
	if err := api("PUT", "/v1/apps/"+app.AppID+"/tags", map[string]any{"tags": map[string]string{"project": "p1"}}, nil); err != nil {
		t.Fatal(err)
	}
	r := remoteCall(t, app.Functions["add"], jsonArgs(2, 3))
	if v := r.value(t, 0); v != 5.0 {
		t.Fatalf("add(2, 3) = %v", v)
	}
	// Stopping the app ends its container: its last interval is recorded.
	if err := api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	l := waitFinalUsage(t, "/v1/apps/"+app.AppID+"/usage", 60)
	if l.Containers < 1 || parseCost(t, l.Cost) <= 0 {
		t.Fatalf("app usage %+v", l)
	}
	fn, ok := usageBy(t, "function")[app.Functions["add"]]
	if !ok || fn.WallSeconds <= 0 || math.Abs(fn.WallSeconds-l.WallSeconds) > 1e-6 {
		t.Errorf("function usage %+v, app usage %+v", fn, l)
	}
	if tag, ok := usageBy(t, "tag")["project=p1"]; !ok || math.Abs(tag.WallSeconds-l.WallSeconds) > 1e-6 {
		t.Errorf("tag project=p1: %+v (app %+v)", tag, l)
	}

	// The operator's metrics: the ledger recorded intervals, the function container started.
	req := authed("GET", "/v1/metrics")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`gust_ledger_intervals_total{result="recorded"}`, `gust_container_start_seconds_count{kind="function"} 1`,
		`gust_containers{kind="sandbox",state="running"}`, "gust_worker_cpu_cores{", "gust_ledger_lag_seconds_bucket", `gust_usage_cost_dollars_total{resource="cpu",workspace="ws-default"}`} {
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("metrics (HTTP %d) lack %s:\n%s", resp.StatusCode, want, body)
			break
		}
	}
}

// serverWall is a container's life by the server's record (its external clock): start to
// finish.
func serverWall(t *testing.T, id string) float64 {
	t.Helper()
	var rec struct {
		StartedAt  time.Time `json:"started_at"`
		FinishedAt time.Time `json:"finished_at"`
	}
	if err := api("GET", "/v1/sandboxes/"+id, nil, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.FinishedAt.Sub(rec.StartedAt).Seconds()
}

// remoteCall calls a function once with args (jsonArgs), trying again while the gust the test
// started has no worker yet, and returns the call's stream.
func remoteCall(t *testing.T, fnID, args string) callResult {
	t.Helper()
	var r callResult
	for i := 0; ; i++ {
		r = readStream(t, post(t, "/v1/functions/"+fnID+"/calls", map[string]any{"kind": "remote", "stream": true,
			"inputs": []map[string]any{{"args": args, "format": "json"}}}))
		if len(r.Outputs) == 1 || i > 50 {
			return r
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMeteringSurvivesKill kills gust with SIGKILL while a sandbox runs, starts it again on
// the same data directory, and checks the sandbox's metered time: what the killed worker had
// measured arrives once (its spool), nothing is lost beyond the last sample, and nothing is
// counted twice.
func TestMeteringSurvivesKill(t *testing.T) {
	needGust(t)
	dir := t.TempDir()
	addr := freePort()
	proc, args, imageID := meteredGust(t, dir, addr)
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "metering-kill", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	sbID, startedAt := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"sleep", "600"}})
	before := midInterval(t, sbID)
	killed := time.Now()
	proc.Kill()
	proc.Wait()
	ran := killed.Sub(startedAt).Seconds()

	second := startGust(t, "http://"+addr, args...)
	defer func() {
		second.Process.Signal(os.Interrupt)
		second.Wait()
		if err := checkNoLeftovers(dir); err != nil {
			t.Error(err)
		}
	}()
	l := waitFinalUsage(t, "/v1/sandboxes/"+sbID+"/usage", 30)
	t.Logf("ran %.2f s before the kill; recorded before it %.2f s, after the restart %.2f s", ran, before.WallSeconds, l.WallSeconds)
	// Its last interval can only have come from the killed worker's spool.
	if before.WallSeconds <= 0 || l.WallSeconds < before.WallSeconds+0.4 || before.Closed || !l.Closed || l.Intervals != before.Intervals+1 {
		t.Errorf("before the kill %+v; after the restart %+v", before, l)
	}
	// At most one sample (0.5 s) and the metering's start are lost; nothing is counted twice.
	if l.WallSeconds > ran+0.5 || l.WallSeconds < ran-1.5 {
		t.Errorf("metered %.2f s of a sandbox that ran %.2f s before gust was killed", l.WallSeconds, ran)
	}
	// The spool was sent and emptied.
	b, err := os.ReadFile(filepath.Join(dir, "containers", "usage", "spool.json"))
	if err != nil || !strings.Contains(string(b), `"pending":null`) && !strings.Contains(string(b), `"pending":[]`) {
		t.Errorf("spool after the restart: %s %v", b, err)
	}
}

// TestMeteringAdvisor runs a short real workload and checks the advisor's recommendation: an
// app whose sandbox runs through most of the window should reserve one container; an app
// with one short sandbox should stay serverless. The CLI says the same.
func TestMeteringAdvisor(t *testing.T) {
	needGust(t)
	_, _, imageID := meteredGust(t, t.TempDir(), freePort())
	apps := map[string]string{}
	for _, name := range []string{"steady", "bursty"} {
		var app struct {
			AppID string `json:"app_id"`
		}
		if err := api("POST", "/v1/apps/lookup", map[string]any{"name": name, "create_if_missing": true}, &app); err != nil {
			t.Fatal(err)
		}
		apps[name] = app.AppID
	}
	create := func(app string, cmd ...string) string {
		id, _ := meteredSandbox(t, map[string]any{"app_id": app, "image_id": imageID, "command": cmd})
		return id
	}
	since := time.Now().UTC()
	steady := create(apps["steady"], "sleep", "10")
	bursty := create(apps["bursty"], "true")
	waitSandbox(t, bursty, 30)
	waitSandbox(t, steady, 60)
	waitFinalUsage(t, "/v1/sandboxes/"+steady+"/usage", 30)
	waitFinalUsage(t, "/v1/sandboxes/"+bursty+"/usage", 30)
	until := time.Now().UTC()
	var out struct {
		Advice []struct {
			Kind           string  `json:"kind"`
			ID             string  `json:"id"`
			DutyCycle      float64 `json:"duty_cycle"`
			Recommendation string  `json:"recommendation"`
			Floor          int     `json:"floor"`
			MonthlySaving  float64 `json:"monthly_saving"`
			Summary        string  `json:"summary"`
		} `json:"advice"`
	}
	q := "/v1/billing/advise?since=" + since.Format(time.RFC3339Nano) + "&until=" + until.Format(time.RFC3339Nano)
	if err := api("GET", q, nil, &out); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range out.Advice {
		t.Logf("%s", a.Summary)
		got[a.ID] = a.Recommendation
		switch a.ID {
		case apps["steady"]:
			if a.DutyCycle < 0.6 || a.Recommendation != "reserve" || a.Floor != 1 || a.MonthlySaving <= 0 {
				t.Errorf("steady: %+v", a)
			}
		case apps["bursty"]:
			if a.DutyCycle > 0.3 || a.Recommendation != "serverless" || a.Floor != 0 {
				t.Errorf("bursty: %+v", a)
			}
		}
	}
	if got[apps["steady"]] == "" || got[apps["bursty"]] == "" {
		t.Fatalf("advice for %v, want both apps", got)
	}
	png := filepath.Join(t.TempDir(), "usage.png")
	cli := exec.Command(gust.bin, "billing", "advise", "--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano), "--plot", png)
	cli.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
	b, err := cli.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "Reserve 1 container") || !strings.Contains(string(b), "Stay serverless") {
		t.Errorf("gust billing advise: %v\n%s", err, b)
	}
	if img, err := os.ReadFile(png); err != nil || len(img) < 1000 || string(img[1:4]) != "PNG" {
		t.Errorf("--plot wrote %d bytes (%v), not a chart", len(img), err)
	}
}

// TestMeteringSurvivesWorkerKill runs the server and a worker apart, kills the worker with
// SIGKILL mid-interval while a sandbox runs, and starts it again: the new worker (a new ID,
// the same name) delivers what the old one owed, once.
func TestMeteringSurvivesWorkerKill(t *testing.T) {
	needGust(t)
	t.Setenv("GUST_METER_INTERVAL", "2s")
	t.Setenv("GUST_METER_TICK", "500ms")
	sdir, wdir := t.TempDir(), t.TempDir()
	addr := freePort()
	url := "http://" + addr
	srv := startGust(t, url, "server", "--addr", addr, "--data-dir", sdir, "--image-cache", imageCache, "--no-config")
	wlog := &tailBuffer{max: 16 << 10} // the workers' log, shown if the test fails
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the end of the workers' log:\n%s", wlog.String())
		}
	})
	startWorker := func() *exec.Cmd {
		w := exec.Command(gust.bin, "worker", "--server", url, "--data-dir", wdir, "--image-cache", imageCache, "--no-install",
			"--sandbox-disk", "256", "--warm-pool", "0")
		w.Env = append(os.Environ(), "GUST_JOIN_TOKEN="+gust.joinToken)
		w.Stdout, w.Stderr = wlog, wlog
		dieWithTest(w)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := startWorker()
	defer func() {
		w.Process.Signal(os.Interrupt)
		w.Wait()
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
		if err := checkNoLeftovers(wdir); err != nil {
			t.Error(err)
		}
	}()
	imageID, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "metering-worker-kill", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	sbID, startedAt := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"sleep", "600"}})
	before := midInterval(t, sbID)
	killed := time.Now()
	w.Process.Kill()
	w.Wait()
	ran := killed.Sub(startedAt).Seconds()
	w = startWorker()
	l := waitFinalUsage(t, "/v1/sandboxes/"+sbID+"/usage", 60)
	t.Logf("ran %.2f s before the worker was killed; recorded before it %.2f s (%d intervals), after its restart %.2f s (%d)",
		ran, before.WallSeconds, before.Intervals, l.WallSeconds, l.Intervals)
	if before.WallSeconds <= 0 || before.Closed || !l.Closed || l.Intervals != before.Intervals+1 || l.WallSeconds < before.WallSeconds+0.4 {
		t.Errorf("before the kill %+v; after the restart %+v", before, l)
	}
	if l.WallSeconds > ran+0.5 || l.WallSeconds < ran-1.5 {
		t.Errorf("metered %.2f s of a sandbox that ran %.2f s before its worker was killed", l.WallSeconds, ran)
	}
}

// TestMeteringWorkerLost: when the fleet gives up on a worker that stopped answering
// (GUST_WORKER_TIMEOUT), its sandbox fails and its usage closes at its last recorded interval:
// what the worker reported is what is billed, and the figure is final (closed). When the worker
// comes back later with its spool (the interval it had open when it was killed, and its end),
// nothing more is recorded: no interval twice, none after the close. Before, the usage of a
// lost worker's container stayed open (closed: false) for good.
func TestMeteringWorkerLost(t *testing.T) {
	needGust(t)
	t.Setenv("GUST_METER_INTERVAL", "2s")
	t.Setenv("GUST_METER_TICK", "500ms")
	t.Setenv("GUST_WORKER_TIMEOUT", "4s")
	sdir, wdir := t.TempDir(), t.TempDir()
	addr := freePort()
	url := "http://" + addr
	srv := startGust(t, url, "server", "--addr", addr, "--data-dir", sdir, "--image-cache", imageCache, "--no-config")
	wlog := &tailBuffer{max: 16 << 10} // the workers' log, shown if the test fails
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the end of the workers' log:\n%s", wlog.String())
		}
	})
	startWorker := func() *exec.Cmd {
		w := exec.Command(gust.bin, "worker", "--server", url, "--data-dir", wdir, "--image-cache", imageCache, "--no-install",
			"--sandbox-disk", "256", "--warm-pool", "0")
		w.Env = append(os.Environ(), "GUST_JOIN_TOKEN="+gust.joinToken)
		w.Stdout, w.Stderr = wlog, wlog
		dieWithTest(w)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := startWorker()
	dead := false // the worker is killed and not yet started again
	defer func() {
		if dead {
			// A failure before the worker came back: a new one removes what the killed one
			// left (its containers, mounts and cgroups) when it starts.
			w = startWorker()
			for i := 0; i < 80 && checkNoLeftovers(wdir) != nil; i++ {
				time.Sleep(250 * time.Millisecond)
			}
		}
		w.Process.Signal(os.Interrupt)
		w.Wait()
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
		if err := checkNoLeftovers(wdir); err != nil {
			t.Error(err)
		}
	}()
	imageID, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "metering-worker-lost", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	sbID, startedAt := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"sleep", "600"}})
	midInterval(t, sbID)
	killed := time.Now()
	w.Process.Kill()
	w.Wait()
	dead = true
	ran := killed.Sub(startedAt).Seconds()
	// The fleet gives up on the worker after 4 s (checked each second).
	for i := 0; ; i++ {
		var sb sbState
		if err := api("GET", "/v1/sandboxes/"+sbID, nil, &sb); err != nil {
			t.Fatal(err)
		}
		if sb.Status == "failed" {
			break
		}
		if i > 240 {
			t.Fatalf("the sandbox of a worker killed %v ago is %s, want failed", time.Since(killed), sb.Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
	closed := waitFinalUsage(t, "/v1/sandboxes/"+sbID+"/usage", 30)
	if closed.WallSeconds > ran || closed.Intervals < 3 {
		t.Fatalf("closed usage %+v of a sandbox that ran %.2f s", closed, ran)
	}
	// The worker comes back and sends its spool; a new sandbox's first interval says it is
	// sending (the spool goes first).
	w, dead = startWorker(), false
	sb2, _ := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"sleep", "600"}})
	defer api("POST", "/v1/sandboxes/"+sb2+"/terminate", nil, nil)
	for i := 0; ; i++ {
		var l liveCost
		if err := api("GET", "/v1/sandboxes/"+sb2+"/usage", nil, &l); err != nil {
			t.Fatal(err)
		}
		if l.Intervals >= 1 {
			break
		}
		if i > 240 {
			t.Fatalf("the restarted worker recorded nothing in 60 s: %+v", l)
		}
		time.Sleep(250 * time.Millisecond)
	}
	var after liveCost
	if err := api("GET", "/v1/sandboxes/"+sbID+"/usage", nil, &after); err != nil {
		t.Fatal(err)
	}
	t.Logf("ran %.2f s before its worker was killed; closed at %.2f s (%d intervals); after the worker came back %.2f s (%d)",
		ran, closed.WallSeconds, closed.Intervals, after.WallSeconds, after.Intervals)
	same := after.MeteredUntil != nil && closed.MeteredUntil != nil && *after.MeteredUntil == *closed.MeteredUntil
	after.MeteredUntil, closed.MeteredUntil = nil, nil
	if !same || after != closed {
		t.Fatalf("the returning worker's spool changed closed usage %+v to %+v", closed, after)
	}
}

// midInterval waits until a running sandbox has two intervals recorded, every interval cut so
// far among them, and the wall clock is 1.0 to 1.5 s into the next interval (at least two
// samples of 0.5 s into the 2 s grid of GUST_METER_INTERVAL=2s): a kill now falls mid-interval,
// where the open interval's samples are held only by the worker and its spool, and the usage
// it returns is all that was cut before. It follows the clock and the record rather than
// sleeping a fixed time, so that a busy machine (an interval delivered late) does not move the
// kill past a cut.
func midInterval(t *testing.T, id string) liveCost {
	t.Helper()
	const grid = 2000 // ms, GUST_METER_INTERVAL of the metering tests
	var l liveCost
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err := api("GET", "/v1/sandboxes/"+id+"/usage", nil, &l); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UnixMilli()
		cut, into := now/grid*grid, now%grid
		if l.Intervals >= 2 && l.MeteredUntil != nil && into >= 1000 && into < 1500 {
			until, err := time.Parse(time.RFC3339Nano, *l.MeteredUntil)
			if err != nil {
				t.Fatal(err)
			}
			if until.UnixMilli() >= cut {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no two intervals recorded up to the last cut, mid-interval, in 60 s: %+v", l)
		}
	}
}

// meteredSandbox creates a sandbox on the gust at gust.url, waiting for its worker to
// register, and has the harness check it leaves nothing behind.
func meteredSandbox(t *testing.T, fields map[string]any) (id string, startedAt time.Time) {
	t.Helper()
	var sb struct {
		ID        string    `json:"sandbox_id"`
		StartedAt time.Time `json:"started_at"`
	}
	// Until the worker registers, a create answers 503; a busy machine may take a while to
	// start one (its network, its leftovers), so the deadline is generous.
	for deadline := time.Now().Add(90 * time.Second); ; {
		err := api("POST", "/v1/sandboxes", fields, &sb)
		if err == nil {
			break
		}
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	createdMu.Lock()
	created = append(created, sb.ID)
	createdMu.Unlock()
	return sb.ID, sb.StartedAt
}

// burnModule is the code of TestMeteringFunctionBurn's function: it burns CPU time (not wall
// time, so that a busy machine stretches the wall time only) on one core, then sleeps, and
// says what it measured of itself.
const burnModule = `
import time

def burn(cpu_secs, idle_secs):
    c0, t0 = time.process_time(), time.monotonic()
    while time.process_time() - c0 < cpu_secs:
        pass
    burn_wall = time.monotonic() - t0
    time.sleep(idle_secs)
    return {"process_cpu": time.process_time(), "burn_wall": burn_wall}
`

// TestMeteringFunctionBurn checks the ledger against a known CPU burn in a function container
// and in a sandbox at once:
//   - a function with cpu=0.1 (a request it may burst above) burns 4 CPU-seconds on one core,
//     then idles 6 s. Its container's CPU seconds are within 5% (+0.15 s for gust-init and the
//     interpreter's exit) of what the process measured of itself, and its billable core-seconds
//     follow the per-second rule, max(request, use) each second: at least the burn plus 0.1 ×
//     the seconds outside it (less one second for the two ticks the burn straddles), which a
//     rule taking the larger of the totals (max(0.1 × wall, used)) falls short of; and at most
//     used + 0.1 × wall. Billable memory is the request for every second (memory is capped at
//     the request, so it never exceeds it). The request is small so that even a machine too
//     busy to give the burn a whole core gives it more than the request.
//   - a sandbox with cpu=0.5 (its cap too) burns 2 CPU-seconds (about 4 s of wall time under
//     its quota): CPU seconds within 5% of 2, billable core-seconds 0.5 × wall.
//
// Wall seconds agree with the server's record of each container's start and end within 1 s.
func TestMeteringFunctionBurn(t *testing.T) {
	needGust(t)
	_, _, imageID := meteredGust(t, t.TempDir(), freePort())
	blob := uploadCode(t, map[string]string{"burnmod.py": burnModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "metering-burn", "mode": "ephemeral",
		"code":      map[string]string{"blob": blob, "module": "burnmod"},
		"functions": []map[string]any{{"name": "burn", "image_id": imageID, "cpu": 0.1, "memory": 256}}}, &app); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil) })

	// The sandbox burns beside the function.
	sbID, _ := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "cpu": 0.5, "memory": 256,
		"command": []string{"python3", "-c", "import time\nwhile time.process_time() < 2: pass\nprint(time.process_time())"}})

	r := remoteCall(t, app.Functions["burn"], jsonArgs(4, 6))
	self, ok := r.value(t, 0).(map[string]any)
	if !ok {
		t.Fatalf("burn returned %v", r.value(t, 0))
	}
	procCPU, burnWall := self["process_cpu"].(float64), self["burn_wall"].(float64)
	if err := api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	if st := waitSandbox(t, sbID, 60); st.Status != "finished" && st.Status != "terminated" {
		t.Fatalf("the sandbox ended %q", st.Status)
	}
	waitFinalUsage(t, "/v1/apps/"+app.AppID+"/usage", 60)

	var fnRow, sbRow usageRow
	var fnContainer string
	for id, row := range usageBy(t, "sandbox") {
		switch {
		case id == sbID:
			sbRow = row
		case strings.HasSuffix(row.Name, "(function burn)"):
			fnRow, fnContainer = row, id
		}
	}
	if fnContainer == "" || sbRow.ID == "" {
		t.Fatalf("usage rows: function container %q, sandbox %+v", fnContainer, sbRow)
	}
	// External clock: the server's record of each container's life.
	for id, row := range map[string]usageRow{fnContainer: fnRow, sbID: sbRow} {
		if wall := serverWall(t, id); math.Abs(row.WallSeconds-wall) > 1 {
			t.Errorf("%s: ledger wall seconds %.2f, the server's clock %.2f", id, row.WallSeconds, wall)
		}
	}

	w, used, billed := fnRow.WallSeconds, fnRow.CPUSeconds, fnRow.BillableCPUCoreSeconds
	lower := 4 + 0.1*(w-burnWall-1)
	flat := math.Max(0.1*w, used)
	t.Logf("function: wall %.2f s, burn %.2f s of wall; CPU %.3f s (the process measured %.3f); billable %.3f core-s (per-second lower bound %.3f, totals-rule %.3f); memory %.3f GiB-s",
		w, burnWall, used, procCPU, billed, lower, flat, fnRow.BillableMemoryGiBSeconds)
	if used < procCPU*0.95 || used > procCPU*1.05+0.15 {
		t.Errorf("function CPU seconds %.3f, the process measured %.3f (want within 5%%)", used, procCPU)
	}
	if used < 4*0.95 {
		t.Errorf("function CPU seconds %.3f, it burned 4", used)
	}
	if billed < lower || billed > used+0.1*w+0.01 {
		t.Errorf("function billable %.3f core-s: want per second max(0.1, use): between %.3f and %.3f", billed, lower, used+0.1*w)
	}
	if lower <= flat {
		// Then billed >= lower does not tell the rules apart: say so, the run is no proof.
		t.Errorf("the run cannot tell the per-second rule from the totals rule (lower bound %.3f, totals %.3f): the burn took %.2f s of %.2f", lower, flat, burnWall, w)
	}
	if mem := fnRow.BillableMemoryGiBSeconds; math.Abs(mem-0.25*w) > 0.01*w+0.01 {
		t.Errorf("function billable memory %.3f GiB-s, want the request (0.25 GiB) × %.2f s", mem, w)
	}

	t.Logf("sandbox: wall %.2f s, CPU %.3f s, billable %.3f core-s", sbRow.WallSeconds, sbRow.CPUSeconds, sbRow.BillableCPUCoreSeconds)
	if sbRow.CPUSeconds < 2*0.95 || sbRow.CPUSeconds > 2*1.05+0.1 {
		t.Errorf("sandbox CPU seconds %.3f, it burned 2 (within 5%%)", sbRow.CPUSeconds)
	}
	if b := sbRow.BillableCPUCoreSeconds; b < 0.5*sbRow.WallSeconds-0.01 || b > 0.5*sbRow.WallSeconds+0.15 || b < sbRow.CPUSeconds-0.01 {
		t.Errorf("sandbox billable %.3f core-s, want its request (0.5) × %.2f s", b, sbRow.WallSeconds)
	}
}

// TestMeteringImageBuild: an image build that workspace B asks for runs in a build container
// (in the system workspace) and is metered to B: B's usage has the build container under
// "image-builds" with its CPU burn, B's billing report prices it, and the operator's own
// workspace does not see it.
func TestMeteringImageBuild(t *testing.T) {
	needGust(t)
	meteredGust(t, t.TempDir(), freePort())
	cred, _ := newWorkspace(t, "builds")
	marker := fmt.Sprint(time.Now().UnixNano())
	// A CPU-second (of CPU time, whatever the machine's load), and a marker so that no cached
	// layer answers.
	spec := map[string]any{"kind": "debian_slim", "steps": []map[string]any{
		{"type": "run_commands", "commands": []string{"echo " + marker + " > /marker",
			`python3 -c "import time` + "\n" + `while time.process_time() < 1: pass"`}}}}
	var imageID string
	for i := 0; imageID == "" && i < 100; i++ {
		code, body := apiAs(t, cred, "POST", "/v1/images", spec)
		if code == 503 || strings.Contains(body, "no worker") {
			time.Sleep(200 * time.Millisecond) // the worker registers
			continue
		}
		if code != 200 {
			t.Fatalf("build: HTTP %d: %s", code, body)
		}
		for _, line := range strings.Split(body, "\n") {
			var l struct {
				Image *struct {
					ID string `json:"image_id"`
				} `json:"image"`
				Error *struct{ Message string } `json:"error"`
			}
			json.Unmarshal([]byte(line), &l)
			if l.Error != nil {
				t.Fatalf("build failed: %s", l.Error.Message)
			}
			if l.Image != nil {
				imageID = l.Image.ID
			}
		}
		if imageID == "" {
			t.Fatalf("the build stream ended without an image: %s", body)
		}
	}
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	rowsAs := func(cred, by string) map[string]usageRow {
		code, body := apiAs(t, cred, "GET", "/v1/usage?by="+by+"&since="+since, nil)
		if code != 200 {
			t.Fatalf("usage: HTTP %d: %s", code, body)
		}
		var out struct {
			Rows []usageRow `json:"rows"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		m := map[string]usageRow{}
		for _, r := range out.Rows {
			m[r.ID] = r
		}
		return m
	}
	// The build container's final interval arrives within an interval or two.
	var builds usageRow
	for i := 0; ; i++ {
		prev := builds
		builds = rowsAs(cred, "app")["image-builds"]
		if builds.Containers > 0 && builds.WallSeconds == prev.WallSeconds && builds.Cost == prev.Cost {
			break
		}
		if i > 60 {
			t.Fatalf("no settled image-builds usage in B's workspace: %+v", builds)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("B's image builds: %d container(s), %.2f wall s, %.3f CPU s, $%s", builds.Containers, builds.WallSeconds, builds.CPUSeconds, builds.Cost)
	if builds.CPUSeconds < 0.95 || builds.WallSeconds < 1 || parseCost(t, builds.Cost) <= 0 || builds.CostByResource["cpu"] == "" {
		t.Errorf("B's image builds: %+v (the step burned about 1 CPU-second)", builds)
	}
	var buildContainers []string
	for id, r := range rowsAs(cred, "sandbox") {
		if r.Name == "image build" {
			buildContainers = append(buildContainers, id)
		}
	}
	if len(buildContainers) == 0 {
		t.Fatalf("no build container in B's usage by sandbox")
	}
	for _, id := range buildContainers {
		if _, ok := usageBy(t, "sandbox")[id]; ok {
			t.Errorf("build container %s of B's build shows in the operator's workspace", id)
		}
	}
	until := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	code, body := apiAs(t, cred, "GET", "/v1/billing/report?resolution=h&start="+since+"&end="+until, nil)
	if code != 200 || !strings.Contains(body, `"object_id":"image-builds"`) {
		t.Errorf("B's billing report: HTTP %d: %s", code, body)
	}
}

// slowModule is TestMeteringOperatorSurface's function: it sleeps.
const slowModule = `
import time

def slow(s):
    time.sleep(s)
    return s
`

// metricValue reads one sample of a Prometheus text exposition: the first line that starts
// with prefix (a name and, optionally, the start of its labels); -1 when there is none.
func metricValue(body, prefix string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// TestMeteringOperatorSurface runs gust with --prices and --metrics-addr (and storage read
// every second) and checks what an operator sees: the price file's rates (storage and
// reserved prices too) in the API, the CLI and the advisor; the metrics at /metrics on the
// separate address without a token (and /v1/metrics still refusing one without), with the
// age of a function's queue while inputs wait, exec latency counted per exec, and GPUs in
// use; image uploads metered as GiB-seconds of storage at the file's price; and --tz moving
// days to the zone's.
func TestMeteringOperatorSurface(t *testing.T) {
	needGust(t)
	t.Setenv("GUST_STORAGE_METER_PERIOD", "1s")
	dir := t.TempDir()
	prices := filepath.Join(dir, "prices.json")
	if err := os.WriteFile(prices, []byte(`{"cpu_per_core_second": 0.00002, "storage_per_gib_second": {"image": 0.001},
		"reserved": {"cpu": "0.02/h"}, "source": "test rates"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr := freePort()
	_, _, imageID := meteredGust(t, filepath.Join(dir, "data"), freePort(), "--prices", prices, "--metrics-addr", metricsAddr)
	scrape := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics on --metrics-addr: HTTP %d: %s", resp.StatusCode, b)
		}
		return string(b)
	}

	// The price file.
	var r struct {
		CPU      float64            `json:"cpu_per_core_second"`
		Storage  map[string]float64 `json:"storage_per_gib_second"`
		Reserved map[string]float64 `json:"reserved_per_second"`
		Source   string             `json:"source"`
	}
	if err := api("GET", "/v1/billing/rates", nil, &r); err != nil {
		t.Fatal(err)
	}
	if r.CPU != 0.00002 || r.Storage["image"] != 0.001 || math.Abs(r.Reserved["cpu"]-0.02/3600) > 1e-12 || r.Source != "test rates" {
		t.Errorf("rates from --prices: %+v", r)
	}
	cli := func(args ...string) string {
		t.Helper()
		c := exec.Command(gust.bin, args...)
		c.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Errorf("gust %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := cli("billing", "rates"); !strings.Contains(out, "storage image") || !strings.Contains(out, "reserved cpu") || !strings.Contains(out, "test rates") {
		t.Errorf("gust billing rates:\n%s", out)
	}

	// A function with one container and three 2-second inputs: one runs, one is held on the
	// worker, one waits in the queue.
	blob := uploadCode(t, map[string]string{"slowmod.py": slowModule})
	var app fnApp
	if err := api("POST", "/v1/apps/publish", map[string]any{"name": "metering-queue", "mode": "ephemeral",
		"code":      map[string]string{"blob": blob, "module": "slowmod"},
		"functions": []map[string]any{{"name": "slow", "image_id": imageID, "max_containers": 1}}}, &app); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() { api("POST", "/v1/apps/"+app.AppID+"/stop", map[string]any{}, nil) })
	done := make(chan callResult, 1)
	go func() {
		done <- readStream(t, post(t, "/v1/functions/"+app.Functions["slow"]+"/calls", map[string]any{"kind": "map", "stream": true,
			"inputs": []map[string]any{{"args": jsonArgs(2), "format": "json"}, {"args": jsonArgs(2), "format": "json"}, {"args": jsonArgs(2), "format": "json"}}}))
	}()
	oldest := 0.0
	label := `gust_function_queue_age_seconds{function="` + app.Functions["slow"] + `"`
	for i := 0; i < 40 && oldest < 1; i++ {
		oldest = math.Max(oldest, metricValue(scrape(), label))
		time.Sleep(100 * time.Millisecond)
	}
	if oldest < 1 {
		t.Errorf("queue age of a function whose third input waits for its one container: %.2f s at most, want 1 s or more", oldest)
	}
	if r := <-done; len(r.Outputs) != 3 {
		t.Errorf("the map returned %d outputs", len(r.Outputs))
	}
	if age := metricValue(scrape(), label); age != 0 {
		t.Errorf("queue age %.2f s with nothing queued", age)
	}

	// Exec latency: one observation per exec.
	sbID, _ := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"sleep", "30"}})
	before := metricValue(scrape(), "gust_exec_start_seconds_count")
	for range 3 {
		for i := 0; ; i++ {
			err := api("POST", "/v1/sandboxes/"+sbID+"/execs", map[string]any{"command": []string{"true"}, "stream": false}, nil)
			if err == nil {
				break
			}
			if i > 100 {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // still starting
		}
	}
	body := scrape()
	if after := metricValue(body, "gust_exec_start_seconds_count"); after != max(before, 0)+3 {
		t.Errorf("exec latency observations: %v before 3 execs, %v after", before, after)
	}
	if metricValue(body, "gust_worker_gpus_in_use{") != 0 {
		t.Errorf("no gust_worker_gpus_in_use of 0 for a worker without GPUs:\n%s", body)
	}
	if resp, err := http.Get(gust.url + "/v1/metrics"); err != nil || resp.StatusCode != 401 {
		t.Errorf("/v1/metrics without a token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	api("POST", "/v1/sandboxes/"+sbID+"/terminate", map[string]any{}, nil)

	// Storage: the workspace's uploads (the function's code) are metered each second.
	var stored usageRow
	for i := 0; i < 40 && stored.StorageGiBSeconds == 0; i++ {
		time.Sleep(250 * time.Millisecond)
		stored = usageBy(t, "app")["ws-default/image"]
	}
	cost := parseCost(t, stored.Cost)
	t.Logf("image uploads: %g GiB-s, $%s", stored.StorageGiBSeconds, stored.Cost)
	if stored.StorageGiBSeconds <= 0 || stored.Containers != 0 || math.Abs(cost-stored.StorageGiBSeconds*0.001) > 2e-9 {
		t.Errorf("storage usage %+v, want GiB-seconds at $0.001 each", stored)
	}
	// --tz: days are the zone's; a bad zone is a 400 that names the forms.
	plus14 := time.Now().In(time.FixedZone("+14", 14*3600)).Format("2006-01-02")
	var days []usageRow
	if err := json.Unmarshal([]byte(cli("usage", "--since", "1h", "--by", "day", "--tz", "+14:00", "--format", "json")), &days); err != nil || len(days) == 0 {
		t.Fatalf("gust usage --by day --tz +14:00: %v", err)
	}
	for _, d := range days {
		if d.ID != plus14 {
			t.Errorf("day %q at +14:00, want %s", d.ID, plus14)
		}
	}
	if out := cli("billing", "report", "--for", "today", "--tz", "local", "-r", "h", "--csv"); !strings.Contains(out, "ws-default/image") {
		t.Errorf("gust billing report --for today --tz local:\n%s", out)
	}
	// The Python SDK's tz= says the same.
	py := exec.Command("python3", "-c", `import datetime as dt, gust
now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
print("days", [r["id"] for r in gust.billing.usage(since=now - dt.timedelta(hours=1), by="day", tz="+14:00")])
rows = gust.billing.workspace_billing_report(start=now - dt.timedelta(hours=2), end=now + dt.timedelta(hours=2), resolution="h", tz="local")
print("storage row", any(r["object_id"] == "ws-default/image" for r in rows))`)
	sdkDir := filepath.Join(repoRoot(), "sdk", "python")
	py.Env = append(os.Environ(), "GUST_SERVER_URL="+gust.url, "GUST_TOKEN="+gust.token, "PYTHONPATH="+sdkDir)
	if out, err := py.CombinedOutput(); err != nil || !strings.Contains(string(out), "days ['"+plus14+"']") || !strings.Contains(string(out), "storage row True") {
		t.Errorf("Python usage(tz=) and workspace_billing_report(tz=): %v\n%s", err, out)
	}
	if err := api("GET", "/v1/usage?tz=Mars/Base", nil, nil); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "IANA") {
		t.Errorf("tz=Mars/Base: %v", err)
	}

	// The advisor prices reserved CPU from the price file.
	var adv struct {
		Reserved struct {
			CPU    float64 `json:"cpu_per_core_second"`
			Source string  `json:"source"`
		} `json:"reserved"`
	}
	if err := api("GET", "/v1/billing/advise", nil, &adv); err != nil {
		t.Fatal(err)
	}
	if math.Abs(adv.Reserved.CPU-0.02/3600) > 1e-12 || !strings.Contains(adv.Reserved.Source, "price file") {
		t.Errorf("advisor's reserved prices: %+v", adv.Reserved)
	}
}

// TestMeteringSurvivesServerRestart runs the server and a worker apart and kills the server
// with SIGKILL mid-interval while a sandbox runs, then starts it again on the same data: the
// worker keeps metering and delivers what it measured while the server was away, and the
// ledger holds the sandbox's life once: its intervals, added up, span from its start to its
// last recorded end without a gap of more than a tick or any overlap.
func TestMeteringSurvivesServerRestart(t *testing.T) {
	needGust(t)
	t.Setenv("GUST_METER_INTERVAL", "2s")
	t.Setenv("GUST_METER_TICK", "500ms")
	sdir, wdir := t.TempDir(), t.TempDir()
	addr := freePort()
	url := "http://" + addr
	serverArgs := []string{"server", "--addr", addr, "--data-dir", sdir, "--image-cache", imageCache, "--no-config"}
	srv := startGust(t, url, serverArgs...)
	w := exec.Command(gust.bin, "worker", "--server", url, "--data-dir", wdir, "--image-cache", imageCache, "--no-install",
		"--sandbox-disk", "256", "--warm-pool", "0")
	w.Env = append(os.Environ(), "GUST_JOIN_TOKEN="+gust.joinToken)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Process.Signal(os.Interrupt)
		w.Wait()
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
		if err := checkNoLeftovers(wdir); err != nil {
			t.Error(err)
		}
	}()
	imageID, err := resolveImage()
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		AppID string `json:"app_id"`
	}
	if err := api("POST", "/v1/apps/lookup", map[string]any{"name": "metering-server-restart", "create_if_missing": true}, &app); err != nil {
		t.Fatal(err)
	}
	sbID, startedAt := meteredSandbox(t, map[string]any{"app_id": app.AppID, "image_id": imageID, "command": []string{"sleep", "600"}})
	before := midInterval(t, sbID)
	srv.Process.Kill()
	srv.Wait()
	time.Sleep(3 * time.Second) // the worker meters on, with nobody to report to
	srv = startGust(t, url, serverArgs...)
	// The restarted server fails what the last run left running; the worker ends it and sends
	// its final interval.
	l := waitFinalUsage(t, "/v1/sandboxes/"+sbID+"/usage", 60)
	if l.MeteredUntil == nil {
		t.Fatalf("no metered_until: %+v", l)
	}
	until, err := time.Parse(time.RFC3339Nano, *l.MeteredUntil)
	if err != nil {
		t.Fatal(err)
	}
	span := until.Sub(startedAt).Seconds()
	t.Logf("recorded before the kill %.2f s (%d intervals); after the restart %.2f s in %d intervals, spanning %.2f s from the start",
		before.WallSeconds, before.Intervals, l.WallSeconds, l.Intervals, span)
	// Nothing twice: the intervals add up to no more than the span they cover. Nothing lost:
	// at least the span less the metering's start (a tick) — and past the 3 s without a server.
	if l.WallSeconds > span+0.01 || l.WallSeconds < span-1 {
		t.Errorf("intervals add up to %.2f s over a span of %.2f s", l.WallSeconds, span)
	}
	if !l.Closed || l.WallSeconds < before.WallSeconds+3 {
		t.Errorf("before the kill %+v; after the restart %+v: the 3 s without a server are missing", before, l)
	}
}

package api

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/store"
)

// apiMetrics are the operator's metrics in Prometheus's format (GET /v1/metrics, the
// operator's token, or /metrics on the server's --metrics-addr): containers by state,
// functions' queues (depth and age) and containers, workers' capacity and use, container start
// latency (cold starts), exec latency, the usage ledger's lag and what it recorded. Gauges are
// read from the control plane at each scrape, so the hot paths carry no instrumentation but
// one histogram observation per exec.
type apiMetrics struct {
	reg       *prometheus.Registry
	startLat  *prometheus.HistogramVec
	execLat   prometheus.Histogram
	ledgerLag prometheus.Histogram
	intervals *prometheus.CounterVec
	cost      *prometheus.CounterVec
}

func newAPIMetrics(a *API) *apiMetrics {
	m := &apiMetrics{
		reg: prometheus.NewRegistry(),
		startLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gust_container_start_seconds",
			Help:    "Time from a container's creation to running (a function container's is its cold start), by kind; observed when its first usage interval is recorded.",
			Buckets: []float64{0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30}}, []string{"kind"}),
		execLat: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gust_exec_start_seconds",
			Help:    "Exec latency: from an exec request's arrival at the server to its process running in the sandbox (the first byte of the worker's answer).",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}}),
		ledgerLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gust_ledger_lag_seconds",
			Help:    "Time from the end of a usage interval to its recording on the server.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600}}),
		intervals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gust_ledger_intervals_total",
			Help: "Usage intervals workers reported, by result: recorded, duplicate (recorded before), skipped (not the reporter's)."}, []string{"result"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gust_usage_cost_dollars_total",
			Help: "Cost of the usage recorded since the server started, at the current prices, by workspace and resource."}, []string{"workspace", "resource"}),
	}
	m.reg.MustRegister(m.startLat, m.execLat, m.ledgerLag, m.intervals, m.cost, stateCollector{a}, prometheus.NewGoCollector())
	return m
}

// recorded notes a batch of usage: what was new, what was sent before, what was skipped.
func (m *apiMetrics) recorded(fresh []metering.Record, sent, skipped int, p metering.Prices, now time.Time) {
	m.intervals.WithLabelValues("recorded").Add(float64(len(fresh)))
	m.intervals.WithLabelValues("duplicate").Add(float64(sent - len(fresh)))
	m.intervals.WithLabelValues("skipped").Add(float64(skipped))
	for _, r := range fresh {
		m.ledgerLag.Observe(max(now.Sub(r.End).Seconds(), 0))
		for res, v := range p.Cost(r.Interval) {
			m.cost.WithLabelValues(r.WorkspaceID, res).Add(v)
		}
	}
}

// stateCollector reads the control plane's state at each scrape.
type stateCollector struct{ a *API }

var (
	descContainers   = prometheus.NewDesc("gust_containers", "Containers that are pending or running, by kind and state.", []string{"kind", "state"}, nil)
	descQueue        = prometheus.NewDesc("gust_function_queue_depth", "Inputs queued for a function, waiting for a container.", []string{"function", "name", "workspace"}, nil)
	descDelayed      = prometheus.NewDesc("gust_function_inputs_delayed", "Inputs waiting out a retry's backoff.", []string{"function", "name", "workspace"}, nil)
	descInflight     = prometheus.NewDesc("gust_function_inputs_running", "Inputs running in containers.", []string{"function", "name", "workspace"}, nil)
	descFnConts      = prometheus.NewDesc("gust_function_containers", "A function's live containers (starting included).", []string{"function", "name", "workspace"}, nil)
	descQueueAge     = prometheus.NewDesc("gust_function_queue_age_seconds", "How long the input that has waited longest in a function's queue has waited (0: none waits).", []string{"function", "name", "workspace"}, nil)
	descFnStarting   = prometheus.NewDesc("gust_function_containers_starting", "A function's containers still starting (cold starts in progress).", []string{"function", "name", "workspace"}, nil)
	descWorkerCPU    = prometheus.NewDesc("gust_worker_cpu_cores", "A worker's cores.", []string{"worker", "name"}, nil)
	descWorkerMem    = prometheus.NewDesc("gust_worker_memory_mib", "A worker's memory.", []string{"worker", "name"}, nil)
	descWorkerGPUs   = prometheus.NewDesc("gust_worker_gpus", "A worker's GPUs.", []string{"worker", "name"}, nil)
	descWorkerGPUUse = prometheus.NewDesc("gust_worker_gpus_in_use", "A worker's GPUs held by containers.", []string{"worker", "name"}, nil)
	descWorkerConts  = prometheus.NewDesc("gust_worker_containers", "Containers placed on a worker.", []string{"worker", "name"}, nil)
	descWorkerRes    = prometheus.NewDesc("gust_worker_reserved_memory_mib", "Memory promised to the containers on a worker.", []string{"worker", "name"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descContainers, descQueue, descQueueAge, descDelayed, descInflight, descFnConts, descFnStarting,
		descWorkerCPU, descWorkerMem, descWorkerGPUs, descWorkerGPUUse, descWorkerConts, descWorkerRes} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if sbs, err := c.a.store.ListSandboxes(ctx, store.SandboxFilter{Functions: true}); err == nil {
		counts := map[[2]string]int{}
		for _, sb := range sbs {
			kind := metering.KindSandbox
			if sb.FunctionID != "" {
				kind = metering.KindFunction
			} else if sb.BuildEgress {
				kind = metering.KindImageBuild
			}
			counts[[2]string{kind, string(sb.Status)}]++
		}
		for _, kind := range []string{metering.KindSandbox, metering.KindFunction, metering.KindImageBuild} {
			for _, st := range []string{"pending", "running"} {
				ch <- prometheus.MustNewConstMetric(descContainers, prometheus.GaugeValue, float64(counts[[2]string{kind, st}]), kind, st)
			}
		}
	}
	now := time.Now()
	for _, q := range c.a.engine.QueueStats() {
		l := []string{q.FunctionID, q.Name, q.WorkspaceID}
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(q.Queued), l...)
		age := 0.0
		if !q.OldestQueued.IsZero() {
			age = max(now.Sub(q.OldestQueued).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(descQueueAge, prometheus.GaugeValue, age, l...)
		ch <- prometheus.MustNewConstMetric(descDelayed, prometheus.GaugeValue, float64(q.Delayed), l...)
		ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(q.Running), l...)
		ch <- prometheus.MustNewConstMetric(descFnConts, prometheus.GaugeValue, float64(q.Containers), l...)
		ch <- prometheus.MustNewConstMetric(descFnStarting, prometheus.GaugeValue, float64(q.Starting), l...)
	}
	for _, w := range c.a.fleet.WorkerStats() {
		ch <- prometheus.MustNewConstMetric(descWorkerCPU, prometheus.GaugeValue, w.CPU, w.ID, w.Name)
		ch <- prometheus.MustNewConstMetric(descWorkerMem, prometheus.GaugeValue, float64(w.MemoryMiB), w.ID, w.Name)
		ch <- prometheus.MustNewConstMetric(descWorkerGPUs, prometheus.GaugeValue, float64(w.GPUs), w.ID, w.Name)
		ch <- prometheus.MustNewConstMetric(descWorkerGPUUse, prometheus.GaugeValue, float64(w.GPUsInUse), w.ID, w.Name)
		ch <- prometheus.MustNewConstMetric(descWorkerConts, prometheus.GaugeValue, float64(w.Containers), w.ID, w.Name)
		ch <- prometheus.MustNewConstMetric(descWorkerRes, prometheus.GaugeValue, float64(w.ReservedMiB), w.ID, w.Name)
	}
}

func (a *API) handleMetrics(w http.ResponseWriter, r *http.Request) {
	a.MetricsHandler().ServeHTTP(w, r)
}

// MetricsHandler serves the metrics with no authentication of its own: GET /v1/metrics puts
// it behind the operator's token, a separate address (--metrics-addr) behind the network.
func (a *API) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.meters.reg, promhttp.HandlerOpts{})
}

// timeExec observes an exec's latency: the time until the worker's answer starts (the exec is
// running then; a streamed answer goes on until it ends).
func (m *apiMetrics) timeExec(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tw := &firstByteWriter{ResponseWriter: w, start: time.Now(), observe: m.execLat.Observe}
		h(tw, r)
	}
}

// firstByteWriter calls observe with the time to its first header or byte, once, and only for
// a success (a refused exec ran nothing).
type firstByteWriter struct {
	http.ResponseWriter
	start   time.Time
	observe func(float64)
	done    bool
}

func (w *firstByteWriter) mark(code int) {
	if !w.done {
		w.done = true
		if code < 300 {
			w.observe(time.Since(w.start).Seconds())
		}
	}
}

func (w *firstByteWriter) WriteHeader(code int) {
	w.mark(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *firstByteWriter) Write(b []byte) (int, error) {
	w.mark(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

// Flush and Unwrap keep the relayed stream flowing (http.ResponseController finds them).
func (w *firstByteWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *firstByteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

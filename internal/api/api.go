// Package api is gust's HTTP API under /v1: each handler decodes a request, checks it, calls
// the part of the control plane that owns the answer (the store, the fleet, the function
// engine, the image builder) and encodes the result. It holds no state of its own and takes
// no other package's lock. The routes and their JSON are documented in docs/api.md and
// docs/openapi.yaml. Imported by internal/server only.
package api

import (
	"fmt"
	"log"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/time/rate"

	"github.com/gust-run/gust/internal/budget"
	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/fleet"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/imagebuild"
	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/metering"
	"github.com/gust-run/gust/internal/store"
)

// Config configures the API.
type Config struct {
	// Token is the operator's: owner of the default workspace, and the only one that may
	// create workspaces and set quotas. JoinToken registers workers, and nothing else.
	Token            string
	JoinToken        string
	DefaultIsolation string
	Version          string // shown by /v1/health
	// Ingress routes tunnels into sandboxes; nil: sandboxes cannot expose ports.
	Ingress *ingress.Ingress
	// Prices price the usage ledger (metering.DefaultPrices when zero).
	Prices metering.Prices
	// Budgets holds the workspaces' spending limits (nil: budgets cannot be set).
	Budgets *budget.Checker
	Logger  *log.Logger
}

// API serves the HTTP API over the control plane's parts.
type API struct {
	cfg    Config
	store  *store.Store
	fleet  *fleet.Fleet
	engine *dispatch.Engine
	builds *imagebuild.Builder
	layers *image.Builder // blobs and layers on disk
	log    *log.Logger
	audit  *auditLog
	limits *rateLimits
	meters *apiMetrics // the operator's metrics (metrics.go)
	// storage is what the storage meter reads (storage_meter.go).
	storage storageMeter
	// variantMu makes two with_options for the same options make one variant.
	variantMu sync.Mutex
}

// New returns the API over the control plane's parts.
func New(cfg Config, st *store.Store, fl *fleet.Fleet, eng *dispatch.Engine, builds *imagebuild.Builder, layers *image.Builder) *API {
	if cfg.Logger == nil {
		cfg.Logger = log.Default()
	}
	if cfg.Prices.GPUPerSecond == nil {
		cfg.Prices = metering.DefaultPrices()
	}
	a := &API{cfg: cfg, store: st, fleet: fl, engine: eng, builds: builds, layers: layers, log: cfg.Logger,
		audit: newAuditLog(), limits: &rateLimits{ws: map[string]*rate.Limiter{}}}
	a.meters = newAPIMetrics(a)
	return a
}

// Handler returns the HTTP API. Every answer that no route gives (an unknown path, a wrong
// method, a path that is not canonical) is the documented JSON error too (jsonErrors).
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	authed := http.NewServeMux()
	public := router{mux: mux, methods: map[string]map[string]bool{}}
	public.handle("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "version": a.cfg.Version})
	})
	public.methodNotAllowed()
	mux.Handle("/v1/", a.authenticate(jsonErrors(authed)))
	notFound := func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, errdefs.NotFound("no such endpoint %s %s; the API lives under /v1 (see docs/api.md)", r.Method, r.URL.Path))
	}
	mux.HandleFunc("/v1", notFound) // or the mux redirects it to /v1/
	mux.HandleFunc("/", notFound)
	rt := router{mux: authed, methods: map[string]map[string]bool{}, guard: a.guard}
	a.routes(&rt)
	rt.methodNotAllowed()
	return jsonErrors(mux)
}

// jsonErrors serves mux, answering with the JSON error body where the mux would answer
// itself: a path with an empty, "." or ".." segment (also percent-encoded) is a 400, never a
// redirect to another route; a path no route has is a 404; a method that a known path lacks
// is a 405.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !canonical(r.URL.Path) {
			httpapi.WriteError(w, errdefs.Invalid("path %q has an empty, '.' or '..' segment; IDs and names never contain '/' (see docs/api.md)", r.URL.Path))
			return
		}
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
			other := *r
			other.Method = m
			if _, pattern := mux.Handler(&other); pattern != "" {
				notAllowed(w, r)
				return
			}
		}
		httpapi.WriteError(w, errdefs.NotFound("no such endpoint %s %s (see docs/api.md)", r.Method, r.URL.Path))
	})
}

// canonical reports whether p is an absolute path without empty, "." or ".." segments (a
// trailing slash aside).
func canonical(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || seg == "" && i < len(segs)-1 {
			return false
		}
	}
	return true
}

func notAllowed(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusMethodNotAllowed, httpapi.ErrorBody{Error: httpapi.ErrorDetail{
		Kind: "invalid", Message: fmt.Sprintf("method %s is not allowed on %s (see docs/api.md)", r.Method, r.URL.Path)}})
}

// maxQuerySeconds is the most a wait or timeout in a query may say: a day. Handlers wait
// less than what is asked where they have a shorter limit of their own.
const maxQuerySeconds = 86400

// querySeconds reads query parameter name as a number of seconds: finite, at least 0 and at
// most max; def when it is absent.
func querySeconds(r *http.Request, name string, def, max float64) (float64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	secs, err := strconv.ParseFloat(v, 64)
	// NaN fails every comparison, and so would pass "secs < 0": test for it on its own.
	if err != nil || math.IsNaN(secs) || secs < 0 || secs > max {
		return 0, errdefs.Invalid("%s must be a number of seconds from 0 to %v, got %q", name, max, v)
	}
	return secs, nil
}

// router registers routes and remembers each path's methods, so that a wrong method on a
// known path gets a JSON 405 instead of the mux's plain-text one.
type router struct {
	mux     *http.ServeMux
	paths   []string
	methods map[string]map[string]bool
	// guard wraps each handler in its route's rule (policy.go); nil lists routes only.
	guard func(pattern string, ru rule, h http.HandlerFunc) http.HandlerFunc
}

func (rt *router) handle(pattern string, h http.HandlerFunc) {
	ru, ok := policy[pattern]
	if !ok {
		panic("api: route " + pattern + " has no rule in policy.go")
	}
	if rt.guard != nil {
		h = rt.guard(pattern, ru, h)
	}
	rt.mux.HandleFunc(pattern, h)
	m, p, _ := strings.Cut(pattern, " ")
	if rt.methods[p] == nil {
		rt.methods[p] = map[string]bool{}
		rt.paths = append(rt.paths, p)
	}
	rt.methods[p][m] = true
}

// methodNotAllowed adds one fallback per method a path lacks: a method-less pattern would
// collide with wildcard routes such as GET /v1/apps/{id} beside POST /v1/apps/lookup.
func (rt *router) methodNotAllowed() {
	for _, p := range rt.paths {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
			if !rt.methods[p][m] {
				rt.mux.HandleFunc(m+" "+p, notAllowed)
			}
		}
	}
}

// routes registers every authenticated route, by area.
func (a *API) routes(rt *router) {
	a.sandboxRoutes(rt)
	a.tunnelRoutes(rt)
	a.imageRoutes(rt)
	a.appRoutes(rt)
	a.functionRoutes(rt)
	a.secretRoutes(rt)
	a.dictRoutes(rt)
	a.queueRoutes(rt)
	a.volumeRoutes(rt)
	a.workerRoutes(rt)
	a.tenantRoutes(rt)
	a.billingRoutes(rt)
}

// Routes lists every registered "METHOD /path", for the test that checks the OpenAPI file.
func (a *API) Routes() []string {
	rt := router{mux: http.NewServeMux(), methods: map[string]map[string]bool{}}
	a.routes(&rt)
	var out []string
	for _, p := range rt.paths {
		for m := range rt.methods[p] {
			out = append(out, m+" "+p)
		}
	}
	return out
}

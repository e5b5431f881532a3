// Package server is gust's control plane: the HTTP API under /v1, the scheduler that places
// sandboxes on workers, the worker registry and its assignment queues, and the forwarding of
// exec, file and log requests to the worker that runs a sandbox. Durable state lives in
// internal/store. Imported by cmd/gust only.
package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
	"github.com/gust-run/gust/internal/workerproto"
)

// Version is gust's version, shown by /v1/health.
const Version = "0.1.0"

// Config configures a server.
type Config struct {
	Token            string
	DefaultIsolation string
	Images           *image.Builder
	Logger           *log.Logger
	// HeartbeatTimeout is how long an ephemeral app (`with app.run()`) outlives its client's
	// last heartbeat; 0 means a minute.
	HeartbeatTimeout time.Duration
}

// Server is the control plane.
type Server struct {
	cfg   Config
	store *store.Store
	log   *log.Logger

	mu      sync.Mutex
	workers map[string]*workerConn
	// changed is closed and replaced whenever a sandbox's state changes, waking waiters.
	changed map[string]chan struct{}

	fx *dispatcher // functions: queues, containers, autoscaler
}

// workerConn is a registered worker and its queue of assignments.
type workerConn struct {
	id      string
	reg     workerproto.RegisterRequest
	proxy   *httputil.ReverseProxy
	queue   []workerproto.Assignment
	wake    chan struct{}
	running int
	// reservedMiB is the memory its containers were given; function containers must fit in
	// what is left.
	reservedMiB int
	// The long poll is the worker's heartbeat: polls in progress, and when one last ended.
	polling  int
	lastPoll time.Time
}

// New returns a server over a store. Sandboxes that a previous run left "running" are marked
// failed, since their containers went with that run.
func New(ctx context.Context, cfg Config, st *store.Store) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "server: ", log.LstdFlags)
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = time.Minute
	}
	if cfg.DefaultIsolation == "" {
		cfg.DefaultIsolation = sandbox.IsolationRunc
	}
	s := &Server{cfg: cfg, store: st, log: cfg.Logger, workers: map[string]*workerConn{}, changed: map[string]chan struct{}{}}
	live, err := st.ListSandboxes(ctx, store.SandboxFilter{Functions: true})
	if err != nil {
		return nil, err
	}
	for _, sb := range live {
		msg := "the server restarted while this sandbox ran"
		code := sandbox.ExitTerminated
		sb.Status, sb.Error, sb.ExitCode = sandbox.Failed, &msg, &code
		now := time.Now().UTC()
		sb.FinishedAt = &now
		st.UpdateSandbox(ctx, sb)
	}
	s.fx = newDispatcher(s)
	if err := s.fx.load(ctx); err != nil {
		return nil, fmt.Errorf("loading functions: %w", err)
	}
	go s.fx.run(ctx)
	return s, nil
}

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	authed := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "version": Version})
	})
	mux.Handle("/v1/", httpapi.Auth(s.cfg.Token, authed))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, errdefs.NotFound("no such endpoint %s %s; the API lives under /v1 (see docs/api.md)", r.Method, r.URL.Path))
	})

	// handle registers a route and remembers its path and method, so that a wrong method on a
	// known path gets a JSON 405 below instead of the mux's plain-text one.
	var paths []string
	methods := map[string]map[string]bool{}
	handle := func(pattern string, h http.HandlerFunc) {
		authed.HandleFunc(pattern, h)
		m, p, _ := strings.Cut(pattern, " ")
		if methods[p] == nil {
			methods[p] = map[string]bool{}
			paths = append(paths, p)
		}
		methods[p][m] = true
	}
	handle("POST /v1/apps/lookup", s.handleAppLookup)
	handle("GET /v1/apps", s.handleAppList)
	handle("POST /v1/images", s.handleImageCreate)
	handle("GET /v1/images", s.handleImageList)
	handle("GET /v1/images/{id}", s.handleImageGet)
	handle("DELETE /v1/images/{id}", s.handleImageDelete)
	handle("DELETE /v1/images", s.handleImagePrune)
	handle("POST /v1/blobs", s.handleBlobPut)
	handle("GET /v1/blobs/{sum}", s.handleBlobGet)

	handle("POST /v1/sandboxes", s.handleSandboxCreate)
	handle("GET /v1/sandboxes", s.handleSandboxList)
	handle("GET /v1/sandboxes/{id}", s.handleSandboxGet)
	handle("POST /v1/sandboxes/{id}/terminate", s.handleSandboxTerminate)
	handle("PUT /v1/sandboxes/{id}/tags", s.handleSandboxTags)
	handle("POST /v1/sandboxes/{id}/snapshot", s.handleSandboxSnapshot)
	// Forwarded to the sandbox's worker.
	for _, p := range []string{
		"POST /v1/sandboxes/{id}/execs", "GET /v1/sandboxes/{id}/execs/{eid}/output",
		"GET /v1/sandboxes/{id}/execs/{eid}", "POST /v1/sandboxes/{id}/execs/{eid}/stdin",
		"POST /v1/sandboxes/{id}/execs/{eid}/signal", "POST /v1/sandboxes/{id}/execs/{eid}/resize",
		"GET /v1/sandboxes/{id}/logs", "GET /v1/sandboxes/{id}/files", "PUT /v1/sandboxes/{id}/files",
		"DELETE /v1/sandboxes/{id}/files", "GET /v1/sandboxes/{id}/files/list",
		"GET /v1/sandboxes/{id}/files/stat", "POST /v1/sandboxes/{id}/files/mkdir",
	} {
		handle(p, s.forward)
	}

	handle("POST /v1/apps/publish", s.handleAppPublish)
	handle("GET /v1/apps/{id}", s.handleAppGet)
	handle("POST /v1/apps/{id}/stop", s.handleAppStop)
	handle("POST /v1/apps/{id}/heartbeat", s.handleAppHeartbeat)
	handle("GET /v1/apps/{id}/logs", s.handleAppLogs)
	handle("POST /v1/functions/lookup", s.handleFunctionLookup)
	handle("GET /v1/functions/{id}", s.handleFunctionGet)
	handle("POST /v1/functions/{id}/autoscaler", s.handleFunctionAutoscaler)
	handle("POST /v1/functions/{id}/calls", s.handleCallCreate)
	handle("POST /v1/calls/{id}/inputs", s.handleCallInputs)
	handle("GET /v1/calls/{id}/stream", s.handleCallStream)
	handle("GET /v1/calls/{id}", s.handleCallGet)
	handle("POST /v1/calls/{id}/cancel", s.handleCallCancel)
	handle("POST /v1/secrets", s.handleSecretCreate)
	handle("GET /v1/secrets", s.handleSecretList)
	handle("POST /v1/secrets/lookup", s.handleSecretLookup)
	handle("DELETE /v1/secrets/{name}", s.handleSecretDelete)

	handle("POST /v1/workers/register", s.handleWorkerRegister)
	handle("POST /v1/workers/{wid}/events", s.handleWorkerEvents)
	handle("GET /v1/workers/{wid}/assignments", s.handleWorkerAssignments)
	handle("POST /v1/workers/{wid}/sandboxes/{id}/state", s.handleWorkerState)
	notAllowed := func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusMethodNotAllowed, httpapi.ErrorBody{Error: httpapi.ErrorDetail{
			Kind: "invalid", Message: fmt.Sprintf("method %s is not allowed on %s (see docs/api.md)", r.Method, r.URL.Path)}})
	}
	// One fallback per method the path lacks: a method-less pattern would collide with
	// wildcard routes such as GET /v1/apps/{id} beside POST /v1/apps/lookup.
	for _, p := range paths {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
			if !methods[p][m] {
				authed.HandleFunc(m+" "+p, notAllowed)
			}
		}
	}
	return mux
}

// notify wakes everyone waiting on a sandbox.
func (s *Server) notify(id string) {
	s.mu.Lock()
	if ch, ok := s.changed[id]; ok {
		close(ch)
		delete(s.changed, id)
	}
	s.mu.Unlock()
}

// watch returns a channel closed at the sandbox's next change.
func (s *Server) watch(id string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.changed[id]
	if !ok {
		ch = make(chan struct{})
		s.changed[id] = ch
	}
	return ch
}

func (s *Server) handleAppLookup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name            string `json:"name"`
		CreateIfMissing bool   `json:"create_if_missing"`
	}
	if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Name == "" || len(req.Name) > 64 || strings.ContainsAny(req.Name, "/ \t\n") {
		httpapi.WriteError(w, errdefs.Invalid("app name %q is not valid: use 1-64 characters without spaces or '/'", req.Name))
		return
	}
	app, err := s.store.LookupApp(r.Context(), req.Name, req.CreateIfMissing)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, app)
}

func (s *Server) handleAppList(w http.ResponseWriter, r *http.Request) {
	apps, err := s.store.ListApps(r.Context())
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	docs := make([]appDoc, 0, len(apps))
	for _, a := range apps {
		doc, err := s.appDoc(r.Context(), a, false)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		docs = append(docs, doc)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"apps": docs})
}

func (s *Server) handleImageCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind          string       `json:"kind"`
		PythonVersion string       `json:"python_version"`
		ImageID       string       `json:"image_id"` // kind "from_id": steps over an existing image
		Ref           string       `json:"ref"`      // kind "registry"
		Blob          string       `json:"blob"`     // kind "oci_archive": an uploaded archive
		Steps         []image.Step `json:"steps"`
		ForceBuild    bool         `json:"force_build"`
	}
	if err := httpapi.DecodeJSON(r, &req, 1<<20); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var from image.Image
	switch req.Kind {
	case image.KindDebianSlim:
	case "from_id":
		var err error
		if from, err = s.store.GetImage(r.Context(), req.ImageID); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	case image.KindScratch:
	case image.KindRegistry:
		if req.Ref == "" {
			httpapi.WriteError(w, errdefs.Invalid("kind registry needs ref, e.g. \"127.0.0.1:5000/team/app:v1\""))
			return
		}
	case image.KindOCIArchive:
		if !s.cfg.Images.HasBlob(req.Blob) {
			httpapi.WriteError(w, errdefs.NotFound("archive %q was not uploaded; POST it to /v1/blobs first", req.Blob))
			return
		}
	default:
		httpapi.WriteError(w, errdefs.Invalid("image kind %q is not supported; use debian_slim, scratch, from_id, registry or oci_archive", req.Kind))
		return
	}
	if err := image.CheckPythonVersion(req.PythonVersion); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := image.ValidateSteps(req.Steps); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for i, st := range req.Steps {
		if st.Type == "add_local" && !s.cfg.Images.HasBlob(st.Blob) {
			httpapi.WriteError(w, errdefs.NotFound("step %d (add_local): blob %s was not uploaded; POST it to /v1/blobs first", i+1, st.Blob))
			return
		}
	}
	n := httpapi.StartNDJSON(w)
	logs := &httpapi.LogWriter{N: n}
	im, err := from, error(nil)
	switch req.Kind {
	case image.KindDebianSlim:
		im, err = s.baseImage(r.Context(), logs)
	case image.KindScratch:
		im, err = s.scratchImage(r.Context())
	case image.KindRegistry:
		im, err = s.ociImage(r.Context(), req.Kind)(s.cfg.Images.FromRegistry(r.Context(), req.Ref, logs))
	case image.KindOCIArchive:
		im, err = s.ociImage(r.Context(), req.Kind)(s.cfg.Images.FromOCIArchive(req.Blob, logs))
	}
	if err == nil && len(req.Steps) > 0 {
		im, err = s.buildSteps(r.Context(), im, req.Steps, req.ForceBuild, logs)
	}
	if err != nil {
		n.Send(httpapi.ErrorLine(err))
		return
	}
	n.Send(map[string]any{"image": im})
}

// ociImage records an image pulled from a registry or read from an archive.
func (s *Server) ociImage(ctx context.Context, kind string) func(image.OCIImage, error) (image.Image, error) {
	return func(oi image.OCIImage, err error) (image.Image, error) {
		if err != nil {
			return image.Image{}, err
		}
		hash := "oci:" + oi.Digest
		hex := strings.TrimPrefix(oi.Digest, "sha256:")
		im := image.Image{ID: "im-" + hex[:24], Kind: kind, Hash: hash, Layers: oi.Layers, Env: oi.Env,
			Workdir: oi.Workdir, SizeBytes: oi.SizeBytes, CreatedAt: time.Now().UTC()}
		return im, s.store.PutImage(ctx, im)
	}
}

// scratchImage is the empty image of `FROM scratch`.
func (s *Server) scratchImage(ctx context.Context) (image.Image, error) {
	dir, err := s.cfg.Images.Scratch()
	if err != nil {
		return image.Image{}, err
	}
	im := image.Image{ID: "im-scratch", Kind: image.KindScratch, Hash: "scratch", Layers: []string{dir}, CreatedAt: time.Now().UTC()}
	return im, s.store.PutImage(ctx, im)
}

// baseImage returns Image.debian_slim(), building it with debootstrap the first time.
func (s *Server) baseImage(ctx context.Context, logs io.Writer) (image.Image, error) {
	hash := image.DebianSlimHash()
	id := "im-" + hash[:24]
	if im, ok, _ := s.store.ImageByHash(ctx, hash); ok {
		if _, err := os.Stat(im.Layers[0]); err == nil {
			return im, nil
		}
	}
	start := time.Now()
	cachedBefore := true
	if _, err := os.Stat(s.cfg.Images.LayerPath(hash)); err != nil {
		cachedBefore = false
		fmt.Fprintf(logs, "Building image %s\n", id)
	}
	dir, err := s.cfg.Images.EnsureDebianSlim(ctx, logs)
	if err != nil {
		return image.Image{}, fmt.Errorf("building image %s: %w", id, err)
	}
	if !cachedBefore {
		fmt.Fprintf(logs, "Built image %s in %.1f s\n", id, time.Since(start).Seconds())
	}
	im := image.Image{ID: id, Kind: image.KindDebianSlim, Hash: hash, Layers: []string{dir}, SizeBytes: image.DirSize(dir), CreatedAt: time.Now().UTC()}
	return im, s.store.PutImage(ctx, im)
}

// handleImageDelete forgets an image; its layers go at the next prune unless another image
// shares them. An image that a running sandbox uses stays.
func (s *Server) handleImageDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.store.GetImage(r.Context(), id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	live, err := s.store.ListSandboxes(r.Context(), store.SandboxFilter{})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, sb := range live {
		if sb.ImageID == id {
			httpapi.WriteError(w, errdefs.Conflict("image %s is used by running sandbox %s; terminate it first", id, sb.ID))
			return
		}
	}
	fns, err := s.store.ListFunctions(r.Context(), "", true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, fn := range fns {
		if fn.Spec.ImageID == id {
			httpapi.WriteError(w, errdefs.Conflict("image %s is used by function %s (%s); stop its app first (gust app stop)", id, fn.Name, fn.ID))
			return
		}
	}
	if err := s.store.DeleteImage(r.Context(), id); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleImagePrune (DELETE /v1/images) removes layers that no image uses: image GC.
func (s *Server) handleImagePrune(w http.ResponseWriter, r *http.Request) {
	ims, err := s.store.ListImages(r.Context())
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	inUse := map[string]bool{}
	for _, im := range ims {
		for _, l := range im.Layers {
			inUse[l] = true
		}
	}
	// Functions that may still start containers need their code: its blob and unpacked layer.
	fns, err := s.store.ListFunctions(r.Context(), "", true)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	for _, fn := range fns {
		inUse[s.cfg.Images.BlobPath(fn.Code.Blob)] = true
		inUse[s.cfg.Images.LayerPath("code-"+fn.Code.Blob)] = true
	}
	grace := 10 * time.Minute
	if v := r.URL.Query().Get("older_than"); v != "" {
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || secs < 0 {
			httpapi.WriteError(w, errdefs.Invalid("older_than must be a number of seconds, got %q", v))
			return
		}
		grace = time.Duration(secs * float64(time.Second))
	}
	res, err := s.cfg.Images.Prune(inUse, grace)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
}

// handleBlobPut stores local files (a tar) for an add_local step.
func (s *Server) handleBlobPut(w http.ResponseWriter, r *http.Request) {
	sum, err := s.cfg.Images.PutBlob(r.Body)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]string{"blob": sum})
}

// handleBlobGet says whether a blob is stored, so clients upload each set of files once.
func (s *Server) handleBlobGet(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sum")
	if !s.cfg.Images.HasBlob(sum) {
		httpapi.WriteError(w, errdefs.NotFound("blob %s is not stored", sum))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"blob": sum})
}

func (s *Server) handleImageGet(w http.ResponseWriter, r *http.Request) {
	im, err := s.store.GetImage(r.Context(), r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, im)
}

func (s *Server) handleImageList(w http.ResponseWriter, r *http.Request) {
	ims, err := s.store.ListImages(r.Context())
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"images": ims, "disk_bytes": s.cfg.Images.DiskUsage()})
}

// forward relays a request to the worker running the sandbox.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sb, err := s.store.GetSandbox(r.Context(), id)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	reads := r.Method == http.MethodGet && (strings.HasSuffix(r.URL.Path, "/output") || strings.HasSuffix(r.URL.Path, "/logs") || r.PathValue("eid") != "" && !strings.Contains(r.URL.Path, "/files"))
	if sb.Status != sandbox.Running && !reads {
		httpapi.WriteError(w, notRunning(sb))
		return
	}
	s.mu.Lock()
	wc := s.workers[sb.WorkerID]
	s.mu.Unlock()
	if wc == nil {
		httpapi.WriteError(w, errdefs.Unavailable("the worker running sandbox %s is not connected", id))
		return
	}
	// Read the request body before forwarding: Go's HTTP/1 server is not full duplex, and a body
	// still being read while the streamed answer flows back gets the answer cut off.
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardBody+1))
	if err != nil {
		httpapi.WriteError(w, errdefs.Invalid("reading request body: %v", err))
		return
	}
	if len(body) > maxForwardBody {
		httpapi.WriteError(w, errdefs.TooLarge("request body is above the 64 MiB limit; send it in parts"))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	wc.proxy.ServeHTTP(w, r)
}

// maxForwardBody bounds what a client may send through to a worker (file writes, stdin).
const maxForwardBody = 64<<20 + 1<<10

func notRunning(sb sandbox.Sandbox) error {
	switch sb.Status {
	case sandbox.Pending:
		return errdefs.Conflict("sandbox %s is still starting", sb.ID)
	case sandbox.Timeout:
		return errdefs.Conflict("sandbox %s has timed out and is no longer running; create a new sandbox (or raise timeout=)", sb.ID)
	case sandbox.Terminated:
		return errdefs.Conflict("sandbox %s has been terminated and is no longer running; create a new sandbox", sb.ID)
	}
	code := "unknown"
	if sb.ExitCode != nil {
		code = strconv.Itoa(*sb.ExitCode)
	}
	return errdefs.Conflict("sandbox %s is %s (exit code %s) and no longer running; create a new sandbox", sb.ID, sb.Status, code)
}

func newProxy(addr, token string) (*httputil.ReverseProxy, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, errdefs.Invalid("worker addr %q is not a URL: %v", addr, err)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("Authorization", "Bearer "+token)
		},
		FlushInterval: -1, // streams are NDJSON: pass each line on at once
		Transport:     &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(w, errdefs.Unavailable("worker unreachable: %v", err))
		},
	}, nil
}

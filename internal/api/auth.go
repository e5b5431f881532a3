package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
)

// operatorTokenID names the operator's token (the one gust was started with) in the audit log.
const operatorTokenID = "operator"

// authenticate finds who a request comes from (401 if nobody known) and puts the principal
// in its context; guard then checks the route's rule.
func (a *API) authenticate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.principalOf(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}

var errBadCredential = errdefs.WithKind(errdefs.ErrUnauthorized, "wrong or unknown token: check GUST_TOKEN_ID and GUST_TOKEN_SECRET (or the active profile in the client config); `gust token new` makes one")

func (a *API) principalOf(ctx context.Context, header string) (auth.Principal, error) {
	id, secret, opaque, err := auth.ParseBearer(header)
	if err != nil {
		return auth.Principal{}, err
	}
	if opaque != "" {
		switch {
		case a.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(opaque), []byte(a.cfg.Token)) == 1:
			return auth.Principal{WorkspaceID: auth.DefaultWorkspace, TokenID: operatorTokenID, Role: auth.Owner, Kind: auth.User, Admin: true}, nil
		case a.cfg.JoinToken != "" && subtle.ConstantTimeCompare([]byte(opaque), []byte(a.cfg.JoinToken)) == 1:
			return auth.Principal{TokenID: "join", Kind: auth.Joiner}, nil
		}
		return auth.Principal{}, errBadCredential
	}
	t, err := a.store.GetToken(ctx, id)
	if err != nil || !auth.Matches(t.Hash, secret) {
		return auth.Principal{}, errBadCredential
	}
	now := time.Now()
	if err := t.Usable(now); err != nil {
		return auth.Principal{}, err
	}
	if t.Kind == auth.Container {
		// Revoked at the container's end; checked here too, so that a missed revocation
		// (a crash between the two) cannot outlive the container.
		sb, err := a.store.GetSandbox(ctx, t.ContainerID)
		if err != nil || sb.Status.Terminal() {
			return auth.Principal{}, errdefs.WithKind(errdefs.ErrUnauthorized, "this container's credential ended with the container")
		}
	}
	a.touch(ctx, t, now)
	return t.Principal(), nil
}

// touch records a user token's use, at most once a minute.
func (a *API) touch(ctx context.Context, t auth.Token, now time.Time) {
	if t.Kind != auth.User || t.LastUsedAt != nil && now.Sub(*t.LastUsedAt) < time.Minute {
		return
	}
	if err := a.store.TouchToken(ctx, t.ID, now); err != nil {
		a.log.Printf("recording the use of token %s: %v", t.ID, err)
	}
}

// principal is who r comes from (authenticate put it there).
func principal(r *http.Request) auth.Principal {
	p, _ := auth.From(r.Context())
	return p
}

// guard enforces a route's rule, the workspace's request rate, and writes the audit entry of
// a call that changes state.
func (a *API) guard(pattern string, ru rule, h http.HandlerFunc) http.HandlerFunc {
	method, _, _ := strings.Cut(pattern, " ")
	return func(w http.ResponseWriter, r *http.Request) {
		p := principal(r)
		if !ru.allows(p, r.PathValue("wid")) {
			httpapi.WriteError(w, forbidden(p, pattern, ru))
			return
		}
		if p.Kind == auth.User || p.Kind == auth.Container {
			if err := a.limits.allow(r.Context(), a.store, p.WorkspaceID); err != nil {
				httpapi.WriteError(w, err)
				return
			}
		}
		if method == http.MethodGet || p.Kind == auth.Worker {
			h(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		a.audit.add(store.AuditEntry{Time: time.Now().UTC(), WorkspaceID: p.WorkspaceID, TokenID: p.TokenID, Method: method,
			Route: strings.TrimPrefix(pattern, method+" "), Object: objectOf(r), Status: rec.status, Error: rec.errorMessage()})
	}
}

// forbidden says why p may not call a route with rule ru.
func forbidden(p auth.Principal, pattern string, ru rule) error {
	var msg string
	switch {
	case p.Kind == auth.Container:
		msg = pattern + " is not open to function containers: their credential may look up and call functions and manage the sandboxes they created"
	case p.Kind == auth.Joiner:
		msg = "the join token may only register a worker"
	case p.Kind == auth.Worker:
		msg = "a worker's credential may only call the worker protocol for its own worker ID"
	case ru.need == joinOnly:
		msg = "registering a worker needs the join token (DATA_DIR/join-token on the server, given to `gust worker` as GUST_JOIN_TOKEN), not a user's token"
	case ru.need == workerOnly:
		msg = "the worker protocol needs a worker's credential, not a user's token"
	default:
		need := map[access]string{memberOnly: "member", ownerOnly: "owner", adminOnly: "the operator's token (owner of the default workspace)"}[ru.need]
		msg = pattern + " needs the role " + need + "; this token's role is " + string(p.Role)
	}
	return errdefs.WithKind(errdefs.ErrForbidden, msg)
}

// objectOf is the object a route's path names.
func objectOf(r *http.Request) string {
	for _, k := range []string{"id", "name", "sum"} {
		if v := r.PathValue(k); v != "" {
			return v
		}
	}
	return ""
}

// recorder keeps a response's status and the start of an error's body for the audit log.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (rc *recorder) WriteHeader(code int) {
	rc.status = code
	rc.ResponseWriter.WriteHeader(code)
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status >= 400 && rc.body.Len() < 1024 {
		rc.body.Write(b[:min(len(b), 1024-rc.body.Len())])
	}
	return rc.ResponseWriter.Write(b)
}

func (rc *recorder) Flush() {
	if f, ok := rc.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (rc *recorder) Unwrap() http.ResponseWriter { return rc.ResponseWriter }

func (rc *recorder) errorMessage() string {
	if rc.status < 400 {
		return ""
	}
	var body httpapi.ErrorBody
	if json.Unmarshal(rc.body.Bytes(), &body) == nil {
		return body.Error.Message
	}
	return http.StatusText(rc.status)
}

// auditLog batches audit entries into the store: a state-changing call does not wait for
// a write of its own.
type auditLog struct {
	mu      sync.Mutex
	pending []store.AuditEntry
	wake    chan struct{}
}

func newAuditLog() *auditLog { return &auditLog{wake: make(chan struct{}, 1)} }

func (l *auditLog) add(e store.AuditEntry) {
	l.mu.Lock()
	l.pending = append(l.pending, e)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// RunAudit writes audit entries until ctx ends, then writes the last ones; and drops
// entries older than keep once an hour.
func (a *API) RunAudit(ctx context.Context, keep time.Duration) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flushAudit(context.Background())
			return
		case <-a.audit.wake:
			a.flushAudit(ctx)
		case <-prune.C:
			if _, err := a.store.PruneAudit(ctx, time.Now().Add(-keep)); err != nil {
				a.log.Printf("pruning the audit log: %v", err)
			}
		}
	}
}

// FlushAudit writes the audit entries waiting (tests read the log right after a call).
func (a *API) flushAudit(ctx context.Context) {
	a.audit.mu.Lock()
	es := a.audit.pending
	a.audit.pending = nil
	a.audit.mu.Unlock()
	if err := a.store.AppendAudit(ctx, es); err != nil {
		a.log.Printf("writing %d audit entries: %v", len(es), err)
	}
}

// rateLimits holds each workspace's request-rate limiter, made from its quota.
type rateLimits struct {
	mu sync.Mutex
	ws map[string]*rate.Limiter // nil: no limit
}

func (l *rateLimits) allow(ctx context.Context, st *store.Store, ws string) error {
	l.mu.Lock()
	lim, known := l.ws[ws]
	l.mu.Unlock()
	if !known {
		w, err := st.GetWorkspace(ctx, ws)
		if err != nil {
			return err
		}
		lim = l.set(ws, w.Quotas.RequestsPerSecond)
	}
	if lim != nil && !lim.Allow() {
		return errdefs.WithKind(errdefs.ErrRateLimited, "quota requests_per_second is "+strconv.FormatFloat(float64(lim.Limit()), 'g', -1, 64)+" for this workspace; slow down and retry")
	}
	return nil
}

// set replaces a workspace's limiter (its quota changed).
func (l *rateLimits) set(ws string, perSecond float64) *rate.Limiter {
	var lim *rate.Limiter
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), max(10, int(perSecond)))
	}
	l.mu.Lock()
	l.ws[ws] = lim
	l.mu.Unlock()
	return lim
}

// sandboxOf returns a sandbox that r's principal may see: another workspace's, or (for a
// container's credential) one that container did not create, is not found.
func (a *API) sandboxOf(r *http.Request, id string) (sandbox.Sandbox, error) {
	sb, err := a.store.GetSandbox(r.Context(), id)
	if err != nil {
		return sb, err
	}
	if !visible(principal(r), sb.WorkspaceID, sb.CreatedBy) {
		return sandbox.Sandbox{}, errdefs.NotFound("sandbox %q not found", id)
	}
	return sb, nil
}

// visible reports whether p may see an object of workspace ws that createdBy made.
func visible(p auth.Principal, ws, createdBy string) bool {
	if p.WorkspaceID != ws {
		return false
	}
	return p.Kind != auth.Container || createdBy == p.ContainerID
}

// appOf returns an app of r's workspace.
func (a *API) appOf(r *http.Request, id string) (store.App, error) {
	app, err := a.store.GetApp(r.Context(), id)
	if err == nil && app.WorkspaceID != principal(r).WorkspaceID {
		return store.App{}, errdefs.NotFound("app %q not found", id)
	}
	return app, err
}

// checkImage returns an error unless r's workspace may use the image.
func (a *API) checkImage(r *http.Request, id string) error {
	ok, err := a.store.CanUseImage(r.Context(), principal(r).WorkspaceID, id)
	if err != nil {
		return err
	}
	if !ok {
		return errdefs.NotFound("image %q not found", id)
	}
	return nil
}

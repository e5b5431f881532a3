package api

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/gust-run/gust/internal/auth"
	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/httpapi"
	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/sandbox"
)

// Tunnels into sandboxes (internal/ingress): a sandbox's declared ports are routed once it
// runs and until it ends; a function container opens and closes its own (modal.forward).

func (a *API) tunnelRoutes(rt *router) {
	rt.handle("GET /v1/sandboxes/{id}/tunnels", a.handleTunnels)
	rt.handle("POST /v1/sandboxes/{id}/tunnels", a.handleForward)
	rt.handle("DELETE /v1/sandboxes/{id}/tunnels/{port}", a.handleForwardClose)
	// Relayed to the worker, which runs the readiness probe.
	rt.handle("GET /v1/sandboxes/{id}/ready", a.forward)
}

// checkIngress refuses ports when this server has no ingress.
func (a *API) checkIngress(ports []sandbox.Port) error {
	if len(ports) > 0 && a.cfg.Ingress == nil {
		return errdefs.Invalid("this gust server has no ingress, so sandboxes cannot expose ports: its operator starts it with --ingress-addr")
	}
	return nil
}

// openTunnels routes a sandbox's ports once it runs. A sandbox that ended meanwhile (its end
// may have been handled before its routes existed) gets them closed again.
func (a *API) openTunnels(ctx context.Context, sb sandbox.Sandbox) error {
	if len(sb.Ports) == 0 {
		return nil
	}
	allow, err := prefixes(sb.InboundCIDRAllowlist)
	if err != nil {
		return err
	}
	if _, err := a.cfg.Ingress.Open(ingress.Target{SandboxID: sb.ID, WorkerID: sb.WorkerID, Allow: allow}, sb.Ports); err != nil {
		a.cfg.Ingress.Close(sb.ID)
		return err
	}
	if now, err := a.store.GetSandbox(ctx, sb.ID); err != nil || now.Status.Terminal() {
		a.cfg.Ingress.Close(sb.ID)
	}
	return nil
}

func prefixes(cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range cidrs {
		p, err := sandbox.ParseInboundCIDR(c)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// tunnelsResponse answers GET /v1/sandboxes/{id}/tunnels.
type tunnelsResponse struct {
	Tunnels []ingress.Tunnel `json:"tunnels"`
}

// handleTunnels answers a sandbox's tunnels once it runs, waiting up to ?timeout=S (default
// 50, as Modal's Sandbox.tunnels) while it starts.
func (a *API) handleTunnels(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	secs, err := querySeconds(r, "timeout", 50, maxQuerySeconds)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	sb, timedOut, err := a.awaitSandbox(r, id, secs, a.ownSandbox, func(sb sandbox.Sandbox) bool {
		return sb.Status == sandbox.Running || sb.Status.Terminal()
	})
	switch {
	case r.Context().Err() != nil:
		return // the client went
	case err != nil:
		httpapi.WriteError(w, err)
	case timedOut:
		httpapi.WriteError(w, errdefs.Unavailable("sandbox %s did not start within %v s, so it has no tunnels yet; ask again", id, secs))
	case sb.Status.Terminal():
		httpapi.WriteError(w, notRunning(sb))
	default:
		var ts []ingress.Tunnel
		if a.cfg.Ingress != nil {
			ts = a.cfg.Ingress.Tunnels(id)
		}
		if ts == nil {
			ts = []ingress.Tunnel{}
		}
		httpapi.WriteJSON(w, http.StatusOK, tunnelsResponse{Tunnels: ts})
	}
}

// ownSandbox is sandboxOf, and also lets a function container see its own record.
func (a *API) ownSandbox(r *http.Request, id string) (sandbox.Sandbox, error) {
	p := principal(r)
	if p.Kind == auth.Container && p.ContainerID == id {
		sb, err := a.store.GetSandbox(r.Context(), id)
		if err == nil && sb.WorkspaceID == p.WorkspaceID {
			return sb, nil
		}
	}
	return a.sandboxOf(r, id)
}

// forwardRequest is modal.forward's: open a tunnel to a port of the calling container.
type forwardRequest struct {
	Port        int  `json:"port"`
	Unencrypted bool `json:"unencrypted"`
	H2          bool `json:"h2_enabled"`
}

// selfContainer returns the calling function container's record: only a function container
// opens tunnels at run time, and only to itself; sandboxes declare theirs at create.
func (a *API) selfContainer(r *http.Request, id string) (sandbox.Sandbox, error) {
	p := principal(r)
	if p.Kind != auth.Container || p.ContainerID != id {
		if _, err := a.sandboxOf(r, id); err != nil {
			return sandbox.Sandbox{}, err
		}
		return sandbox.Sandbox{}, errdefs.Invalid("tunnels are opened by modal.forward() inside a function container, for that container only; a sandbox declares its ports when it is created (encrypted_ports=, unencrypted_ports=, h2_ports=)")
	}
	sb, err := a.ownSandbox(r, id)
	if err != nil {
		return sb, err
	}
	if sb.Status != sandbox.Running {
		return sb, notRunning(sb)
	}
	return sb, nil
}

func (a *API) handleForward(w http.ResponseWriter, r *http.Request) {
	var req forwardRequest
	if err := httpapi.DecodeJSON(r, &req, 4096); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Port < 1 || req.Port > 65535 {
		httpapi.WriteError(w, errdefs.Invalid("port %d is not a TCP port (1-65535)", req.Port))
		return
	}
	sb, err := a.selfContainer(r, r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if sb.Isolation == sandbox.IsolationGVisor {
		httpapi.WriteError(w, errdefs.Invalid("modal.forward() is not available in gVisor containers yet (the worker cannot reach their ports); run the function with isolation runc"))
		return
	}
	if sb.BlockNetwork {
		httpapi.WriteError(w, errdefs.Invalid("modal.forward() cannot expose a port of a container with block_network=True"))
		return
	}
	port := sandbox.Port{Port: req.Port, Unencrypted: req.Unencrypted, H2: req.H2}
	if err := a.checkIngress([]sandbox.Port{port}); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	allow, err := prefixes(sb.InboundCIDRAllowlist)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ts, err := a.cfg.Ingress.Open(ingress.Target{SandboxID: sb.ID, WorkerID: sb.WorkerID, Allow: allow}, []sandbox.Port{port})
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if now, err := a.store.GetSandbox(r.Context(), sb.ID); err != nil || now.Status.Terminal() {
		a.cfg.Ingress.Close(sb.ID)
		httpapi.WriteError(w, errdefs.Conflict("container %s ended", sb.ID))
		return
	}
	for _, t := range ts {
		if t.ContainerPort == req.Port {
			httpapi.WriteJSON(w, http.StatusCreated, t)
			return
		}
	}
	httpapi.WriteError(w, errdefs.Conflict("container %s ended", sb.ID))
}

func (a *API) handleForwardClose(w http.ResponseWriter, r *http.Request) {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		httpapi.WriteError(w, errdefs.Invalid("port %q is not a TCP port (1-65535)", r.PathValue("port")))
		return
	}
	p := principal(r)
	id := r.PathValue("id")
	if p.Kind != auth.Container || p.ContainerID != id {
		if _, err := a.selfContainer(r, id); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	if a.cfg.Ingress != nil {
		a.cfg.Ingress.ClosePort(id, port)
	}
	w.WriteHeader(http.StatusNoContent)
}

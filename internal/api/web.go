package api

import (
	"context"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/function"
)

// webLabels gives a publish's web endpoints their labels (the user's, or Modal's default
// <app>-<function>, with "-dev" in an ephemeral app) and returns their URLs by function name.
// The store claims the labels when it records the functions.
func (a *API) webLabels(ctx context.Context, ws, appName, mode string, specs []function.Spec) (map[string]string, error) {
	urls := map[string]string{}
	var wsName string
	for i := range specs {
		sp := &specs[i]
		if sp.Web == nil {
			continue
		}
		if a.cfg.Ingress == nil {
			return nil, errdefs.Invalid("function %q is a web endpoint, but this server's ingress is off: start it with --ingress-addr", sp.Name)
		}
		if wsName == "" {
			name, err := a.webWorkspaceName(ctx, ws)
			if err != nil {
				return nil, err
			}
			wsName = name
		}
		name := sp.Name
		if sp.Kind == function.KindClass {
			name += "-" + sp.Web.ClsMethod // Modal's <app>-<class>-<method>
		}
		host, label := function.WebHostLabel(wsName, appName, name, sp.Web.Label, mode == function.ModeEphemeral)
		sp.Web.Label = label
		urls[sp.Name] = a.cfg.Ingress.WebURL(host)
	}
	return urls, nil
}

// webURL is a published web endpoint's URL ("" for other functions).
func (a *API) webURL(ctx context.Context, fn function.Function) string {
	if fn.Spec.Web == nil || a.cfg.Ingress == nil {
		return ""
	}
	w, err := a.store.GetWorkspace(ctx, fn.WorkspaceID)
	if err != nil {
		return ""
	}
	return a.cfg.Ingress.WebURL(function.DNSName(w.Name) + "--" + fn.Spec.Web.Label)
}

// webWorkspaceName is a workspace's name, refused for web endpoints when its host name part
// (function.DNSName) is another workspace's too, or empty: the ingress could not tell them
// apart.
func (a *API) webWorkspaceName(ctx context.Context, ws string) (string, error) {
	all, err := a.store.ListWorkspaces(ctx)
	if err != nil {
		return "", err
	}
	var name string
	for _, w := range all {
		if w.ID == ws {
			name = w.Name
		}
	}
	dns := function.DNSName(name)
	if dns == "" {
		return "", errdefs.Invalid("the workspace name %q has no letters or digits for web endpoints' host names: rename the workspace", name)
	}
	for _, w := range all {
		if w.ID != ws && function.DNSName(w.Name) == dns {
			return "", errdefs.Conflict("the workspaces %q and %q share the host name part %q of web endpoints' URLs: rename one of them", name, w.Name, dns)
		}
	}
	return name, nil
}

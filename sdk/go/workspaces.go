package gust

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Roles a token may have in its workspace.
const (
	RoleOwner    = "owner"    // a member who also manages the workspace's tokens and reads its audit log
	RoleMember   = "member"   // uses the workspace: apps, functions, sandboxes, secrets
	RoleReadonly = "readonly" // reads only
)

// Whoami says who the client's credentials are.
type Whoami struct {
	WorkspaceID   string `json:"workspace_id"`
	WorkspaceName string `json:"workspace_name"`
	TokenID       string `json:"token_id"`
	Role          string `json:"role"`
	// Admin is true for the operator's credentials, which manage workspaces.
	Admin bool `json:"admin"`
}

// Whoami returns the workspace, token and role of the client's credentials.
func (c *Client) Whoami(ctx context.Context) (*Whoami, error) {
	var w Whoami
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/whoami"}, &w); err != nil {
		return nil, fmt.Errorf("whoami: %w", err)
	}
	return &w, nil
}

// Token is a workspace token. Secret is set only in the answer that creates it: the server
// never shows it again.
type Token struct {
	ID          string     `json:"token_id"`
	Secret      string     `json:"token_secret,omitempty"`
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	WorkspaceID string     `json:"workspace_id"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
}

// TokenOptions describe a token to create. The zero value makes a member token of the
// caller's workspace that does not expire.
type TokenOptions struct {
	Name string
	// Role is RoleOwner, RoleMember or RoleReadonly; empty means RoleMember.
	Role string
	// ExpiresIn, if positive, makes the token expire that long after it is made.
	ExpiresIn time.Duration
	// WorkspaceID makes the token in another workspace; only the operator (admin) may.
	WorkspaceID string
}

// CreateToken makes a token in the caller's workspace (owners only). The answer holds the
// secret, which is never shown again.
func (c *Client) CreateToken(ctx context.Context, opts TokenOptions) (*Token, error) {
	if opts.ExpiresIn < 0 {
		return nil, errors.New("create token: ExpiresIn must not be negative")
	}
	body := map[string]any{}
	if opts.Name != "" {
		body["name"] = opts.Name
	}
	if opts.Role != "" {
		body["role"] = opts.Role
	}
	if opts.ExpiresIn > 0 {
		body["expires_in"] = seconds(opts.ExpiresIn)
	}
	if opts.WorkspaceID != "" {
		body["workspace_id"] = opts.WorkspaceID
	}
	var t Token
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/tokens", json: body}, &t); err != nil {
		return nil, fmt.Errorf("create token: %w", err)
	}
	return &t, nil
}

// ListTokens returns the tokens of the caller's workspace (owners only), without secrets.
func (c *Client) ListTokens(ctx context.Context) ([]*Token, error) {
	var out struct {
		Tokens []*Token `json:"tokens"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/tokens"}, &out); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out.Tokens, nil
}

// RevokeToken revokes the token id (owners only) and returns when it was revoked. A missing
// token is an error satisfying errors.Is(err, ErrNotFound).
func (c *Client) RevokeToken(ctx context.Context, id string) (time.Time, error) {
	var out struct {
		TokenID   string    `json:"token_id"`
		RevokedAt time.Time `json:"revoked_at"`
	}
	if err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/tokens/" + pathEscape(id)}, &out); err != nil {
		return time.Time{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return out.RevokedAt, nil
}

// Workspace is a tenant: every app, function, sandbox and secret belongs to one.
type Workspace struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateWorkspace makes a workspace and its first owner token (operator only). The token's
// secret is in the answer and never shown again.
func (c *Client) CreateWorkspace(ctx context.Context, name string) (*Workspace, *Token, error) {
	var out struct {
		Workspace *Workspace `json:"workspace"`
		Token     *Token     `json:"token"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/workspaces", json: map[string]string{"name": name}}, &out); err != nil {
		return nil, nil, fmt.Errorf("create workspace %q: %w", name, err)
	}
	if out.Workspace == nil || out.Token == nil {
		return nil, nil, fmt.Errorf("create workspace %q: the answer lacks the workspace or its token", name)
	}
	return out.Workspace, out.Token, nil
}

// ListWorkspaces returns the workspaces the caller may see: all of them for the operator,
// else its own.
func (c *Client) ListWorkspaces(ctx context.Context) ([]*Workspace, error) {
	var out struct {
		Workspaces []*Workspace `json:"workspaces"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/workspaces"}, &out); err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return out.Workspaces, nil
}

// Quotas are a workspace's limits. Zero means unlimited.
type Quotas struct {
	Sandboxes         int     `json:"sandboxes"`  // containers running at once
	CPU               float64 `json:"cpu"`        // cores reserved at once
	MemoryMiB         int64   `json:"memory_mib"` // memory reserved at once
	GPUs              int     `json:"gpus"`       // GPUs reserved at once
	ImageDiskMiB      int64   `json:"image_disk_mib"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	KVStoreMiB        int64   `json:"kv_store_mib"` // contents of Dicts and Queues
	VolumeMiB         int64   `json:"volume_mib"`   // files in Volumes
}

// GetQuotas returns the quotas of the workspace id.
func (c *Client) GetQuotas(ctx context.Context, workspaceID string) (*Quotas, error) {
	var q Quotas
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/workspaces/" + pathEscape(workspaceID) + "/quotas"}, &q); err != nil {
		return nil, fmt.Errorf("get quotas of workspace %s: %w", workspaceID, err)
	}
	return &q, nil
}

// SetQuotas replaces the quotas of the workspace id (operator only) and returns them as
// stored.
func (c *Client) SetQuotas(ctx context.Context, workspaceID string, q Quotas) (*Quotas, error) {
	var out Quotas
	if err := c.call(ctx, request{method: http.MethodPut, path: "/v1/workspaces/" + pathEscape(workspaceID) + "/quotas", json: q}, &out); err != nil {
		return nil, fmt.Errorf("set quotas of workspace %s: %w", workspaceID, err)
	}
	return &out, nil
}

// AuditOptions filter the audit log. The zero value asks for the server's default window.
type AuditOptions struct {
	// Since, if positive, asks for entries at most that old; else SinceTime, if not zero,
	// for entries at or after it.
	Since     time.Duration
	SinceTime time.Time
	TokenID   string
	Route     string // a route pattern, e.g. "/v1/sandboxes/{id}/terminate"
	Object    string // an object's id
	Limit     int    // 0: the server's default
}

// AuditEntry is one request in the audit log.
type AuditEntry struct {
	Time        time.Time `json:"time"`
	WorkspaceID string    `json:"workspace_id"`
	TokenID     string    `json:"token_id"`
	Method      string    `json:"method"`
	Route       string    `json:"route"`
	Object      string    `json:"object"`
	Status      int       `json:"status"`
	Error       string    `json:"error"`
}

// Audit returns the audit log of the caller's workspace (owners only), newest first.
func (c *Client) Audit(ctx context.Context, opts AuditOptions) ([]*AuditEntry, error) {
	q := url.Values{}
	switch {
	case opts.Since > 0:
		q.Set("since", strconv.FormatFloat(opts.Since.Seconds(), 'f', -1, 64))
	case !opts.SinceTime.IsZero():
		q.Set("since", opts.SinceTime.UTC().Format(time.RFC3339Nano))
	}
	for k, v := range map[string]string{"token_id": opts.TokenID, "route": opts.Route, "object": opts.Object} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	var out struct {
		Entries []*AuditEntry `json:"entries"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/audit", query: q}, &out); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return out.Entries, nil
}

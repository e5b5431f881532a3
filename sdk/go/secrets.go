package gust

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Secret is a named set of environment variables kept by the server, for functions to use.
// The API never returns the values.
type Secret struct {
	ID        string    `json:"secret_id"`
	Name      string    `json:"name"`
	Keys      []string  `json:"keys"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateSecret stores env under name. An existing secret of that name is an error satisfying
// errors.Is(err, ErrConflict) unless overwrite is set, which replaces it.
func (c *Client) CreateSecret(ctx context.Context, name string, env map[string]string, overwrite bool) (*Secret, error) {
	if env == nil {
		env = map[string]string{}
	}
	var s Secret
	body := map[string]any{"name": name, "env": env, "overwrite": overwrite}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/secrets", json: body}, &s); err != nil {
		return nil, fmt.Errorf("create secret %q: %w", name, err)
	}
	return &s, nil
}

// ListSecrets returns every secret: names and keys, never values.
func (c *Client) ListSecrets(ctx context.Context) ([]*Secret, error) {
	var out struct {
		Secrets []*Secret `json:"secrets"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/secrets"}, &out); err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	return out.Secrets, nil
}

// LookupSecret returns the secret called name; a missing one is an error satisfying
// errors.Is(err, ErrNotFound).
func (c *Client) LookupSecret(ctx context.Context, name string) (*Secret, error) {
	var s Secret
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/secrets/lookup", json: map[string]string{"name": name}}, &s); err != nil {
		return nil, fmt.Errorf("look up secret %q: %w", name, err)
	}
	return &s, nil
}

// DeleteSecret deletes the secret called name; a missing one is an error satisfying
// errors.Is(err, ErrNotFound).
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/secrets/" + pathEscape(name)}, nil); err != nil {
		return fmt.Errorf("delete secret %q: %w", name, err)
	}
	return nil
}

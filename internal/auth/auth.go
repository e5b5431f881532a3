// Package auth says who a request comes from: a Principal (its workspace, role and kind) and
// the tokens that prove it. A token is an ID and a secret; only the secret's hash is kept.
// Three kinds of principal hold tokens: users (roles owner, member, read-only), function
// containers (a credential minted when the container starts and revoked when it stops,
// scoped to what that container may do) and workers. Pure logic: the store keeps tokens, the
// API checks them. Imports nothing of gust's but errdefs and ids.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"time"

	"github.com/gust-run/gust/internal/errdefs"
	"github.com/gust-run/gust/internal/ids"
)

// DefaultWorkspace is the workspace `gust up` makes, and the one every object made before
// workspaces existed belongs to.
const DefaultWorkspace = "ws-default"

// SystemWorkspace holds gust's own containers (image builds). No token belongs to it, so no
// client sees them.
const SystemWorkspace = "ws-system"

// Role is what a user's token may do within its workspace.
type Role string

// The roles, weakest first.
const (
	ReadOnly Role = "readonly" // reads only
	Member   Role = "member"   // runs things: apps, functions, sandboxes, images
	Owner    Role = "owner"    // also manages the workspace's tokens and secrets, and reads its audit log
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r.rank() > 0 }

func (r Role) rank() int {
	switch r {
	case ReadOnly:
		return 1
	case Member:
		return 2
	case Owner:
		return 3
	}
	return 0
}

// AtLeast reports whether r may do what need allows.
func (r Role) AtLeast(need Role) bool { return r.rank() >= need.rank() && need.rank() > 0 }

// Kind is what holds a token.
type Kind string

// The kinds of principal.
const (
	User      Kind = "user"
	Container Kind = "container" // a function container's own credential
	Worker    Kind = "worker"    // a registered worker's credential
	Joiner    Kind = "join"      // holds the join token: may only register a worker
)

// Principal is who a request comes from.
type Principal struct {
	WorkspaceID string
	TokenID     string
	Role        Role
	Kind        Kind
	// Admin is the operator (the token `gust up` or `gust server` was given): an owner of the
	// default workspace who may also create workspaces and set their quotas.
	Admin       bool
	ContainerID string // Kind Container: the container the credential was minted for
	WorkerID    string // Kind Worker: the worker it was issued to
}

// Token is a stored credential.
type Token struct {
	ID          string     `json:"token_id"`
	WorkspaceID string     `json:"workspace_id"`
	Name        string     `json:"name"`
	Role        Role       `json:"role"`
	Kind        Kind       `json:"kind"`
	Hash        string     `json:"-"`
	ContainerID string     `json:"container_id,omitempty"`
	WorkerID    string     `json:"worker_id,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
}

// Principal is who presents t.
func (t Token) Principal() Principal {
	return Principal{WorkspaceID: t.WorkspaceID, TokenID: t.ID, Role: t.Role, Kind: t.Kind, ContainerID: t.ContainerID, WorkerID: t.WorkerID}
}

// Usable returns why t may not be used at now, or nil.
func (t Token) Usable(now time.Time) error {
	if t.RevokedAt != nil {
		return errdefs.WithKind(errdefs.ErrUnauthorized, "token "+t.ID+" was revoked")
	}
	if t.ExpiresAt != nil && !now.Before(*t.ExpiresAt) {
		return errdefs.WithKind(errdefs.ErrUnauthorized, "token "+t.ID+" expired at "+t.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// Prefixes of token IDs and secrets: a secret is recognisable in a log or a leak scanner.
const (
	TokenIDPrefix     = string(ids.Token) + "-"
	TokenSecretPrefix = "ts-"
)

// NewCredential returns a new token ID and secret. The secret has about 200 bits of entropy,
// so a plain SHA-256 of it (Hash) is as safe to keep as a slow password hash would be.
func NewCredential() (id, secret string) {
	return ids.New(ids.Token), TokenSecretPrefix + ids.Random(40)
}

// Hash is what is stored of a secret.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Matches reports, in constant time, whether secret is the one hash was made from.
func Matches(hash, secret string) bool {
	got := Hash(secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(hash)) == 1
}

// ParseBearer reads an Authorization header: "Bearer <token_id>:<token_secret>" gives id and
// secret; "Bearer <opaque>" (the operator's or the join token) gives opaque.
func ParseBearer(header string) (id, secret, opaque string, err error) {
	v, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || v == "" {
		return "", "", "", errdefs.WithKind(errdefs.ErrUnauthorized, "missing bearer token: send \"Authorization: Bearer <token_id>:<token_secret>\" (set GUST_TOKEN_ID and GUST_TOKEN_SECRET, or run `gust up`, which writes the client config)")
	}
	if id, secret, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(id, TokenIDPrefix) {
		return id, secret, "", nil
	}
	return "", "", v, nil
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal ctx carries; ok is false when none does.
func From(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

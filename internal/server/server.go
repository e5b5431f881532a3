// Package server assembles gust's control plane from its parts and runs it: the store
// (internal/store), the fleet of workers (internal/fleet), the function engine
// (internal/dispatch), the image builder (internal/imagebuild) and the HTTP API over them
// (internal/api). It holds no logic of its own. Imported by cmd/gust only.
package server

import (
	"context"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/gust-run/gust/internal/api"
	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/fleet"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/imagebuild"
	"github.com/gust-run/gust/internal/sandbox"
	"github.com/gust-run/gust/internal/store"
)

// Version is gust's version, shown by /v1/health.
const Version = "0.1.0"

// Config configures a server.
type Config struct {
	// Token is the operator's (owner of the default workspace, and admin); JoinToken lets
	// workers register and does nothing else.
	Token     string
	JoinToken string
	// AuditRetention is how long the audit log keeps an entry; 0 means 90 days.
	AuditRetention   time.Duration
	DefaultIsolation string
	Images           *image.Builder
	Logger           *log.Logger
	// HeartbeatTimeout is how long an ephemeral app (`with app.run()`) outlives its client's
	// last heartbeat; 0 means a minute.
	HeartbeatTimeout time.Duration
}

// Server is the control plane.
type Server struct {
	api *api.API
}

// New assembles a server over a store and starts its loops until ctx ends. Containers that a
// previous run left running are marked failed, since they went with that run; the inputs it
// left open are queued again.
func New(ctx context.Context, cfg Config, st *store.Store) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "server: ", log.LstdFlags)
	}
	if cfg.DefaultIsolation == "" {
		cfg.DefaultIsolation = sandbox.IsolationRunc
	}
	fl := fleet.New(st, fleet.Config{Logger: cfg.Logger})
	if err := fl.FailLeftovers(ctx); err != nil {
		return nil, err
	}
	eng := dispatch.New(st, fl, dispatch.Config{DefaultIsolation: cfg.DefaultIsolation, HeartbeatTimeout: cfg.HeartbeatTimeout, Logger: cfg.Logger})
	fl.OnContainerEnd(eng.ContainerEnded)
	if err := eng.Load(ctx); err != nil {
		return nil, err
	}
	builds := imagebuild.New(st, fl, cfg.Images, cfg.Logger)
	a := api.New(api.Config{Token: cfg.Token, JoinToken: cfg.JoinToken, DefaultIsolation: cfg.DefaultIsolation, Version: Version, Logger: cfg.Logger},
		st, fl, eng, builds, cfg.Images)
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = 90 * 24 * time.Hour
	}
	go a.RunAudit(ctx, cfg.AuditRetention)
	go a.RunKV(ctx)
	go fl.Run(ctx)
	go eng.Run(ctx)
	return &Server{api: a}, nil
}

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler { return s.api.Handler() }

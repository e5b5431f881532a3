// Package server assembles gust's control plane from its parts and runs it: the store
// (internal/store), the fleet of workers (internal/fleet), the function engine
// (internal/dispatch), the image builder (internal/imagebuild) and the HTTP API over them
// (internal/api), and the ingress for tunnels into sandboxes (internal/ingress). It holds no
// logic of its own. Imported by cmd/gust only.
package server

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/gust-run/gust/internal/api"
	"github.com/gust-run/gust/internal/budget"
	"github.com/gust-run/gust/internal/dispatch"
	"github.com/gust-run/gust/internal/endpoint"
	"github.com/gust-run/gust/internal/fleet"
	"github.com/gust-run/gust/internal/image"
	"github.com/gust-run/gust/internal/imagebuild"
	"github.com/gust-run/gust/internal/ingress"
	"github.com/gust-run/gust/internal/metering"
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
	// Prices price the usage ledger; nil reads PriceFile, else the price file named by
	// GUST_PRICES, else uses metering.DefaultPrices (Modal's list prices).
	Prices    *metering.Prices
	PriceFile string
	// HeartbeatTimeout is how long an ephemeral app (`with app.run()`) outlives its client's
	// last heartbeat; 0 means a minute.
	HeartbeatTimeout time.Duration
	// WorkerTimeout is how long a worker may stay silent before its containers fail and their
	// usage closes (0: a minute).
	WorkerTimeout time.Duration
	// Ingress, when set, serves tunnels into sandboxes (their encrypted_ports and the like).
	Ingress *ingress.Config
}

// Server is the control plane.
type Server struct {
	api     *api.API
	ingress *ingress.Ingress
	fleet   *fleet.Fleet
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
	prices := metering.DefaultPrices()
	if cfg.Prices != nil {
		prices = *cfg.Prices
	} else if path := cmp.Or(cfg.PriceFile, os.Getenv("GUST_PRICES")); path != "" {
		p, err := metering.LoadPrices(path)
		if err != nil {
			return nil, fmt.Errorf("the price file: %w", err)
		}
		prices = p
	}
	fl := fleet.New(st, fleet.Config{Logger: cfg.Logger, WorkerTimeout: cfg.WorkerTimeout})
	if err := fl.FailLeftovers(ctx); err != nil {
		return nil, err
	}
	eng := dispatch.New(st, fl, dispatch.Config{DefaultIsolation: cfg.DefaultIsolation, HeartbeatTimeout: cfg.HeartbeatTimeout, Logger: cfg.Logger})
	fl.OnContainerEnd(eng.ContainerEnded)
	if err := eng.Load(ctx); err != nil {
		return nil, err
	}
	var ing *ingress.Ingress
	if cfg.Ingress != nil {
		ic := *cfg.Ingress
		if ic.Logger == nil {
			ic.Logger = cfg.Logger
		}
		var err error
		if ing, err = ingress.New(ic, fl); err != nil {
			return nil, err
		}
		// A sandbox's tunnels go with it.
		fl.OnAnyEnd(func(sb sandbox.Sandbox) { ing.Close(sb.ID) })
		go func() {
			<-ctx.Done()
			ing.Stop()
		}()
	}
	budgets := budget.New(st, prices, cfg.Logger)
	fl.OnAdmit(budgets.Admit)
	builds := imagebuild.New(st, fl, cfg.Images, cfg.Logger)
	a := api.New(api.Config{Token: cfg.Token, JoinToken: cfg.JoinToken, DefaultIsolation: cfg.DefaultIsolation, Version: Version, Prices: prices, Budgets: budgets, Logger: cfg.Logger, Ingress: ing},
		st, fl, eng, builds, cfg.Images)
	fl.OnLost(a.CloseLostUsage)
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = 90 * 24 * time.Hour
	}
	if ing != nil {
		ing.SetWeb(endpoint.New(eng, fl, st, cfg.Logger)) // web endpoints come in by the same door
	}
	go a.RunAudit(ctx, cfg.AuditRetention)
	go a.RunKV(ctx)
	go a.RunVolumes(ctx)
	// Storage is read every 5 minutes (GUST_STORAGE_METER_PERIOD, a Go duration, for tests).
	storagePeriod := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("GUST_STORAGE_METER_PERIOD")); err == nil && d > 0 {
		storagePeriod = d
	}
	go a.RunStorageMeter(ctx, storagePeriod)
	go fl.Run(ctx)
	go budgets.Run(ctx, 10*time.Second, func(ctx context.Context, id, reason string) {
		if _, err := fl.Terminate(ctx, id, sandbox.Terminated, reason); err != nil {
			cfg.Logger.Printf("stopping %s (%s): %v", id, reason, err)
		}
	})
	go eng.Run(ctx)
	return &Server{api: a, ingress: ing, fleet: fl}, nil
}

// SetLocalWorker names the worker that runs in this process (`gust up`): the ingress reaches
// its containers' ports directly.
func (s *Server) SetLocalWorker(w fleet.LocalWorker) { s.fleet.SetLocal(w) }

// Ingress is the server's ingress for tunnels, or nil.
func (s *Server) Ingress() *ingress.Ingress { return s.ingress }

// MeterStorage adds a source of stored objects (volumes) to the usage ledger (api.MeterStorage).
func (s *Server) MeterStorage(src api.StorageSource) { s.api.MeterStorage(src) }

// MetricsHandler serves the operator's metrics (Prometheus's text format) without asking for a
// token: for a separate address (--metrics-addr) that the operator keeps to their monitoring.
func (s *Server) MetricsHandler() http.Handler { return s.api.MetricsHandler() }

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler { return s.api.Handler() }

// Package server builds one berth node from a configuration: the store,
// the upstream client, the peers, the mirror and the HTTP API, and runs
// them until its context ends. cmd/berth calls it; tests build several
// nodes in one process with it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/registry"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// Server is one berth node.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	store   *cache.Store
	up      *upstream.Client
	mirror  *mirror.Mirror
	api     *registry.Handler
	ready   atomic.Bool
	closers []func() error // run in reverse by Close
}

// New builds a node from a validated cfg. It opens the store (sweeping and
// reconciling it) but listens on nothing until Run.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = metrics.New(s.reg, cfg.Metrics.TopRepos)
	store, err := cache.Open(cfg.Cache.Dir, cache.Options{
		Logger: log.With("component", "cache"), Metrics: s.metrics, FillTimeout: cfg.FillTimeout.D(),
	})
	if err != nil {
		return nil, err
	}
	s.store = store
	s.closers = append(s.closers, store.Close)
	s.up, err = upstream.New(cfg.Registries, upstream.Options{Logger: log.With("component", "upstream"), Metrics: s.metrics})
	if err != nil {
		s.Close()
		return nil, err
	}
	peers, auth, err := s.startPeers()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.mirror = mirror.New(store, peers, s.up, mirror.Config{TagTTL: cfg.TagTTL.D(), Logger: log.With("component", "mirror"), Metrics: s.metrics})
	s.api = registry.New(s.mirror, registry.Options{
		Router:  oci.Router{Known: s.up.Known, Default: cfg.DefaultRegistry},
		Peers:   auth,
		Logger:  log.With("component", "api"),
		Metrics: s.metrics,
	})
	s.ready.Store(true)
	return s, nil
}

// Handler returns the node's HTTP handler: /v2/, /metrics, /healthz, /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v2/", s.api)
	mux.Handle("/v2", s.api)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Store returns the node's content store.
func (s *Server) Store() *cache.Store { return s.store }

// Registry returns the node's Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Reload re-reads credential files (SIGHUP).
func (s *Server) Reload() error { return s.up.Reload() }

// Run serves on ln until ctx ends, then stops accepting, lets responses
// under way finish within the shutdown grace, and returns.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.ready.Store(false)
		grace := s.cfg.ShutdownGrace.D()
		if grace <= 0 {
			grace = 30 * time.Second
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		s.log.Info("shutting down", "grace", grace)
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// Close releases the node: peers leave, the store closes.
func (s *Server) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

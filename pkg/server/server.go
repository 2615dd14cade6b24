// Package server builds one berth node from a configuration: the store,
// the upstream client, the peers, the mirror and the HTTP API, and runs
// them until its context ends. cmd/berth calls it; tests build several
// nodes in one process with it.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/pkg/auth"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/registry"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/berth-registry/berth/pkg/version"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	cluster *peer.Cluster  // nil when alone
	gate    *auth.Gate     // client access
	admin   *http.ServeMux // the admin listener's routes (admin.go)
	hist    history        // the status page's hit ratio samples (ui.go)
	certs   *certReloader  // nil without listen.tls

	storeOpen atomic.Bool                  // the store is open: New to Close
	sendL     atomic.Pointer[sendListener] // Serve's HTTP listener (sendfile.go), for tests
	draining  atomic.Bool                  // Serve is shutting down
	closers   []func() error               // run in reverse by Close
}

// New builds a node from a validated cfg. It opens the store (sweeping and
// reconciling it) and loads the TLS certificate, but listens on nothing
// until Serve or Run.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	s.admin = s.newAdminMux()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = metrics.New(s.reg, cfg.Metrics.TopRepos)
	v := version.Get()
	metrics.RegisterBuildInfo(s.reg, v.Version, v.Revision, v.GoVersion)
	quota, err := storeQuota(cfg.Cache)
	if err != nil {
		return nil, err
	}
	store, err := cache.Open(cfg.Cache.Dir, cache.Options{
		Logger: log.With("component", "cache"), Metrics: s.metrics, FillTimeout: cfg.FillTimeout.D(),
		MaxBytes: quota, HighWatermark: cfg.Cache.HighWatermark, LowWatermark: cfg.Cache.LowWatermark,
		GCInterval: cfg.Cache.GCInterval.D(), GCMinAge: cfg.Cache.GCMinAge.D(), AuditMaxRepos: cfg.Cache.AuditMaxRepos,
	})
	if err != nil {
		return nil, err
	}
	s.store = store
	s.storeOpen.Store(true)
	s.closers = append(s.closers, func() error { s.storeOpen.Store(false); return store.Close() })
	if t := cfg.Listen.TLS; t.CertFile != "" {
		if s.certs, err = newCertReloader(t.CertFile, t.KeyFile, log.With("component", "tls")); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.up, err = upstream.New(cfg.Registries, upstream.Options{
		Logger: log.With("component", "upstream"), Metrics: s.metrics, Offline: cfg.Offline,
		MaxConcurrent: cfg.Fetches.MaxConcurrent, MaxQueued: cfg.Fetches.MaxQueued, NotFoundTTL: cfg.Fetches.NotFoundTTL.D(),
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	if s.gate, err = auth.NewGate(cfg); err != nil {
		s.Close()
		return nil, err
	}
	peers, auth, err := s.startPeers()
	if err != nil {
		s.Close()
		return nil, err
	}
	mcfg := mirror.Config{TagTTL: cfg.TagTTL.D(), Logger: log.With("component", "mirror"), Metrics: s.metrics, Pins: policyPins(cfg)}
	if cfg.Prefetch.Enabled {
		mcfg.PrefetchConcurrency = cfg.Prefetch.Concurrency
	}
	s.mirror = mirror.New(store, peers, s.up, mcfg)
	s.closers = append(s.closers, func() error { s.mirror.Close(); return nil }) // before the store closes
	s.api = registry.New(s.mirror, registry.Options{
		Router:      oci.Router{Known: s.up.Known, Default: cfg.DefaultRegistry},
		Passthrough: storeReferrers{Passthrough: s.up, store: store}, // referrers.go
		Access:      s.gate,
		Peers:       auth,
		Logger:      log.With("component", "api"),
		Metrics:     s.metrics,
	})
	return s, nil
}

// Handler returns the handler of the registry's listeners: /v2/,
// /healthz and /readyz. Operator surfaces are on AdminHandler. Every other
// path and method is answered as OCI errcode JSON (errcodeMux), like the
// API's own errors.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v2/", s.api)
	mux.Handle("/v2", s.api)
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; strings.HasPrefix(p, "/v2/") && p != "/v2/" && path.Clean(p) == p && r.Method != http.MethodConnect {
			// The API's clean paths skip the mux's pattern matching, which
			// would send them to s.api all the same.
			s.api.ServeHTTP(w, r)
			return
		}
		errcodeMux{mux, "registry"}.ServeHTTP(w, r)
	})
}

// storeQuota is the configured quota in bytes, a percentage taken of the
// file system holding the cache directory.
func storeQuota(c config.Cache) (int64, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return 0, fmt.Errorf("cache dir: %w", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(c.Dir, &st); err != nil {
		return 0, fmt.Errorf("cache dir %s: %w", c.Dir, err)
	}
	q, err := c.QuotaBytes(st.Blocks * uint64(st.Bsize))
	if err != nil {
		return 0, fmt.Errorf("cache.maxSize: %w", err)
	}
	return q, nil
}

// Store returns the node's content store.
func (s *Server) Store() *cache.Store { return s.store }

// Registry returns the node's Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Reload re-reads credential files and the TLS certificate and key
// (SIGHUP). What fails to load keeps its previous value; the error names it.
func (s *Server) Reload() error {
	err := errors.Join(s.up.Reload(), s.gate.Reload())
	if s.certs != nil {
		err = errors.Join(err, s.certs.Reload())
	}
	return err
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

// policyPins are the config's pins by tag key; Validate has checked them.
func policyPins(cfg *config.Config) map[string]digest.Digest {
	out := map[string]digest.Digest{}
	for ref, d := range cfg.Pins {
		if reg, name, tag, err := cfg.ParsePin(ref, d); err == nil {
			out[cache.TagKey(reg, name, tag)] = digest.Digest(d)
		}
	}
	return out
}

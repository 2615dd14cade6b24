package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/registry"
)

// Listeners are the sockets a node serves on. Any may be nil, but not
// both HTTP and TLS.
type Listeners struct {
	HTTP  net.Listener // plain HTTP, for node-local containerd
	TLS   net.Listener // a TCP listener Serve speaks HTTPS on, with the configured certificate
	Admin net.Listener // plain HTTP for the admin surfaces (AdminHandler)
}

// Listen opens the configured addresses: listen.addr for plain HTTP,
// listen.tls.addr for HTTPS and admin.addr for the admin listener, each
// when set. On error nothing stays open.
func (s *Server) Listen() (Listeners, error) {
	var ls Listeners
	for _, l := range []struct {
		what, addr string
		ln         *net.Listener
	}{{"listen", s.cfg.Listen.Addr, &ls.HTTP}, {"listen tls", s.cfg.Listen.TLS.Addr, &ls.TLS}, {"listen admin", s.cfg.Admin.Addr, &ls.Admin}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			ls.Close()
			return Listeners{}, fmt.Errorf("%s %s: %w", l.what, l.addr, err)
		}
		*l.ln = ln
	}
	return ls, nil
}

// Close closes the listeners that are open.
func (ls Listeners) Close() {
	for _, ln := range []net.Listener{ls.HTTP, ls.TLS, ls.Admin} {
		if ln != nil {
			ln.Close()
		}
	}
}

// Run serves plain HTTP on ln until ctx ends; see Serve.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	return s.Serve(ctx, Listeners{HTTP: ln})
}

// Serve serves on ls until ctx ends, then shuts down gracefully: /readyz
// turns 503, the listeners close (nothing new is accepted), the node leaves
// the gossip cluster so that peers stop ranking it, and responses under way
// and then fills under way (those no client waits for any more, and
// prefetches already started; queued prefetches are dropped) finish
// within the shutdown grace, one bound for both. Requests do not see ctx
// end: a download being served goes on to its last byte. After the grace,
// connections are cut and a warning says what was still running; that is
// still a clean stop (nil). Serve returns when every response has ended;
// the caller then calls Close, which cancels the fills still running and
// removes their temp files (the store holds only verified blobs). A TLS
// listener needs listen.tls.certFile and keyFile in the configuration.
func (s *Server) Serve(ctx context.Context, ls Listeners) error {
	if ls.TLS != nil && s.certs == nil {
		return errors.New("serve tls: no certificate configured (listen.tls.certFile, keyFile)")
	}
	if ls.HTTP == nil && ls.TLS == nil {
		ls.Close()
		return errors.New("serve: no listener")
	}
	srv := s.httpServer(s.Handler())
	if ls.HTTP != nil {
		sl := newSendListener(ls.HTTP, s.cfg.Listen.WriteTimeout.D()) // sendfile.go
		s.sendL.Store(sl)
		ls.HTTP = sl
	}
	if lc := s.cfg.Listen; lc.MaxConns > 0 {
		limit := newConnLimit(lc.MaxConns)
		srv.ConnState = limit.connState
		if ls.HTTP != nil {
			ls.HTTP = limit.listener(ls.HTTP)
		}
		if ls.TLS != nil {
			ls.TLS = limit.listener(ls.TLS)
		}
	}
	if s.certs != nil {
		srv.TLSConfig = s.certs.tlsConfig()
	}
	errs := make(chan error, 3)
	serving := 0
	var admin *http.Server
	if ls.Admin != nil {
		admin = s.httpServer(s.AdminHandler())
		serving++
		go func() { errs <- serveErr(admin.Serve(ls.Admin)) }()
	}
	if ls.HTTP != nil {
		serving++
		go func() { errs <- serveErr(srv.Serve(ls.HTTP)) }()
	}
	if ls.TLS != nil {
		serving++
		go func() { errs <- serveErr(srv.ServeTLS(ls.TLS, "", "")) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs: // a listener broke: shut the rest down too
		serving--
	}
	s.shutdown(ctx, srv)
	if admin != nil {
		// The admin listener outlives the drain, so it can be watched, then
		// stops at once: scrapes and profiles are not downloads.
		admin.Close()
	}
	for ; serving > 0; serving-- {
		err = errors.Join(err, <-errs)
	}
	return err
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	lc := s.cfg.Listen
	return &http.Server{
		Handler:           withWriteProgress(h, lc.WriteTimeout.D()),
		ReadHeaderTimeout: lc.ReadHeaderTimeout.D(),
		IdleTimeout:       lc.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10, // a registry request's headers are a few hundred bytes, a token a few KiB
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// A filling blob's response waits for socket room outside ReadFrom.
		ConnContext: registry.ConnContext,
	}
}

func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdown drains srv, then the store's fills, within the grace, and
// leaves the cluster meanwhile. What the grace cuts is logged, not
// returned: a bounded stop is a clean one.
func (s *Server) shutdown(ctx context.Context, srv *http.Server) {
	s.draining.Store(true)
	grace := s.cfg.ShutdownGrace.D()
	if grace <= 0 {
		grace = config.Defaults().ShutdownGrace.D()
	}
	s.log.Info("shutting down", "grace", grace)
	var wg sync.WaitGroup
	var leaveErr error
	if s.cluster != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leaveErr = s.cluster.Close(min(grace, 5*time.Second))
		}()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		s.log.Warn("shutdown grace passed: responses still running were cut", "grace", grace)
	}
	s.mirror.Close() // no queued prefetch starts a fill now
	if err := s.store.WaitFills(sctx); err != nil {
		s.log.Warn("shutdown grace passed: fills still running are cancelled", "grace", grace, "fills", len(s.store.Fills()))
	}
	wg.Wait()
	if leaveErr != nil {
		s.log.Warn("leave cluster", "err", leaveErr)
	}
	s.log.Info("stopped serving")
}

// readyz answers 200 when the node can serve: its store is open, its
// configuration loaded, it is not shutting down, and it has joined its
// cluster (or runs alone by choice), with a text body saying when it last
// mirrored. Otherwise 503 with every reason as JSON (notReadyBody).
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if why := s.notReady(); len(why) > 0 {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(notReadyBody{Ready: false, Reasons: why})
		return
	}
	fmt.Fprintln(w, "ready")
	fmt.Fprintln(w, "last successful mirror:", lastMirror(s.metrics.LastMirrored(), time.Now()))
}

// lastMirror says when a client last got a manifest or blob from this node:
// a node that never serves one while its node pulls images is bypassed
// (a containerd config_path that does not reach berth's hosts.toml).
func lastMirror(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339) + " (" + now.Sub(t).Round(time.Second).String() + " ago)"
}

// notReadyBody is /readyz's 503 answer: {"ready":false,"reasons":[...]},
// one reason per failed condition, in the order notReady checks them.
type notReadyBody struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons"`
}

// notReady returns why the node cannot serve; none when it can.
func (s *Server) notReady() []string {
	var why []string
	if s.cfg == nil {
		why = append(why, "no configuration")
	}
	if s.draining.Load() {
		why = append(why, "shutting down")
	}
	if !s.storeOpen.Load() {
		why = append(why, "store closed")
	} else if _, err := os.Stat(s.store.Root()); err != nil {
		why = append(why, "store: "+err.Error())
	}
	if other := s.cluster.NameConflict(); other != "" {
		why = append(why, fmt.Sprintf("peers: the node at %s uses this node's name %q; give each node its own peers.nodeName", other, s.cluster.Name()))
	} else if !s.cluster.Ready() {
		why = append(why, "peers: not joined yet")
	}
	return why
}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Listeners are the sockets a node serves on. Either may be nil.
type Listeners struct {
	HTTP net.Listener // plain HTTP, for node-local containerd
	TLS  net.Listener // a TCP listener Serve speaks HTTPS on, with the configured certificate
}

// Listen opens the configured addresses: listen.addr for plain HTTP and,
// when set, listen.tls.addr for HTTPS. On error nothing stays open.
func (s *Server) Listen() (Listeners, error) {
	var ls Listeners
	if a := s.cfg.Listen.Addr; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return ls, fmt.Errorf("listen %s: %w", a, err)
		}
		ls.HTTP = ln
	}
	if a := s.cfg.Listen.TLS.Addr; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			if ls.HTTP != nil {
				ls.HTTP.Close()
			}
			return Listeners{}, fmt.Errorf("listen tls %s: %w", a, err)
		}
		ls.TLS = ln
	}
	return ls, nil
}

// Run serves plain HTTP on ln until ctx ends; see Serve.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	return s.Serve(ctx, Listeners{HTTP: ln})
}

// Serve serves on ls until ctx ends, then shuts down gracefully: /readyz
// turns 503, the listeners close (nothing new is accepted), the node leaves
// the gossip cluster so that peers stop ranking it, and responses under way
// finish within the shutdown grace; after it, connections are cut and the
// error says so. Requests do not see ctx end: a download being served goes
// on to its last byte. Serve returns when every response has ended; the
// caller then calls Close. A TLS listener needs listen.tls.certFile and
// keyFile in the configuration.
func (s *Server) Serve(ctx context.Context, ls Listeners) error {
	if ls.TLS != nil && s.certs == nil {
		return errors.New("serve tls: no certificate configured (listen.tls.certFile, keyFile)")
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.certs != nil {
		srv.TLSConfig = s.certs.tlsConfig()
	}
	errs := make(chan error, 2)
	serving := 0
	if ls.HTTP != nil {
		serving++
		go func() { errs <- serveErr(srv.Serve(ls.HTTP)) }()
	}
	if ls.TLS != nil {
		serving++
		go func() { errs <- serveErr(srv.ServeTLS(ls.TLS, "", "")) }()
	}
	if serving == 0 {
		return errors.New("serve: no listener")
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs: // a listener broke: shut the rest down too
		serving--
	}
	err = errors.Join(err, s.shutdown(ctx, srv))
	for ; serving > 0; serving-- {
		err = errors.Join(err, <-errs)
	}
	return err
}

func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdown drains srv within the grace and leaves the cluster meanwhile.
func (s *Server) shutdown(ctx context.Context, srv *http.Server) error {
	s.draining.Store(true)
	grace := s.cfg.ShutdownGrace.D()
	if grace <= 0 {
		grace = 30 * time.Second
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
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("shutdown: responses still running after %s were cut: %w", grace, err)
	}
	wg.Wait()
	if leaveErr != nil {
		s.log.Warn("leave cluster", "err", leaveErr)
	}
	s.log.Info("stopped serving")
	return err
}

// readyz answers 200 when the node can serve: its store is open, its
// configuration loaded, it is not shutting down, and it has joined its
// cluster (or runs alone by choice). Otherwise 503 with every reason.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if why := s.notReady(); len(why) > 0 {
		http.Error(w, "not ready: "+strings.Join(why, "; "), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

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
	if !s.cluster.Ready() {
		why = append(why, "peers: not joined yet")
	}
	return why
}

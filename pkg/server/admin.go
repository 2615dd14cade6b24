package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin listener (admin.addr, default 127.0.0.1:5001) serves what an
// operator uses and a client must not see: /metrics, /debug/audit (the
// audit record, which names every repository served), /debug/pprof/, and
// the admin API. /healthz and /readyz are on both listeners: kubelet probes
// the registry's port.
//
// To add an admin route, call HandleAdmin on the node, before or after
// Serve starts (http.ServeMux registration is safe for concurrent use):
//
//	srv.HandleAdmin("POST /admin/v1/pins", pinHandler)
//
// Patterns follow net/http.ServeMux; keep the admin API under /admin/ and
// debugging under /debug/. A route registered twice panics (ServeMux), so
// register each once: a feature of the node itself adds its routes in
// newAdminMux (as airgap.go's adminRoutes does); code outside the package
// calls HandleAdmin.

// newAdminMux builds the admin routes every node has.
func (s *Server) newAdminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /debug/audit", s.audit)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.adminRoutes(mux) // airgap.go
	s.uiRoutes(mux)    // ui.go
	return mux
}

// HandleAdmin adds a route to the admin listener; see the comment above.
func (s *Server) HandleAdmin(pattern string, h http.Handler) { s.admin.Handle(pattern, h) }

// AdminHandler returns the admin listener's handler: /metrics, /healthz,
// /readyz, /debug/audit, /debug/pprof/ and the routes added by HandleAdmin.
func (s *Server) AdminHandler() http.Handler { return s.admin }

func healthz(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }

// audit serves the store's audit record as JSON (berth ls --addr).
func (s *Server) audit(w http.ResponseWriter, _ *http.Request) {
	repos, err := s.store.Audit()
	if err != nil {
		s.log.Error("audit", "err", err)
		http.Error(w, "audit record unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(repos)
}

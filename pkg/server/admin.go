package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/distribution/distribution/v3/registry/api/errcode"
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
func (s *Server) AdminHandler() http.Handler { return errcodeMux{s.admin, "admin"} }

// errcodeMux answers what its ServeMux has no route for as OCI errcode
// JSON, like every other error berth sends: 404 NAME_UNKNOWN for an
// unknown path, 405 UNSUPPORTED (with Allow) for a method the path does
// not take. Its redirects (a missing trailing slash) pass as they are.
// Both listeners use it; listener names it in the message.
type errcodeMux struct {
	*http.ServeMux
	listener string
}

func (m errcodeMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := m.Handler(r)
	if pattern != "" {
		m.ServeMux.ServeHTTP(w, r) // sets the request's pattern and path values
		return
	}
	h.ServeHTTP(&muxErrorWriter{ResponseWriter: w, r: r, listener: m.listener}, r)
}

// muxErrorWriter replaces ServeMux's plain-text 404 and 405 bodies.
type muxErrorWriter struct {
	http.ResponseWriter
	r        *http.Request
	listener string
	dropped  bool // the mux's own body is discarded
}

func (e *muxErrorWriter) WriteHeader(status int) {
	var code errcode.ErrorCode
	switch status {
	case http.StatusNotFound:
		code = errcode.ErrorCodeNameUnknown
	case http.StatusMethodNotAllowed:
		code = errcode.ErrorCodeUnsupported
	default:
		e.ResponseWriter.WriteHeader(status)
		return
	}
	e.dropped = true
	writeErrcode(e.ResponseWriter, status, code.WithMessage(fmt.Sprintf("no %s route %s %s", e.listener, e.r.Method, e.r.URL.Path)))
}

// writeErrcode writes err as the OCI errcode JSON body of a status.
func writeErrcode(w http.ResponseWriter, status int, err errcode.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errcode.Errors{err})
}

func (e *muxErrorWriter) Write(p []byte) (int, error) {
	if e.dropped {
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

func healthz(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }

// audit serves the store's audit record as JSON (berth ls --addr).
func (s *Server) audit(w http.ResponseWriter, _ *http.Request) {
	repos, err := s.store.Audit()
	if err != nil {
		s.log.Error("audit", "err", err)
		writeErrcode(w, http.StatusInternalServerError, errcode.ErrorCodeUnknown.WithMessage("audit record unavailable"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(repos)
}

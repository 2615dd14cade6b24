// Package registry is the read side of the OCI distribution API over a
// mirror: /v2/, manifests and blobs (GET, HEAD, Range), tags/list and
// referrers. Every error leaves as OCI errcode JSON, written in one place.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/upstream"
)

// PeerAuth tells a peer's request from a client's. peer.Cluster satisfies it.
type PeerAuth interface {
	// PeerMode verifies a request's peer marker: "owner" or "holder".
	PeerMode(r *http.Request) (mode string, ok bool)
}

// Access decides whether a client may make a request, before anything
// else looks at it: the store is never consulted for a client that may not
// read the repository. auth.Gate satisfies it.
type Access interface {
	// Check returns the client's name ("" for anonymous), or why it may
	// not: an error wrapping oci.ErrUnauthorized (401; with a
	// WWWAuthenticate() string method giving the challenge) or
	// oci.ErrDenied (403). base is true for the API base, /v2/.
	Check(r *http.Request, repo oci.Repo, base bool) (client string, err error)
}

// Options configures a Handler. Router is required.
type Options struct {
	Router  oci.Router
	Access  Access           // nil: every client may read everything
	Peers   PeerAuth         // nil: every request is a client's
	Logger  *slog.Logger     // nil discards
	Metrics *metrics.Metrics // nil counts nothing
}

// Handler serves the distribution API. It is safe for concurrent use.
type Handler struct {
	mirror *mirror.Mirror
	opts   Options
	log    *slog.Logger
	m      *metrics.Metrics
}

// New returns the API over mi.
func New(mi *mirror.Mirror, opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{mirror: mi, opts: opts, log: opts.Logger, m: opts.Metrics}
}

type ctxKey struct{}

// request is what the routes share about one request.
type request struct {
	oci.Request
	via  mirror.Via
	head bool
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	sw.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	route := "unknown"
	err := func() error {
		// A berth in front of this one (a site cache) counts its hops, so
		// mirrors configured in a loop end at once.
		hops, err := upstream.Hops(r.Header)
		if err != nil || hops >= upstream.MaxHops {
			return errLoop
		}
		req, err := h.opts.Router.ParseRequest(r.URL.Path, r.URL.Query().Get("ns"))
		route = routeName(req, err)
		if err != nil {
			return err
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead || req.Kind == oci.KindUpload {
			return errUnsupported
		}
		rq := &request{Request: req, via: h.via(r), head: r.Method == http.MethodHead}
		// Peers proved themselves with the cluster secret; clients prove
		// themselves here, before any route looks at the store.
		if rq.via == mirror.ViaClient && h.opts.Access != nil {
			if _, err := h.opts.Access.Check(r, req.Repo, req.Kind == oci.KindBase); err != nil {
				return err
			}
		}
		ctx := upstream.WithHops(context.WithValue(r.Context(), ctxKey{}, rq), hops)
		return h.route(rq)(sw, r.WithContext(ctx))
	}()
	if err != nil {
		sw.status = writeError(sw, err)
		if sw.status >= 500 && !errors.Is(err, context.Canceled) {
			h.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", sw.status, "err", err)
		}
	}
	h.m.Request(route, r.Method, sw.status)
	h.log.Debug("request", "method", r.Method, "path", r.URL.Path, "ns", r.URL.Query().Get("ns"),
		"status", sw.status, "bytes", sw.bytes, "duration", time.Since(start).Round(time.Microsecond))
}

var errLoop = fmt.Errorf("too many berth hops (%s): mirrors configured in a loop: %w", upstream.HopHeader, oci.ErrDenied)

func (h *Handler) via(r *http.Request) mirror.Via {
	if h.opts.Peers == nil {
		return mirror.ViaClient
	}
	switch mode, ok := h.opts.Peers.PeerMode(r); {
	case !ok:
		return mirror.ViaClient
	case mode == "holder":
		return mirror.ViaPeerHolder
	default:
		return mirror.ViaPeerOwner
	}
}

func (h *Handler) route(rq *request) apiFunc {
	switch rq.Kind {
	case oci.KindBase:
		return h.base
	case oci.KindManifest:
		return h.manifest
	case oci.KindBlob:
		return h.blob
	default:
		return h.passthrough
	}
}

func routeName(req oci.Request, err error) string {
	if err != nil {
		return "invalid"
	}
	return req.Kind.String()
}

func requestOf(r *http.Request) *request { return r.Context().Value(ctxKey{}).(*request) }

// base answers GET /v2/ for a client Access let through: one with valid
// credentials, or any client when no repository needs them.
func (h *Handler) base(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

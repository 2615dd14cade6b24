// Package registry owns the HTTP face of berth: the read side of the OCI
// distribution API (/v2/, manifests and blobs with GET, HEAD and Range,
// tags/list and referrers). It turns each request into one oci.Request
// (what is asked, who asks, hops) for the mirror, and every error into OCI
// errcode JSON, written in one place.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// PeerAuth tells a peer's request from a client's. peer.Cluster satisfies it.
type PeerAuth interface {
	// PeerMode verifies a request's peer marker and says who asks:
	// oci.ViaPeerOwner, oci.ViaPeerHolder or oci.ViaPeerRelay; ok is false
	// for a client.
	PeerMode(r *http.Request) (via oci.Via, ok bool)
	// AdmitCopy reserves one of the copies of blob d this node serves to
	// peers in relay mode at once; ok false means busy (429): the copy
	// limit is reached, or the request passed more relay hops than the
	// plan allows. release ends the copy.
	AdmitCopy(r *http.Request, d digest.Digest) (release func(), ok bool)
}

// Passthrough answers what berth does not cache: tags/list and referrers
// (req.Kind), which list what the upstream has now. upstream.Client
// satisfies it.
type Passthrough interface {
	Get(ctx context.Context, req oci.Request, rawQuery string) (*http.Response, error)
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
	// Challenge is the WWW-Authenticate challenge of a 401 berth answers
	// for another reason than Check (an upstream that refused berth's own
	// credentials), so the client hears berth's scheme and realm, never
	// the upstream's; "" when berth asks clients for no credentials.
	Challenge() string
}

// Options configures a Handler. Router is required.
type Options struct {
	Router      oci.Router
	Passthrough Passthrough      // nil: tags/list and referrers answer UNAVAILABLE
	Access      Access           // nil: every client may read everything
	Peers       PeerAuth         // nil: every request is a client's
	Logger      *slog.Logger     // nil discards
	Metrics     *metrics.Metrics // nil counts nothing
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

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	sw.Header()["Docker-Distribution-Api-Version"] = apiVersion // canonical key: Set would canonicalize it per request
	var d done
	d.route = "unknown"
	err := h.serve(sw, r, &d)
	h.finish(sw, r, err, &d, start)
}

// done is what a request's serving learnt for finish.
type done struct {
	route  string
	client bool   // a client's request, not a peer's
	user   string // the client's name; "" for anonymous
}

// serve parses, admits and routes r. It and finish are kept out of
// ServeHTTP (noinline), so that their locals are not in the frame that
// stays on the stack under every response: a client of a blob in flight
// waits at the bottom of the call chain for as long as the blob takes,
// and writing its header (net/http's chunkWriter.writeHeader takes 2.8
// KiB) took the goroutine's stack past 8 KiB to 16 KiB.
//
//go:noinline
func (h *Handler) serve(sw *statusWriter, r *http.Request, d *done) error {
	req, err := h.parse(r, &d.route)
	if err != nil {
		return err
	}
	if err := h.admit(r, &req); err != nil {
		return err
	}
	d.client, d.user = req.Via == oci.ViaClient, req.Client
	if req.Kind == oci.KindBlob {
		return h.blob(sw, r, req) // not through a method value: its wrapper is one more frame
	}
	return h.route(req)(sw, r, req)
}

// finish writes err, if any, counts the request and logs it.
//
//go:noinline
func (h *Handler) finish(sw *statusWriter, r *http.Request, err error, d *done, start time.Time) {
	if err != nil {
		if d.client && h.opts.Access != nil && errors.Is(err, oci.ErrUnauthorized) {
			// An upstream's 401 (a Refusal from Check brings its own).
			if ch := h.opts.Access.Challenge(); ch != "" {
				sw.Header().Set("WWW-Authenticate", ch)
			}
		}
		sw.status = writeError(sw, err)
		if sw.status >= 500 && !errors.Is(err, context.Canceled) {
			h.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", sw.status, "err", err)
		}
	}
	end := time.Now()
	h.m.Request(d.route, r.Method, sw.status)
	h.m.RequestDone(d.route, end.Sub(start))
	if d.client && sw.status < 300 && (d.route == "manifest" || d.route == "blob") {
		h.m.Mirrored(end)
	}
	if h.log.Enabled(r.Context(), slog.LevelDebug) { // the arguments cost allocations even when not logged
		h.log.Debug("request", "method", r.Method, "path", r.URL.Path, "ns", queryNS(r),
			"status", sw.status, "bytes", sw.bytes, "duration", time.Since(start).Round(time.Microsecond),
			"remote", r.RemoteAddr, "user_agent", r.UserAgent(), "user", d.user)
	}
}

// Header values every answer of their kind carries, shared: net/http
// copies a handler's header before writing it, and Set or Add would put a
// new slice in place of these, never write into them.
var (
	apiVersion  = []string{"registry/2.0"}
	acceptBytes = []string{"bytes"}
)

// queryNS is the request's ns parameter (the registry a mirror request is
// for, as containerd sends it), without parsing a query it has none of:
// most requests have no query at all.
func queryNS(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get("ns")
}

var errLoop = fmt.Errorf("too many berth hops (%s): mirrors configured in a loop: %w", oci.HopHeader, oci.ErrDenied)

// parse makes r into the one request value the routes, the mirror and the
// sources share: what is asked and through how many berths. It names the
// route for the metrics once the path is parsed.
func (h *Handler) parse(r *http.Request, route *string) (oci.Request, error) {
	// A berth in front of this one (a site cache) counts its hops, so
	// mirrors configured in a loop end at once.
	hops, err := oci.ParseHops(r.Header)
	if err != nil || hops >= oci.MaxHops {
		return oci.Request{}, errLoop
	}
	req, err := h.opts.Router.ParseRequest(r.URL.Path, queryNS(r))
	*route = routeName(req, err)
	req.Head, req.Hops = r.Method == http.MethodHead, hops
	return req, err
}

// admit says who asks (a client, or a peer as owner or holder) and lets
// the request through: reads only, and a client only as Access allows.
func (h *Handler) admit(r *http.Request, req *oci.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead || req.Kind == oci.KindUpload {
		return errUnsupported
	}
	if h.opts.Peers != nil {
		req.Via, _ = h.opts.Peers.PeerMode(r)
	}
	if req.Via == oci.ViaPeerRelay {
		// Signed by a peer; the cluster refuses a count too deep (AdmitCopy).
		req.RelayHops, _ = strconv.Atoi(r.Header.Get(oci.RelayHopHeader))
		req.RelayStart, req.RelayEnd = oci.FirstRange(r.Header.Get("Range"))
		if n, err := strconv.ParseInt(r.Header.Get(oci.RelaySizeHeader), 10, 64); err == nil && n > 0 {
			req.RelaySize = n
		}
	}
	// Peers proved themselves with the cluster secret; clients prove
	// themselves here, before any route looks at the store.
	if req.Via == oci.ViaClient && h.opts.Access != nil {
		client, err := h.opts.Access.Check(r, req.Repo, req.Kind == oci.KindBase)
		if err != nil {
			return err
		}
		req.Client = client
	}
	return nil
}

func (h *Handler) route(req oci.Request) apiFunc {
	switch req.Kind {
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

// base answers GET /v2/ for a client Access let through: one with valid
// credentials, or any client when no repository needs them.
func (h *Handler) base(w http.ResponseWriter, r *http.Request, _ oci.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}

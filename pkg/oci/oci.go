// Package oci owns the request: what a client asks berth for (repository,
// route, reference, parsed from the path without any I/O), who asks and
// through how many berths it came. The one Request value travels from the
// HTTP handler to the mirror to the source that fills a miss. The package
// also holds the sentinel errors every layer of berth wraps, so that one
// place (pkg/registry) can turn them into OCI errcode JSON.
package oci

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// DockerHub is the name clients use for Docker Hub; its one-segment
// repository names live under library/.
const DockerHub = "docker.io"

// Repo is a repository on one upstream registry.
type Repo struct {
	Registry string // the registry host as clients write it: docker.io, 127.0.0.1:5000
	Name     string // the repository path on that registry: library/alpine
}

// String returns registry/name.
func (r Repo) String() string { return r.Registry + "/" + r.Name }

// Descriptor describes one piece of content: a manifest or a blob.
type Descriptor struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

// Kind is the route of a request.
type Kind int

// The routes of the read side of the distribution API.
const (
	KindBase      Kind = iota // GET /v2/
	KindManifest              // /v2/<name>/manifests/<reference>
	KindBlob                  // /v2/<name>/blobs/<digest>
	KindTags                  // /v2/<name>/tags/list
	KindReferrers             // /v2/<name>/referrers/<digest>
	KindUpload                // /v2/<name>/blobs/uploads/...: push, unsupported
)

func (k Kind) String() string {
	return [...]string{"base", "manifest", "blob", "tags", "referrers", "upload"}[k]
}

// Request is one request to berth, passed from the HTTP handler to the
// mirror and on to the source that fills a miss: what is asked (parsed from
// the path by ParseRequest) and who asks (set by the handler).
type Request struct {
	Kind      Kind
	Repo      Repo
	Reference string        // a tag or a digest (manifests)
	Digest    digest.Digest // set when the reference is a digest (manifests, blobs, referrers)

	Head bool // HEAD: the bytes are not needed
	Via  Via  // who asks: a client, or a peer as owner, holder or relay parent
	Hops int  // berths the request passed before this one (HopHeader)
	// RelayHops counts the cluster nodes a relay request passed through
	// (RelayHopHeader): a fill it starts asks its own parent with one more
	// for those bytes, [RelayStart, RelayEnd) (its Range; RelayEnd -1: to
	// the blob's end), and with one for other bytes (another stripe: the
	// chain along those bytes starts there).
	RelayHops            int
	RelayStart, RelayEnd int64
	// RelaySize is the blob's size as the relay request's asker knows it
	// (RelaySizeHeader); 0 when not given. Only a hint: it picks how a
	// fill starts, never what its bytes must be.
	RelaySize int64
	Client    string // the client's name once access control let it through; "" for anonymous
}

// Router decides which upstream registry a request goes to.
type Router struct {
	// Known reports whether a registry name is configured.
	Known func(registry string) bool
	// Default is the registry of requests that name none (Docker
	// registry-mirrors, skopeo without ns). Empty refuses them.
	Default string
}

// ParseRequest parses the path of a /v2/ request and routes it to a
// registry: the ns query parameter first (containerd), then a first path
// segment naming a known registry (CRI-O and Podman mirrors with a path;
// see PathSegment for a registry with a port), then the default. Errors wrap ErrNameInvalid, ErrDigestInvalid, ErrTagInvalid,
// ErrRegistryUnknown or ErrNotRoute.
func (rt Router) ParseRequest(path, ns string) (Request, error) {
	if path == "/v2" || path == "/v2/" {
		return Request{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return Request{}, ErrNotRoute
	}
	name, kind, ref, err := splitRoute(rest)
	if err != nil {
		return Request{}, err
	}
	repo, err := rt.route(name, ns)
	if err != nil {
		return Request{}, err
	}
	req := Request{Kind: kind, Repo: repo, Reference: ref}
	return req, req.checkReference()
}

// splitRoute cuts "<name>/<route>/<ref>" at the last route keyword.
func splitRoute(rest string) (name string, kind Kind, ref string, err error) {
	if n, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return n, KindTags, "", nil
	}
	if i := strings.LastIndex(rest, "/blobs/uploads"); i > 0 {
		return rest[:i], KindUpload, "", nil
	}
	for _, r := range []struct {
		sep  string
		kind Kind
	}{{"/manifests/", KindManifest}, {"/blobs/", KindBlob}, {"/referrers/", KindReferrers}} {
		if i := strings.LastIndex(rest, r.sep); i > 0 {
			return rest[:i], r.kind, rest[i+len(r.sep):], nil
		}
	}
	return "", 0, "", ErrNotRoute
}

func (rt Router) route(name, ns string) (Repo, error) {
	known := rt.Known
	if known == nil {
		known = func(string) bool { return false }
	}
	var repo Repo
	switch first, after, hasSlash := strings.Cut(name, "/"); {
	case ns != "":
		if !known(ns) {
			return Repo{}, fmt.Errorf("registry %q: %w", ns, ErrRegistryUnknown)
		}
		repo = Repo{Registry: ns, Name: name}
	case hasSlash && known(first):
		repo = Repo{Registry: first, Name: after}
	case hasSlash && known(unPathSegment(first)):
		repo = Repo{Registry: unPathSegment(first), Name: after}
	case rt.Default != "":
		repo = Repo{Registry: rt.Default, Name: name}
	default:
		return Repo{}, fmt.Errorf("repository %q names no configured registry and there is no default: %w", name, ErrRegistryUnknown)
	}
	if len(repo.Name) > 255 || !validName(repo.Name) {
		return Repo{}, fmt.Errorf("repository name %q: %w", repo.Name, ErrNameInvalid)
	}
	if repo.Registry == DockerHub && !strings.Contains(repo.Name, "/") {
		repo.Name = "library/" + repo.Name
	}
	return repo, nil
}

// PathSegment is how a registry is named as the first path segment of a
// repository, the form a CRI-O or Podman registries.conf mirror location
// carries (berth:5000/<segment>, since containers/image sends no ns): the
// name itself, or HOST_PORT for HOST:PORT, as an image reference's path
// cannot hold a ':' ("invalid reference format"). A host name holds no
// '_', so the form is never another registry's name. An IPv6 literal has
// no path form.
func PathSegment(registry string) string {
	host, port, ok := strings.Cut(registry, ":")
	if !ok || strings.HasPrefix(registry, "[") || !allDigits(port) {
		return registry
	}
	return host + "_" + port
}

// unPathSegment undoes PathSegment: HOST_PORT is HOST:PORT; any other
// segment gives "".
func unPathSegment(seg string) string {
	i := strings.LastIndexByte(seg, '_')
	if i <= 0 || !allDigits(seg[i+1:]) || strings.Contains(seg[:i], "_") {
		return ""
	}
	return seg[:i] + ":" + seg[i+1:]
}

func allDigits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (req *Request) checkReference() error {
	switch req.Kind {
	case KindManifest:
		if strings.Contains(req.Reference, ":") {
			return req.parseDigest()
		}
		if !ValidTag(req.Reference) {
			return fmt.Errorf("tag %q: %w", req.Reference, ErrTagInvalid)
		}
	case KindBlob, KindReferrers:
		return req.parseDigest()
	}
	return nil
}

func (req *Request) parseDigest() error {
	if d, ok := shaDigest(req.Reference); ok {
		req.Digest = d
		return nil
	}
	d, err := digest.Parse(req.Reference) // for its error
	if err != nil {
		return fmt.Errorf("digest %q: %v: %w", req.Reference, err, ErrDigestInvalid)
	}
	if d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return fmt.Errorf("digest %q: algorithm not supported: %w", req.Reference, ErrDigestInvalid)
	}
	req.Digest = d
	return nil
}

// The errors berth's layers wrap. pkg/registry maps each to an errcode.
var (
	ErrNotRoute        = errors.New("not a distribution API route")
	ErrNameInvalid     = errors.New("invalid repository name")
	ErrTagInvalid      = errors.New("invalid tag")
	ErrDigestInvalid   = errors.New("invalid digest")
	ErrRegistryUnknown = errors.New("registry not configured")
	ErrManifestUnknown = errors.New("manifest unknown")
	ErrBlobUnknown     = errors.New("blob unknown")
	ErrNameUnknown     = errors.New("repository unknown")
	ErrUnauthorized    = errors.New("unauthorized")
	ErrDenied          = errors.New("denied")
	ErrTooManyRequests = errors.New("too many requests")
	ErrUnavailable     = errors.New("upstream unavailable")
	// ErrOffline marks an answer berth gave without asking an upstream it
	// is configured never to contact (offline mode). It comes wrapped with
	// ErrManifestUnknown or ErrBlobUnknown.
	ErrOffline        = errors.New("mirror offline")
	ErrDigestMismatch = errors.New("content does not match its digest")
	ErrTooLarge       = errors.New("content too large")
	// ErrBadUpstream is an upstream answer berth refuses: a redirect to a
	// private address, a body that is not what was asked for.
	ErrBadUpstream = errors.New("upstream answer refused")
	// ErrManifestInvalid is an upstream manifest answer whose bytes are no
	// manifest, or not the manifest its media type says. It wraps
	// ErrBadUpstream.
	ErrManifestInvalid = fmt.Errorf("not a valid manifest: %w", ErrBadUpstream)
)

package upstream

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
)

// Defaults for the zero values of config.Registry.
const (
	DefaultConnectTimeout        = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultIdleReadTimeout       = 60 * time.Second
	DefaultFailBackoff           = 30 * time.Second
	DefaultFailBackoffMax        = 5 * time.Minute
	DefaultMaxRetryAfter         = 10 * time.Second
)

// Options are the optional collaborators of a Client. The zero value works.
type Options struct {
	Logger  *slog.Logger     // nil discards
	Metrics *metrics.Metrics // nil counts nothing
	// Transport is the base of every registry's transport. An
	// *http.Transport is cloned per registry and given that registry's
	// timeouts and TLS settings; any other RoundTripper is used as it is.
	// nil means a clone of http.DefaultTransport (proxy from environment).
	Transport http.RoundTripper
	UserAgent string // "berth" when empty
	// Offline contacts no registry at all, as if every one were
	// configured offline (config.Registry.Offline).
	Offline bool
	// MaxConcurrent bounds the upstream requests under way at once, over
	// every registry (a body counts until closed); 0 means no bound.
	// MaxQueued requests may wait for a slot; more fail at once with
	// oci.ErrTooManyRequests.
	MaxConcurrent, MaxQueued int
	// NotFoundTTL is how long an upstream's "not found" for a manifest or
	// blob of a repository answers again without a request; 0 disables it.
	NotFoundTTL time.Duration
}

// Client fetches from the configured upstream registries. Its methods are
// safe for concurrent use; each blocks for at most the configured timeouts
// per endpoint (bodies are bounded by the idle-read timeout only).
type Client struct {
	regs    map[string]*registry
	log     *slog.Logger
	metrics *metrics.Metrics
	ua      string
	fetches *fetchLimit    // nil: no bound
	absent  *notFoundCache // nil: nothing remembered
}

// New returns a Client for regs. It reads credential, CA and certificate
// files now and fails on a registry without a name, a duplicate name, an
// endpoint that is not an http(s) URL, or a file it cannot read. New
// starts no goroutines.
func New(regs []config.Registry, opts Options) (*Client, error) {
	c := &Client{regs: map[string]*registry{}, log: opts.Logger, metrics: opts.Metrics, ua: opts.UserAgent,
		fetches: newFetchLimit(opts.MaxConcurrent, opts.MaxQueued), absent: newNotFoundCache(opts.NotFoundTTL)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.ua == "" {
		c.ua = "berth"
	}
	for _, rc := range regs {
		if rc.Name == "" {
			return nil, fmt.Errorf("registry without a name")
		}
		if _, dup := c.regs[rc.Name]; dup {
			return nil, fmt.Errorf("registry %s: configured twice", rc.Name)
		}
		rc.Offline = rc.Offline || opts.Offline
		r, err := newRegistry(c, rc, opts.Transport)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", rc.Name, err)
		}
		c.regs[rc.Name] = r
	}
	return c, nil
}

// Known reports whether registry is configured.
func (c *Client) Known(registry string) bool {
	_, ok := c.regs[registry]
	return ok
}

// Reload re-reads every registry's credential files and environment
// variables (on SIGHUP). A registry whose files cannot be read keeps its
// previous credentials; the first such error is returned. Cached tokens of
// a registry whose credentials changed are dropped.
func (c *Client) Reload() error {
	var first error
	for _, r := range c.regs {
		if err := r.auth.reload(); err != nil && first == nil {
			first = fmt.Errorf("registry %s: %w", r.name, err)
		}
	}
	return first
}

func (c *Client) registry(repo oci.Repo) (*registry, error) {
	r, ok := c.regs[repo.Registry]
	if !ok {
		return nil, fmt.Errorf("registry %q: %w", repo.Registry, oci.ErrRegistryUnknown)
	}
	return r, nil
}

// registry is one configured upstream: its endpoints, auth and limits.
type registry struct {
	c             *Client
	name          string
	endpoints     []*endpoint
	client        *http.Client // follows redirects; auth is added per hop
	base          http.RoundTripper
	auth          *authenticator
	limit         rateLimit
	idleRead      time.Duration
	failBackoff   time.Duration // an endpoint's first back-off
	backoffMax    time.Duration // the cap of its back-off
	maxRetryAfter time.Duration
	// allowPrivateRedirects lets redirects lead to loopback, private and
	// link-local addresses (see checkRedirect).
	allowPrivateRedirects bool
	offline               bool          // never contacted: every call is a miss (see Options.Offline)
	prober                *http.Client  // probes of open endpoints: no auth, no redirects
	probeTimeout          time.Duration // bound on one probe
}

func newRegistry(c *Client, rc config.Registry, base http.RoundTripper) (*registry, error) {
	r := &registry{
		c:             c,
		name:          rc.Name,
		idleRead:      orDefault(rc.Timeouts.IdleRead.D(), DefaultIdleReadTimeout),
		failBackoff:   orDefault(rc.FailBackoff.D(), DefaultFailBackoff),
		backoffMax:    orDefault(rc.FailBackoffMax.D(), DefaultFailBackoffMax),
		maxRetryAfter: orDefault(rc.MaxRetryAfter.D(), DefaultMaxRetryAfter),

		allowPrivateRedirects: rc.AllowPrivateRedirects,
	}
	urls := rc.Endpoints
	if len(urls) == 0 {
		urls = []string{defaultEndpoint(rc.Name)}
	}
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSuffix(raw, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: not an http or https URL", raw)
		}
		r.endpoints = append(r.endpoints, &endpoint{url: u, backoff: newBackOff(r.failBackoff, r.backoffMax)})
	}
	rt, err := registryTransport(rc, base, r.guardedDial)
	if err != nil {
		return nil, err
	}
	r.base = &uaTransport{ua: c.ua, inner: rt}
	r.auth, err = newAuthenticator(rc, r.base)
	if err != nil {
		return nil, err
	}
	r.client = &http.Client{Transport: &authTransport{r: r}, CheckRedirect: r.checkRedirect}
	r.offline = rc.Offline
	r.prober = &http.Client{Transport: r.base, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r.probeTimeout = orDefault(rc.Timeouts.Connect.D(), DefaultConnectTimeout) + orDefault(rc.Timeouts.TLSHandshake.D(), DefaultTLSHandshakeTimeout) +
		orDefault(rc.Timeouts.ResponseHeader.D(), DefaultResponseHeaderTimeout)
	return r, nil
}

// defaultEndpoint is the URL of a registry configured without endpoints.
func defaultEndpoint(name string) string {
	if name == oci.DockerHub {
		return "https://registry-1.docker.io"
	}
	return "https://" + name
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// uaTransport sets the User-Agent.
type uaTransport struct {
	ua    string
	inner http.RoundTripper
}

func (t *uaTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("User-Agent", t.ua)
	}
	return t.inner.RoundTrip(req)
}

// drain reads a little of an unwanted body so its connection may be reused,
// and closes it.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

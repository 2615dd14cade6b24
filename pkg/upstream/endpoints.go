package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/berth-registry/berth/pkg/oci"
)

// endpoint is one URL of a registry, with its circuit breaker. An endpoint
// that fails (connect error, timeout, 5xx, a broken body) is open: no
// request is sent to it until a probe (GET /v2/, in the background) finds
// it answering again. The first request after the back-off starts that
// probe and goes elsewhere meanwhile, so a silent upstream costs one
// timeout, not one per request. With every endpoint open a call fails at
// once (and the mirror answers tags from the cache), except while a probe
// is under way: then it waits for the probe's answer, at most probeWait,
// so the first request after a registry came back is served, not failed.
// Each failed probe doubles the back-off, with jitter, up to a cap (see newBackOff): a
// registry down for an hour is probed a dozen times, not 120, and the nodes
// of a cluster opened by one outage do not probe in step. An answer resets
// it.
type endpoint struct {
	url *url.URL

	mu          sync.Mutex                  // guards the fields below
	failedUntil time.Time                   // open until then (zero: closed, healthy); a probe is due after it
	probing     bool                        // a probe is under way
	probeDone   chan struct{}               // closed when the last probe started ended
	backoff     *backoff.ExponentialBackOff // the lengths of one outage's back-offs
	current     time.Duration               // the back-off under way; 0 while closed
	// For the status page (Client.Health).
	lastOK    time.Time // the endpoint last answered (below 500, not 429), or a probe found it answering
	lastErrAt time.Time // the endpoint last failed
	lastErr   string    // why, as a client may read it (no credentials, no URL query)
	failures  int       // failures since it last answered
}

// ask reports whether ep may be sent a request now, and whether the
// caller should probe it (its back-off is over and nobody probes it yet).
// When ep may not be asked and a probe is under way or to be started,
// done is closed once that probe ended (see registry.probe).
func (ep *endpoint) ask(now time.Time) (ok, probe bool, done chan struct{}) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	switch {
	case ep.failedUntil.IsZero():
		return true, false, nil
	case ep.probing:
		return false, false, ep.probeDone
	case now.Before(ep.failedUntil):
		return false, false, nil
	}
	ep.probing, ep.probeDone = true, make(chan struct{})
	return false, true, ep.probeDone
}

// fail records a failure after err. A closed endpoint opens for the first
// back-off; a failed probe (probe true) opens it for the next, longer one;
// a request that fails while it is open already (one sent before it
// opened) keeps the back-off under way. It reports whether ep was closed
// until now, and the back-off under way.
func (ep *endpoint) fail(probe bool, err error) (opened bool, d time.Duration) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	opened = ep.failedUntil.IsZero()
	now := time.Now()
	if opened || probe {
		ep.current = ep.nextBackOff()
	}
	ep.failedUntil, ep.probing = later(ep.failedUntil, now.Add(ep.current)), false
	ep.lastErrAt, ep.failures = now, ep.failures+1
	if err != nil {
		ep.lastErr = healthError(err)
	}
	return opened, ep.current
}

// nextBackOff is the library's next length held within [first, cap]: its
// jitter goes either way, but a back-off is never shorter than failBackoff
// nor longer than failBackoffMax.
func (ep *endpoint) nextBackOff() time.Duration {
	b := ep.backoff
	return min(max(b.NextBackOff(), b.InitialInterval), b.MaxInterval)
}

// newBackOff returns an endpoint's back-off: first, then doubled after each
// failed probe up to limit, each length randomised by ±25% (cenkalti/backoff's
// ExponentialBackOff, held within [first, limit] by nextBackOff). A limit
// below first means a flat back-off of first.
func newBackOff(first, limit time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{InitialInterval: first, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: max(first, limit)}
	b.Reset()
	return b
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// recovered closes ep after it answered; it reports whether ep was open
// until now.
func (ep *endpoint) recovered() bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	was := !ep.failedUntil.IsZero()
	if was {
		ep.backoff.Reset()
	}
	ep.failedUntil, ep.probing, ep.current = time.Time{}, false, 0
	ep.lastOK, ep.failures = time.Now(), 0
	return was
}

// healthError is err as the status page shows it: one line, bounded.
func healthError(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return msg
}

// probeWait bounds how long a call waits for a probe under way when every
// endpoint is open: a registry that is back answers GET /v2/ well within
// it, and a silent one costs the calls that come while it is probed this
// much, once per back-off, not the probe's whole timeout.
const probeWait = 2 * time.Second

// order returns the endpoints that may be asked, in configured order, and
// starts a probe of each open endpoint whose back-off is over. When none
// may be asked but a probe is under way, it waits for the probes (at most
// probeWait, or until ctx ends) and returns the endpoints found answering.
func (r *registry) order(ctx context.Context) []*endpoint {
	healthy, probes := r.ask()
	if len(healthy) > 0 || len(probes) == 0 {
		return healthy
	}
	deadline := time.NewTimer(probeWait)
	defer deadline.Stop()
	for _, done := range probes {
		select {
		case <-done:
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return nil
		}
		if healthy, _ = r.ask(); len(healthy) > 0 {
			return healthy
		}
	}
	return nil
}

// ask returns the endpoints that may be asked now and, for the others, the
// probes under way (started here when due) as channels closed when each ends.
func (r *registry) ask() (healthy []*endpoint, probes []<-chan struct{}) {
	now := time.Now()
	for _, ep := range r.endpoints {
		ok, probe, done := ep.ask(now)
		if ok {
			healthy = append(healthy, ep)
		}
		if probe {
			go r.probe(ep, done)
		}
		if done != nil {
			probes = append(probes, done)
		}
	}
	return healthy, probes
}

// probe asks ep for /v2/ without credentials: any answer below 500 (200,
// or 401 asking for a token) closes it again; no answer, or a 5xx, keeps
// it open for another back-off. It is bounded by the registry's timeouts.
// done is closed once ep is marked either way.
func (r *registry) probe(ep *endpoint, done chan<- struct{}) {
	defer close(done)
	ctx, cancel := context.WithTimeout(context.Background(), r.probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.url.String()+"/v2/", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = r.prober.Do(req); err == nil {
			drain(resp.Body)
			if resp.StatusCode >= 500 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
	}
	if err != nil {
		err = redactURLError(err)
		_, d := ep.fail(true, err)
		r.c.metrics.UpstreamBackoff(r.name, ep.url.Host, d)
		r.c.log.Info("upstream endpoint still failing", "registry", r.name, "endpoint", ep.url.Host, "backoff", d, "err", err)
		return
	}
	r.closed(ep)
}

// closed closes ep after it answered, and says so when it was open.
func (r *registry) closed(ep *endpoint) {
	if ep.recovered() {
		r.c.metrics.UpstreamBackoff(r.name, ep.url.Host, 0)
		r.c.log.Info("upstream endpoint recovered", "registry", r.name, "endpoint", ep.url.Host)
	}
}

// markFailed opens ep after err and counts it.
func (r *registry) markFailed(ep *endpoint, kind string, err error) {
	opened, d := ep.fail(false, err)
	r.c.metrics.UpstreamError(r.name, kind)
	if opened {
		r.c.metrics.UpstreamBackoff(r.name, ep.url.Host, d)
		r.c.log.Warn("upstream endpoint failing, not asked until a probe finds it answering", "registry", r.name, "endpoint", ep.url.Host, "kind", kind, "backoff", d, "err", err)
	}
}

// call is one request of the distribution API, before an endpoint is chosen.
type call struct {
	op       string // metrics label: manifest_head, manifest_get, blob, get
	method   string
	repo     oci.Repo
	hops     int    // of the incoming request; oci.HopHeader sends one more
	path     string // after /v2/<name>/
	rawQuery string
	header   http.Header
	notFound error // the sentinel of a 404 without an errcode
}

// maxTooMany bounds the 429 answers one call waits out.
const maxTooMany = 3

// do sends cl to the registry's endpoints in turn until one answers 2xx
// and returns that response (body wrapped with the idle-read timeout) and
// its endpoint. Connect errors, timeouts and 5xx move to the next endpoint
// and open the failing one's circuit (see endpoint); with every endpoint
// open, do fails at once with oci.ErrUnavailable; a 429 is waited out when its
// Retry-After fits in MaxRetryAfter; any other answer is returned as an
// error wrapping the oci sentinel of its status or errcode.
func (r *registry) do(ctx context.Context, cl call) (*http.Response, *endpoint, error) {
	release, err := r.c.fetches.acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream %s: %w", r.name, err)
	}
	resp, ep, err := r.try(ctx, cl)
	if err != nil {
		release()
		return nil, nil, err
	}
	resp.Body.(*idleBody).release = release // the slot is held until the body is closed
	return resp, ep, nil
}

// try is do within one slot of the fetch limit.
func (r *registry) try(ctx context.Context, cl call) (*http.Response, *endpoint, error) {
	if cl.hops >= oci.MaxHops {
		return nil, nil, fmt.Errorf("upstream %s: request has passed %d berth hops, a mirror loop: %w", r.name, cl.hops, oci.ErrUnavailable)
	}
	if r.offline {
		notFound := cl.notFound
		if notFound == nil {
			notFound = oci.ErrNameUnknown
		}
		return nil, nil, fmt.Errorf("registry %s is offline (this mirror never contacts it) and %s/%s is not in its store: %w: %w", r.name, cl.repo.Name, cl.path, notFound, oci.ErrOffline)
	}
	var lastErr error
	eps, tooMany := r.order(ctx), 0
	if len(eps) == 0 { // no request made: no upstream error to count
		return nil, nil, fmt.Errorf("upstream %s: every endpoint failed recently and is backing off until a probe finds it answering: %w", r.name, oci.ErrUnavailable)
	}
	for i := 0; i < len(eps); {
		ep := eps[i]
		if err := r.limit.wait(ctx, r.maxRetryAfter); err != nil {
			return nil, nil, fmt.Errorf("upstream %s: %w", r.name, err)
		}
		resp, err := r.send(ctx, ep, cl)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, fmt.Errorf("upstream %s: %w", r.name, context.Cause(ctx))
			}
			if !errors.Is(err, oci.ErrUnavailable) {
				r.c.metrics.UpstreamError(r.name, errorKind(err))
				return nil, nil, err
			}
			r.markFailed(ep, errorKind(err), err)
			lastErr, i = err, i+1
			continue
		}
		switch code := resp.StatusCode; {
		case code == http.StatusOK || code == http.StatusPartialContent:
			r.closed(ep) // a concurrent failure opened it while this one was answered
			return resp, ep, nil
		case code == http.StatusTooManyRequests:
			wait := retryAfter(resp.Header)
			err := responseError(r.name, resp, cl.notFound)
			r.c.metrics.UpstreamError(r.name, "429")
			if tooMany++; wait > r.maxRetryAfter || tooMany > maxTooMany {
				return nil, nil, err
			}
			r.c.log.Info("upstream rate limit, waiting", "registry", r.name, "wait", wait)
			r.limit.block(wait)
		case code >= 500:
			err := responseError(r.name, resp, cl.notFound)
			r.markFailed(ep, "5xx", err)
			lastErr, i = err, i+1
		default:
			r.closed(ep) // it answered: a 404 or 401 is the registry's word, not a failure of the endpoint
			err := responseError(r.name, resp, cl.notFound)
			r.c.metrics.UpstreamError(r.name, errorKind(err))
			return nil, nil, err
		}
	}
	return nil, nil, fmt.Errorf("every endpoint failed, last: %w", lastErr)
}

// send makes one request of cl to ep, following redirects.
func (r *registry) send(ctx context.Context, ep *endpoint, cl call) (*http.Response, error) {
	u := *ep.url
	u.Path = ep.url.Path + "/v2/" + cl.repo.Name + "/" + cl.path
	u.RawPath = ""
	q, _ := url.ParseQuery(cl.rawQuery)
	q.Set("ns", r.name) // a berth upstream routes by it; registries ignore it
	u.RawQuery = q.Encode()
	reqCtx, cancel := context.WithCancelCause(ctx)
	reqCtx = context.WithValue(reqCtx, callKey{}, &callInfo{ep: ep, scope: "repository:" + cl.repo.Name + ":pull"})
	req, err := http.NewRequestWithContext(reqCtx, cl.method, u.String(), nil)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("upstream %s: request: %w", r.name, err)
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	req.Header.Set(oci.HopHeader, strconv.Itoa(cl.hops+1))
	start := time.Now()
	resp, err := r.client.Do(req)
	if m := r.c.metrics; m != nil {
		m.UpstreamLatency.WithLabelValues(r.name, cl.op).Observe(time.Since(start).Seconds())
	}
	if err != nil {
		cancel(nil)
		return nil, r.transportError(ep, err)
	}
	resp.Body = newIdleBody(resp.Body, reqCtx, ctx, cancel, r.idleRead)
	return resp, nil
}

// transportError describes a request that got no response. Errors of the
// auth layer and refusals keep their sentinel; every other one (connect,
// TLS, timeout) wraps oci.ErrUnavailable. The message, which a client may
// see, names the registry and a reason; the endpoint and the network
// error's addresses are kept for the log only (see redacted). No URL is
// included anywhere: a redirect target's query may carry a signature.
func (r *registry) transportError(ep *endpoint, err error) error {
	err = redactURLError(err)
	prefix := "upstream " + r.name
	for _, s := range []error{oci.ErrBadUpstream, oci.ErrUnauthorized, oci.ErrDenied, oci.ErrTooManyRequests, oci.ErrUnavailable, oci.ErrNameUnknown, oci.ErrNameInvalid} {
		if errors.Is(err, s) {
			return redact(prefix, ep.url.Host, err)
		}
	}
	return redact(prefix, ep.url.Host, err, oci.ErrUnavailable)
}

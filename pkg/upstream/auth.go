package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

// defaultTokenTTL is a token's life when the token server names none
// (the distribution token spec's default).
const defaultTokenTTL = 60 * time.Second

// authenticator holds a registry's credentials, each endpoint's challenge
// and the bearer tokens, one per endpoint and scope. Safe for concurrent use.
type authenticator struct {
	rc    config.Registry
	hosts []string
	base  http.RoundTripper

	mu         sync.Mutex // guards creds, loadedAt, challenges, tokens
	creds      credentials
	loadedAt   time.Time                       // when creds were read
	refreshMu  sync.Mutex                      // one credential helper run at a time
	challenges map[string]*transport.Challenge // by endpoint host; Scheme "" means none needed
	tokens     map[string]*tokenEntry          // by endpoint host and scope
}

// tokenEntry is one cached bearer token. lock (capacity 1) is held during
// an exchange, so a scope's token is fetched once however many ask.
type tokenEntry struct {
	lock    chan struct{}
	token   string // guarded by lock
	expires time.Time
}

func newAuthenticator(rc config.Registry, base http.RoundTripper) (*authenticator, error) {
	a := &authenticator{rc: rc, base: base, challenges: map[string]*transport.Challenge{}, tokens: map[string]*tokenEntry{}}
	for _, e := range rc.Endpoints {
		a.hosts = append(a.hosts, hostOf(e))
	}
	creds, err := loadCredentials(rc, a.hosts)
	if err != nil {
		return nil, err
	}
	a.creds, a.loadedAt = creds, time.Now()
	return a, nil
}

// reload re-reads the credentials and drops every token if they changed.
func (a *authenticator) reload() error {
	creds, err := loadCredentials(a.rc, a.hosts)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loadedAt = time.Now()
	if creds != a.creds {
		a.creds = creds
		a.tokens = map[string]*tokenEntry{}
	}
	return nil
}

// Credentials from a Docker credential helper are short-lived tokens on
// ECR (12h), GCR (1h) and ACR (3h): the helper is asked again once they are
// helperRefresh old, and after an upstream refused them (at most every
// helperRetry), so berth follows the helper's renewals without a restart.
var (
	helperRefresh = 10 * time.Minute
	helperRetry   = 10 * time.Second
)

// freshCredentials returns the credentials, asking the credential helper
// again first when they came from one and are due (see helperRefresh). A
// failed helper run keeps the credentials it had.
func (a *authenticator) freshCredentials(refused bool) credentials {
	a.mu.Lock()
	c, at := a.creds, a.loadedAt
	a.mu.Unlock()
	age := time.Since(at)
	if !c.fromHelper || age < helperRetry || (!refused && age < helperRefresh) {
		return c
	}
	a.refreshMu.Lock()
	defer a.refreshMu.Unlock()
	a.mu.Lock()
	again := a.loadedAt.Equal(at) // no other caller refreshed meanwhile
	a.mu.Unlock()
	if again {
		if err := a.reload(); err != nil {
			a.mu.Lock()
			a.loadedAt = time.Now() // retry after helperRetry, not on every request
			a.mu.Unlock()
		}
	}
	return a.credentials()
}

func (a *authenticator) credentials() credentials {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creds
}

// header returns the Authorization value for a request to ep within scope,
// "" when none is needed. stale is a value the endpoint just refused with
// a 401: it is not returned again, and the challenge is learnt anew.
// Errors wrap oci.ErrUnauthorized, oci.ErrDenied or oci.ErrUnavailable.
func (a *authenticator) header(ctx context.Context, ep *endpoint, scope, stale string, refused bool) (string, error) {
	ch, err := a.challenge(ctx, ep, refused && !strings.HasPrefix(stale, "Bearer "))
	if err != nil {
		return "", err
	}
	creds := a.freshCredentials(refused)
	switch strings.ToLower(ch.Scheme) {
	case "":
		return "", nil
	case "basic":
		if creds.Username == "" && creds.Password == "" {
			return "", nil
		}
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(creds.Username+":"+creds.Password)), nil
	case "bearer":
		if creds.RegistryToken != "" {
			return "Bearer " + creds.RegistryToken, nil
		}
		tok, err := a.token(ctx, ep, scope, ch, creds, strings.TrimPrefix(stale, "Bearer "))
		if err != nil && creds.fromHelper && errors.Is(err, oci.ErrUnauthorized) {
			// The realm refused the helper's answer: it may have renewed it.
			if renewed := a.freshCredentials(true); renewed != creds {
				tok, err = a.token(ctx, ep, scope, ch, renewed, "")
			}
		}
		if err != nil {
			return "", err
		}
		return "Bearer " + tok, nil
	default:
		return "", fmt.Errorf("endpoint %s asks for %q authentication, which berth does not speak: %w", ep.url.Host, ch.Scheme, oci.ErrUnauthorized)
	}
}

// challenge returns ep's WWW-Authenticate challenge, pinging GET /v2/ the
// first time or when forced.
func (a *authenticator) challenge(ctx context.Context, ep *endpoint, force bool) (*transport.Challenge, error) {
	a.mu.Lock()
	ch, ok := a.challenges[ep.url.Host]
	a.mu.Unlock()
	if ok && !force {
		return ch, nil
	}
	reg, err := ep.registryName()
	if err != nil {
		return nil, err
	}
	ch, err = transport.Ping(ctx, reg, &pingTransport{ep: ep, inner: a.base})
	if err != nil {
		return nil, authError("ping", err)
	}
	ch.Insecure = ep.url.Scheme == "http"
	a.mu.Lock()
	a.challenges[ep.url.Host] = ch
	a.mu.Unlock()
	return ch, nil
}

// token returns a valid bearer token for ep and scope, exchanging the
// credentials at the challenge's realm when there is none (or only stale).
func (a *authenticator) token(ctx context.Context, ep *endpoint, scope string, ch *transport.Challenge, creds credentials, stale string) (string, error) {
	key := ep.url.Host + " " + scope
	a.mu.Lock()
	e, ok := a.tokens[key]
	if !ok {
		e = &tokenEntry{lock: make(chan struct{}, 1)}
		a.tokens[key] = e
	}
	a.mu.Unlock()
	select {
	case e.lock <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-e.lock }()
	if e.token != "" && e.token != stale && time.Now().Before(e.expires) {
		return e.token, nil
	}
	reg, err := ep.registryName()
	if err != nil {
		return "", err
	}
	tok, err := transport.Exchange(ctx, reg, authn.FromConfig(creds.authConfig()), a.base, []string{scope}, ch)
	if err != nil {
		return "", authError("token", err)
	}
	e.token = tok.Token
	if e.token == "" {
		e.token = tok.AccessToken
	}
	ttl := defaultTokenTTL
	if tok.ExpiresIn > 0 {
		ttl = time.Duration(tok.ExpiresIn) * time.Second
	}
	e.expires = time.Now().Add(ttl - ttl/10) // renew a little early
	return e.token, nil
}

func (c credentials) authConfig() authn.AuthConfig {
	return authn.AuthConfig{Username: c.Username, Password: c.Password, IdentityToken: c.IdentityToken}
}

// authError maps an error of the ping or the token exchange. A status
// answer keeps the server's own message; anything else (connect, TLS,
// timeout) is oci.ErrUnavailable, so the next endpoint is tried.
func authError(step string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, oci.ErrUnauthorized) {
		return err
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return fmt.Errorf("%s: %w", step, fromTransportError(terr))
	}
	if strings.Contains(err.Error(), "invalid realm") {
		// go-containerregistry refused the challenge's token realm (a
		// private IP literal on another host, or http for https): a refusal
		// by configuration, not an unreachable endpoint to back off from.
		return fmt.Errorf("%s: %w: %w", step, err, oci.ErrDenied)
	}
	return fmt.Errorf("%s: %w: %w", step, redactURLError(err), oci.ErrUnavailable)
}

// pingTransport sends ggcr's ping to the endpoint's own scheme and path,
// once: ggcr races https and http for loopback and private addresses, and
// the second racer is answered from the first one's result.
type pingTransport struct {
	ep    *endpoint
	inner http.RoundTripper

	once sync.Once
	resp *http.Response // body read into body
	body []byte
	err  error
}

func (t *pingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.once.Do(func() {
		req := req.Clone(req.Context())
		req.URL.Scheme = t.ep.url.Scheme
		req.URL.Path = t.ep.url.Path + req.URL.Path
		t.resp, t.err = t.inner.RoundTrip(req)
		if t.err == nil {
			t.body, t.err = io.ReadAll(io.LimitReader(t.resp.Body, maxErrorBody))
			drain(t.resp.Body)
		}
	})
	if t.err != nil {
		return nil, t.err
	}
	resp := *t.resp
	resp.Request = req
	resp.Body = io.NopCloser(bytes.NewReader(t.body))
	return &resp, nil
}

// registryName is ggcr's name of the endpoint's host.
func (ep *endpoint) registryName() (name.Registry, error) {
	opts := []name.Option{name.WeakValidation}
	if ep.url.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(ep.url.Host, opts...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("endpoint %s: %w: %w", ep.url.Host, err, oci.ErrUnavailable)
	}
	return reg, nil
}

// callInfo travels in a request's context to the authTransport.
type callInfo struct {
	ep    *endpoint
	scope string
}

type callKey struct{}

// authTransport adds the registry's Authorization to requests to the
// endpoint's own host and port only (never to a redirect target) and, on a
// 401, renews the token or the challenge and retries once.
type authTransport struct{ r *registry }

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = t.r.markRedirect(req)
	ci, _ := req.Context().Value(callKey{}).(*callInfo)
	if ci == nil || req.URL.Host != ci.ep.url.Host {
		req = req.Clone(req.Context())
		req.Header.Del("Authorization")
		return t.r.base.RoundTrip(req)
	}
	hdr, err := t.r.auth.header(req.Context(), ci.ep, ci.scope, "", false)
	if err != nil {
		return nil, err
	}
	resp, err := t.send(req, hdr)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	renewed, err := t.r.auth.header(req.Context(), ci.ep, ci.scope, hdr, true)
	if err != nil {
		drain(resp.Body)
		return nil, err
	}
	if renewed == hdr { // nothing new to present: the 401 stands
		return resp, nil
	}
	drain(resp.Body)
	return t.send(req, renewed)
}

func (t *authTransport) send(req *http.Request, hdr string) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Del("Authorization")
	if hdr != "" {
		req.Header.Set("Authorization", hdr)
	}
	return t.r.base.RoundTrip(req)
}

package auth

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

// Gate is the check a client's request passes before berth looks at
// anything else: who the client is (Authenticator) and whether it may read
// the repository (Policy). It is safe for concurrent use.
type Gate struct {
	authn  *Authenticator
	policy *Policy
	realm  string
}

// NewGate builds the gate of a validated cfg, loading its credential files.
func NewGate(cfg *config.Config) (*Gate, error) {
	a, err := NewAuthenticator(cfg.Auth.Htpasswd, cfg.Auth.Tokens)
	if err != nil {
		return nil, err
	}
	return &Gate{authn: a, policy: NewPolicy(cfg), realm: cfg.Auth.Realm}, nil
}

// Reload re-reads the credential files (SIGHUP); on error the previous
// credentials stay in force.
func (g *Gate) Reload() error { return g.authn.Reload() }

// Refusal is a request the gate turns away: it wraps oci.ErrUnauthorized
// (401, with Challenge for the WWW-Authenticate header) or oci.ErrDenied
// (403).
type Refusal struct {
	challenge string
	err       error
}

func (e *Refusal) Error() string { return e.err.Error() }
func (e *Refusal) Unwrap() error { return e.err }

// WWWAuthenticate is the challenge of a 401, "" for a 403.
func (e *Refusal) WWWAuthenticate() string { return e.challenge }

// Check identifies r's client and decides whether it may read repo, or, for
// the API base (/v2/, base true), whether it may go on without logging in:
// clients ask /v2/ first to learn that berth wants credentials. It returns
// the client's name ("" for anonymous) or a *Refusal. Invalid credentials
// are refused whatever the repository. An error from the request's context
// (the client left while a password was being checked) is returned as is.
func (g *Gate) Check(r *http.Request, repo oci.Repo, base bool) (string, error) {
	id, err := g.authn.Identify(r)
	if err != nil {
		if !errors.Is(err, ErrBadCredentials) {
			return "", err
		}
		return "", g.unauthorized(err)
	}
	if base {
		if id.Anonymous() && g.policy.NeedsAuth() {
			return "", g.unauthorized(errors.New("authentication required"))
		}
		return id.Name, nil
	}
	switch g.policy.Decide(id, repo) {
	case Allow:
		return id.Name, nil
	case Unauthorized:
		return "", g.unauthorized(fmt.Errorf("authentication required to read %s", repo))
	}
	return "", &Refusal{err: fmt.Errorf("%s may not read %s: %w", id.Name, repo, oci.ErrDenied)}
}

// Challenge is the WWW-Authenticate challenge of berth's client auth, ""
// when it has no credential files (no client can log in).
func (g *Gate) Challenge() string {
	if !g.authn.Enabled() {
		return ""
	}
	return Challenge(g.realm)
}

func (g *Gate) unauthorized(err error) *Refusal {
	return &Refusal{challenge: Challenge(g.realm), err: fmt.Errorf("%w: %w", err, oci.ErrUnauthorized)}
}

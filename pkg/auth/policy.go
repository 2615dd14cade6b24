// Package auth decides who may read what through berth: it identifies a
// client from its Authorization header (HTTP basic against an htpasswd file
// of bcrypt hashes, or a bearer token from a file of SHA-256 hashes) and
// decides, per registry and repository, whether that client may read.
//
// The decision is made from the request's registry and repository name
// alone, before anything looks at the store: bytes on disk are never a
// reason to serve them.
package auth

import (
	"strings"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/bmatcuk/doublestar/v4"
)

// Identity is who a client proved to be. The zero value is anonymous.
type Identity struct {
	Name string // htpasswd user or token name; "" for anonymous
	Kind string // "basic", "token"; "" for anonymous
}

// Anonymous reports whether the client presented no credentials.
func (id Identity) Anonymous() bool { return id.Name == "" }

// Decision is the answer to "may this client read this repository".
type Decision int

const (
	// Allow: serve the request.
	Allow Decision = iota
	// Unauthorized: an anonymous client asked for something it may not
	// read; it may try again with credentials (401 and a challenge).
	Unauthorized
	// Forbidden: an authenticated client may not read this (403 DENIED).
	Forbidden
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allow"
	case Unauthorized:
		return "unauthorized"
	}
	return "forbidden"
}

// Policy holds the access rules of every registry. It is immutable and
// safe for concurrent use.
type Policy struct {
	registries map[string]registryPolicy
	groups     map[string]map[string]bool // group -> member set
	needsAuth  bool                       // some registry or rule is not anonymous
}

type registryPolicy struct {
	rules []rule // first match wins
	def   grant  // for repositories no rule matches
}

type rule struct {
	globs []string
	grant
}

type grant struct {
	access string
	users  map[string]bool
	groups []string
}

// NewPolicy builds the access rules of cfg, which must be valid
// (config.Validate): a registry with credentials and no access setting is
// served to authenticated clients only.
func NewPolicy(cfg *config.Config) *Policy {
	p := &Policy{registries: map[string]registryPolicy{}, groups: map[string]map[string]bool{}}
	for g, members := range cfg.Auth.Groups {
		set := map[string]bool{}
		for _, m := range members {
			set[m] = true
		}
		p.groups[g] = set
	}
	for _, r := range cfg.Registries {
		rp := registryPolicy{def: p.grant(r.EffectiveAccess(), r.Users, r.Groups)}
		for _, ar := range r.Rules {
			rp.rules = append(rp.rules, rule{globs: ar.Repos, grant: p.grant(ar.Access, ar.Users, ar.Groups)})
		}
		p.registries[r.Name] = rp
	}
	return p
}

func (p *Policy) grant(access string, users, groups []string) grant {
	g := grant{access: strings.ToLower(access), groups: groups}
	if g.access != config.AccessAnonymous {
		p.needsAuth = true
	}
	if len(users) > 0 {
		g.users = map[string]bool{}
		for _, u := range users {
			g.users[u] = true
		}
	}
	return g
}

// NeedsAuth reports whether any repository is closed to anonymous clients.
// When none is, berth asks nobody for credentials.
func (p *Policy) NeedsAuth() bool { return p.needsAuth }

// Decide says whether id may read repo. A registry the policy does not know
// is closed to everyone.
func (p *Policy) Decide(id Identity, repo oci.Repo) Decision {
	rp, ok := p.registries[repo.Registry]
	if !ok {
		return refuse(id)
	}
	g := rp.def
	for _, r := range rp.rules {
		if r.matches(repo.Name) {
			g = r.grant
			break
		}
	}
	return p.decide(g, id)
}

func (p *Policy) decide(g grant, id Identity) Decision {
	switch g.access {
	case config.AccessAnonymous:
		return Allow
	case config.AccessAuthenticated:
		if id.Anonymous() {
			return Unauthorized
		}
		if g.users == nil && len(g.groups) == 0 {
			return Allow
		}
		if g.users[id.Name] {
			return Allow
		}
		for _, grp := range g.groups {
			if p.groups[grp][id.Name] {
				return Allow
			}
		}
	}
	return refuse(id)
}

// refuse is the answer to a client that may not read: anonymous clients are
// asked for credentials, whatever the rule, so the answer does not tell a
// denied repository from one that needs a login.
func refuse(id Identity) Decision {
	if id.Anonymous() {
		return Unauthorized
	}
	return Forbidden
}

func (r rule) matches(name string) bool {
	for _, g := range r.globs {
		if ok, err := doublestar.Match(g, name); err == nil && ok {
			return true
		}
	}
	return false
}

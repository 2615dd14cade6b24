package config

import (
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// The values of registries[].access and registries[].rules[].access.
const (
	AccessAnonymous     = "anonymous"     // anyone who reaches berth
	AccessAuthenticated = "authenticated" // clients with valid credentials (optionally only users/groups)
	AccessDeny          = "deny"          // nobody
)

// HasCredentials reports whether berth holds credentials for the registry:
// what it pulls may be private, so clients must not get it by default.
func (r *Registry) HasCredentials() bool {
	return r.Username != "" || r.Password != "" || r.PasswordFile != "" || r.DockerConfig != ""
}

// EffectiveAccess is the registry's access for repositories no rule
// matches: Access when set, else authenticated for a registry with
// credentials and anonymous for one without.
func (r *Registry) EffectiveAccess() string {
	switch {
	case r.Access != "":
		return strings.ToLower(r.Access)
	case r.HasCredentials():
		return AccessAuthenticated
	}
	return AccessAnonymous
}

// ClientAuth reports whether any client credential source is configured.
func (a Auth) ClientAuth() bool { return a.Htpasswd != "" || a.Tokens != "" }

func (c *Config) validateAdmin(p *problems) {
	a := c.Admin.Addr
	if a == "" {
		return
	}
	p.check("admin.addr", checkHostPort(a, false))
	if _, port, _ := net.SplitHostPort(a); port != "0" && (a == c.Listen.Addr || a == c.Listen.TLS.Addr) {
		p.add("admin.addr", "%q is also the registry's listen address: the admin listener needs its own", a)
	}
}

func (c *Config) validateAuth(p *problems) {
	if strings.ContainsAny(c.Auth.Realm, "\"\\\r\n") {
		p.add("auth.realm", "must not contain quotes, backslashes or line breaks")
	}
	names := make([]string, 0, len(c.Auth.Groups))
	for g := range c.Auth.Groups {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		path := "auth.groups." + g
		if strings.TrimSpace(g) == "" {
			p.add("auth.groups", "a group has an empty name")
		}
		for i, m := range c.Auth.Groups[g] {
			if m == "" || strings.ContainsAny(m, ": \t") {
				p.add(fmt.Sprintf("%s[%d]", path, i), "%q is not a user or token name", m)
			}
		}
	}
	for i := range c.Registries {
		c.validateRegistryAccess(p, i)
	}
}

func (c *Config) validateRegistryAccess(p *problems, i int) {
	r := &c.Registries[i]
	path := fmt.Sprintf("registries[%d]", i)
	needAuth := false
	if r.Access != "" {
		needAuth = c.checkGrant(p, path, r.Access, r.Users, r.Groups)
	} else if len(r.Users)+len(r.Groups) > 0 {
		needAuth = c.checkGrant(p, path, r.EffectiveAccess(), r.Users, r.Groups)
	}
	if r.Access == "" && r.HasCredentials() {
		needAuth = true
	}
	for j, rule := range r.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", path, j)
		if len(rule.Repos) == 0 {
			p.add(rp+".repos", "at least one repository glob is required")
		}
		for k, g := range rule.Repos {
			if g == "" || !doublestar.ValidatePattern(g) {
				p.add(fmt.Sprintf("%s.repos[%d]", rp, k), "%q is not a repository glob (* within a segment, ** across segments)", g)
			}
		}
		if rule.Access == "" {
			p.add(rp+".access", "required: anonymous, authenticated or deny")
			continue
		}
		if c.checkGrant(p, rp, rule.Access, rule.Users, rule.Groups) {
			needAuth = true
		}
	}
	if needAuth && !c.Auth.ClientAuth() {
		msg := "needs authenticated clients, but auth.htpasswd and auth.tokens are unset, so no client could authenticate"
		if r.Access == "" && r.HasCredentials() {
			msg = "has upstream credentials, so berth serves it to authenticated clients only, but auth.htpasswd and " +
				"auth.tokens are unset: configure client auth, or set access: anonymous to let anyone who reaches berth read it"
		}
		p.add(path+".access", "%s", msg)
	}
}

// checkGrant checks one access value with its users and groups and reports
// whether it asks for authenticated clients.
func (c *Config) checkGrant(p *problems, path, access string, users, groups []string) bool {
	switch strings.ToLower(access) {
	case AccessAnonymous, AccessDeny:
		if len(users)+len(groups) > 0 {
			p.add(path+".users", "users and groups go with access: authenticated, not %s", access)
		}
		return false
	case AccessAuthenticated:
	default:
		p.add(path+".access", "%q is not one of anonymous, authenticated, deny", access)
		return false
	}
	for i, u := range users {
		if u == "" || strings.ContainsAny(u, ": \t") {
			p.add(fmt.Sprintf("%s.users[%d]", path, i), "%q is not a user or token name", u)
		}
	}
	for i, g := range groups {
		if _, ok := c.Auth.Groups[g]; !ok {
			p.add(fmt.Sprintf("%s.groups[%d]", path, i), "%q is not a group of auth.groups", g)
		}
	}
	return true
}

package auth

import (
	"testing"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

func testPolicy(t testing.TB) *Policy {
	t.Helper()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	ep := []string{"https://upstream.test"}
	cfg.Auth = config.Auth{Htpasswd: "/x", Groups: map[string][]string{"team-a": {"alice", "ci"}}}
	cfg.Registries = []config.Registry{
		{Name: "docker.io", Endpoints: ep},                                        // no credentials: anonymous
		{Name: "private.test", Endpoints: ep, Username: "puller", Password: "pw"}, // credentials: authenticated
		{Name: "corp.test", Endpoints: ep, Username: "puller", Password: "pw", Access: "authenticated", Users: []string{"bob"},
			Rules: []config.AccessRule{
				{Repos: []string{"base/*", "docs/**"}, Access: "anonymous"},
				{Repos: []string{"team-a/**"}, Access: "authenticated", Groups: []string{"team-a"}},
				{Repos: []string{"secret/**", "base/secret"}, Access: "deny"},
				{Repos: []string{"{x,y}/open"}, Access: "authenticated"},
			}},
		{Name: "closed.test", Endpoints: ep, Access: "deny"},
		{Name: "creds-public.test", Endpoints: ep, Username: "u", Password: "p", Access: "ANONYMOUS"},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return NewPolicy(cfg)
}

func TestDecide(t *testing.T) {
	t.Parallel()
	p := testPolicy(t)
	anon := Identity{}
	alice := Identity{Name: "alice", Kind: "basic"}
	bob := Identity{Name: "bob", Kind: "basic"}
	ci := Identity{Name: "ci", Kind: "token"}
	eve := Identity{Name: "eve", Kind: "basic"}
	tests := []struct {
		name string
		id   Identity
		repo oci.Repo
		want Decision
	}{
		{"public registry, anonymous", anon, oci.Repo{Registry: "docker.io", Name: "library/alpine"}, Allow},
		{"public registry, a user", eve, oci.Repo{Registry: "docker.io", Name: "library/alpine"}, Allow},
		{"credentials default to authenticated: anonymous", anon, oci.Repo{Registry: "private.test", Name: "app"}, Unauthorized},
		{"credentials default to authenticated: any user", eve, oci.Repo{Registry: "private.test", Name: "app"}, Allow},
		{"credentials default to authenticated: a token", ci, oci.Repo{Registry: "private.test", Name: "a/b/c"}, Allow},
		{"registry default users: bob", bob, oci.Repo{Registry: "corp.test", Name: "app"}, Allow},
		{"registry default users: alice is not listed", alice, oci.Repo{Registry: "corp.test", Name: "app"}, Forbidden},
		{"registry default users: anonymous", anon, oci.Repo{Registry: "corp.test", Name: "app"}, Unauthorized},
		{"anonymous rule, one segment", anon, oci.Repo{Registry: "corp.test", Name: "base/alpine"}, Allow},
		{"* stays in its segment", anon, oci.Repo{Registry: "corp.test", Name: "base/alpine/x"}, Unauthorized},
		{"** crosses segments", anon, oci.Repo{Registry: "corp.test", Name: "docs/a/b/c"}, Allow},
		{"glob is not a prefix", anon, oci.Repo{Registry: "corp.test", Name: "docsx/a"}, Unauthorized},
		{"first match wins over a later deny", anon, oci.Repo{Registry: "corp.test", Name: "base/secret"}, Allow},
		{"group member", alice, oci.Repo{Registry: "corp.test", Name: "team-a/app"}, Allow},
		{"group member by token", ci, oci.Repo{Registry: "corp.test", Name: "team-a/app/v2"}, Allow},
		{"not a group member", bob, oci.Repo{Registry: "corp.test", Name: "team-a/app"}, Forbidden},
		{"deny, user", bob, oci.Repo{Registry: "corp.test", Name: "secret/keys"}, Forbidden},
		{"deny, anonymous is asked to log in", anon, oci.Repo{Registry: "corp.test", Name: "secret/keys"}, Unauthorized},
		{"alternatives", eve, oci.Repo{Registry: "corp.test", Name: "y/open"}, Allow},
		{"alternatives, no match", eve, oci.Repo{Registry: "corp.test", Name: "z/open"}, Forbidden},
		{"deny registry", alice, oci.Repo{Registry: "closed.test", Name: "a"}, Forbidden},
		{"explicit anonymous with credentials", anon, oci.Repo{Registry: "creds-public.test", Name: "a"}, Allow},
		{"unknown registry, anonymous", anon, oci.Repo{Registry: "evil.test", Name: "a"}, Unauthorized},
		{"unknown registry, user", alice, oci.Repo{Registry: "evil.test", Name: "a"}, Forbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.Decide(tt.id, tt.repo); got != tt.want {
				t.Errorf("Decide(%q, %s) = %s, want %s", tt.id.Name, tt.repo, got, tt.want)
			}
		})
	}
	if !p.NeedsAuth() {
		t.Error("NeedsAuth = false with authenticated registries")
	}
}

func TestNeedsAuthPublicOnly(t *testing.T) {
	t.Parallel()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	if p := NewPolicy(cfg); p.NeedsAuth() {
		t.Error("the default configuration asks clients for credentials")
	}
}

// FuzzAccessRules checks the invariants of a decision for any rule glob,
// repository name and user: a deny rule that matches never allows, an
// anonymous client is never told Forbidden (it is asked to log in), an
// authenticated one is never told to log in, and a repository no rule
// matches gets the registry's own access.
func FuzzAccessRules(f *testing.F) {
	for _, s := range [][4]string{
		{"library/*", "deny", "library/alpine", "alice"},
		{"**", "authenticated", "a/b/c", ""},
		{"team-{a,b}/**", "anonymous", "team-b/x", "bob"},
		{"[a-z]*/x", "deny", "q/x", ""},
		{"a/**/b", "authenticated", "a/b", "alice"},
		{"\\*", "deny", "*", "eve"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, glob, access, name, user string) {
		switch access {
		case config.AccessAnonymous, config.AccessAuthenticated, config.AccessDeny:
		default:
			access = config.AccessDeny
		}
		cfg := &config.Config{Registries: []config.Registry{{
			Name: "r.test", Access: "anonymous", Rules: []config.AccessRule{{Repos: []string{glob}, Access: access}},
		}}}
		p := NewPolicy(cfg)
		id := Identity{Name: user}
		got := p.Decide(id, oci.Repo{Registry: "r.test", Name: name})
		matched := p.registries["r.test"].rules[0].matches(name)
		switch {
		case id.Anonymous() && got == Forbidden:
			t.Fatalf("anonymous client told Forbidden for %q", name)
		case !id.Anonymous() && got == Unauthorized:
			t.Fatalf("user %q told to log in for %q", user, name)
		case matched && access == config.AccessDeny && got == Allow:
			t.Fatalf("deny rule %q matches %q but allowed", glob, name)
		case matched && access == config.AccessAuthenticated && id.Anonymous() && got != Unauthorized:
			t.Fatalf("authenticated rule %q matches %q but anonymous got %s", glob, name, got)
		case !matched && got != Allow:
			t.Fatalf("rule %q does not match %q, registry is anonymous, got %s", glob, name, got)
		}
	})
}

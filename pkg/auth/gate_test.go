package auth

import (
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

func TestGate(t *testing.T) {
	t.Parallel()
	_, hp := newTestAuth(t)
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth.Htpasswd, cfg.Auth.Tokens = hp, filepath.Join(filepath.Dir(hp), "tokens")
	ep := []string{"https://upstream.test"}
	cfg.Registries = []config.Registry{
		{Name: "docker.io", Endpoints: ep},
		{Name: "private.test", Endpoints: ep, Username: "u", Password: "p", Users: []string{"alice"}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g, err := NewGate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	public, private := oci.Repo{Registry: "docker.io", Name: "library/alpine"}, oci.Repo{Registry: "private.test", Name: "app"}
	tests := []struct {
		name      string
		r         *http.Request
		repo      oci.Repo
		base      bool
		client    string
		err       error
		challenge bool
	}{
		{"base, anonymous: asked to log in", req(""), oci.Repo{}, true, "", oci.ErrUnauthorized, true},
		{"base, alice", basicReq("alice", "wonderland"), oci.Repo{}, true, "alice", nil, false},
		{"base, wrong password", basicReq("alice", "x"), oci.Repo{}, true, "", oci.ErrUnauthorized, true},
		{"public, anonymous", req(""), public, false, "", nil, false},
		{"public, empty basic", basicReq("", ""), public, false, "", nil, false},
		{"public, wrong password is refused", basicReq("alice", "x"), public, false, "", oci.ErrUnauthorized, true},
		{"private, anonymous", req(""), private, false, "", oci.ErrUnauthorized, true},
		{"private, alice", basicReq("alice", "wonderland"), private, false, "alice", nil, false},
		{"private, bob is not listed", basicReq("bob", "builder"), private, false, "", oci.ErrDenied, false},
		{"private, token not listed", req("Bearer tok-ci-0123456789"), private, false, "", oci.ErrDenied, false},
	}
	for _, tt := range tests {
		client, err := g.Check(tt.r, tt.repo, tt.base)
		if client != tt.client || !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
			t.Errorf("%s: Check = %q, %v; want %q, %v", tt.name, client, err, tt.client, tt.err)
			continue
		}
		var ref *Refusal
		if err != nil && (!errors.As(err, &ref) || (ref.WWWAuthenticate() != "") != tt.challenge) {
			t.Errorf("%s: refusal %#v, challenge wanted: %v", tt.name, err, tt.challenge)
		}
	}
	if got := Challenge(""); got != `Basic realm="berth", charset="UTF-8"` {
		t.Errorf("Challenge = %s", got)
	}
}

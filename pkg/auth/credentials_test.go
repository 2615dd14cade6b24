package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func bcryptLine(t testing.TB, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h) + "\n"
}

func tokenLine(name, tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return name + ":sha256:" + hex.EncodeToString(sum[:]) + "\n"
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestAuth(t testing.TB) (*Authenticator, string) {
	t.Helper()
	dir := t.TempDir()
	hp := writeFile(t, dir, "htpasswd", "# users\n"+bcryptLine(t, "alice", "wonderland")+"\n"+bcryptLine(t, "bob", "builder"))
	tp := writeFile(t, dir, "tokens", "# machines\n"+tokenLine("ci", "tok-ci-0123456789"))
	a, err := NewAuthenticator(hp, tp)
	if err != nil {
		t.Fatal(err)
	}
	return a, hp
}

func req(auth string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://berth.test/v2/", nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

func basicReq(user, pass string) *http.Request {
	r := req("")
	r.SetBasicAuth(user, pass)
	return r
}

func TestIdentify(t *testing.T) {
	t.Parallel()
	a, _ := newTestAuth(t)
	tests := []struct {
		name string
		r    *http.Request
		want Identity
		err  error
	}{
		{"no header", req(""), Identity{}, nil},
		{"empty basic (containers/image without credentials)", basicReq("", ""), Identity{}, nil},
		{"basic", basicReq("alice", "wonderland"), Identity{Name: "alice", Kind: "basic"}, nil},
		{"basic again, from the cache", basicReq("alice", "wonderland"), Identity{Name: "alice", Kind: "basic"}, nil},
		{"basic, wrong password", basicReq("alice", "wonderlan"), Identity{}, ErrBadCredentials},
		{"basic, wrong password again", basicReq("alice", "wonderlan"), Identity{}, ErrBadCredentials},
		{"basic, another user's password", basicReq("bob", "wonderland"), Identity{}, ErrBadCredentials},
		{"basic, unknown user", basicReq("mallory", "wonderland"), Identity{}, ErrBadCredentials},
		{"basic, password only", basicReq("", "wonderland"), Identity{}, ErrBadCredentials},
		{"bearer token", req("Bearer tok-ci-0123456789"), Identity{Name: "ci", Kind: "token"}, nil},
		{"bearer, lower case scheme", req("bearer tok-ci-0123456789"), Identity{Name: "ci", Kind: "token"}, nil},
		{"bearer, unknown token", req("Bearer tok-ci-012345678"), Identity{}, ErrBadCredentials},
		{"bearer, empty", req("Bearer "), Identity{}, ErrBadCredentials},
		{"token as basic password under its name", basicReq("ci", "tok-ci-0123456789"), Identity{Name: "ci", Kind: "token"}, nil},
		{"token under another name", basicReq("alice", "tok-ci-0123456789"), Identity{}, ErrBadCredentials},
		{"token name, wrong token", basicReq("ci", "nope"), Identity{}, ErrBadCredentials},
		{"bcrypt hash as bearer", req("Bearer $2a$04$abc"), Identity{}, ErrBadCredentials},
		{"other scheme", req("Negotiate abc"), Identity{}, ErrBadCredentials},
		{"basic not base64", req("Basic !!!"), Identity{}, ErrBadCredentials},
	}
	for _, tt := range tests { // in order: the cache cases follow their first
		got, err := a.Identify(tt.r)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("%s: Identify = %+v, %v; want %+v, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestIdentifyDisabledIgnoresHeaders(t *testing.T) {
	t.Parallel()
	a, err := NewAuthenticator("", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.Enabled() {
		t.Fatal("Enabled without files")
	}
	for _, r := range []*http.Request{basicReq("alice", "x"), req("Bearer x"), req("junk")} {
		if id, err := a.Identify(r); err != nil || !id.Anonymous() {
			t.Errorf("Identify(%q) = %+v, %v; want anonymous", r.Header.Get("Authorization"), id, err)
		}
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	a, hp := newTestAuth(t)
	if _, err := a.Identify(basicReq("alice", "wonderland")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Identify(basicReq("alice", "looking-glass")); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(hp), "htpasswd", bcryptLine(t, "alice", "looking-glass"))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	// Both the cached success and the cached failure are void now.
	if _, err := a.Identify(basicReq("alice", "wonderland")); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("old password after reload: %v, want ErrBadCredentials", err)
	}
	if id, err := a.Identify(basicReq("alice", "looking-glass")); err != nil || id.Name != "alice" {
		t.Errorf("new password after reload: %+v, %v", id, err)
	}
	if _, err := a.Identify(basicReq("bob", "builder")); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("removed user after reload: %v, want ErrBadCredentials", err)
	}
	// A broken file keeps the credentials in force.
	writeFile(t, filepath.Dir(hp), "htpasswd", "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
	if err := a.Reload(); err == nil {
		t.Fatal("Reload of a non-bcrypt file succeeded")
	}
	if _, err := a.Identify(basicReq("alice", "looking-glass")); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := bcryptLine(t, "alice", "pw")
	tests := []struct {
		name, htpasswd, tokens, want string
	}{
		{"sha1 htpasswd", "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "", "line 1: user \"alice\": not a bcrypt hash"},
		{"apr1 htpasswd", "# c\nbob:$apr1$x$y\n", "", "line 2: user \"bob\": not a bcrypt hash"},
		{"no colon", "alice\n", "", "line 1: want name:hash"},
		{"duplicate user", good + good, "", "line 2: user \"alice\" appears twice"},
		{"token not sha256", "", "ci:md5:abcd\n", "line 1: token \"ci\": want name:sha256:"},
		{"token short hex", "", "ci:sha256:abcd\n", "want name:sha256:"},
		{"token name twice", "", tokenLine("ci", "a") + tokenLine("ci", "b"), "token name \"ci\" appears twice"},
		{"token hash twice", "", tokenLine("ci", "a") + tokenLine("cd", "a"), "same hash"},
		{"token name is a user", good, tokenLine("alice", "a"), "also an htpasswd user"},
		{"missing file", filepath.Join(dir, "nope"), "", "no such file"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(dir, string(rune('a'+i)))
			os.Mkdir(d, 0o700)
			hp, tp := "", ""
			if strings.HasPrefix(tt.htpasswd, dir) {
				hp = tt.htpasswd
			} else if tt.htpasswd != "" {
				hp = writeFile(t, d, "htpasswd", tt.htpasswd)
			}
			if tt.tokens != "" {
				tp = writeFile(t, d, "tokens", tt.tokens)
			}
			_, err := NewAuthenticator(hp, tp)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewAuthenticator: %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "W6ph5") || strings.Contains(err.Error(), "$apr1$x$y") {
				t.Errorf("error shows a hash: %v", err)
			}
		})
	}
}

func TestIdentifyWaitEndsWithRequest(t *testing.T) {
	t.Parallel()
	a, _ := newTestAuth(t)
	for range cap(a.sem) { // every bcrypt slot busy
		a.sem <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := basicReq("alice", "wonderland").WithContext(ctx)
	if _, err := a.Identify(r); !errors.Is(err, context.Canceled) {
		t.Errorf("Identify with every slot busy and the request gone: %v, want context.Canceled", err)
	}
}

func BenchmarkIdentifyBasicCached(b *testing.B) {
	a, _ := newTestAuth(b)
	r := basicReq("alice", "wonderland")
	for b.Loop() {
		if _, err := a.Identify(r); err != nil {
			b.Fatal(err)
		}
	}
}

package upstream

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/registry/auth"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

// tokenAuth is a token issuer at /token (as Docker Hub's auth service)
// in front of a real registry that then requires its bearer tokens.
type tokenAuth struct {
	next       http.Handler
	user, pass string // "" user: anonymous tokens
	realm      string // set once the server's URL is known

	mu     sync.Mutex        // guards tokens, asked
	tokens map[string]string // token -> scope
	asked  map[string]int    // scope -> token requests
}

func (a *tokenAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		a.issue(w, r)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/v2/")
	if i := strings.LastIndex(name, "/manifests/"); i > 0 {
		name = name[:i]
	} else if i := strings.LastIndex(name, "/blobs/"); i > 0 {
		name = name[:i]
	} else if i := strings.LastIndex(name, "/tags/"); i > 0 {
		name = name[:i]
	}
	scope := "repository:" + name + ":pull"
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	granted, ok := a.tokens[tok]
	a.mu.Unlock()
	if !ok || (r.URL.Path != "/v2/" && granted != scope) {
		challenge := fmt.Sprintf("Bearer realm=%q,service=%q", a.realm, "test-registry")
		if r.URL.Path != "/v2/" {
			challenge += fmt.Sprintf(",scope=%q", scope)
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	a.next.ServeHTTP(w, r)
}

func (a *tokenAuth) issue(w http.ResponseWriter, r *http.Request) {
	scope := r.URL.Query().Get("scope")
	a.mu.Lock()
	a.asked[scope]++
	a.mu.Unlock()
	if r.Method == http.MethodPost { // OAuth2 refresh-token grant (identitytoken)
		_ = r.ParseForm()
		scope = r.PostForm.Get("scope")
		a.mu.Lock()
		a.asked[scope]++
		a.mu.Unlock()
		if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != a.pass {
			writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid refresh token")
			return
		}
	} else if u, p, _ := r.BasicAuth(); a.user != "" && (u != a.user || p != a.pass) {
		writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	a.mu.Lock()
	a.tokens[tok] = scope
	a.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
}

func (a *tokenAuth) askedFor(scope string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked[scope]
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func withTokenAuth(t *testing.T, up *upstreamReg, user, pass string) *tokenAuth {
	ta := &tokenAuth{next: up.handler, user: user, pass: pass, tokens: map[string]string{}, asked: map[string]int{}}
	ta.realm = up.front.URL + "/token"
	up.fault.next = ta
	return ta
}

func TestBearerTokenAuth(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 2048)
	ta := withTokenAuth(t, up, "alice", "s3cret-pw")
	d, layer := layerOf(t, img)

	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, Username: "alice", Password: "s3cret-pw"})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	for range 3 {
		if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); err != nil {
			t.Fatal(err)
		}
		rc, _, err := c.FetchBlob(ctx, repo.Blob(d), 0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(b) != string(layer) {
			t.Fatalf("blob: %d bytes, %v", len(b), err)
		}
	}
	if n := ta.askedFor("repository:team/app:pull"); n != 1 {
		t.Errorf("token endpoint asked %d times for the scope, want 1", n)
	}
	if _, err := c.HeadManifest(ctx, repoOf(c, "team/other").Manifest("v1")); !errors.Is(err, oci.ErrManifestUnknown) {
		t.Errorf("other repo: %v", err)
	}
	if n := ta.askedFor("repository:team/other:pull"); n != 1 {
		t.Errorf("token endpoint asked %d times for a second scope, want 1", n)
	}

	// A token the registry no longer honours is renewed on its 401.
	ta.mu.Lock()
	clear(ta.tokens)
	ta.mu.Unlock()
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); err != nil {
		t.Fatalf("after token revocation: %v", err)
	}
	if n := ta.askedFor("repository:team/app:pull"); n != 2 {
		t.Errorf("token endpoint asked %d times after a 401, want 2", n)
	}

	wrong := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, Username: "alice", Password: "guess"})
	_, err := wrong.HeadManifest(ctx, repo.Manifest("v1"))
	if !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("wrong password: %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), "guess") || !strings.Contains(err.Error(), "incorrect username or password") {
		t.Errorf("error %q: want the upstream's message and no secret", err)
	}
}

func TestAnonymousBearerToken(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "library/alpine", "3", 512)
	ta := withTokenAuth(t, up, "", "")
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	if _, _, err := c.GetManifest(testCtx(t), repoOf(c, "library/alpine").Manifest("3")); err != nil {
		t.Fatal(err)
	}
	if n := ta.askedFor("repository:library/alpine:pull"); n != 1 {
		t.Errorf("token asked %d times, want 1", n)
	}
}

// htpasswdAuth puts distribution's htpasswd access controller in front of
// a real registry.
func htpasswdAuth(t *testing.T, up *upstreamReg, user, pass string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ac, err := auth.GetAccessController("htpasswd", map[string]any{"realm": "berth-test", "path": path})
	if err != nil {
		t.Fatal(err)
	}
	up.fault.next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := ac.Authorized(r); err != nil {
			var ch auth.Challenge
			if errors.As(err, &ch) {
				ch.SetHeaders(r, w)
			}
			writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		up.handler.ServeHTTP(w, r)
	})
}

func TestBasicAuthHtpasswd(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 1024)
	htpasswdAuth(t, up, "bob", "hunter2")
	d, layer := layerOf(t, img)

	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, Username: "bob", PasswordFile: pwFile})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	rc, size, err := c.FetchBlob(ctx, repo.Blob(d), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if size != int64(len(layer)) || string(b) != string(layer) {
		t.Fatalf("blob %d bytes of %d", len(b), size)
	}

	wrong := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, Username: "bob", Password: "nope"})
	if _, err := wrong.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	anon := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	if _, _, err := anon.GetManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("anonymous: %v", err)
	}

	// Reload picks up a new password file content.
	if err := os.WriteFile(pwFile, []byte("changed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("after reload with a wrong password: %v", err)
	}
}

// A realm on a private IP literal of another host:port is refused as
// DENIED (go-containerregistry's guard against being steered at a metadata
// service), not taken for an unreachable endpoint: were the endpoint backed
// off, the second call would answer UNAVAILABLE without trying.
func TestPrivateRealmElsewhereIsDenied(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 1024)
	ta := withTokenAuth(t, up, "", "")
	ta.realm = "http://127.0.0.9:1/token" // loopback literal, another host: never dialled
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	for i := range 2 {
		_, err := c.HeadManifest(ctx, repo.Manifest("v1"))
		if !errors.Is(err, oci.ErrDenied) || errors.Is(err, oci.ErrUnavailable) || !strings.Contains(err.Error(), "realm") {
			t.Fatalf("call %d: %v, want DENIED naming the realm", i, err)
		}
	}
}

package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/crypto/bcrypt"
)

// accessNode is a node with client auth: pub is its default registry,
// anonymous; priv has upstream credentials, so it is served to
// authenticated clients only; alice may read it, bob may not.
func accessNode(t *testing.T, pub, priv *upstreamtest.Registry) *node {
	t.Helper()
	dir := t.TempDir()
	var lines string
	for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		h, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines += u[0] + ":" + string(h) + "\n"
	}
	sum := sha256.Sum256([]byte("machine-token"))
	htpasswd, tokens := filepath.Join(dir, "htpasswd"), filepath.Join(dir, "tokens")
	if err := os.WriteFile(htpasswd, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokens, []byte("ci:sha256:"+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startNode(t, pub, func(c *config.Config) {
		c.Auth.Htpasswd, c.Auth.Tokens = htpasswd, tokens
		c.Registries = append(c.Registries, config.Registry{Name: priv.Host, Endpoints: []string{priv.URL},
			Username: "puller", Password: "upstream-pw", Users: []string{"alice", "ci"}})
	})
}

// TestAccessDecidedFirst: a client that may not read a repository gets
// 401 (with a challenge) or 403 before berth asks the store or the
// upstream anything; one that may gets the bytes.
func TestAccessDecidedFirst(t *testing.T) {
	pub, priv := upstreamtest.New(t), upstreamtest.New(t)
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := priv.Push(t, "team/app", "v1", img)
	n := accessNode(t, pub, priv)
	url := n.URL + "/v2/" + priv.Host + "/team/app/manifests/v1"
	basic := func(u, p string) string {
		r, _ := http.NewRequest(http.MethodGet, "http://x", nil)
		r.SetBasicAuth(u, p)
		return r.Header.Get("Authorization")
	}
	before := priv.Total()
	for _, tt := range []struct {
		name, auth, code string
		status           int
	}{
		{"anonymous", "", "UNAUTHORIZED", 401},
		{"empty basic", basic("", ""), "UNAUTHORIZED", 401},
		{"wrong password", basic("alice", "nope"), "UNAUTHORIZED", 401},
		{"unknown user", basic("mallory", "alice-pw"), "UNAUTHORIZED", 401},
		{"bad token", "Bearer nope", "UNAUTHORIZED", 401},
		{"bob is not listed", basic("bob", "bob-pw"), "DENIED", 403},
	} {
		resp, body := get(t, http.MethodGet, url, "Accept", manifestAccept, "Authorization", tt.auth)
		if resp.StatusCode != tt.status || errcodeOf(body) != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, resp.StatusCode, body, tt.status, tt.code)
		}
		if ch := resp.Header.Get("WWW-Authenticate"); (tt.status == 401) != (ch == `Basic realm="berth", charset="UTF-8"`) {
			t.Errorf("%s: WWW-Authenticate %q", tt.name, ch)
		}
	}
	if got := priv.Total(); got != before {
		t.Errorf("refused requests reached the upstream: %d requests", got-before)
	}
	for _, auth := range []string{basic("alice", "alice-pw"), "Bearer machine-token", basic("ci", "machine-token")} {
		resp, body := get(t, http.MethodGet, url, "Accept", manifestAccept, "Authorization", auth)
		if resp.StatusCode != 200 || sha(body) != want.String() {
			t.Errorf("%s: %d, manifest %s, want %s", auth[:6], resp.StatusCode, sha(body), want)
		}
	}
	// Alice pulls the layers: the private bytes are on disk now.
	layers, _ := img.Layers()
	var private []string
	for _, l := range layers {
		d, _ := l.Digest()
		private = append(private, d.String())
		if resp, body := get(t, http.MethodGet, n.URL+"/v2/"+priv.Host+"/team/app/blobs/"+d.String(), "Authorization", basic("alice", "alice-pw")); resp.StatusCode != 200 || sha(body) != d.String() {
			t.Fatalf("alice GET layer %s: %d", d, resp.StatusCode)
		}
	}
	private = append(private, want.String())
	// Asked for where they do not live, they are not served from disk:
	// the repository's own upstream is asked, and says 404.
	for _, d := range private {
		kind := "blobs"
		if d == want.String() {
			kind = "manifests"
		}
		path := "/v2/library/pub/" + kind + "/" + d
		before := pub.Count(http.MethodGet, path)
		if resp, body := get(t, http.MethodGet, n.URL+path, "Accept", manifestAccept); resp.StatusCode != 404 {
			t.Errorf("%s anonymously under the public registry: %d %s, want 404", d, resp.StatusCode, body)
		}
		if pub.Count(http.MethodGet, path) == before {
			t.Errorf("%s under the public registry: answered without asking that registry", d)
		}
		if resp, body := get(t, http.MethodGet, n.URL+"/v2/"+priv.Host+"/team/other/"+kind+"/"+d, "Accept", manifestAccept, "Authorization", basic("alice", "alice-pw")); resp.StatusCode != 404 {
			t.Errorf("%s as alice under team/other: %d %s, want 404", d, resp.StatusCode, body)
		}
	}
	// A repository that does have it (the same image pushed there) is
	// asked once, then served from disk.
	priv.Push(t, "team/copy", "v1", img)
	for _, d := range private[:len(private)-1] {
		path := "/v2/team/copy/blobs/" + d
		for i := range 2 {
			if resp, body := get(t, http.MethodGet, n.URL+"/v2/"+priv.Host+"/team/copy/blobs/"+d, "Authorization", "Bearer machine-token"); resp.StatusCode != 200 || sha(body) != d {
				t.Errorf("%s under team/copy, try %d: %d", d, i, resp.StatusCode)
			}
		}
		if got := priv.Count(http.MethodGet, path); got != 1 {
			t.Errorf("%s under team/copy: upstream asked %d times, want once (to vouch), then the store", d, got)
		}
	}
	// /v2/: anonymous clients are asked to log in (clients learn so that
	// berth takes credentials); valid credentials get 200.
	if resp, _ := get(t, http.MethodGet, n.URL+"/v2/"); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("GET /v2/ anonymously: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := get(t, http.MethodGet, n.URL+"/v2/", "Authorization", basic("bob", "bob-pw")); resp.StatusCode != 200 {
		t.Errorf("GET /v2/ as bob: %d", resp.StatusCode)
	}
	// The public registry needs nothing.
	pubImg, _ := random.Image(1024, 1)
	pd := pub.Push(t, "library/pub", "v1", pubImg)
	resp, body := get(t, http.MethodGet, n.URL+"/v2/library/pub/manifests/v1", "Accept", manifestAccept)
	if resp.StatusCode != 200 || sha(body) != pd.String() {
		t.Errorf("public manifest anonymously: %d", resp.StatusCode)
	}
}

func errcodeOf(body []byte) string {
	var e struct{ Errors []struct{ Code string } }
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// TestUpstream401AnswersBerthsChallenge: when the upstream refuses berth's
// own credentials, the client gets 401 UNAUTHORIZED as errcode JSON with
// berth's challenge where berth has client auth, none where it has not,
// and never the upstream's realm.
func TestUpstream401AnswersBerthsChallenge(t *testing.T) {
	t.Parallel()
	pub, priv := upstreamtest.New(t), upstreamtest.New(t)
	n := accessNode(t, pub, priv)
	plain := startNode(t, pub)
	pub.SetStatus(http.StatusUnauthorized)
	priv.SetStatus(http.StatusUnauthorized)
	r, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	r.SetBasicAuth("alice", "alice-pw")
	alice := r.Header.Get("Authorization")
	for _, tt := range []struct {
		name, url, auth, challenge string
	}{
		{"alice, private registry", n.URL + "/v2/" + priv.Host + "/team/app/manifests/v1", alice, `Basic realm="berth", charset="UTF-8"`},
		{"alice, private blob", n.URL + "/v2/" + priv.Host + "/team/app/blobs/sha256:" + strings.Repeat("1", 64), alice, `Basic realm="berth", charset="UTF-8"`},
		{"anonymous, public registry", n.URL + "/v2/library/pub/manifests/v1", "", `Basic realm="berth", charset="UTF-8"`},
		{"anonymous, tags list", n.URL + "/v2/library/pub/tags/list", "", `Basic realm="berth", charset="UTF-8"`},
		{"berth without client auth", plain.URL + "/v2/library/pub/manifests/v1", "", ""},
	} {
		resp, body := get(t, http.MethodGet, tt.url, "Accept", manifestAccept, "Authorization", tt.auth)
		if resp.StatusCode != http.StatusUnauthorized || errcodeOf(body) != "UNAUTHORIZED" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s %s, want 401 UNAUTHORIZED", tt.name, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if ch := resp.Header.Values("WWW-Authenticate"); len(ch) > 1 || tt.challenge == "" && len(ch) != 0 || tt.challenge != "" && (len(ch) != 1 || ch[0] != tt.challenge) {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tt.name, ch, tt.challenge)
		}
		if strings.Contains(fmt.Sprint(resp.Header), "/token") || strings.Contains(fmt.Sprint(resp.Header), "upstreamtest") {
			t.Errorf("%s: the upstream's realm reached the client: %v", tt.name, resp.Header)
		}
	}
}

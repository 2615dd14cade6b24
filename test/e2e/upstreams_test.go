package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestTokenAuthUpstream: containerd pulls through berth from a registry
// with Docker-style token auth. Public pulls are anonymous; a private
// repository answers berth's anonymous token with UNAUTHORIZED, which the
// client must see as errcode JSON, and a berth with the credentials in
// its config file pulls it.
func TestTokenAuthUpstream(t *testing.T) {
	t.Parallel()
	needBerth(t)
	ts := newTokenServer(t)
	// The realm shares the upstream's host:port (the proxy routes /token):
	// go-containerregistry's transport refuses a realm on another private
	// or loopback host.
	up := newCountingProxyWith(t, ts)
	up.SetTarget(startRegistry(t, ts.registryConfig(up.Addr), http.StatusUnauthorized))
	push := remote.WithAuth(&authn.Basic{Username: ts.user, Password: ts.pass})
	app := pushImage(t, up.Addr, "e2e/app", "v1", false, push)
	secret := pushImage(t, up.Addr, "private/secret", "v1", false, push)
	before, authsBefore := ts.Scopes(), up.Auths()
	name := up.Addr
	anon := startBerth(t, berthOpts{Registries: map[string]string{name: "http://" + up.Addr}, Default: name})

	t.Run("containerd", func(t *testing.T) {
		c := startContainerd(t)
		c.mirror(t, name, anon.Addr)
		c.pull(t, name+"/e2e/app:v1", app)
		assertBlobsOnce(t, app.Blobs, up)
		if up.Auths() == authsBefore {
			t.Errorf("no upstream request carried a token:\n%s", up.Log())
		}
		scope := "repository:e2e/app:pull"
		if n := ts.Scopes()[scope] - before[scope]; n != 1 {
			t.Errorf("token endpoint issued %d tokens for %s during one pull, want 1 (all scopes: %v)", n, scope, ts.Scopes())
		}
	})
	t.Run("unauthorized", func(t *testing.T) {
		code, body := get(t, "http://"+anon.Addr+"/v2/private/secret/manifests/v1")
		if code != http.StatusUnauthorized || errCode(body) != "UNAUTHORIZED" {
			t.Errorf("GET private manifest without credentials: %d %s, want 401 with errcode UNAUTHORIZED", code, body)
		}
	})
	t.Run("credentials", func(t *testing.T) {
		withCreds := startBerth(t, berthOpts{Registries: map[string]string{name: "http://" + up.Addr}, Default: name,
			Creds: map[string][2]string{name: {ts.user, ts.pass}}})
		crane := tool(t, "crane")
		got := mustRun(t, time.Minute, []string{"HOME=" + t.TempDir()}, crane, "--insecure", "digest", withCreds.Addr+"/private/secret:v1")
		if strings.TrimSpace(got) != secret.Digest {
			t.Errorf("crane digest through berth with credentials = %q, want %s", got, secret.Digest)
		}
		for _, d := range secret.Blobs {
			code, body := get(t, "http://"+withCreds.Addr+"/v2/private/secret/blobs/"+d)
			if code != http.StatusOK || digestOf(body) != d {
				t.Errorf("GET blob %s: %d, %d bytes of %s", d, code, len(body), digestOf(body))
			}
		}
	})
}

// TestTwoTier: containerd -> node berth -> site berth -> upstream. Both
// tiers fetch each blob once; a second node behind the same site is
// served from the site's cache without asking the upstream again.
func TestTwoTier(t *testing.T) {
	t.Parallel()
	needBerth(t)
	reg := startRegistry(t, "", 200)
	up := newCountingProxy(t, reg)
	app := pushImage(t, reg, "e2e/app", "v1", false)
	multi := pushIndex(t, reg, "e2e/multi", "v1")
	name := up.Addr
	site := startBerth(t, berthOpts{Registries: map[string]string{name: "http://" + up.Addr}, Default: name})
	mid := newCountingProxy(t, site.Addr)
	node := func() *berth {
		return startBerth(t, berthOpts{Registries: map[string]string{name: "http://" + mid.Addr}, Default: name})
	}

	c := startContainerd(t)
	c.mirror(t, name, node().Addr)
	c.pull(t, name+"/e2e/app:v1", app)
	c.pull(t, name+"/e2e/multi:v1", multi)
	want := append(append([]string{}, app.Blobs...), multi.Blobs...)
	assertBlobsOnce(t, want, up)
	assertBlobsOnce(t, want, mid)

	manifests := up.Manifests()
	c2 := startContainerd(t)
	c2.mirror(t, name, node().Addr)
	c2.pull(t, name+"/e2e/app:v1", app)
	assertBlobsOnce(t, want, up)
	assertBlobGets(t, app.Blobs, 2, mid)
	if n := up.Manifests() - manifests; n != 0 {
		t.Errorf("the site asked the upstream %d manifest requests within the tag TTL, want 0:\n%s", n, up.Log())
	}
}

// TestUpstreamOutage: with a tag TTL of 1ms every tag is revalidated, so
// once the upstream is down (answering 502, then refusing connections)
// only stale-if-error lets a fresh containerd still pull the cached image.
func TestUpstreamOutage(t *testing.T) {
	t.Parallel()
	needBerth(t)
	reg, regProc := startRegistryProc(t, "", 200)
	up := newCountingProxy(t, reg)
	app := pushImage(t, reg, "e2e/app", "v1", false)
	name := up.Addr
	b := startBerth(t, berthOpts{Registries: map[string]string{name: "http://" + up.Addr}, Default: name,
		Extra: []string{"--tag-ttl", "1ms"}})
	pull := func(stage string) {
		t.Run(stage, func(t *testing.T) {
			c := startContainerd(t)
			c.mirror(t, name, b.Addr)
			c.pull(t, name+"/e2e/app:v1", app)
		})
	}
	pull("warm")
	before := up.Manifests()
	pull("revalidated")
	if up.Manifests() == before {
		t.Errorf("with a 1ms tag TTL berth did not revalidate the tag upstream:\n%s", up.Log())
	}
	regProc.Stop(10 * time.Second)
	pull("upstream 502")
	up.Close()
	pull("upstream refusing")
	assertBlobsOnce(t, app.Blobs, up)
}

// get GETs url and returns the status and body.
func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, b
}

// errCode returns the first OCI errcode in an error body, or "".
var errCode = proctest.ErrCode

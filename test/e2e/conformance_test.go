package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// manifestAccept is the Accept list containerd sends when it resolves.
var manifestAccept = []string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"*/*",
}

// apiCase is one request sent both to the upstream registry and to berth.
type apiCase struct {
	name, method, path string
	accept             []string
	rangeHdr           string
	// berthErr, when set, is the errcode berth answers where distribution
	// answers a plain-text body: berth gives every 4xx as errcode JSON.
	berthErr string
}

// answer is what of a response must be equal.
type answer struct {
	Status                                  int
	ContentType, Digest, Length, Range, Tag string
	ETag, Body, ErrCode, APIVersion         string
}

// TestAPIConformance sends the read side of the distribution API to the
// upstream registry and to berth (cold, then warm, then routed by ns) and
// requires the same status, headers and bytes, as a client would see
// them. Push and delete must answer 405 UNSUPPORTED.
func TestAPIConformance(t *testing.T) {
	t.Parallel()
	needBerth(t)
	reg := startRegistry(t, "", 200)
	up := newCountingProxy(t, reg)
	app := pushImage(t, reg, "e2e/app", "v1", false)
	multi := pushIndex(t, reg, "e2e/multi", "v1")
	dock := pushImage(t, reg, "e2e/docker", "v1", true)
	tagAgain(t, reg, app, "v2", "v3")
	b := startBerth(t, berthOpts{Registries: map[string]string{up.Addr: "http://" + up.Addr}, Default: up.Addr})

	layer := app.Blobs[len(app.Blobs)-1]
	cases := []apiCase{
		{name: "base", method: "GET", path: "/v2/"},
		{name: "index by tag", method: "GET", path: "/v2/e2e/multi/manifests/v1", accept: manifestAccept},
		{name: "head image by tag", method: "HEAD", path: "/v2/e2e/app/manifests/v1", accept: manifestAccept},
		{name: "image by tag", method: "GET", path: "/v2/e2e/app/manifests/v1", accept: manifestAccept},
		{name: "head index by tag", method: "HEAD", path: "/v2/e2e/multi/manifests/v1", accept: manifestAccept},
		{name: "docker image by tag", method: "GET", path: "/v2/e2e/docker/manifests/v1", accept: manifestAccept},
		{name: "image by digest", method: "GET", path: "/v2/e2e/app/manifests/" + app.Digest, accept: manifestAccept},
		{name: "head child by digest", method: "HEAD", path: "/v2/e2e/multi/manifests/" + multi.Children[1], accept: manifestAccept},
		{name: "child by digest", method: "GET", path: "/v2/e2e/multi/manifests/" + multi.Children[0], accept: []string{"application/vnd.oci.image.manifest.v1+json", "*/*"}},
		{name: "docker by digest", method: "GET", path: "/v2/e2e/docker/manifests/" + dock.Digest},
		{name: "blob range cold", method: "GET", path: "/v2/e2e/app/blobs/" + layer, rangeHdr: "bytes=1000-99999"},
		{name: "blob", method: "GET", path: "/v2/e2e/app/blobs/" + layer},
		{name: "head blob", method: "HEAD", path: "/v2/e2e/app/blobs/" + app.Blobs[0]},
		{name: "config blob", method: "GET", path: "/v2/e2e/app/blobs/" + app.Blobs[0]},
		{name: "blob open range", method: "GET", path: "/v2/e2e/app/blobs/" + layer, rangeHdr: "bytes=4096-"},
		{name: "blob range past end", method: "GET", path: "/v2/e2e/app/blobs/" + app.Blobs[0], rangeHdr: "bytes=99999999-", berthErr: "RANGE_INVALID"},
		{name: "tags", method: "GET", path: "/v2/e2e/app/tags/list"},
		{name: "tags page", method: "GET", path: "/v2/e2e/app/tags/list?n=1&last=v1"},
		{name: "unknown tag", method: "GET", path: "/v2/e2e/app/manifests/nope", accept: manifestAccept},
		{name: "head unknown tag", method: "HEAD", path: "/v2/e2e/app/manifests/nope", accept: manifestAccept},
		{name: "unknown blob", method: "GET", path: "/v2/e2e/app/blobs/sha256:" + strings.Repeat("0", 64)},
		{name: "unknown manifest digest", method: "GET", path: "/v2/e2e/app/manifests/sha256:" + strings.Repeat("1", 64)},
		{name: "bad digest", method: "GET", path: "/v2/e2e/app/blobs/sha256:xyz"},
		// Accept negotiation as distribution does it: OCI content only for
		// clients that list its type.
		{name: "oci image, docker accept", method: "GET", path: "/v2/e2e/app/manifests/v1", accept: []string{"application/vnd.docker.distribution.manifest.v2+json"}},
		{name: "oci image, no accept", method: "GET", path: "/v2/e2e/app/manifests/v1"},
		{name: "oci index, image accept", method: "GET", path: "/v2/e2e/multi/manifests/v1", accept: []string{"application/vnd.oci.image.manifest.v1+json"}},
		{name: "image, tag v2", method: "GET", path: "/v2/e2e/app/manifests/v2", accept: manifestAccept[2:3]},
		{name: "docker, oci accept", method: "GET", path: "/v2/e2e/docker/manifests/v1", accept: []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"}},
		{name: "head blob unknown", method: "HEAD", path: "/v2/e2e/app/blobs/sha256:" + strings.Repeat("2", 64)},
		{name: "unknown repo", method: "GET", path: "/v2/e2e/nothere/manifests/v1", accept: manifestAccept},
		{name: "unknown repo tags", method: "GET", path: "/v2/e2e/nothere/tags/list"},
	}
	for _, round := range []string{"cold", "warm", "ns"} {
		for _, c := range cases {
			t.Run(round+"/"+c.name, func(t *testing.T) {
				want := doAPI(t, "http://"+reg, c, "")
				if c.berthErr != "" && strings.HasPrefix(want.ErrCode, "not errcode") {
					want.ErrCode = c.berthErr
				}
				ns := ""
				if round == "ns" {
					ns = up.Addr
				}
				got := doAPI(t, "http://"+b.Addr, c, ns)
				if want != got {
					t.Errorf("%s %s (Accept %v, Range %q):\n upstream %+v\n berth    %+v", c.method, c.path, c.accept, c.rangeHdr, want, got)
				}
			})
		}
	}
	t.Run("referrers", func(t *testing.T) {
		// distribution v3.0.0 has no referrers API (a plain-text 404);
		// berth passes the 404 on, as errcode JSON.
		got := doAPI(t, "http://"+b.Addr, apiCase{method: "GET", path: "/v2/e2e/app/referrers/" + app.Digest}, "")
		if got.Status != http.StatusNotFound || strings.HasPrefix(got.ErrCode, "not errcode") {
			t.Errorf("GET referrers: %d %s, want 404 with errcode JSON", got.Status, got.ErrCode)
		}
	})
	t.Run("unknown registry refused", func(t *testing.T) {
		// berth is never an open proxy: a registry it does not know, named by
		// ns, is refused (a loopback port nothing listens on, to be safe).
		got := doAPI(t, "http://"+b.Addr, apiCase{method: "GET", path: "/v2/e2e/app/manifests/v1", accept: manifestAccept}, deadAddr(t))
		if got.Status < 400 || got.Status >= 500 || strings.HasPrefix(got.ErrCode, "not errcode") || got.ErrCode == "" {
			t.Errorf("GET with ns=<unknown registry>: %d %s, want a 4xx errcode", got.Status, got.ErrCode)
		}
	})
	t.Run("push refused", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"POST", "/v2/e2e/app/blobs/uploads/"},
			{"PUT", "/v2/e2e/app/manifests/v9"},
			{"DELETE", "/v2/e2e/app/manifests/" + app.Digest},
			{"DELETE", "/v2/e2e/app/blobs/" + layer},
		} {
			got := doAPI(t, "http://"+b.Addr, apiCase{method: r.method, path: r.path}, "")
			if got.Status != http.StatusMethodNotAllowed || got.ErrCode != "UNSUPPORTED" {
				t.Errorf("%s %s: %d %s, want 405 UNSUPPORTED", r.method, r.path, got.Status, got.ErrCode)
			}
		}
	})
}

// doAPI sends c to base (with ?ns= when ns is set) and returns what a
// client sees. Blob bodies are compared by digest.
func doAPI(t *testing.T, base string, c apiCase, ns string) answer {
	t.Helper()
	u := base + c.path
	if ns != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "ns=" + url.QueryEscape(ns)
	}
	req, err := http.NewRequest(c.method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.accept {
		req.Header.Add("Accept", a)
	}
	if c.rangeHdr != "" {
		req.Header.Set("Range", c.rangeHdr)
	}
	req.Header.Set("Accept-Encoding", "gzip") // as Go's client sends it; the answer must not be encoded
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", c.method, u, err)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Errorf("%s %s: Content-Encoding %q", c.method, u, enc)
	}
	a := answer{Status: resp.StatusCode, Digest: resp.Header.Get("Docker-Content-Digest"),
		APIVersion: resp.Header.Get("Docker-Distribution-API-Version")}
	switch {
	case resp.StatusCode >= 400:
		a.ErrCode = errCode(body)
		if a.ErrCode == "" && c.method != "HEAD" {
			a.ErrCode = fmt.Sprintf("not errcode JSON: %.200q", body)
		}
		a.Digest, a.APIVersion = "", "" // not part of an error's contract
	case strings.Contains(c.path, "/manifests/"):
		a.ContentType, a.ETag = resp.Header.Get("Content-Type"), resp.Header.Get("ETag")
		a.Length = resp.Header.Get("Content-Length")
	default:
		a.Length, a.Range = resp.Header.Get("Content-Length"), resp.Header.Get("Content-Range")
	}
	if len(body) > 0 && resp.StatusCode < 400 {
		a.Body = digestOf(body)
	}
	if strings.HasSuffix(c.path, "/v2/") {
		a.Body, a.Length = "", "" // berth's and the registry's {} may differ
	}
	return a
}

package registry_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/registry"
	"github.com/berth-registry/berth/test/mirrortest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
)

// The in-process distribution registry (upstreamtest) leaves its
// notification broadcasters running; every other goroutine must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
}

// api is the handler over a real mirror, store and upstream client, in
// front of a real registry, served on a loopback port.
type api struct {
	url string
	up  *upstreamtest.Registry
	c   *http.Client
}

func newAPI(t *testing.T) *api {
	t.Helper()
	p := mirrortest.New(t)
	h := registry.New(mirror.New(p.Store, nil, p.Upstream, mirror.Config{}), registry.Options{
		Router:      oci.Router{Known: p.Upstream.Known, Default: mirrortest.Registry},
		Passthrough: p.Upstream,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	return &api{url: srv.URL, up: p.Up, c: client}
}

func (a *api) do(t *testing.T, method, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, a.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := a.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

const absent = "sha256:0123456789012345678901234567890123456789012345678901234567890123"

func TestEveryErrcode(t *testing.T) {
	a := newAPI(t)
	img, _ := random.Image(256, 1)
	a.up.Push(t, "team/app", "v1", img)
	for _, c := range []struct {
		name, method, path string
		hdr                []string
		upstream           int // status the upstream answers everything with; 0: itself
		status             int
		code               errcode.ErrorCode
	}{
		{"name invalid", "GET", "/v2/Team/App/manifests/v1", nil, 0, 400, errcode.ErrorCodeNameInvalid},
		{"tag invalid", "GET", "/v2/team/app/manifests/-v1", nil, 0, 400, errcode.ErrorCodeTagInvalid},
		{"digest invalid", "GET", "/v2/team/app/blobs/sha256:zz", nil, 0, 400, errcode.ErrorCodeDigestInvalid},
		{"registry unknown", "GET", "/v2/team/app/manifests/v1?ns=other.test", nil, 0, 403, errcode.ErrorCodeDenied},
		{"mirror loop", "GET", "/v2/team/app/manifests/v1", []string{oci.HopHeader, "4"}, 0, 403, errcode.ErrorCodeDenied},
		{"bad hop count", "GET", "/v2/team/app/manifests/v1", []string{oci.HopHeader, "x"}, 0, 403, errcode.ErrorCodeDenied},
		{"manifest unknown", "GET", "/v2/team/app/manifests/v2", nil, 0, 404, errcode.ErrorCodeManifestUnknown},
		{"blob unknown", "GET", "/v2/team/app/blobs/" + absent, nil, 0, 404, errcode.ErrorCodeBlobUnknown},
		{"name unknown", "GET", "/v2/team/nothing/tags/list", nil, 0, 404, errcode.ErrorCodeNameUnknown},
		{"not a route", "GET", "/v2/team/app", nil, 0, 404, errcode.ErrorCodeNameUnknown},
		{"push", "PUT", "/v2/team/app/manifests/v1", nil, 0, 405, errcode.ErrorCodeUnsupported},
		{"upload", "POST", "/v2/team/app/blobs/uploads/", nil, 0, 405, errcode.ErrorCodeUnsupported},
		{"delete", "DELETE", "/v2/team/app/blobs/" + absent, nil, 0, 405, errcode.ErrorCodeUnsupported},
		{"rate limited", "GET", "/v2/team/app/manifests/v9", nil, 429, 429, errcode.ErrorCodeTooManyRequests},
		{"outage", "GET", "/v2/team/app/manifests/v9", nil, 503, 503, errcode.ErrorCodeUnavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.up.SetStatus(c.upstream)
			defer a.up.SetStatus(0)
			resp, body := a.do(t, c.method, c.path, c.hdr...)
			var errs struct {
				Errors []struct{ Code string }
			}
			if resp.StatusCode != c.status || json.Unmarshal(body, &errs) != nil || len(errs.Errors) != 1 ||
				errs.Errors[0].Code != c.code.String() || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %s: %d %s %q, want %d %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, c.status, c.code)
			}
		})
	}
}

func TestBaseAnswersEmptyJSON(t *testing.T) {
	a := newAPI(t)
	resp, body := a.do(t, "GET", "/v2/")
	if resp.StatusCode != 200 || string(body) != "{}" || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestAcceptNegotiation(t *testing.T) {
	a := newAPI(t)
	dockerImg, _ := random.Image(256, 1) // a Docker schema 2 image
	ociImg := mutate.MediaType(mutate.ConfigMediaType(dockerImg, types.OCIConfigJSON), types.OCIManifestSchema1)
	ociDigest := a.up.Push(t, "team/app", "oci", ociImg)
	dockerDigest := a.up.Push(t, "team/app", "docker", dockerImg)
	amd64, _ := random.Image(256, 1)
	arm64, _ := random.Image(256, 1)
	list := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm64, Descriptor: ggcrv1.Descriptor{Platform: &ggcrv1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd64, Descriptor: ggcrv1.Descriptor{Platform: &ggcrv1.Platform{OS: "linux", Architecture: "amd64"}}},
	), types.DockerManifestList)
	listDigest := a.up.PushIndex(t, "team/app", "list", list)
	amd64Digest, _ := amd64.Digest()

	const accept = "Accept"
	for _, c := range []struct {
		name, ref, accept string
		status            int
		mediaType, digest string // of the answer; "" on an error
	}{
		{"OCI manifest to an OCI client", "oci", v1.MediaTypeImageManifest, 200, v1.MediaTypeImageManifest, ociDigest.String()},
		{"OCI manifest to a Docker-only client", "oci", schema2.MediaTypeManifest, 404, "", ""},
		{"OCI manifest to */*", "oci", "*/*", 200, v1.MediaTypeImageManifest, ociDigest.String()},
		{"OCI manifest to a client listing it among others", "oci", schema2.MediaTypeManifest + ", " + v1.MediaTypeImageManifest + ";q=0.5", 200, v1.MediaTypeImageManifest, ociDigest.String()},
		{"Docker manifest to anyone", "docker", "", 200, schema2.MediaTypeManifest, dockerDigest.String()},
		{"manifest list to a client that reads one", "list", manifestlist.MediaTypeManifestList, 200, manifestlist.MediaTypeManifestList, listDigest.String()},
		{"manifest list by tag to an old client: its linux/amd64 image", "list", schema2.MediaTypeManifest, 200, schema2.MediaTypeManifest, amd64Digest.String()},
		{"manifest list by digest is never swapped", listDigest.String(), schema2.MediaTypeManifest, 200, manifestlist.MediaTypeManifestList, listDigest.String()},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				var hdr []string
				if c.accept != "" {
					hdr = []string{accept, c.accept}
				}
				resp, body := a.do(t, method, "/v2/team/app/manifests/"+c.ref, hdr...)
				if resp.StatusCode != c.status {
					t.Fatalf("%s: %d %q, want %d", method, resp.StatusCode, body, c.status)
				}
				if c.status != 200 {
					if method == "GET" && !strings.Contains(string(body), errcode.ErrorCodeManifestUnknown.String()) {
						t.Fatalf("GET: %q, want MANIFEST_UNKNOWN", body)
					}
					continue
				}
				if mt, d := resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"); mt != c.mediaType || d != c.digest {
					t.Fatalf("%s: %s %s, want %s %s", method, mt, d, c.mediaType, c.digest)
				}
				if method == "GET" && string(digestOf(body)) != c.digest {
					t.Fatalf("GET body is %s, want %s", digestOf(body), c.digest)
				}
			}
		})
	}
}

func digestOf(b []byte) string {
	h, _, _ := ggcrv1.SHA256(strings.NewReader(string(b)))
	return h.String()
}

// TestOldClientAndAnIndexWithoutItsPlatform: a client that reads no index
// asks a tag whose manifest list has no linux/amd64 image: MANIFEST_UNKNOWN,
// not another platform's image and not the list.
func TestOldClientAndAnIndexWithoutItsPlatform(t *testing.T) {
	a := newAPI(t)
	arm64, _ := random.Image(256, 1)
	list := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm64, Descriptor: ggcrv1.Descriptor{Platform: &ggcrv1.Platform{OS: "linux", Architecture: "arm64"}}},
	), types.DockerManifestList)
	a.up.PushIndex(t, "team/app", "arm-only", list)
	for _, method := range []string{"GET", "HEAD"} {
		resp, body := a.do(t, method, "/v2/team/app/manifests/arm-only", "Accept", schema2.MediaTypeManifest)
		if resp.StatusCode != 404 || method == "GET" && !strings.Contains(string(body), errcode.ErrorCodeManifestUnknown.String()) {
			t.Fatalf("%s: %d %q, want 404 MANIFEST_UNKNOWN", method, resp.StatusCode, body)
		}
	}
}

// A manifest GET or HEAD without Range or conditions is answered without
// ServeContent; its answer is ServeContent's to the letter: the same status,
// headers (but Date) and body as one with a condition that does not hold.
func TestManifestPlainAnswerIsServeContents(t *testing.T) {
	a := newAPI(t)
	img, _ := random.Image(256, 1)
	d := a.up.Push(t, "team/app", "v1", img)
	const accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json;q=0.9"
	for _, method := range []string{"GET", "HEAD"} {
		for _, ref := range []string{"v1", d.String()} {
			path := "/v2/team/app/manifests/" + ref
			plainResp, plainBody := a.do(t, method, path, "Accept", accept)
			condResp, condBody := a.do(t, method, path, "Accept", accept, "If-None-Match", `"sha256:other"`)
			plainResp.Header.Del("Date")
			condResp.Header.Del("Date")
			if plainResp.StatusCode != 200 || condResp.StatusCode != 200 || string(plainBody) != string(condBody) ||
				fmt.Sprint(plainResp.Header) != fmt.Sprint(condResp.Header) || plainResp.ContentLength != condResp.ContentLength {
				t.Errorf("%s %s: plain %d %v %d bytes; ServeContent %d %v %d bytes", method, ref,
					plainResp.StatusCode, plainResp.Header, len(plainBody), condResp.StatusCode, condResp.Header, len(condBody))
			}
		}
	}
}

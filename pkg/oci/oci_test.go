package oci

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var router = Router{
	Known:   func(r string) bool { return r == "docker.io" || r == "registry.k8s.io" || r == "127.0.0.1:5000" },
	Default: "docker.io",
}

const dg = "sha256:0123456789012345678901234567890123456789012345678901234567890123"

func TestParseRequest(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, path, ns string
		want           Request
		err            error
	}{
		{name: "base", path: "/v2/", want: Request{Kind: KindBase}},
		{name: "base without slash", path: "/v2", want: Request{Kind: KindBase}},
		{name: "ns routes", path: "/v2/pause/manifests/3.10", ns: "registry.k8s.io",
			want: Request{Kind: KindManifest, Repo: Repo{"registry.k8s.io", "pause"}, Reference: "3.10"}},
		{name: "ns with port", path: "/v2/team/app/manifests/v1", ns: "127.0.0.1:5000",
			want: Request{Kind: KindManifest, Repo: Repo{"127.0.0.1:5000", "team/app"}, Reference: "v1"}},
		{name: "docker hub library", path: "/v2/alpine/manifests/3.20", ns: "docker.io",
			want: Request{Kind: KindManifest, Repo: Repo{"docker.io", "library/alpine"}, Reference: "3.20"}},
		{name: "path segment routes", path: "/v2/registry.k8s.io/pause/manifests/3.10",
			want: Request{Kind: KindManifest, Repo: Repo{"registry.k8s.io", "pause"}, Reference: "3.10"}},
		{name: "path segment docker hub", path: "/v2/docker.io/alpine/blobs/" + dg,
			want: Request{Kind: KindBlob, Repo: Repo{"docker.io", "library/alpine"}, Reference: dg, Digest: dg}},
		{name: "path segment with port", path: "/v2/127.0.0.1_5000/team/app/manifests/v1",
			want: Request{Kind: KindManifest, Repo: Repo{"127.0.0.1:5000", "team/app"}, Reference: "v1"}},
		{name: "path segment with unknown port is a name", path: "/v2/127.0.0.1_5001/team/app/manifests/v1",
			want: Request{Kind: KindManifest, Repo: Repo{"docker.io", "127.0.0.1_5001/team/app"}, Reference: "v1"}},
		{name: "default registry", path: "/v2/library/alpine/manifests/latest",
			want: Request{Kind: KindManifest, Repo: Repo{"docker.io", "library/alpine"}, Reference: "latest"}},
		{name: "unknown first segment is a name", path: "/v2/myorg/app/manifests/v1",
			want: Request{Kind: KindManifest, Repo: Repo{"docker.io", "myorg/app"}, Reference: "v1"}},
		{name: "manifest by digest", path: "/v2/a/b/manifests/" + dg, ns: "docker.io",
			want: Request{Kind: KindManifest, Repo: Repo{"docker.io", "a/b"}, Reference: dg, Digest: dg}},
		{name: "name with route words", path: "/v2/blobs/manifests/manifests/v1", ns: "docker.io",
			want: Request{Kind: KindManifest, Repo: Repo{"docker.io", "blobs/manifests"}, Reference: "v1"}},
		{name: "tags", path: "/v2/a/b/tags/list", ns: "docker.io",
			want: Request{Kind: KindTags, Repo: Repo{"docker.io", "a/b"}}},
		{name: "referrers", path: "/v2/a/b/referrers/" + dg, ns: "docker.io",
			want: Request{Kind: KindReferrers, Repo: Repo{"docker.io", "a/b"}, Reference: dg, Digest: dg}},
		{name: "upload", path: "/v2/a/b/blobs/uploads/", ns: "docker.io",
			want: Request{Kind: KindUpload, Repo: Repo{"docker.io", "a/b"}}},
		{name: "unknown ns refused", path: "/v2/a/manifests/v1", ns: "evil.example", err: ErrRegistryUnknown},
		{name: "upper case name", path: "/v2/A/manifests/v1", err: ErrNameInvalid},
		{name: "dot dot name", path: "/v2/a/../b/manifests/v1", err: ErrNameInvalid},
		{name: "bad tag", path: "/v2/a/manifests/-v1", err: ErrTagInvalid},
		{name: "bad digest", path: "/v2/a/blobs/sha256:xyz", err: ErrDigestInvalid},
		{name: "blob by tag", path: "/v2/a/blobs/latest", err: ErrDigestInvalid},
		{name: "short digest", path: "/v2/a/blobs/sha256:abc", err: ErrDigestInvalid},
		{name: "not the api", path: "/v1/a/manifests/v1", err: ErrNotRoute},
		{name: "no route", path: "/v2/a/b", err: ErrNotRoute},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := router.ParseRequest(c.path, c.ns)
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			if c.err == nil {
				if diff := cmp.Diff(c.want, got); diff != "" {
					t.Fatalf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestPathSegment(t *testing.T) {
	t.Parallel()
	for reg, want := range map[string]string{
		"docker.io": "docker.io", "127.0.0.1:5000": "127.0.0.1_5000", "registry.local:443": "registry.local_443",
		"my-registry:5000": "my-registry_5000", "[::1]:5000": "[::1]:5000",
	} {
		got := PathSegment(reg)
		if got != want {
			t.Errorf("PathSegment(%q) = %q, want %q", reg, got, want)
		}
		if strings.Contains(got, ":") {
			continue
		}
		// What containers/image will send: the segment must be a valid
		// repository path component, and must route back to the registry.
		r := Router{Known: func(s string) bool { return s == reg }}
		req, err := r.ParseRequest("/v2/"+got+"/team/app/manifests/v1", "")
		if err != nil || req.Repo != (Repo{reg, "team/app"}) {
			t.Errorf("%s as %s: %+v, %v", reg, got, req.Repo, err)
		}
	}
	for _, seg := range []string{"a_b_5000", "a_", "_5000", "a_123456", "a_5x"} {
		if got := unPathSegment(seg); got != "" {
			t.Errorf("unPathSegment(%q) = %q, want none", seg, got)
		}
	}
}

func TestNoDefaultRefusesUnnamed(t *testing.T) {
	t.Parallel()
	r := Router{Known: router.Known}
	if _, err := r.ParseRequest("/v2/a/manifests/v1", ""); !errors.Is(err, ErrRegistryUnknown) {
		t.Fatalf("got %v", err)
	}
}

// FuzzParseRequest: whatever the path, a parsed request names a valid
// repository on a known registry and a valid digest, so nothing built from
// it (a blob path, an upstream URL) can escape.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/manifests/v1", "/v2/docker.io/a/blobs/" + dg, "/v2/a/../../x/blobs/" + dg,
		"/v2/a//b/tags/list", "/v2/a/referrers/" + dg, "/v2/%2e%2e/manifests/v1"} {
		f.Add(s, "")
		f.Add(s, "docker.io")
	}
	f.Fuzz(func(t *testing.T, path, ns string) {
		req, err := router.ParseRequest(path, ns)
		if err != nil || req.Kind == KindBase {
			return
		}
		if !router.Known(req.Repo.Registry) {
			t.Fatalf("routed to unknown registry %q", req.Repo.Registry)
		}
		if !nameRE.MatchString(req.Repo.Name) || strings.Contains(req.Repo.Name, "..") {
			t.Fatalf("invalid name %q accepted", req.Repo.Name)
		}
		if req.Digest != "" && req.Digest.Validate() != nil {
			t.Fatalf("invalid digest %q accepted", req.Digest)
		}
	})
}

package main

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// TestPreloadThenServeWithoutUpstream preloads a two-platform index
// through a node, then takes the upstream away: the store holds every
// manifest and blob, each fetched from upstream once, and a second preload
// is served entirely from the store.
func TestPreloadThenServeWithoutUpstream(t *testing.T) {
	up := upstreamtest.New(t)
	var want []digest.Digest // every manifest and blob of the index
	idx := v1.ImageIndex(empty.Index)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(256<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		d, _ := img.Digest()
		cfg, _ := img.ConfigName()
		want = append(want, digest.Digest(d.String()), digest.Digest(cfg.String()))
		layers, _ := img.Layers()
		for _, l := range layers {
			ld, _ := l.Digest()
			want = append(want, digest.Digest(ld.String()))
		}
	}
	idxDigest := up.PushIndex(t, "site/app", "v1", idx)
	want = append(want, digest.Digest(idxDigest.String()))

	// The second run revalidates the tag (1ms TTL), fails, and serves stale.
	n := nodetest.Start(t, up, func(c *config.Config) { c.TagTTL = config.Duration(time.Millisecond) })
	srv, url := n.Server, n.URL
	admin := httptest.NewServer(n.AdminHandler()) // preload pins through it
	defer admin.Close()
	run := func() string {
		t.Helper()
		var out bytes.Buffer
		cmd := rootCmd()
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"preload", "--addr", url, "--admin-addr", admin.URL, up.Host + "/site/app:v1"})
		if err := cmd.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("preload: %v", err)
		}
		return out.String()
	}
	out := run()
	if !strings.Contains(out, "3 manifests, 6 blobs") {
		t.Fatalf("preload said %q", out)
	}
	for _, d := range want {
		if !srv.Store().Has(d) {
			t.Fatalf("store lacks %s after preload", d)
		}
		if n := up.BlobGETs("site/app", d.String()); n > 1 {
			t.Fatalf("upstream served %s %d times", d, n)
		}
	}
	if pinned, err := srv.Store().PinnedSet(); err != nil || !pinned[digest.Digest(idxDigest.String())] {
		t.Errorf("preloaded index not pinned: %v", err)
	}
	up.SetDown(true) // the site loses its upstream
	if out := run(); !strings.Contains(out, "3 manifests, 6 blobs") {
		t.Fatalf("preload from the store alone said %q", out)
	}
}

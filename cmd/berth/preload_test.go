package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
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

	srv, url := startServer(t, up)
	run := func() string {
		t.Helper()
		var out bytes.Buffer
		cmd := rootCmd()
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"preload", "--addr", url, up.Host + "/site/app:v1"})
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
	up.SetDown(true) // the site loses its upstream
	if out := run(); !strings.Contains(out, "3 manifests, 6 blobs") {
		t.Fatalf("preload from the store alone said %q", out)
	}
}

func startServer(t *testing.T, up *upstreamtest.Registry) (*server.Server, string) {
	t.Helper()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registries = []config.Registry{{Name: up.Host, Endpoints: []string{up.URL}}}
	cfg.DefaultRegistry = up.Host
	cfg.Cache.Dir = t.TempDir()
	cfg.TagTTL = config.Duration(time.Millisecond) // the second run revalidates, fails, and serves stale
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return srv, "http://" + ln.Addr().String()
}

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
)

// TestPreloadThenServeWithoutUpstream preloads a two-platform index
// through a node, then takes the upstream away: the store holds every
// manifest and blob, each fetched from upstream once, and a second preload
// is served entirely from the store.
func TestPreloadThenServeWithoutUpstream(t *testing.T) {
	up := upstreamtest.New(t)
	want := pushIndexOf(t, up, "site/app", "v1", 256<<10) // every manifest and blob of the index
	idxDigest := want[len(want)-1]

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
	if pinned, err := srv.Store().PinnedSet(); err != nil || !pinned[idxDigest] {
		t.Errorf("preloaded index not pinned: %v", err)
	}
	up.SetDown(true) // the site loses its upstream
	if out := run(); !strings.Contains(out, "3 manifests, 6 blobs") {
		t.Fatalf("preload from the store alone said %q", out)
	}
}

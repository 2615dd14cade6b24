package mirror_test

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
)

// metered is a node whose mirror counts into its own registry, with the
// given policy pins. Time is the node's clock: no test here sleeps.
func metered(t *testing.T, n *node, pins map[string]digest.Digest) (*mirror.Mirror, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := mirror.New(n.store, nil, n.uc, mirror.Config{TagTTL: ttl, Now: n.clock.Now, Metrics: metrics.New(reg, 10), Pins: pins})
	t.Cleanup(m.Close)
	return m, reg
}

// counter sums the series of a counter family whose label has value.
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, label, value) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestTagTTLIsExact: a tag checked at T answers from the store until just
// before T+TTL, and is revalidated (one HEAD) at T+TTL itself.
func TestTagTTLIsExact(t *testing.T) {
	n := newNode(t)
	want := n.push(t, "v1")
	head0 := n.manifests("HEAD", "v1")
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	n.clock.Add(ttl - time.Nanosecond)
	if man, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != want {
		t.Fatalf("just inside the TTL: %v %s", err, man.Digest)
	}
	if got := n.manifests("HEAD", "v1") - head0; got != 0 {
		t.Fatalf("just inside the TTL the upstream saw %d HEADs, want 0", got)
	}
	n.clock.Add(time.Nanosecond)
	if man, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != want {
		t.Fatalf("at the TTL: %v %s", err, man.Digest)
	}
	if got := n.manifests("HEAD", "v1") - head0; got != 1 {
		t.Fatalf("at the TTL the upstream saw %d HEADs, want 1", got)
	}
}

// TestStaleIfErrorByUpstreamAnswer: an expired tag whose revalidation
// fails answers from the store for any failure but "that tag or repository
// is gone", counts the stale answer, and does not renew the TTL: the next
// request revalidates again.
func TestStaleIfErrorByUpstreamAnswer(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		stale  bool
		want   error // when not stale
	}{
		{"server error", http.StatusInternalServerError, true, nil},
		{"bad gateway", http.StatusBadGateway, true, nil},
		{"unauthorized", http.StatusUnauthorized, true, nil},
		{"denied", http.StatusForbidden, true, nil},
		{"rate limited", http.StatusTooManyRequests, true, nil},
		{"gone", http.StatusNotFound, false, oci.ErrManifestUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t)
			m, reg := metered(t, n, nil)
			want := n.push(t, "v1")
			if _, err := m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
				t.Fatal(err)
			}
			n.up.SetStatus(c.status)
			n.clock.Add(ttl)
			for i := range 2 {
				misses := counter(t, reg, "berth_cache_misses_total", "kind", "tag")
				man, err := m.Manifest(t.Context(), n.repo.Manifest("v1"))
				if got := counter(t, reg, "berth_cache_misses_total", "kind", "tag") - misses; got != 1 {
					t.Fatalf("request %d: the expired tag was revalidated %v times, want 1", i, got)
				}
				if !c.stale {
					if !errors.Is(err, c.want) {
						t.Fatalf("got %v (%s), want %v", err, man.Digest, c.want)
					}
					continue
				}
				if err != nil || man.Digest != want || digest.FromBytes(man.Data) != want {
					t.Fatalf("request %d: stale answer %v, %s, want %s", i, err, man.Digest, want)
				}
			}
			wantStale := 0.0
			if c.stale {
				wantStale = 2
			}
			if got := counter(t, reg, "berth_stale_served_total", "kind", "tag"); got != wantStale {
				t.Errorf("stale answers counted %v, want %v", got, wantStale)
			}
		})
	}
}

// TestBlobMissUnderRateLimitIsTooManyRequests: the 429 path of a blob
// miss: the client hears TOOMANYREQUESTS, and nothing is stored.
func TestBlobMissUnderRateLimitIsTooManyRequests(t *testing.T) {
	n := newNode(t)
	n.up.SetStatus(http.StatusTooManyRequests)
	d := digest.FromString("a layer")
	b, err := n.m.Blob(t.Context(), n.repo.Blob(d))
	if err == nil { // a fill answers at once and fails as it is read
		_, err = io.ReadAll(b)
		b.Close()
	}
	if !errors.Is(err, oci.ErrTooManyRequests) {
		t.Fatalf("got %v, want ErrTooManyRequests", err)
	}
	if n.store.Has(d) {
		t.Fatal("a refused blob is in the store")
	}
}

// TestPinnedTagIgnoresAMoveUpstream: a pinned tag is served as its pin;
// within the TTL the upstream is not asked, after it the upstream's move
// is counted (berth_policy_tag_moved_total), never followed.
func TestPinnedTagIgnoresAMoveUpstream(t *testing.T) {
	n := newNode(t)
	pin := n.push(t, "v1")
	m, reg := metered(t, n, map[string]digest.Digest{cache.TagKey("r.test", "team/app", "v1"): pin})
	moved := n.push(t, "v1")
	for range 2 {
		if man, err := m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != pin {
			t.Fatalf("pinned tag: %v %s, want %s", err, man.Digest, pin)
		}
	}
	head0 := n.manifests("HEAD", "v1")
	if man, err := m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != pin {
		t.Fatalf("within the TTL: %v %s", err, man.Digest)
	}
	if got := n.manifests("HEAD", "v1") - head0; got != 0 {
		t.Fatalf("within the TTL the upstream saw %d HEADs of a pinned tag", got)
	}
	if got := counter(t, reg, "berth_policy_tag_moved_total", "registry", "r.test"); got != 1 {
		t.Fatalf("moves counted %v, want 1 (the first check saw %s)", got, moved)
	}
	n.clock.Add(ttl)
	if man, err := m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != pin {
		t.Fatalf("after the TTL: %v %s, want the pin %s", err, man.Digest, pin)
	}
	if got := counter(t, reg, "berth_policy_tag_moved_total", "registry", "r.test"); got != 2 {
		t.Fatalf("moves counted %v after the TTL, want 2", got)
	}
}

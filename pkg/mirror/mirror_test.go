package mirror_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/berth-registry/berth/test/mirrortest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

// The in-process distribution registry (upstreamtest) leaves its
// notification broadcasters running; every other goroutine must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
}

// clock is the mirror's Config.Now: tests move time instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const ttl = time.Minute

// node is a mirror over a real store and a real upstream client, in
// front of a real registry.
type node struct {
	m     *mirror.Mirror
	store *cache.Store
	clock *clock
	up    *upstreamtest.Registry
	uc    *upstream.Client
	repo  oci.Repo
}

func newNode(t *testing.T) *node { return newNodeWith(t, mirror.Config{}) }

// newNodeWith is newNode with cfg (its TagTTL and Now are the test's).
func newNodeWith(t *testing.T, cfg mirror.Config) *node {
	t.Helper()
	p := mirrortest.New(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg.TagTTL, cfg.Now = ttl, clk.Now
	m := mirror.New(p.Store, nil, p.Upstream, cfg)
	t.Cleanup(m.Close) // registered after the store's: runs before it closes
	return &node{m: m, store: p.Store, clock: clk, up: p.Up, uc: p.Upstream, repo: p.Repo}
}

// push puts a small image under team/app:tag and returns its manifest digest.
func (n *node) push(t *testing.T, tag string) digest.Digest {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(n.up.Push(t, "team/app", tag, img).String())
}

func (n *node) manifests(method, ref string) int {
	return n.up.Count(method, "/v2/team/app/manifests/"+ref)
}

func TestTagWithinTTLAsksNothingThenRevalidatesOnceWithHEAD(t *testing.T) {
	n := newNode(t)
	want := n.push(t, "v1")
	get0, head0 := n.manifests("GET", "v1"), n.manifests("HEAD", "v1") // the push's own
	ctx := t.Context()
	for range 3 {
		man, err := n.m.Manifest(ctx, n.repo.Manifest("v1"))
		if err != nil || man.Digest != want || digest.FromBytes(man.Data) != want {
			t.Fatalf("manifest v1: %v, %s, want %s", err, man.Digest, want)
		}
	}
	if get, head := n.manifests("GET", "v1")-get0, n.manifests("HEAD", "v1")-head0; get != 1 || head != 0 {
		t.Fatalf("within the TTL: upstream saw %d GET and %d HEAD of the tag, want 1 and 0", get, head)
	}
	n.clock.Add(ttl + time.Second)
	for range 3 {
		if man, err := n.m.Manifest(ctx, n.repo.Manifest("v1")); err != nil || man.Digest != want {
			t.Fatalf("after the TTL: %v, %s", err, man.Digest)
		}
	}
	if get, head := n.manifests("GET", "v1")-get0, n.manifests("HEAD", "v1")-head0; get != 1 || head != 1 {
		t.Fatalf("after the TTL: upstream saw %d GET and %d HEAD of the tag, want 1 and 1", get, head)
	}
}

func TestTagMovedUpstreamIsFollowedAfterTheTTL(t *testing.T) {
	n := newNode(t)
	first := n.push(t, "v1")
	if man, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != first {
		t.Fatalf("first: %v %s", err, man.Digest)
	}
	second := n.push(t, "v1")
	if man, _ := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); man.Digest != first {
		t.Fatalf("within the TTL the tag moved to %s already", man.Digest)
	}
	n.clock.Add(ttl + time.Second)
	man, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1"))
	if err != nil || man.Digest != second || digest.FromBytes(man.Data) != second {
		t.Fatalf("after the TTL: %v, %s, want %s", err, man.Digest, second)
	}
}

func TestStaleIfErrorAndWhenNot(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		stale  bool
		want   error
	}{
		{"outage", http.StatusServiceUnavailable, true, nil},
		{"rate limited", http.StatusTooManyRequests, true, nil},
		{"tag gone", http.StatusNotFound, false, oci.ErrManifestUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t)
			want := n.push(t, "v1")
			if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
				t.Fatal(err)
			}
			n.up.SetStatus(c.status)
			n.clock.Add(ttl + time.Second)
			before := n.up.Total()
			man, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1"))
			if n.up.Total() == before {
				t.Fatal("the expired tag was not revalidated upstream")
			}
			switch {
			case c.stale && (err != nil || man.Digest != want || digest.FromBytes(man.Data) != want):
				t.Fatalf("stale answer: %v, %s, want %s", err, man.Digest, want)
			case !c.stale && !errors.Is(err, c.want):
				t.Fatalf("got %v (%s), want %v", err, man.Digest, c.want)
			}
		})
	}
}

func TestUnknownTagUnderRateLimitIsTooManyRequests(t *testing.T) {
	n := newNode(t)
	n.up.SetStatus(http.StatusTooManyRequests)
	_, err := n.m.Manifest(t.Context(), n.repo.Manifest("never"))
	if !errors.Is(err, oci.ErrTooManyRequests) {
		t.Fatalf("got %v, want ErrTooManyRequests", err)
	}
}

func TestHeadOfAFreshTagAnswersWithoutBytes(t *testing.T) {
	n := newNode(t)
	want := n.push(t, "v1")
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	head := n.repo.Manifest("v1")
	head.Head = true
	man, err := n.m.Manifest(t.Context(), head)
	if err != nil || man.Digest != want || man.Data != nil || man.Size <= 0 {
		t.Fatalf("HEAD within the TTL: %v, %+v", err, man.Descriptor)
	}
}

func TestBlobFillsOnceThenHits(t *testing.T) {
	n := newNode(t)
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	n.up.Push(t, "team/app", "v1", img)
	layers, _ := img.Layers()
	h, _ := layers[0].Digest()
	d := digest.Digest(h.String())
	for i := range 2 {
		b, err := n.m.Blob(t.Context(), n.repo.Blob(d))
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(b)
		b.Close()
		if err != nil || digest.FromBytes(data) != d {
			t.Fatalf("read %d: %v, got %s", i, err, digest.FromBytes(data))
		}
	}
	if got := n.up.BlobGETs("team/app", d.String()); got != 1 {
		t.Fatalf("upstream saw %d GETs of the blob, want 1", got)
	}
	if !n.store.Has(d) {
		t.Fatal("the blob was not kept")
	}
}

func TestPeerHolderNeverFetches(t *testing.T) {
	n := newNode(t)
	n.push(t, "v1")
	before := n.up.Total()
	holder := n.repo.Manifest("v1")
	holder.Via = oci.ViaPeerHolder
	if _, err := n.m.Manifest(t.Context(), holder); !errors.Is(err, oci.ErrManifestUnknown) {
		t.Fatalf("holder tag miss: %v", err)
	}
	blob := n.repo.Blob(digest.FromString("absent"))
	blob.Via = oci.ViaPeerHolder
	if _, err := n.m.Blob(t.Context(), blob); !errors.Is(err, oci.ErrBlobUnknown) {
		t.Fatalf("holder blob miss: %v", err)
	}
	if got := n.up.Total() - before; got != 0 {
		t.Fatalf("a holder's misses made %d upstream requests", got)
	}
}

// The request value reaches the fill's source: a request that has passed
// MaxHops berths is refused by the upstream client, not sent.
func TestHopsTravelWithTheRequestToTheSource(t *testing.T) {
	n := newNode(t)
	n.push(t, "v1")
	before := n.up.Total()
	req := n.repo.Blob(digest.FromString("anything"))
	req.Hops = oci.MaxHops
	b, err := n.m.Blob(t.Context(), req)
	if err == nil {
		_, err = b.Wait()
		b.Close()
	}
	if !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("blob at MaxHops: %v, want ErrUnavailable", err)
	}
	tag := n.repo.Manifest("v1")
	tag.Hops = oci.MaxHops
	if _, err := n.m.Manifest(context.WithoutCancel(t.Context()), tag); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("tag at MaxHops: %v, want ErrUnavailable", err)
	}
	if got := n.up.Total() - before; got != 0 {
		t.Fatalf("looping requests reached the upstream %d times", got)
	}
}

func TestNoPeersAnswersNoPeer(t *testing.T) {
	var p mirror.Peers = mirror.NoPeers{}
	req := oci.Repo{Registry: "r.test", Name: "x"}.Blob(digest.FromString("x"))
	if _, _, err := p.FetchBlob(t.Context(), req, 0); !errors.Is(err, mirror.ErrNoPeer) {
		t.Fatal(err)
	}
	if _, _, err := p.FetchManifest(t.Context(), req); !errors.Is(err, mirror.ErrNoPeer) {
		t.Fatal(err)
	}
	if _, err := p.ResolveTag(t.Context(), req); !errors.Is(err, mirror.ErrNoPeer) {
		t.Fatal(err)
	}
}

// A zero TagTTL is the config's default tagTTL, the one source.
func TestZeroTagTTLIsTheConfigDefault(t *testing.T) {
	n := newNode(t)
	n.m = mirror.New(n.store, mirror.NoPeers{}, n.uc, mirror.Config{Now: n.clock.Now})
	n.push(t, "v1")
	head0 := n.manifests("HEAD", "v1")
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	def := config.Defaults().TagTTL.D()
	n.clock.Add(def - time.Second)
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || n.manifests("HEAD", "v1") != head0 {
		t.Fatalf("within the default TTL (%s): %v, %d HEADs", def, err, n.manifests("HEAD", "v1")-head0)
	}
	n.clock.Add(2 * time.Second)
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || n.manifests("HEAD", "v1") != head0+1 {
		t.Fatalf("past the default TTL (%s): %v, %d HEADs", def, err, n.manifests("HEAD", "v1")-head0)
	}
}

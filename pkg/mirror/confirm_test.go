package mirror_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// lyingHead is a real upstream client whose HEAD names another digest.
type lyingHead struct {
	*upstream.Client
	lie oci.Descriptor
}

func (l lyingHead) HeadManifest(context.Context, oci.Request) (oci.Descriptor, error) {
	return l.lie, nil
}

// TestHEADDigestIsConfirmedBeforeItIsServed: a tag's new digest learned by
// HEAD is served only once a GET of it from the same registry confirms it.
// A HEAD naming content the store holds from elsewhere does not move the
// tag; the last confirmed digest keeps answering.
func TestHEADDigestIsConfirmedBeforeItIsServed(t *testing.T) {
	n := newNode(t)
	mine := n.push(t, "v1")
	if man, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil || man.Digest != mine {
		t.Fatalf("first: %v %s", err, man.Digest)
	}
	// Another registry's manifest, in this store (pulled through elsewhere).
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	theirs := digest.FromBytes(raw)
	if err := n.store.Put(theirs, string(mt), raw); err != nil {
		t.Fatal(err)
	}
	uc, err := upstream.New([]config.Registry{{Name: "r.test", Endpoints: []string{n.up.URL}}}, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	liar := lyingHead{uc, oci.Descriptor{MediaType: string(mt), Digest: theirs, Size: int64(len(raw))}}
	m := mirror.New(n.store, nil, liar, mirror.Config{TagTTL: ttl, Now: n.clock.Now})
	n.clock.Add(ttl + time.Second)
	for _, head := range []bool{true, false} {
		req := n.repo.Manifest("v1")
		req.Head = head
		man, err := m.Manifest(t.Context(), req)
		if err != nil || man.Digest != mine {
			t.Errorf("head=%v after a HEAD naming %s: %v, %s; want the confirmed %s", head, theirs, err, man.Digest, mine)
		}
	}
	if got := n.manifests("GET", theirs.String()); got == 0 {
		t.Error("the new digest was never asked for by GET to confirm it")
	}
	if tg, err := n.store.Tag(cache.TagKey("r.test", "team/app", "v1")); err != nil || tg.Digest != mine {
		t.Errorf("stored tag: %v %s, want %s", err, tg.Digest, mine)
	}
}

// plantingPeer is a cluster member holding the secret that resolves every
// tag to one planted digest.
type plantingPeer struct {
	mirror.NoPeers
	planted oci.Descriptor
	asked   int
}

func (p *plantingPeer) ResolveTag(context.Context, oci.Request) (oci.Descriptor, error) {
	p.asked++
	return p.planted, nil
}

// TestPinnedTagIsNeverTakenFromAPeer: a pinned tag is revalidated with the
// node's own upstream, never resolved by a peer.
func TestPinnedTagIsNeverTakenFromAPeer(t *testing.T) {
	n := newNode(t)
	mine := n.push(t, "v1")
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.store.AddPin(cache.Pin{Ref: n.repo.String() + ":v1", Digest: mine}); err != nil {
		t.Fatal(err)
	}
	peer := &plantingPeer{planted: oci.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromString("planted"), Size: 7}}
	uc, err := upstream.New([]config.Registry{{Name: "r.test", Endpoints: []string{n.up.URL}}}, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := mirror.New(n.store, peer, uc, mirror.Config{TagTTL: ttl, Now: n.clock.Now})
	n.clock.Add(ttl + time.Second)
	req := n.repo.Manifest("v1")
	req.Head = true
	if man, err := m.Manifest(t.Context(), req); err != nil || man.Digest != mine {
		t.Errorf("pinned tag: %v %s, want %s", err, man.Digest, mine)
	}
	if peer.asked != 0 {
		t.Errorf("a peer was asked to resolve a pinned tag %d times", peer.asked)
	}
	// The control: an unpinned tag is the peer's to resolve (the trust model).
	n.push(t, "v2")
	req = n.repo.Manifest("v2")
	req.Head = true
	if man, _ := m.Manifest(t.Context(), req); man.Digest != peer.planted.Digest || peer.asked != 1 {
		t.Errorf("unpinned tag: %s after %d asks; the peer was not asked", man.Digest, peer.asked)
	}
}

package mirror_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/test/mirrortest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// newPrefetchNode is newNode with prefetch at concurrency (0: off).
func newPrefetchNode(t *testing.T, concurrency int) *node {
	return newNodeWith(t, mirror.Config{PrefetchConcurrency: concurrency})
}

// blobsOf returns the config and layer digests of img.
func blobsOf(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ds := []digest.Digest{digest.Digest(cfg.String())}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, digest.Digest(h.String()))
	}
	return ds
}

func (n *node) blobGETs(ds []digest.Digest) (total int, each []int) {
	for _, d := range ds {
		c := n.up.BlobGETs("team/app", d.String())
		total += c
		each = append(each, c)
	}
	return total, each
}

func (n *node) readBlob(t *testing.T, d digest.Digest) {
	t.Helper()
	b, err := n.m.Blob(t.Context(), n.repo.Blob(d))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil || digest.FromBytes(data) != d {
		t.Fatalf("blob %s: %v, got %s", d, err, digest.FromBytes(data))
	}
}

func TestColdManifestPrefetchesConfigAndLayersOnce(t *testing.T) {
	for _, byDigest := range []bool{false, true} {
		n := newPrefetchNode(t, 2)
		img, err := random.Image(32<<10, 5)
		if err != nil {
			t.Fatal(err)
		}
		md := n.up.Push(t, "team/app", "v1", img)
		ds := blobsOf(t, img)
		ref := "v1"
		if byDigest {
			ref = md.String()
		}
		if _, err := n.m.Manifest(t.Context(), n.repo.Manifest(ref)); err != nil {
			t.Fatal(err)
		}
		n.m.WaitPrefetch() // the client asked for nothing yet
		if total, each := n.blobGETs(ds); total != len(ds) {
			t.Fatalf("by digest %v: after the cold manifest the upstream saw blob GETs %v, want one of each of %d", byDigest, each, len(ds))
		}
		for _, d := range ds {
			if !n.store.Has(d) || !n.store.Known(n.repo, d) {
				t.Fatalf("prefetched blob %s: stored %v, known for %s %v", d, n.store.Has(d), n.repo, n.store.Known(n.repo, d))
			}
			n.readBlob(t, d)
		}
		if total, each := n.blobGETs(ds); total != len(ds) {
			t.Fatalf("the client's blob GETs went upstream again: %v", each)
		}
		// A hit prefetches nothing more (and nothing is left to fetch).
		before := n.up.Total()
		if _, err := n.m.Manifest(t.Context(), n.repo.Manifest(ref)); err != nil {
			t.Fatal(err)
		}
		n.m.WaitPrefetch()
		if got := n.up.Total() - before; got != 0 {
			t.Fatalf("a manifest hit made %d upstream requests", got)
		}
	}
}

func TestPrefetchOffFetchesNothingUntilAsked(t *testing.T) {
	n := newPrefetchNode(t, 0)
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	n.up.Push(t, "team/app", "v1", img)
	ds := blobsOf(t, img)
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	n.m.WaitPrefetch()
	if total, each := n.blobGETs(ds); total != 0 {
		t.Fatalf("prefetch off: the upstream saw blob GETs %v before the client asked", each)
	}
	n.readBlob(t, ds[1])
	if total, _ := n.blobGETs(ds); total != 1 {
		t.Fatalf("prefetch off: %d blob GETs after one client GET, want 1", total)
	}
}

func TestPeerRequestsNeverPrefetch(t *testing.T) {
	for _, via := range []oci.Via{oci.ViaPeerOwner, oci.ViaPeerRelay} {
		n := newPrefetchNode(t, 4)
		img, err := random.Image(1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		md := n.up.Push(t, "team/app", "v1", img)
		for _, ref := range []string{"v1", md.String()} {
			req := n.repo.Manifest(ref)
			req.Via = via
			if _, err := n.m.Manifest(t.Context(), req); err != nil {
				t.Fatal(err)
			}
		}
		n.m.WaitPrefetch()
		if total, each := n.blobGETs(blobsOf(t, img)); total != 0 {
			t.Fatalf("via %v: a peer's manifest request made blob GETs %v", via, each)
		}
	}
}

func TestIndexPrefetchesOnlyTheChildAsked(t *testing.T) {
	n := newPrefetchNode(t, 4)
	idx, err := random.Index(1024, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	n.up.PushIndex(t, "team/app", "multi", idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var children [][]digest.Digest
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, blobsOf(t, img))
	}
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("multi")); err != nil {
		t.Fatal(err)
	}
	n.m.WaitPrefetch()
	for i, ds := range children {
		if total, each := n.blobGETs(ds); total != 0 {
			t.Fatalf("the index alone made child %d's blob GETs %v", i, each)
		}
	}
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest(im.Manifests[1].Digest.String())); err != nil {
		t.Fatal(err)
	}
	n.m.WaitPrefetch()
	if total, each := n.blobGETs(children[1]); total != len(children[1]) {
		t.Fatalf("the child asked for: blob GETs %v, want one each", each)
	}
	if total, each := n.blobGETs(children[0]); total != 0 {
		t.Fatalf("the other platform's child: blob GETs %v, want none", each)
	}
}

// A client's own blob request is never queued behind the prefetch's
// semaphore: with one prefetch slot held by a stalled body, the client's
// request for another layer reaches the upstream at once.
func TestClientBlobIsNotQueuedBehindPrefetch(t *testing.T) {
	n := newPrefetchNode(t, 1)
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	n.up.Push(t, "team/app", "v1", img)
	ds := blobsOf(t, img)
	release := n.up.Gate() // blob bodies stop half way
	defer release()
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	last := ds[len(ds)-1]
	b, err := n.m.Blob(t.Context(), n.repo.Blob(last))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The size is known once the upstream answered the client's own GET:
	// the prefetch, one slot, is still stalled on an earlier blob.
	if size, err := b.Wait(); err != nil || size <= 0 {
		t.Fatalf("client blob while the prefetch is stalled: size %d, %v", size, err)
	}
	if got := n.up.BlobGETs("team/app", last.String()); got != 1 {
		t.Fatalf("the client's layer: %d upstream GETs, want 1", got)
	}
	release()
	data, err := io.ReadAll(b)
	if err != nil || digest.FromBytes(data) != last {
		t.Fatalf("client blob: %v, got %s", err, digest.FromBytes(data))
	}
	n.m.WaitPrefetch()
	if total, each := n.blobGETs(ds); total != len(ds) {
		t.Fatalf("blob GETs %v, want one each", each)
	}
}

// The prefetch fetches in the manifest's order, config first: what a
// client asks for first arrives first. With one worker the upstream sees
// the blob GETs in exactly that order.
func TestPrefetchFollowsManifestOrder(t *testing.T) {
	n := newPrefetchNode(t, 1)
	img, err := random.Image(16<<10, 8)
	if err != nil {
		t.Fatal(err)
	}
	n.up.Push(t, "team/app", "v1", img)
	ds := blobsOf(t, img)
	n.up.Forget()
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	n.m.WaitPrefetch()
	var got []string
	for _, r := range n.up.Requests() {
		if r.Method == http.MethodGet && strings.Contains(r.Path, "/blobs/") {
			got = append(got, r.Path[strings.LastIndexByte(r.Path, '/')+1:])
		}
	}
	var want []string
	for _, d := range ds {
		want = append(want, d.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("upstream blob GETs in order\n%v\nwant the manifest's (config first)\n%v", got, want)
	}
}

// A blob a client is already fetching costs its prefetch no worker: with
// one worker and the client's fills of the config and every layer but one
// stalled half way, the prefetch still reaches that one layer.
func TestPrefetchSkipsBlobsUnderWay(t *testing.T) {
	n := newPrefetchNode(t, 1)
	img, err := random.Image(64<<10, 4)
	if err != nil {
		t.Fatal(err)
	}
	n.up.Push(t, "team/app", "v1", img)
	ds := blobsOf(t, img)
	free := ds[2]          // the second layer: the client asks for all the others
	release := n.up.Gate() // blob bodies stop half way
	defer release()
	var bs []*cache.Blob
	var asked []digest.Digest
	for _, d := range ds {
		if d == free {
			continue
		}
		b, err := n.m.Blob(t.Context(), n.repo.Blob(d))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		bs, asked = append(bs, b), append(asked, d)
		select {
		case <-n.up.Halfway():
		case <-time.After(30 * time.Second):
			t.Fatalf("the client's GET of %s never reached the upstream", d)
		}
	}
	if _, err := n.m.Manifest(t.Context(), n.repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-n.up.Halfway():
		if !strings.HasSuffix(p, free.String()) {
			t.Fatalf("halfway: %s, want the layer no client asked for, %s", p, free)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the prefetch's one worker never fetched %s: it waits on a blob the client is fetching", free)
	}
	release()
	for i, b := range bs {
		data, err := io.ReadAll(b)
		if err != nil || digest.FromBytes(data) != asked[i] {
			t.Fatalf("client blob %s: %v", asked[i], err)
		}
	}
	n.m.WaitPrefetch()
	if total, each := n.blobGETs(ds); total != len(ds) {
		t.Fatalf("blob GETs %v, want one each", each)
	}
}

// prefetchMirror is a mirror with prefetch at concurrency 4 whose upstream
// transport is wrap's, in front of a registry holding team/app:v1, an
// image of n random layers of size bytes.
func prefetchMirror(t *testing.T, wrap func(*http.Transport) http.RoundTripper, size int64, n int) (*mirrortest.Parts, *mirror.Mirror, v1.Image) {
	t.Helper()
	p := mirrortest.New(t, wrap)
	m := mirror.New(p.Store, nil, p.Upstream, mirror.Config{TagTTL: ttl, PrefetchConcurrency: 4})
	t.Cleanup(m.Close)
	img, err := random.Image(size, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	p.Up.Push(t, "team/app", "v1", img)
	return p, m, img
}

// holdBody is a transport that holds the body of one blob's upstream GET
// after its first bytes until hold is closed (held says so), and reports
// each other blob body's end, in order, on ended.
type holdBody struct {
	base  http.RoundTripper
	blob  string
	hold  chan struct{}
	held  chan struct{}
	ended chan string
}

func (h *holdBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		return resp, err
	}
	d := req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:]
	resp.Body = &heldBody{ReadCloser: resp.Body, h: h, d: d}
	return resp, nil
}

type heldBody struct {
	io.ReadCloser
	h    *holdBody
	d    string
	n    int
	done bool
}

func (b *heldBody) Read(p []byte) (int, error) {
	if b.d == b.h.blob && b.n > 0 {
		select {
		case b.h.held <- struct{}{}:
		default:
		}
		<-b.h.hold
	}
	n, err := b.ReadCloser.Read(p)
	b.n += n
	if err == io.EOF && !b.done {
		b.done = true
		b.h.ended <- b.d
	}
	return n, err
}

// A prefetch never slows the fill a client is reading: while a client's
// own fill of one layer is under way, the prefetch of the config and the
// other layer (no client asked for them) reads nothing from its source
// but waits, and a client asking for that other layer gets it at once.
// The old prefetch read its blobs to the end beside the client's fill.
func TestPrefetchYieldsToTheFillAClientReads(t *testing.T) {
	hb := &holdBody{hold: make(chan struct{}), held: make(chan struct{}, 1), ended: make(chan string, 16)}
	p, m, img := prefetchMirror(t, func(base *http.Transport) http.RoundTripper { hb.base = base; return hb }, 1<<20, 2)
	ds := blobsOf(t, img) // config, L1, L2
	cfg, l1, l2 := ds[0], ds[1], ds[2]
	hb.blob = l2.String()
	var once sync.Once
	release := func() { once.Do(func() { close(hb.hold) }) }
	defer release()

	b2, err := m.Blob(t.Context(), p.Repo.Blob(l2)) // the client's own fill: held after its first bytes
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	select {
	case <-hb.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the client's fill of L2 never reached the upstream")
	}
	if _, err := m.Manifest(t.Context(), p.Repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	// The prefetch of the config and L1 opens its sources; give it a
	// window to (wrongly) read them to the end while L2 is held.
	select {
	case d := <-hb.ended:
		t.Fatalf("a prefetch-only blob (%s) was read to the end while a client's fill was under way", d[:19])
	case <-time.After(2 * time.Second):
	}
	// A client asking for L1 takes it out of the wait: it arrives while
	// L2 is still held.
	got := make(chan error, 1)
	go func() {
		b, err := m.Blob(t.Context(), p.Repo.Blob(l1))
		if err != nil {
			got <- err
			return
		}
		defer b.Close()
		data, err := io.ReadAll(b)
		if err == nil && digest.FromBytes(data) != l1 {
			err = fmt.Errorf("got %s", digest.FromBytes(data))
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("L1: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a client's request for a waiting prefetch did not take it out of the wait")
	}
	release()
	data, err := io.ReadAll(b2)
	if err != nil || digest.FromBytes(data) != l2 {
		t.Fatalf("L2: %v, got %s", err, digest.FromBytes(data))
	}
	m.WaitPrefetch()
	if !p.Store.Has(cfg) || !p.Store.Has(l1) {
		t.Fatal("the prefetch did not fetch the config once the client's fills ended")
	}
	for _, d := range ds {
		if got := p.Up.BlobGETs("team/app", d.String()); got != 1 {
			t.Fatalf("blob %s: %d upstream GETs, want 1", d, got)
		}
	}
}

// tagAtBlobGET is a transport that records, at each upstream blob GET,
// whether the store already held the tag's mapping.
type tagAtBlobGET struct {
	base  http.RoundTripper
	store func() *cache.Store
	key   string
	mu    sync.Mutex
	seen  []bool
}

func (r *tagAtBlobGET) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		_, err := r.store().Tag(r.key)
		r.mu.Lock()
		r.seen = append(r.seen, err == nil)
		r.mu.Unlock()
	}
	return r.base.RoundTrip(req)
}

// The prefetch of a cold tag's blobs starts once the tag's answer is
// ready, its mapping stored (and synced): started before, its transfers
// and disk writes delayed the client's HEAD by tens of milliseconds on a
// busy disk (a containerd pull's first request), for nothing.
func TestColdTagPrefetchStartsAfterTheTagIsStored(t *testing.T) {
	rec := &tagAtBlobGET{key: cache.TagKey(mirrortest.Registry, "team/app", "v1")}
	p, m, img := prefetchMirror(t, func(base *http.Transport) http.RoundTripper { rec.base = base; return rec }, 64<<10, 4)
	rec.store = func() *cache.Store { return p.Store }
	if _, err := m.Manifest(t.Context(), p.Repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	m.WaitPrefetch()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) != len(blobsOf(t, img)) {
		t.Fatalf("the prefetch made %d blob GETs, want %d", len(rec.seen), len(blobsOf(t, img)))
	}
	for i, stored := range rec.seen {
		if !stored {
			t.Fatalf("blob GET %d of the prefetch went upstream before the tag's mapping was stored (seen %v)", i, rec.seen)
		}
	}
}

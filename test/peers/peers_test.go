// Package peers tests berth clusters: several real berth nodes (pkg/server's
// wiring, real gossip and peer HTTP on loopback) in front of a real
// distribution registry that counts its requests.
package peers

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

func blobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(cfg.String())}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, digest.Digest(d.String()))
	}
	return out
}

func randomImage(t *testing.T, size int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestColdPullAtOnceFetchesEachBlobOnce(t *testing.T) {
	up := upstreamtest.New(t)
	img := randomImage(t, 2<<20, 6)
	up.Push(t, "team/app", "v1", img)
	nodes := startCluster(t, up, 5, nil)
	c := client(t, up.Host)

	start := make(chan struct{})
	errs := make(chan error, len(nodes))
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- pull(t.Context(), c, n, "team/app", "v1", img)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, d := range blobs(t, img) {
		if got := up.AnyBlobGETs(d.String()); got != 1 {
			t.Errorf("upstream saw %d GETs of %s, want exactly 1", got, d)
		}
		for _, n := range nodes {
			if ok, err := stored(n, d); !ok || err != nil {
				t.Errorf("%s: %s stored %v: %v", n.Name, d, ok, err)
			}
		}
	}
}

func TestPulledOnANotFetchedAgainForB(t *testing.T) {
	up := upstreamtest.New(t)
	img := randomImage(t, 256<<10, 4)
	up.Push(t, "team/app", "v1", img)
	nodes := startCluster(t, up, 3, nil)
	c := client(t, up.Host)

	if err := pull(t.Context(), c, nodes[0], "team/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	before := map[digest.Digest]int{}
	for _, d := range blobs(t, img) {
		before[d] = up.AnyBlobGETs(d.String())
	}
	if err := pull(t.Context(), c, nodes[1], "team/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	for _, d := range blobs(t, img) {
		if got := up.AnyBlobGETs(d.String()); got != before[d] || got != 1 {
			t.Errorf("%s: upstream GETs %d after A, %d after B; want 1 and no more", d, before[d], got)
		}
	}
}

func TestOwnerKilledMidTransfer(t *testing.T) {
	up := upstreamtest.New(t)
	img := randomImage(t, 4<<20, 1)
	up.Push(t, "team/app", "v1", img)
	nodes := startCluster(t, up, 3, nil)
	c := client(t, up.Host)
	layer := blobs(t, img)[1]
	o := owner(nodes, layer.String())
	asker := nodes[0]
	if asker == o {
		asker = nodes[1]
	}

	release := up.Gate()
	defer release()
	got, err := readBlob(t.Context(), c, asker, "team/app", layer, func() {
		// Bytes are flowing upstream -> owner -> asker -> client, and the
		// upstream holds the rest: kill the owner now.
		select {
		case <-up.Halfway():
		case <-time.After(10 * time.Second):
			t.Error("the upstream never held a body")
		}
		o.Kill()
		release()
	})
	if err != nil {
		t.Fatalf("pull after the owner died: %v", err)
	}
	if sha(got) != layer {
		t.Fatalf("pulled %d bytes hashing to %s, want %s", len(got), sha(got), layer)
	}
	if ok, err := stored(asker, layer); !ok || err != nil {
		t.Fatalf("asker stored the layer: %v, %v", ok, err)
	}
	// The owner's fill, then the asker's resume at the byte reached: the
	// bytes did go through the owner before it died.
	if got := up.AnyBlobGETs(layer.String()); got != 2 {
		t.Fatalf("upstream GETs of the layer: %d, want 2 (owner, then the asker's resume)", got)
	}
}

// corrupter flips a byte in every blob body it serves to a peer.
func corrupter(hits *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(peer.Header) == "" {
				next.ServeHTTP(w, r)
				return
			}
			hits.Add(1)
			next.ServeHTTP(&flipWriter{ResponseWriter: w}, r)
		})
	}
}

type flipWriter struct {
	http.ResponseWriter
	flipped bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.flipped && len(p) > 0 && f.Header().Get("Docker-Content-Digest") != "" {
		p = bytes.Clone(p)
		p[len(p)/2] ^= 0xff
		f.flipped = true
	}
	return f.ResponseWriter.Write(p)
}

func (f *flipWriter) WriteHeader(code int) { f.ResponseWriter.WriteHeader(code) }

func TestCorruptingPeerCannotPoison(t *testing.T) {
	up := upstreamtest.New(t)
	img := randomImage(t, 512<<10, 3)
	up.Push(t, "team/app", "v1", img)
	var hits atomic.Int32
	// Find a layer owned by n1 (the liar) among n0..n2.
	names := []string{"n0", "n1", "n2"}
	var layer digest.Digest
	for _, d := range blobs(t, img)[1:] {
		if peer.Rank(d.String(), names)[0] == "n1" {
			layer = d
		}
	}
	if layer == "" {
		img = randomImage(t, 512<<10, 12) // about 4 of 12 layers are n1's
		up.Push(t, "team/app", "v1", img)
		for _, d := range blobs(t, img)[1:] {
			if peer.Rank(d.String(), names)[0] == "n1" {
				layer = d
			}
		}
	}
	if layer == "" {
		t.Fatal("no layer owned by n1")
	}
	nodes := startCluster(t, up, 3, map[int]nodetest.Member{1: {Wrap: corrupter(&hits)}})
	c := client(t, up.Host)

	// A client retries a broken body, as containerd does; the bytes it ends
	// with must be right, and the liar must have been asked.
	var got []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if got, err = readBlob(t.Context(), c, nodes[0], "team/app", layer, nil); err == nil {
			break
		}
		t.Logf("attempt %d: %v", attempt+1, err)
	}
	if err != nil || sha(got) != layer {
		t.Fatalf("client got %d bytes (%s), err %v; want %s", len(got), sha(got), err, layer)
	}
	if hits.Load() == 0 {
		t.Fatal("the corrupting owner was never asked: the test proves nothing")
	}
	for _, n := range nodes {
		if _, err := stored(n, layer); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWrongKeyNotAdmittedNorAsked(t *testing.T) {
	up := upstreamtest.New(t)
	img := randomImage(t, 128<<10, 4)
	up.Push(t, "team/app", "v1", img)
	gossip := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var marked atomic.Int32
	countMarked := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(peer.Header) != "" {
				marked.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
	a := startNode(t, up, "n0", gossip[0], gossip, nodetest.Member{})
	b := startNode(t, up, "n1", gossip[1], gossip, nodetest.Member{})
	x := startNode(t, up, "x", gossip[2], gossip, nodetest.Member{Secret: "another cluster secret", Wrap: countMarked})
	waitPeers(t, []*node{a, b}, 1)
	c := client(t, up.Host)
	// x keeps trying to join every second; pulls on a and b meanwhile must
	// never reach it, and x must not count anyone as a peer.
	for _, n := range []*node{a, b, x} {
		if err := pull(t.Context(), c, n, "team/app", "v1", img); err != nil {
			t.Fatal(err)
		}
	}
	if got := marked.Load(); got != 0 {
		t.Fatalf("x received %d peer requests", got)
	}
	if a.Peers(t) != 1 || b.Peers(t) != 1 || x.Peers(t) != 0 {
		t.Fatalf("peers: a %d b %d x %d; want 1 1 0", a.Peers(t), b.Peers(t), x.Peers(t))
	}
}

func TestUnmarkedOrForgedRequestIsAClient(t *testing.T) {
	up := upstreamtest.New(t)
	img := randomImage(t, 128<<10, 1)
	up.Push(t, "team/app", "v1", img)
	nodes := startCluster(t, up, 2, nil)
	layer := blobs(t, img)[1]

	// A forged holder-mode marker on a cold blob: a real holder answers 404
	// without fetching; an ordinary client gets the blob.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet,
		"http://"+nodes[0].Addr+"/v2/team/app/blobs/"+layer.String()+"?ns="+up.Host, nil)
	req.Header.Set(peer.Header, "v1,holder,"+strconv.FormatInt(time.Now().Unix(), 10)+",n1,AAAA")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || sha(buf.Bytes()) != layer {
		t.Fatalf("forged marker: status %d, %d bytes, err %v; want the blob", resp.StatusCode, buf.Len(), err)
	}
	if up.AnyBlobGETs(layer.String()) != 1 {
		t.Fatalf("upstream GETs %d, want 1", up.AnyBlobGETs(layer.String()))
	}
}

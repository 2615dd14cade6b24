package peer

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

func TestAdmitCopyBoundsCopies(t *testing.T) {
	t.Parallel()
	c := &Cluster{cfg: Config{Fanout: 2}}
	req := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/sha256:0", nil) // unmarked: the asker is unknown
	d, other := digest.FromString("a"), digest.FromString("b")
	var releases []func()
	for i := range 4 {
		rel, ok := c.AdmitCopy(req, d)
		if !ok {
			t.Fatalf("copy %d of 4 refused", i+1)
		}
		releases = append(releases, rel)
	}
	if _, ok := c.AdmitCopy(req, d); ok {
		t.Fatal("a fifth copy admitted, over 2 x fan-out")
	}
	if rel, ok := c.AdmitCopy(req, other); !ok {
		t.Fatal("another blob's copy refused")
	} else {
		rel()
	}
	releases[0]()
	releases[0]() // twice: counts once
	rel, ok := c.AdmitCopy(req, d)
	if !ok {
		t.Fatal("a copy refused after one ended")
	}
	if _, ok := c.AdmitCopy(req, d); ok {
		t.Fatal("a double release freed two places")
	}
	rel()
	for _, r := range releases[1:] {
		r()
	}
	if n := len(c.relays.copies); n != 0 {
		t.Fatalf("%d blobs still counted after every copy ended", n)
	}
	var nilc *Cluster
	if rel, ok := nilc.AdmitCopy(req, d); !ok {
		t.Fatal("a node alone refused a copy")
	} else {
		rel()
	}
}

// TestAdmitCopyRefusesWhomItStreamsFrom: two nodes whose views of the
// membership differ may each take the other for its parent; the one whose
// own fetch streams from the asker answers busy instead of waiting on it.
func TestAdmitCopyRefusesWhomItStreamsFrom(t *testing.T) {
	t.Parallel()
	key := deriveKeys([]byte("s3cret")).marker
	c := &Cluster{cfg: Config{Fanout: 4}, sign: signer{key: key, node: "a", now: time.Now}}
	d := digest.FromString("x")
	fromB := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
	signer{key: key, node: "b", now: time.Now}.sign(fromB, modeRelay)
	fromC := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
	signer{key: key, node: "c", now: time.Now}.sign(fromC, modeRelay)

	body := &peerBody{}
	c.streamsFrom(d, "b", 0, -1, body)
	if _, ok := c.AdmitCopy(fromB, d); ok {
		t.Fatal("a relay request from the node this one streams from was admitted")
	}
	rel, ok := c.AdmitCopy(fromC, d)
	if !ok {
		t.Fatal("another node's relay request refused")
	}
	rel()
	body.onClose() // what Close runs
	if rel, ok := c.AdmitCopy(fromB, d); !ok {
		t.Fatal("refused after the stream from b ended")
	} else {
		rel()
	}
}

// TestAdmitCopyRefusesTooManyRelayHops: a relay request that passed more
// nodes than a tree over the live members can be deep (plus two) is a
// loop and is refused; one within the depth is admitted.
func TestAdmitCopyRefusesTooManyRelayHops(t *testing.T) {
	t.Parallel()
	c := &Cluster{cfg: Config{Fanout: 2}, members: map[string]member{}, log: discardLogger()}
	for i := range 6 { // seven nodes with this one: a binary tree of depth 2
		name := string(rune('b' + i))
		c.members[name] = member{Name: name}
	}
	if got := c.maxRelayHops(); got != 4 {
		t.Fatalf("max relay hops %d over 7 nodes with fan-out 2, want 4 (depth 2 + 2)", got)
	}
	d := digest.FromString("x")
	for hops, admit := range map[string]bool{"": true, "1": true, "4": true, "5": false, "-1": false, "x": false} {
		req := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
		if hops != "" {
			req.Header.Set(oci.RelayHopHeader, hops)
		}
		rel, ok := c.AdmitCopy(req, d)
		if ok != admit {
			t.Errorf("%s %q: admitted %v, want %v", oci.RelayHopHeader, hops, ok, admit)
		}
		if ok {
			rel()
		}
	}
}

// TestAdmitCopyStripesMayCross: a node fetching one stripe from b still
// serves b another stripe (each feeds the other a different range), but
// not the bytes it streams from b.
func TestAdmitCopyStripesMayCross(t *testing.T) {
	t.Parallel()
	key := deriveKeys([]byte("s3cret")).marker
	c := &Cluster{cfg: Config{Fanout: 4}, sign: signer{key: key, node: "a", now: time.Now}}
	d := digest.FromString("x")
	ask := func(rng string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
		r.Header.Set("Range", rng)
		signer{key: key, node: "b", now: time.Now}.sign(r, modeRelay)
		return r
	}
	body := &peerBody{}
	c.streamsFrom(d, "b", 4<<20, 8<<20, body) // stripe 1 from b
	if rel, ok := c.AdmitCopy(ask("bytes=0-4194303"), d); !ok {
		t.Fatal("b's request for stripe 0 refused while this node fetches stripe 1 from b")
	} else {
		rel()
	}
	if _, ok := c.AdmitCopy(ask("bytes=5000000-8388607"), d); ok {
		t.Fatal("b's request for bytes this node streams from b admitted")
	}
	if _, ok := c.AdmitCopy(ask(""), d); ok {
		t.Fatal("b's request for the whole blob admitted while this node streams part of it from b")
	}
	body.onClose()
	if len(c.relays.from) != 0 {
		t.Fatalf("streams still recorded after close: %v", c.relays.from)
	}
}

// TestStripeHopsCountAlongTheirOwnBytes: a fill started by a relay
// request deep in one stripe's chain (hops at the cluster's limit) asks for
// the other stripes with a hop count of one, as each stripe's chain is its
// own tree's, and for the bytes its starter asked for with one more. Counted
// across stripes, every parent refused a fill started late on a loaded node
// (too many hops) and it fetched its stripes from the upstream a second
// time.
func TestStripeHopsCountAlongTheirOwnBytes(t *testing.T) {
	t.Parallel()
	const stripeMin = 64 << 10
	nodes := cluster(t, 3, func(c *Config) { c.StripeMin = stripeMin })
	b := make([]byte, 4*stripeMin)
	var d digest.Digest
	var p *Plan
	names := []string{nodes[0].c.Name(), nodes[1].c.Name(), nodes[2].c.Name()}
	for i := range 1000 { // a blob whose stripes 0 and 1 have roots other than nodes[0]
		b[0] = byte(i)
		b[1] = byte(i >> 8)
		d = digest.FromBytes(b)
		p = NewPlan(d.String(), names, int64(len(b)), PlanOptions{StripeMin: stripeMin})
		if p.Stripes() >= 2 && p.Root(0) != p.Index(names[0]) && p.Root(1) != p.Index(names[0]) {
			break
		}
	}
	var mu sync.Mutex
	var hops []string
	for _, nd := range nodes[1:] {
		nd.serve(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hops = append(hops, r.Header.Get(oci.RelayHopHeader))
			mu.Unlock()
			content(b)(w, r)
		})
	}
	limit := nodes[0].c.maxRelayHops()
	req := repo.Blob(d)
	req.Via, req.RelayHops, req.RelayStart, req.RelayEnd = oci.ViaPeerRelay, limit, 0, 1 // asked for stripe 0's first byte
	fetch := func(s int) string {
		t.Helper()
		mu.Lock()
		hops = nil
		mu.Unlock()
		start, end := p.Range(s)
		rc, err := nodes[0].c.FetchRange(t.Context(), req, int64(len(b)), start, end)
		if err != nil {
			t.Fatalf("stripe %d: %v", s, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, b[start:end]) {
			t.Fatalf("stripe %d: %d bytes, %v", s, len(got), err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(hops) != 1 {
			t.Fatalf("stripe %d: %d requests, want 1", s, len(hops))
		}
		return hops[0]
	}
	if got := fetch(1); got != "1" {
		t.Errorf("another stripe asked with %s relay hops, want 1 (its own chain starts here)", got)
	}
	if got, want := fetch(0), strconv.Itoa(limit+1); got != want {
		t.Errorf("the starter's stripe asked with %s relay hops, want %s", got, want)
	}
}

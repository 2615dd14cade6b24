package peer

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// node is a cluster member whose registry API is a plain test server: it
// stands in for a berth node in these unit tests.
type node struct {
	c   *Cluster
	srv *httptest.Server

	mu    sync.Mutex
	h     http.HandlerFunc // what it answers; nil: 404
	modes []oci.Via        // who each request said asks (oci.ViaClient if unmarked)
	hits  atomic.Int32
}

func (n *node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.hits.Add(1)
	mode, _ := n.c.PeerMode(r)
	n.mu.Lock()
	n.modes = append(n.modes, mode)
	h := n.h
	n.mu.Unlock()
	if h == nil {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	h(w, r)
}

func (n *node) serve(h http.HandlerFunc) {
	n.mu.Lock()
	n.h = h
	n.mu.Unlock()
}

func (n *node) seen() []oci.Via {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]oci.Via(nil), n.modes...)
}

// cluster starts n nodes that all see each other; nodes[0] is the one
// that fetches.
func cluster(t *testing.T, n int, tune func(*Config)) []*node {
	t.Helper()
	nodes := make([]*node, n)
	var seed string
	for i := range nodes {
		nd := &node{}
		nd.srv = httptest.NewServer(nd)
		t.Cleanup(nd.srv.Close)
		var join []string
		if seed != "" {
			join = []string{seed}
		}
		cfg := testConfig(fmt.Sprintf("n%d", i), nd.srv.Listener.Addr().String(), "s3cret", join...)
		// Generous for a loaded 2-core race run; the tests that are about a
		// timeout outlast it by far.
		cfg.Timeout, cfg.OwnerTimeout, cfg.IdleTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		cfg.Gossip = steadyGossip() // the tests rank the members once: they must stay members
		if tune != nil {
			tune(&cfg)
		}
		nd.c = start(t, cfg)
		seed = nd.c.GossipAddr()
		nodes[i] = nd
	}
	for _, nd := range nodes {
		eventually(t, 10*time.Second, nd.c.Name()+" sees everyone", func() bool { return len(nd.c.Members()) == n-1 })
	}
	return nodes
}

// ranked returns the nodes in their rank for key.
func ranked(nodes []*node, key string) []*node {
	byName := map[string]*node{}
	for _, nd := range nodes {
		byName[nd.c.Name()] = nd
	}
	var out []*node
	for _, m := range rank(key, nodes[0].c.live()) {
		out = append(out, byName[m.Name])
	}
	return out
}

// blobOwnedBy returns random content whose digest nodes[0] ranks with
// want(rank) true.
func blobFor(t *testing.T, nodes []*node, want func(r []*node) bool) ([]byte, digest.Digest, []*node) {
	t.Helper()
	for range 1000 {
		b := make([]byte, 64<<10)
		_, _ = rand.Read(b)
		d := digest.FromBytes(b)
		if r := ranked(nodes, d.String()); want(r) {
			return b, d, r
		}
	}
	t.Fatal("no such blob")
	return nil, "", nil
}

func notSelfOwned(nodes []*node) func([]*node) bool {
	return func(r []*node) bool { return r[0] != nodes[0] }
}

func content(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}
}

var repo = oci.Repo{Registry: "docker.io", Name: "library/alpine"}

func readBlob(t *testing.T, c *Cluster, d digest.Digest, offset int64) ([]byte, int64, error) {
	t.Helper()
	rc, size, err := c.FetchBlob(t.Context(), repo.Blob(d), offset)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, size, err
}

func TestFetchBlobFromOwner(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 4, nil)
	b, d, r := blobFor(t, nodes, notSelfOwned(nodes))
	r[0].serve(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v2/library/alpine/blobs/"+d.String() || req.URL.Query().Get("ns") != "docker.io" {
			http.Error(w, "wrong URL "+req.URL.String(), http.StatusBadRequest)
			return
		}
		content(b)(w, req)
	})
	got, size, err := readBlob(t, nodes[0].c, d, 0)
	if err != nil || !bytes.Equal(got, b) || size != int64(len(b)) {
		t.Fatalf("fetch: %d bytes, size %d, err %v; want %d bytes", len(got), size, err, len(b))
	}
	if got := r[0].seen(); len(got) != 1 || got[0] != oci.ViaPeerRelay {
		t.Fatalf("owner (the root of the relay tree) saw %v, want one relay-mode request", got)
	}
	for _, nd := range r[1:] {
		if nd.hits.Load() != 0 {
			t.Fatalf("%s was asked though the owner answered", nd.c.Name())
		}
	}

	// A range resumes a broken stream: 206 and the total size.
	got, size, err = readBlob(t, nodes[0].c, d, 1000)
	if err != nil || !bytes.Equal(got, b[1000:]) || size != int64(len(b)) {
		t.Fatalf("range: %d bytes, size %d, err %v", len(got), size, err)
	}
}

// TestOwnerDeadThenHoldersInParallel: the relay plan's sources fail (the
// root's HTTP side is gone, the next ones are busy), so the holders are
// asked, at once.
func TestOwnerDeadThenHoldersInParallel(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 4, nil)
	b, d, r := blobFor(t, nodes, func(r []*node) bool { return r[0] != nodes[0] && r[1] != nodes[0] && r[2] != nodes[0] })
	r[0].srv.Close() // gossip still lists it: the HTTP side is gone
	busy := func(w http.ResponseWriter, req *http.Request, nd *node) bool {
		if via, _ := nd.c.PeerMode(req); via == oci.ViaPeerRelay {
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS"}]}`, http.StatusTooManyRequests)
			return true
		}
		return false
	}

	// Both holders must be asked at once: each waits for the other's request.
	arrived := make(chan struct{}, 2)
	loserGone := make(chan struct{})
	barrier := func(w http.ResponseWriter, req *http.Request) bool {
		arrived <- struct{}{}
		deadline := time.After(5 * time.Second)
		for len(arrived) < 2 {
			select {
			case <-deadline:
				http.Error(w, "holders were asked one by one", http.StatusServiceUnavailable)
				return false
			case <-time.After(5 * time.Millisecond):
			}
		}
		return true
	}
	r[1].serve(func(w http.ResponseWriter, req *http.Request) {
		if !busy(w, req, r[1]) && barrier(w, req) {
			content(b)(w, req)
		}
	})
	r[2].serve(func(w http.ResponseWriter, req *http.Request) {
		if !busy(w, req, r[2]) && barrier(w, req) {
			<-req.Context().Done() // a slow holder: no answer

			close(loserGone)
		}
	})
	got, _, err := readBlob(t, nodes[0].c, d, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("fetch: %d bytes, err %v", len(got), err)
	}
	select {
	case <-loserGone: // the loser's request was cancelled
	case <-time.After(5 * time.Second):
		t.Fatal("the losing holder's request was not cancelled")
	}
	for _, nd := range r[1:3] {
		if got := nd.seen(); len(got) != 2 || got[0] != oci.ViaPeerRelay || got[1] != oci.ViaPeerHolder {
			t.Fatalf("%s saw %v, want a relay-mode request (busy), then a holder-mode one", nd.c.Name(), got)
		}
	}
	if !nodes[0].c.suspected(r[0].c.Name()) {
		t.Fatal("an owner that refused connections is not suspected")
	}
}

// TestFetchFirstAsksForTheFirstBytesOnly: a striped fill's first bytes come
// down the one-stripe tree as a Range request for those bytes alone, and
// the fetch is recorded as streaming only them, so the parent it streams
// from is still served another stripe by this node (before, the open-ended
// record made this node answer that parent busy, and the stripe went to
// the upstream a second time).
func TestFetchFirstAsksForTheFirstBytesOnly(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil)
	b, d, r := blobFor(t, nodes, notSelfOwned(nodes))
	parent := r[0]
	var asked, sizeHint atomic.Value
	parent.serve(func(w http.ResponseWriter, req *http.Request) {
		asked.Store(req.Header.Get("Range"))
		sizeHint.Store(req.Header.Get(oci.RelaySizeHeader))
		content(b)(w, req)
	})
	const n = 4 << 10
	req := repo.Blob(d)
	req.RelaySize = int64(len(b)) // a manifest gave it: the parent is told, to stripe its own fill at once
	rc, size, err := nodes[0].c.FetchFirst(t.Context(), req, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if size != int64(len(b)) {
		t.Fatalf("size %d, want %d", size, len(b))
	}
	if got, _ := asked.Load().(string); got != fmt.Sprintf("bytes=0-%d", n-1) {
		t.Fatalf("parent was asked for %q, want the first %d bytes", got, n)
	}
	if got, _ := sizeHint.Load().(string); got != fmt.Sprint(len(b)) {
		t.Fatalf("parent was told size %q, want %d", got, len(b))
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, b[:n]) {
		t.Fatalf("read %d bytes (%v), want the first %d", len(got), err, n)
	}
	// While the first bytes stream from the parent, the parent asking this
	// node for a stripe past them is admitted; for the first bytes, not.
	ask := func(rng string) *http.Request {
		req := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
		req.Header.Set("Range", rng)
		parent.c.sign.sign(req, modeRelay)
		return req
	}
	if rel, ok := nodes[0].c.AdmitCopy(ask(fmt.Sprintf("bytes=%d-%d", n, len(b)-1)), d); !ok {
		t.Fatal("the parent's request for a later stripe refused while the first bytes stream from it")
	} else {
		rel()
	}
	if _, ok := nodes[0].c.AdmitCopy(ask("bytes=0-99"), d); ok {
		t.Fatal("the parent's request for the bytes streaming from it admitted")
	}
}

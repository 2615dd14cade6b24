package peer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// TestSilentOwnerIsAskedAgainThenPassedOver: an owner that accepts the
// connection but never answers (as one a loaded machine does not run) is
// slow, not dead: it is asked again, slowLimit times in all, each for the
// relay timeout, and then the next node of the plan is asked.
func TestSilentOwnerIsAskedAgainThenPassedOver(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil)
	b, d, r := blobFor(t, nodes, func(r []*node) bool { return r[0] != nodes[0] })
	r[0].serve(func(w http.ResponseWriter, req *http.Request) { <-req.Context().Done() })
	// The next node: in the relay plan (r[1], as nodes[0] is r[2]), else a
	// holder (r[2], as nodes[0] is r[1], the root's only other child).
	holder, via := r[1], oci.ViaPeerRelay
	if holder == nodes[0] {
		holder, via = r[2], oci.ViaPeerHolder
	}
	holder.serve(content(b))
	got, _, err := readBlob(t, nodes[0].c, d, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("fetch: %d bytes, err %v", len(got), err)
	}
	if got := r[0].seen(); len(got) != slowLimit || got[0] != oci.ViaPeerRelay {
		t.Fatalf("owner saw %v, want %d relay requests", got, slowLimit)
	}
	if got := holder.seen(); len(got) != 1 || got[0] != via {
		t.Fatalf("next node saw %v, want one %s-mode request", got, via)
	}
}

func TestEarlyHintsExtendTheWait(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil) // Timeout 2s
	b, d, r := blobFor(t, nodes, notSelfOwned(nodes))
	r[0].serve(func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(http.StatusEarlyHints) // the owner took the fill
		select {
		case <-time.After(3 * time.Second): // the upstream is slow: longer than Timeout
		case <-req.Context().Done():
			return
		}
		content(b)(w, req)
	})
	got, _, err := readBlob(t, nodes[0].c, d, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("fetch: %d bytes, err %v", len(got), err)
	}
	for _, nd := range r[1:] {
		if nd != nodes[0] && nd.hits.Load() != 0 {
			t.Fatalf("%s asked though the owner sent 103", nd.c.Name())
		}
	}
}

// TestStallIsAskedAgainThenPassedOver: an owner whose stream stalls is
// slow, not dead: it is not suspected, and a resume asks it again, until it
// stalled slowLimit times in a row on the blob; then the resume goes to a
// holder.
func TestStallIsAskedAgainThenPassedOver(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil) // IdleTimeout 2s
	b, d, r := blobFor(t, nodes, notSelfOwned(nodes))
	r[0].serve(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Range") == "" {
			w.Header().Set("Content-Length", "65536")
			_, _ = w.Write(b[:1000])
		} else { // a resume at byte 1000: headers, then nothing
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 1000-%d/%d", len(b)-1, len(b)))
			w.Header().Set("Content-Length", strconv.Itoa(len(b)-1000))
			w.WriteHeader(http.StatusPartialContent)
		}
		w.(http.Flusher).Flush()
		<-req.Context().Done()
	})
	got, _, err := readBlob(t, nodes[0].c, d, 0)
	if !errors.Is(err, errStalled) || !bytes.Equal(got, b[:1000]) {
		t.Fatalf("fetch: %d bytes, err %v; want 1000 bytes and a stall", len(got), err)
	}
	owner := r[0].c.Name()
	if nodes[0].c.suspected(owner) || nodes[0].c.passOver(owner, d.String()) {
		t.Fatal("the owner is passed over after one stall")
	}
	for _, nd := range r[1:] {
		nd.serve(content(b))
	}
	for i := 2; i <= slowLimit; i++ {
		if _, _, err := readBlob(t, nodes[0].c, d, 1000); !errors.Is(err, errStalled) {
			t.Fatalf("resume %d: err %v, want the owner asked again and a stall", i-1, err)
		}
	}
	if nodes[0].c.suspected(owner) || !nodes[0].c.passOver(owner, d.String()) {
		t.Fatalf("after %d stalls: suspected %v, passed over for the blob %v; want false, true", slowLimit,
			nodes[0].c.suspected(owner), nodes[0].c.passOver(owner, d.String()))
	}
	got, _, err = readBlob(t, nodes[0].c, d, 1000)
	if err != nil || !bytes.Equal(got, b[1000:]) {
		t.Fatalf("resume: %d bytes, err %v", len(got), err)
	}
	if n := r[0].hits.Load(); n != slowLimit {
		t.Fatalf("the slow owner was asked %d times, want %d", n, slowLimit)
	}
}

func TestCorruptBytesBlamedAndSuspect(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil)
	b, d, r := blobFor(t, nodes, notSelfOwned(nodes))
	bad := slices.Clone(b)
	bad[len(bad)/2] ^= 1
	r[0].serve(content(bad))
	rc, _, err := nodes[0].c.FetchBlob(t.Context(), repo.Blob(d), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, bad) {
		t.Fatalf("read: %v", err) // the store hashes; the peer body passes bytes on
	}
	if nodes[0].c.suspected(r[0].c.Name()) {
		t.Fatal("suspected before the store found the mismatch")
	}
	// The store finds the mismatch and blames the stream's peer.
	rc.(interface{ Blame(error) }).Blame(oci.ErrDigestMismatch)
	if !nodes[0].c.suspected(r[0].c.Name()) {
		t.Fatal("the lying owner is not suspected")
	}
}

func TestSelfOwnerAsksOnlyHolders(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 4, nil)
	_, d, r := blobFor(t, nodes, func(r []*node) bool { return r[0] == nodes[0] })
	_, _, err := readBlob(t, nodes[0].c, d, 0)
	if !errors.Is(err, ErrNoPeer) || !errors.Is(err, oci.ErrBlobUnknown) {
		t.Fatalf("fetch: %v, want ErrNoPeer wrapping the holders' 404s", err)
	}
	if got := r[1].seen(); !slices.Equal(got, []oci.Via{oci.ViaPeerHolder}) {
		t.Fatalf("first holder saw %v", got)
	}
	if got := r[2].seen(); !slices.Equal(got, []oci.Via{oci.ViaPeerHolder}) {
		t.Fatalf("second holder saw %v", got)
	}
	if n := r[3].hits.Load(); n != 0 {
		t.Fatalf("the node past AskNext was asked %d times", n)
	}
}

func TestFetchManifest(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil)
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	d := digest.FromBytes(m)
	r := ranked(nodes, d.String())
	for _, nd := range r {
		nd.serve(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path != "/v2/library/alpine/manifests/"+d.String() || req.Header.Get("Accept") == "" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write(m)
		})
	}
	desc, got, err := nodes[0].c.FetchManifest(t.Context(), repo.Manifest(d.String()))
	if err != nil || !bytes.Equal(got, m) {
		t.Fatalf("manifest: %q, %v", got, err)
	}
	if want := (oci.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: d, Size: int64(len(m))}); desc != want {
		t.Fatalf("descriptor %+v, want %+v", desc, want)
	}

	bad := digest.FromString("another manifest")
	for _, nd := range nodes {
		nd.serve(content(m)) // every peer serves the wrong bytes for bad
	}
	if _, _, err := nodes[0].c.FetchManifest(t.Context(), repo.Manifest(bad.String())); !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("wrong manifest: %v, want ErrDigestMismatch", err)
	}
}

func TestResolveTagViaOwner(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, 3, nil)
	d := digest.FromString("manifest")
	for _, nd := range nodes {
		nd.serve(func(w http.ResponseWriter, req *http.Request) {
			if req.Method != http.MethodHead || req.URL.Path != "/v2/library/alpine/manifests/3.20" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Header().Set("Docker-Content-Digest", d.String())
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			w.Header().Set("Content-Length", "1234")
		})
	}
	owner := ranked(nodes, repo.String()+":3.20")[0]
	asker := nodes[0]
	if owner == asker {
		asker = nodes[1]
	}
	desc, err := asker.c.ResolveTag(t.Context(), repo.Manifest("3.20"))
	if want := (oci.Descriptor{MediaType: "application/vnd.oci.image.index.v1+json", Digest: d, Size: 1234}); err != nil || desc != want {
		t.Fatalf("resolve: %+v, %v; want %+v", desc, err, want)
	}
	if got := owner.seen(); !slices.Equal(got, []oci.Via{oci.ViaPeerOwner}) {
		t.Fatalf("owner saw %v", got)
	}
	if _, err := owner.c.ResolveTag(t.Context(), repo.Manifest("3.20")); !errors.Is(err, ErrSelfOwner) {
		t.Fatalf("owner resolving its own tag: %v, want ErrSelfOwner", err)
	}
}

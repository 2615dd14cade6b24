package mirror_test

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/test/mirrortest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// padding is a network path that appends pad bytes to every blob body it
// carries and says so in Content-Length, as a hostile or broken upstream
// would; it counts the blob body bytes berth reads.
type padding struct {
	*http.Transport
	pad  int64
	read atomic.Int64
}

func (p *padding) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.Transport.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body := io.MultiReader(resp.Body, io.LimitReader(zeros{}, p.pad))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{countReader{body, &p.read}, resp.Body}
	if resp.ContentLength >= 0 {
		resp.ContentLength += p.pad
		resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	return resp, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestClientFillHeldToTheManifestSize: a client's blob GET, after its
// manifest was served through the repository, is filled under the size the
// manifest's descriptor gives, as a prefetch is: an upstream that declares
// more fails the fill before berth reads its body, not after it read it all
// and the digest failed.
func TestClientFillHeldToTheManifestSize(t *testing.T) {
	var tr *padding
	p := mirrortest.New(t, func(base *http.Transport) http.RoundTripper {
		tr = &padding{Transport: base, pad: 8 << 20}
		return tr
	})
	up, store, repo := p.Up, p.Store, p.Repo
	m := mirror.New(store, nil, p.Upstream, mirror.Config{TagTTL: ttl}) // no prefetch: the client's GET starts the fill
	t.Cleanup(m.Close)
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, "team/app", "v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lsize, _ := layers[0].Size()
	if _, err := m.Manifest(t.Context(), repo.Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	if got := store.KnownSize(repo, digest.Digest(ld.String())); got != lsize {
		t.Fatalf("KnownSize of the layer = %d, want the descriptor's %d", got, lsize)
	}
	b, err := m.Blob(t.Context(), repo.Blob(digest.Digest(ld.String())))
	if err == nil {
		_, err = io.Copy(io.Discard, b)
		b.Close()
	}
	if !errors.Is(err, oci.ErrTooLarge) {
		t.Errorf("blob from an upstream that declares %d bytes more: %v, want ErrTooLarge", tr.pad, err)
	}
	if n := tr.read.Load(); n >= tr.pad {
		t.Errorf("berth read %d bytes of a body its manifest says has %d", n, lsize)
	}
	if store.Has(digest.Digest(ld.String())) {
		t.Error("the padded blob was stored")
	}
}

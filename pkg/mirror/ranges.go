package mirror

import (
	"context"
	"fmt"
	"io"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// StripedPeers are peers that fetch a large blob as stripes, each down its
// own relay tree (peer.Cluster). Any error means "ask the upstream".
type StripedPeers interface {
	// CanStripe reports whether striping may apply (other nodes are live).
	CanStripe() bool
	// FirstBytes is how much of a blob of size bytes (0: not known yet) a
	// fill reads in one stream before it stripes the rest.
	FirstBytes(size int64) int64
	// Stripes returns the byte ranges a blob of size bytes is fetched as.
	Stripes(d digest.Digest, size int64) [][2]int64
	// FetchFirst returns a blob's first n bytes (fewer if it is smaller)
	// and its size, asking its sources for those bytes only.
	FetchFirst(ctx context.Context, req oci.Request, n int64) (io.ReadCloser, int64, error)
	// FetchRange returns bytes [offset, end) of a blob of size bytes.
	FetchRange(ctx context.Context, req oci.Request, size, offset, end int64) (io.ReadCloser, error)
}

// RangeUpstream is an upstream that answers a blob's byte ranges
// (upstream.Client).
type RangeUpstream interface {
	FetchBlobRange(ctx context.Context, req oci.Request, offset, end int64) (io.ReadCloser, int64, error)
}

// ranges is where a fill of req.Digest fetches stripes from when the blob
// is large enough (cache.RangeSource): each stripe from this node's parent
// in the stripe's tree, and the stripe's root from the upstream with a
// Range request, so the upstream serves each byte once. nil (one stream)
// without striping peers or a range-capable upstream, and for a blob whose
// size a manifest gave (size > 0) and which is too small to stripe: it
// takes one request from its one source, as before striping.
func (m *Mirror) ranges(req oci.Request, size int64) cache.RangeSource {
	sp, ok := m.peers.(StripedPeers)
	up, ok2 := m.up.(RangeUpstream)
	if !ok || !ok2 || req.Via == oci.ViaPeerHolder || !sp.CanStripe() {
		return nil
	}
	if size > 0 && len(sp.Stripes(req.Digest, size)) < 2 {
		return nil
	}
	return &rangeSource{m: m, req: req, peers: sp, up: up, size: size}
}

type rangeSource struct {
	m     *Mirror
	req   oci.Request
	peers StripedPeers
	up    RangeUpstream
	size  int64 // the manifest's size for the blob; 0 when none is known
}

// First reads the blob's first bytes in one stream, as the opener would:
// from peers (its relay plan) for a client or a relay request, else from
// the upstream with a Range request, so that the stripes that follow are
// the upstream's only other bytes. The stream ends after FirstBytes.
func (r *rangeSource) First(ctx context.Context) (io.ReadCloser, int64, string, error) {
	n, req := r.peers.FirstBytes(r.size), r.req
	req.RelaySize = r.size // passed on to the parent: it stripes its own fill at once
	if req.Via == oci.ViaClient || req.Via == oci.ViaPeerRelay {
		rc, size, err := r.peers.FetchFirst(ctx, req, n)
		if err == nil {
			r.m.markKnown(req.Repo, req.Digest, nil)
			return firstBytes{io.LimitReader(rc, n), rc}, size, metrics.SourcePeer, nil
		}
		if ctx.Err() != nil {
			return nil, 0, "", ctx.Err()
		}
	}
	rc, size, err := r.up.FetchBlobRange(ctx, req, 0, n)
	if err != nil {
		return nil, 0, "", err
	}
	r.m.markKnown(req.Repo, req.Digest, nil)
	return firstBytes{io.LimitReader(rc, n), rc}, size, metrics.SourceUpstream, nil
}

// firstBytes is the start of a stream, closed and blamed as the stream.
type firstBytes struct {
	io.Reader
	rc io.ReadCloser
}

func (f firstBytes) Close() error { return f.rc.Close() }

// Blame passes a digest mismatch on to a peer's stream.
func (f firstBytes) Blame(err error) {
	if b, ok := f.rc.(cache.Blamer); ok {
		b.Blame(err)
	}
}

// Split cuts the blob into the plan's stripes.
func (r *rangeSource) Split(size int64) []cache.Range {
	var out []cache.Range
	for _, s := range r.peers.Stripes(r.req.Digest, size) {
		out = append(out, cache.Range{Start: s[0], End: s[1]})
	}
	return out
}

// OpenRange fetches [offset, end) down the stripe's tree, else upstream.
func (r *rangeSource) OpenRange(ctx context.Context, size, offset, end int64) (io.ReadCloser, string, error) {
	rc, err := r.peers.FetchRange(ctx, r.req, size, offset, end)
	if err == nil {
		r.m.markKnown(r.req.Repo, r.req.Digest, nil)
		return rc, metrics.SourcePeer, nil
	}
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	rc, total, err := r.up.FetchBlobRange(ctx, r.req, offset, end)
	if err != nil {
		return nil, "", err
	}
	if total >= 0 && total != size {
		rc.Close()
		return nil, "", fmt.Errorf("blob %s: upstream says %d bytes, the range fill %d: %w", r.req.Digest, total, size, oci.ErrDigestMismatch)
	}
	r.m.markKnown(r.req.Repo, r.req.Digest, nil)
	return rc, metrics.SourceUpstream, nil
}

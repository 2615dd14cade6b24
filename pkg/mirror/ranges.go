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
	// BlobSize returns the blob's size, asked of a peer.
	BlobSize(ctx context.Context, req oci.Request) (int64, error)
	// Stripes returns the byte ranges a blob of size bytes is fetched as.
	Stripes(d digest.Digest, size int64) [][2]int64
	// FetchRange returns bytes [offset, end) of a blob of size bytes.
	FetchRange(ctx context.Context, req oci.Request, size, offset, end int64) (io.ReadCloser, error)
}

// RangeUpstream is an upstream that answers a blob's size and byte ranges
// (upstream.Client).
type RangeUpstream interface {
	StatBlob(ctx context.Context, req oci.Request) (int64, error)
	FetchBlobRange(ctx context.Context, req oci.Request, offset, end int64) (io.ReadCloser, int64, error)
}

// ranges is where a fill of req.Digest fetches stripes from when the blob
// is large enough (cache.RangeSource): each stripe from this node's parent
// in the stripe's tree, and the stripe's root from the upstream with a
// Range request, so the upstream serves each byte once. nil (one stream)
// without striping peers or a range-capable upstream.
func (m *Mirror) ranges(req oci.Request) cache.RangeSource {
	sp, ok := m.peers.(StripedPeers)
	up, ok2 := m.up.(RangeUpstream)
	if !ok || !ok2 || req.Via == oci.ViaPeerHolder || !sp.CanStripe() {
		return nil
	}
	return &rangeSource{m: m, req: req, peers: sp, up: up}
}

type rangeSource struct {
	m     *Mirror
	req   oci.Request
	peers StripedPeers
	up    RangeUpstream
}

// Size asks a peer (the digest's owner), else the upstream, with a HEAD.
func (r *rangeSource) Size(ctx context.Context) (int64, error) {
	n, err := r.peers.BlobSize(ctx, r.req)
	if err == nil || ctx.Err() != nil {
		return n, err
	}
	r.m.log.Debug("blob size from peers", "digest", r.req.Digest, "err", err)
	return r.up.StatBlob(ctx, r.req)
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
